//! Heap instrumentation: the one module that touches jemalloc.
//!
//! Linking this crate makes jemalloc (tikv-jemallocator, jemalloc 5.3) the
//! global allocator of every binary and every test. [`snapshot`] advances
//! jemalloc's stats epoch (stats are cached until then) and reads the global
//! counters, the merged arenas' live allocation counts, and RssAnon/VmRSS
//! from /proc/self/status.
//!
//! Heap profiling: with the `mem-profiling` cargo feature (on by default in
//! every binary crate) jemalloc is built with profiling support; it is off unless
//! the process starts with `_RJEM_MALLOC_CONF=prof:true` (the symbols are
//! prefixed, so `MALLOC_CONF` is ignored). Then [`dump_profile`] writes a
//! profile that `jeprof --base=a.heap BIN b.heap` diffs by call site.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;
use tikv_jemalloc_ctl::{epoch, raw, stats};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One reading of the process's memory, in bytes except
/// `live_allocations` (a count). `daq-runtime` carries it as the
/// `HeapSnapshot` message of `daq.proto` (with the events the process had
/// handled), so that this crate builds neither protobuf nor gRPC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapReading {
    /// Wall-clock time of the reading, ms since the Unix epoch.
    pub unix_ms: u64,
    /// Bytes the program holds: jemalloc's `stats.allocated` less the bytes
    /// its thread caches hold (`stats.arenas.<all>.tcache_bytes`: objects the
    /// program freed that a thread keeps for reuse, which jemalloc counts
    /// as allocated until they go back to the arena). Without the
    /// subtraction, which thread freed last swings a process's heap by
    /// hundreds of KiB between otherwise equal moments.
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub mapped: u64,
    pub retained: u64,
    pub metadata: u64,
    /// RssAnon, VmRSS and VmHWM of /proc/self/status; zero without /proc.
    pub rss_anon: u64,
    pub vm_rss: u64,
    pub vm_hwm: u64,
    /// Allocations made and not yet freed, small and large, all arenas.
    pub live_allocations: u64,
}

/// A size_t jemalloc statistic by its NUL-terminated name; a failed read
/// is an error, never a zero.
fn read_size(name: &'static str) -> Result<u64, StatsError> {
    // SAFETY: every name passed here is a NUL-terminated jemalloc stats key
    // whose value type is size_t (per jemalloc's mallctl documentation).
    unsafe { raw::read::<usize>(name.as_bytes()) }
        .map(|v| v as u64)
        .map_err(|cause| StatsError::Read {
            name: name.trim_end_matches('\0'),
            cause,
        })
}

/// A u64 jemalloc statistic by its NUL-terminated name; a failed read is an
/// error, never a zero.
fn read_u64(name: &'static str) -> Result<u64, StatsError> {
    // SAFETY: every name passed here is a NUL-terminated jemalloc stats key
    // whose value type is uint64_t (per jemalloc's mallctl documentation).
    unsafe { raw::read::<u64>(name.as_bytes()) }.map_err(|cause| StatsError::Read {
        name: name.trim_end_matches('\0'),
        cause,
    })
}

/// A heap-statistics read that failed: the snapshot is not taken (a
/// failure never reads as zero bytes, which would look like a stable heap).
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot advance the jemalloc stats epoch: {0}")]
    Epoch(tikv_jemalloc_ctl::Error),
    #[error("cannot read jemalloc {name}: {cause}")]
    Read {
        name: &'static str,
        cause: tikv_jemalloc_ctl::Error,
    },
    #[error("heap statistics reads fail on purpose (fault injection)")]
    Injected,
}

static FAIL_STATS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fault injection: while `on`, every [`snapshot`] of this process fails
/// with [`StatsError::Injected`], as a failing jemalloc would. For the tests
/// of what reads the statistics (run control, the sampler, the analyses).
pub fn fail_stats_reads(on: bool) {
    FAIL_STATS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Reads every figure now (advancing the stats epoch first). Fails if any
/// jemalloc figure cannot be read.
pub fn snapshot() -> Result<HeapReading, StatsError> {
    if FAIL_STATS.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(StatsError::Injected);
    }
    epoch::advance().map_err(StatsError::Epoch)?;
    let (rss_anon, vm_rss, vm_hwm) = proc_status();
    // 4096 is MALLCTL_ARENAS_ALL: the arenas merged.
    let live = |nmalloc, ndalloc| -> Result<u64, StatsError> {
        Ok(read_u64(nmalloc)?.saturating_sub(read_u64(ndalloc)?))
    };
    let live_allocations = live(
        "stats.arenas.4096.small.nmalloc\0",
        "stats.arenas.4096.small.ndalloc\0",
    )? + live(
        "stats.arenas.4096.large.nmalloc\0",
        "stats.arenas.4096.large.ndalloc\0",
    )?;
    let read = |name: &'static str, r: tikv_jemalloc_ctl::Result<usize>| {
        r.map(|v| v as u64)
            .map_err(|cause| StatsError::Read { name, cause })
    };
    Ok(HeapReading {
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        allocated: read("stats.allocated", stats::allocated::read())?
            .saturating_sub(read_size("stats.arenas.4096.tcache_bytes\0")?),
        active: read("stats.active", stats::active::read())?,
        resident: read("stats.resident", stats::resident::read())?,
        mapped: read("stats.mapped", stats::mapped::read())?,
        retained: read("stats.retained", stats::retained::read())?,
        metadata: read("stats.metadata", stats::metadata::read())?,
        rss_anon,
        vm_rss,
        vm_hwm,
        live_allocations,
    })
}

