//! Owns the libc calls of the store: the system-wide monotonic clock of
//! last-touch times (with a per-thread test offset) and whether a pid is alive.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CLOCK_MONOTONIC in nanoseconds: system wide, so last-touch times written by
/// one process can be aged by another on the same host.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is valid for writes of one timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: clock_gettime returned 0, so it initialized `ts`.
    let ts = unsafe { ts.assume_init() };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The clock of last-touch times: CLOCK_MONOTONIC, plus (in tests) a
/// per-thread offset that lets tests age buffers without sleeping.
pub(crate) fn now_ns() -> u64 {
    #[cfg(test)]
    let skew = test_clock::SKEW_NS.with(|s| s.get());
    #[cfg(not(test))]
    let skew = 0;
    monotonic_ns().saturating_add(skew)
}

pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether `pid` names a live process (an existing one we may not signal
/// counts as live). 0 and out-of-range pids are not live.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    if cfg!(miri) {
        // Miri cannot call kill(2); in tests every other pid counts as dead.
        return pid == std::process::id();
    }
    // SAFETY: signal 0 only checks existence and permission; nothing is sent.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
pub(crate) mod test_clock {
    thread_local! {
        pub(super) static SKEW_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Moves this thread's clock `d` forward.
    pub(crate) fn advance(d: std::time::Duration) {
        SKEW_NS.with(|s| s.set(s.get().saturating_add(super::duration_ns(d))));
    }
}
