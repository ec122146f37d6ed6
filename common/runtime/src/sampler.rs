//! The periodic heap sampler: while a process runs, it appends one CSV row
//! per interval with the heap snapshot and the number of events the process
//! has handled, to a file on the process's own host (run control serves the
//! rows to daqctl, which writes `<record>/heap/<process>.csv`).
//!
//! The CSV is the [`HeapSnapshot`] record, written and read with the `csv`
//! crate and serde: a header line of its field names (`unix_ms`,
//! `allocated`, ..., `events`), then one row per sample. Columns are matched
//! by name, so adding a field to the message keeps old files readable.
//!
//! A heap-statistics read that fails writes no row (never a row of zeros,
//! which an analysis would read as a flat, stable heap): it is counted in
//! the run's [`StatsFailures`], which run control reports.
//!
//! With jemalloc profiling on, the sampler also dumps a heap profile on its
//! timer ([`TimedProfiles`]): live bytes per call site over the run, the
//! input of the per-site leak verdict. The dumps are files on the process's
//! host, thinned as they accumulate so that a 15-hour soak keeps at most
//! [`MAX_TIMED_PROFILES`] of them, evenly spaced.

use daq_alloc::{self as heap, StatsError};
use proto::HeapSnapshot;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// Reads the heap now (daq-alloc) as the `HeapSnapshot` of the wire, the
/// run record and the heap CSV, with the events the process had handled.
pub fn heap_snapshot(events: u64) -> Result<HeapSnapshot, StatsError> {
    let r = heap::snapshot()?;
    Ok(HeapSnapshot {
        unix_ms: r.unix_ms,
        allocated: r.allocated,
        active: r.active,
        resident: r.resident,
        mapped: r.mapped,
        retained: r.retained,
        metadata: r.metadata,
        rss_anon: r.rss_anon,
        vm_rss: r.vm_rss,
        vm_hwm: r.vm_hwm,
        live_allocations: r.live_allocations,
        events,
    })
}

/// One row of a heap CSV, with its time since the first row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub elapsed_s: f64,
    pub snapshot: HeapSnapshot,
}