/// RssAnon, VmRSS and VmHWM in bytes; zero where /proc is not available.
fn proc_status() -> (u64, u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0, 0);
    };
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |v| v * 1024)
    };
    (kb("RssAnon:"), kb("VmRSS:"), kb("VmHWM:"))
}

/// Bytes allocated and freed by the calling thread since it started
/// (jemalloc `thread.allocated` / `thread.deallocated`): unlike the global
/// stats, unaffected by other threads.
pub fn thread_allocation_totals() -> (u64, u64) {
    use tikv_jemalloc_ctl::thread;
    let a = thread::allocatedp::read().map(|p| p.get()).unwrap_or(0);
    let d = thread::deallocatedp::read().map(|p| p.get()).unwrap_or(0);
    (a, d)
}

/// Whether jemalloc profiling is on (`_RJEM_MALLOC_CONF=prof:true`). Always
/// false when this crate is built without its `mem-profiling` feature.
pub fn profiling_enabled() -> bool {
    #[cfg(feature = "mem-profiling")]
    {
        tikv_jemalloc_ctl::profiling::prof::read().unwrap_or(false)
    }
    #[cfg(not(feature = "mem-profiling"))]
    {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "heap profiling is off (start the process with _RJEM_MALLOC_CONF=prof:true, on a build with the mem-profiling feature)"
    )]
    Disabled,
    #[error("profile path {0} contains a NUL byte")]
    BadPath(String),
    #[error("jemalloc prof.dump to {path} failed: {reason}")]
    Dump { path: String, reason: String },
}

/// Writes a heap profile to `path` (jemalloc `prof.dump`).
pub fn dump_profile(path: &Path) -> Result<(), ProfileError> {
    if !profiling_enabled() {
        return Err(ProfileError::Disabled);
    }
    let shown = path.display().to_string();
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| ProfileError::BadPath(shown.clone()))?;
    // SAFETY: prof.dump takes a `const char *` file name; `c` is a valid
    // NUL-terminated string that outlives the call.
    unsafe { raw::write(b"prof.dump\0", c.as_ptr()) }.map_err(|e| ProfileError::Dump {
        path: shown,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sees_a_large_allocation_and_its_release() {
        // Other tests of this binary allocate tens of MB at the same time:
        // 512 MiB stands well clear of them.
        const BIG: u64 = 512 << 20;
        let before = snapshot().expect("stats");
        assert!(before.allocated > 0 && before.vm_rss > 0 && before.rss_anon > 0);
        let block = vec![1u8; BIG as usize];
        let during = snapshot().expect("stats");
        assert!(
            during.allocated >= before.allocated + BIG - (128 << 20),
            "{before:?} {during:?}"
        );
        assert!(during.rss_anon >= BIG - (128 << 20), "{during:?}");
        assert!(during.live_allocations >= 1);
        drop(block);
        let after = snapshot().expect("stats");
        assert!(
            after.allocated + BIG - (128 << 20) < during.allocated,
            "{after:?}"
        );
    }

    #[test]
    fn thread_totals_count_this_threads_allocations_only() {
        let (a0, d0) = thread_allocation_totals();
        let v = vec![0u8; 1 << 20];
        let (a1, _) = thread_allocation_totals();
        drop(v);
        let (_, d1) = thread_allocation_totals();
        assert!(a1 - a0 >= 1 << 20);
        assert!(d1 - d0 >= 1 << 20);
    }

    #[test]
    fn dump_without_profiling_says_how_to_enable_it() {
        if profiling_enabled() {
            return; // The test process was started with profiling on.
        }
        let err = dump_profile(Path::new("/tmp/x.heap")).expect_err("disabled");
        assert!(err.to_string().contains("_RJEM_MALLOC_CONF=prof:true"));
    }
}
