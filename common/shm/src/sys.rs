//! Owns the libc calls of the store: the system-wide coarse monotonic clock of
//! last-touch times (with a per-thread test offset) and whether a pid is alive.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CLOCK_MONOTONIC_COARSE in nanoseconds: system wide, so last-touch times
/// written by one process can be aged by another on the same host. Coarse
/// (one scheduler tick, 1-4 ms): the ages it measures are stale timeouts
/// of a second or more, and it is read several times per event, where the
/// fine clock was the eventbuilder's largest single cost with 128 B
/// fragments (7 % of its CPU time in `perf`).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is valid for writes of one timespec.
    let mut rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, ts.as_mut_ptr()) };
    if rc != 0 {
        // A kernel without the coarse clock: the fine one, never a clock
        // stuck at 0 (which would never age a buffer).
        // SAFETY: as above.
        rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    }
    if rc != 0 {
        return 0;
    }
    // SAFETY: clock_gettime returned 0, so it initialized `ts`.
    let ts = unsafe { ts.assume_init() };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The clock of last-touch times: CLOCK_MONOTONIC_COARSE, plus (in tests) a
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

/// Sleeps while `word` holds `expected` (FUTEX_WAIT, shared: the word may
/// be in memory another process maps). Returns on a wake, a change of the
/// word, or a signal; the caller checks its condition again.
pub(crate) fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // FUTEX_WAIT only reads it; the timeout (relative) is null or points to
    // a timespec that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wakes every sleeper on `word` (FUTEX_WAKE, shared).
pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: as for futex_wait; FUTEX_WAKE does not touch the word.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `path`, which must not exist, read-write and exactly mode 0600
/// whatever the umask: how every segment file starts.
pub(crate) fn create_private(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// A pidfd for `pid` (pidfd_open(2)): readable once the process exits.
/// Fails when there is no such process in this pid namespace.
pub fn pidfd_open(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let p = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if p <= 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The kernel's boot id: the same for every process of one boot of one
/// host, whatever its network or mount namespace.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
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
