//! CPU time as the bench reads it: a process's from `/proc/<pid>/stat`
//! (utime + stime, clock ticks) and the calling thread's from
//! `CLOCK_THREAD_CPUTIME_ID` (nanoseconds); and what one measurement moved
//! in how much wall and CPU time (`Measured`), which the limits and the
//! stages return.

use std::time::Duration;

/// What one measurement of a machine limit or a stage moved.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Payload bytes moved.
    pub bytes: u64,
    /// Items (fragments, events, blocks, copies).
    pub items: u64,
    pub wall: Duration,
    /// The measuring thread's CPU time, for per-core rates.
    pub cpu: Option<Duration>,
}

impl Measured {
    pub fn mb_s(bytes: u64, t: Duration) -> f64 {
        bytes as f64 / 1e6 / t.as_secs_f64().max(1e-9)
    }
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/<pid>/stat`; `None` once the process is gone or the file does
/// not parse.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    let per_s = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_secs_f64(ticks as f64 / per_s as f64))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // `rest` starts at field 3 (state): utime is field 14, its 12th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 4 0 123 456 789";
        assert_eq!(stat_cpu_ticks(line), Some(300));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_and_thread_have_used_cpu() {
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu() > Duration::ZERO, "{x}");
        assert!(process_cpu(std::process::id()).is_some());
    }
}