/// Counts the events a process has handled (for the CSV's `events` column).
pub type EventCount = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The heap-statistics reads of a run that failed (the `heap_stats_failed`
/// counter), with the first few named, for the stop reply.
#[derive(Debug, Default)]
pub struct StatsFailures {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl StatsFailures {
    /// Counts a failed read at `at` (a boundary label, or `sample`).
    pub fn record(&self, at: &str, e: &StatsError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        warn!(at, error = %e, "heap statistics unreadable; no snapshot taken");
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 5 {
            first.push(format!("{at}: {e}"));
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Forgets the last run's failures (at start).
    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The problem to report, if any read failed.
    pub fn problem(&self) -> Option<String> {
        let n = self.count();
        (n > 0).then(|| {
            let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            format!(
                "heap statistics unreadable {n} times; those snapshots are missing from the record, so no heap verdict can be given: {}",
                first.join("; ")
            )
        })
    }
}

/// Most timed profiles a run keeps: past it every other one is removed and
/// the dump period doubles (so memory and disk stay flat however long the
/// run; at ~50 KB a dump, a few MB per process).
pub const MAX_TIMED_PROFILES: usize = 96;

/// One heap profile dumped on the sampler's timer.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedProfile {
    pub unix_ms: u64,
    /// Events the process had handled when it was dumped.
    pub events: u64,
    pub path: PathBuf,
}

#[derive(Debug, Default)]
struct Timed {
    dumps: Vec<TimedProfile>,
    /// Dump every `stride`-th tick (doubles at each thinning).
    stride: u64,
    ticks: u64,
    seq: u64,
    failed: bool,
}

/// The heap profiles a run's sampler dumps on its timer (with jemalloc
/// profiling on), as files named `<stem>.t<n>.heap` in the temporary
/// directory, removed when cleared or dropped.
#[derive(Debug)]
pub struct TimedProfiles {
    stem: String,
    inner: Mutex<Timed>,
}

impl TimedProfiles {
    /// `stem` prefixes every dump's file name (the process and its pid).
    pub fn new(stem: impl Into<String>) -> Self {
        Self {
            stem: stem.into(),
            inner: Mutex::new(Timed {
                stride: 1,
                ..Timed::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timed> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One sampler tick: dumps a profile on every `stride`-th tick, and
    /// always when `last` (the run's end). Thins past [`MAX_TIMED_PROFILES`].
    /// Does nothing with profiling off.
    pub fn tick(&self, unix_ms: u64, events: u64, last: bool) {
        if !heap::profiling_enabled() {
            return;
        }
        let mut t = self.lock();
        let due = t.ticks.is_multiple_of(t.stride);
        t.ticks += 1;
        if !(due || last) {
            return;
        }
        t.seq += 1;
        let path = std::env::temp_dir().join(format!("{}.t{}.heap", self.stem, t.seq));
        match heap::dump_profile(&path) {
            Ok(()) => t.dumps.push(TimedProfile {
                unix_ms,
                events,
                path,
            }),
            Err(e) => {
                if !std::mem::replace(&mut t.failed, true) {
                    warn!(error = %e, "timed heap profile not written");
                }
                return;
            }
        }
        if t.dumps.len() > MAX_TIMED_PROFILES {
            let mut i = 0;
            t.dumps.retain(|d| {
                let keep = i % 2 == 0;
                i += 1;
                if !keep {
                    let _ = std::fs::remove_file(&d.path);
                }
                keep
            });
            t.stride *= 2;
        }
    }

    /// The dumps kept so far, in time order.
    pub fn list(&self) -> Vec<TimedProfile> {
        self.lock().dumps.clone()
    }

    /// Forgets every dump, removing its file (at the start of a run).
    pub fn clear(&self) {
        let mut t = self.lock();
        for d in t.dumps.drain(..) {
            let _ = std::fs::remove_file(d.path);
        }
        *t = Timed {
            stride: 1,
            ..Timed::default()
        };
    }
}

impl Drop for TimedProfiles {
    fn drop(&mut self) {
        self.clear();
    }
}

pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling into `path` (appending; the header is written when
    /// the file is new) every `interval`, the first row at once.
    pub fn start(
        path: PathBuf,
        interval: Duration,
        events: EventCount,
        failures: Arc<StatsFailures>,
    ) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Self::start_in(file, path, interval, events, failures, None)
    }

    /// Starts sampling into an open `file` (written at its end); `path`
    /// names it in logs. With `profiles`, each row is followed by a timed
    /// heap profile when one is due ([`TimedProfiles::tick`]).
    pub fn start_in(
        file: std::fs::File,
        path: PathBuf,
        interval: Duration,
        events: EventCount,
        failures: Arc<StatsFailures>,
        profiles: Option<Arc<TimedProfiles>>,
    ) -> std::io::Result<Self> {
        // The header only when the file is new (a sampler may append).
        let mut csv = csv::WriterBuilder::new()
            .has_headers(file.metadata()?.len() == 0)
            .from_writer(file);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first row at once, then one per interval, the last at stop.
            let mut first = true;
            loop {
                let last = if std::mem::take(&mut first) {
                    false
                } else {
                    tokio::select! {
                        biased;
                        _ = stopped.wait_for(|s| *s) => true,
                        _ = tick.tick() => false,
                    }
                };
                let row = match heap_snapshot(events()) {
                    Ok(s) => s,
                    Err(e) => {
                        failures.record("sample", &e);
                        if last {
                            return;
                        }
                        continue;
                    }
                };
                if let Err(e) = csv.serialize(row).and_then(|()| Ok(csv.flush()?)) {
                    warn!(path = %path.display(), error = %e, "heap sample not written; sampling ends");
                    return;
                }
                if let Some(p) = &profiles {
                    p.tick(row.unix_ms, row.events, last);
                }
                if last {
                    return;
                }
            }
        });
        Ok(Self { stop, task })
    }

    /// Writes a last row and ends the sampler.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read heap samples {path}: {source}")]
pub struct CsvError {
    path: String,
    source: csv::Error,
}

/// Reads a heap CSV written by [`Sampler`]. A last line without its
/// newline (a row cut short by a crash, or being written) is left out.
pub fn read_csv(path: &Path) -> Result<Vec<Sample>, CsvError> {
    let err = |source| CsvError {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read(path).map_err(|e| err(e.into()))?;
    Ok(samples(whole_rows(&text).map_err(err)?))
}

/// Every row a [`Sampler`] wrote so far into `file`, read from its start
/// without moving the writer's position.
pub fn read_rows(file: &std::fs::File) -> Result<Vec<HeapSnapshot>, CsvError> {
    use std::os::unix::fs::FileExt;
    let err = |source| CsvError {
        path: "heap samples".into(),
        source,
    };
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read_at(&mut chunk, bytes.len() as u64)
            .map_err(|e| err(e.into()))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    whole_rows(&bytes).map_err(err)
}

/// The rows of heap-CSV bytes, whole lines only: a row being written while
/// the bytes were read (or cut by a crash) is left out.
fn whole_rows(bytes: &[u8]) -> Result<Vec<HeapSnapshot>, csv::Error> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    csv::Reader::from_reader(bytes.get(..end).unwrap_or_default())
        .into_deserialize::<HeapSnapshot>()
        .collect()
}

/// Writes `rows` as a heap CSV at `path` (what [`Sampler`] writes, for rows
/// that came over gRPC).
pub fn write_csv(path: &Path, rows: &[HeapSnapshot]) -> Result<(), CsvError> {
    let err = |source| CsvError {
        path: path.display().to_string(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    for r in rows {
        w.serialize(r).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
}

/// Rows as samples, timed from the first.
pub fn samples(rows: Vec<HeapSnapshot>) -> Vec<Sample> {
    let t0 = rows.first().map_or(0, |r| r.unix_ms);
    rows.into_iter()
        .map(|snapshot| Sample {
            elapsed_s: snapshot.unix_ms.saturating_sub(t0) as f64 / 1000.0,
            snapshot,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sampler_writes_rows_that_read_back() {
        let dir = std::env::temp_dir().join(format!("daq-sampler-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("heap").join("p.csv");
        let n = Arc::new(AtomicU64::new(0));
        let n2 = n.clone();
        let s = Sampler::start(
            path.clone(),
            Duration::from_secs(3600),
            Arc::new(move || n2.fetch_add(5, Ordering::Relaxed) + 5),
            Arc::default(),
        )
        .expect("starts");
        s.stop().await;
        let rows = read_csv(&path).expect("reads");
        // The first row is written at once; stop writes the last.
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].snapshot.events, rows[1].snapshot.events), (5, 10));
        assert!(rows[1].snapshot.allocated > 0);
        assert_eq!(rows[0].elapsed_s, 0.0);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.starts_with("unix_ms,allocated,active,"), "{text}");
        assert!(
            text.lines()
                .next()
                .is_some_and(|h| h.ends_with(",events,vm_hwm"))
        );
        // A row cut short at the end of the file (a crash mid-write) is left out.
        let cut = format!("{}{}", text, &text.lines().nth(1).expect("a row")[..5]);
        std::fs::write(&path, cut).expect("write");
        assert_eq!(read_csv(&path).expect("reads").len(), 2);
        std::fs::write(&path, "unix_ms,allocated\n1,2,3\n").expect("write");
        let err = read_csv(&path).expect_err("long row");
        assert!(err.to_string().contains("p.csv"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn rows_in_an_unnamed_file_read_back_while_and_after_sampling() {
        let file = tempfile::tempfile().expect("tempfile");
        let reader = file.try_clone().expect("clone");
        let n = Arc::new(AtomicU64::new(0));
        let n2 = n.clone();
        let s = Sampler::start_in(
            file,
            PathBuf::from("unnamed"),
            Duration::from_secs(3600),
            Arc::new(move || n2.fetch_add(1, Ordering::Relaxed) + 1),
            Arc::default(),
            None,
        )
        .expect("starts");
        // The first row is written at once by the sampler's task.
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let rows = read_rows(&reader).expect("reads");
                if !rows.is_empty() {
                    return rows;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("first row");
        assert_eq!(first.len(), 1);
        s.stop().await;
        let rows = read_rows(&reader).expect("reads");
        assert_eq!(rows.iter().map(|r| r.events).collect::<Vec<_>>(), [1, 2]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("copy.csv");
        write_csv(&path, &rows).expect("writes");
        let back: Vec<HeapSnapshot> = read_csv(&path)
            .expect("reads")
            .into_iter()
            .map(|s| s.snapshot)
            .collect();
        assert_eq!(back, rows);
    }
}
