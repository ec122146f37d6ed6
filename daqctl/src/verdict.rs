//! The verdicts daqctl gives: a process's heap verdict ([`Verdict`]:
//! stable, stale, leak, unreadable), from every analysis (soak trend,
//! short-vs-long comparison, across runs), and the exit status of every
//! command ([`Exit`]; README "Exit codes").

use serde::{Deserialize, Serialize};

/// What the heap of a process does: the verdict of every analysis (soak
/// trend, short-vs-long comparison, across runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No growth beyond the noise.
    Stable,
    /// Grown once (caches, connection buffers) and not growing with the work.
    Stale,
    /// Grows with the events handled.
    Leak,
    /// No verdict: the process's heap statistics could not be read at some
    /// point (`heap_stats_failed`), so its record has gaps that a trend
    /// would read as a flat heap. Ranks above every verdict.
    Unreadable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Stable => "stable",
            Verdict::Stale => "stale",
            Verdict::Leak => "leak",
            Verdict::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exit status of a command (README "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: all went well (nothing lost; every process stable or stale).
    Clean,
    /// 1: the run itself failed (a shortfall, a process died, a failed
    /// command) or its record cannot be trusted: lost data or unreadable
    /// heap statistics.
    Failed,
    /// 2: the command could not start because of what it was given: bad
    /// flags or arguments, a configuration or a file that is missing or
    /// not what it should be.
    BadInput,
    /// 3: the run went well and at least one process leaks.
    Leak,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Clean => 0,
            Exit::Failed => 1,
            Exit::BadInput => 2,
            Exit::Leak => 3,
        }
    }

    /// The exit status of a command that gives verdicts: Failed when the
    /// run (or a record analysed) lost data or a process's heap could not
    /// be read, since its verdicts are then not to be trusted; else Leak
    /// when any process leaks; else Clean (stable and stale alike).
    pub fn of_verdicts(trusted: bool, verdicts: impl IntoIterator<Item = Verdict>) -> Self {
        match verdicts.into_iter().max() {
            _ if !trusted => Exit::Failed,
            Some(Verdict::Unreadable) => Exit::Failed,
            Some(Verdict::Leak) => Exit::Leak,
            _ => Exit::Clean,
        }
    }

    /// Clean when `ok`, else Failed.
    pub fn ok_or_failed(ok: bool) -> Self {
        if ok { Exit::Clean } else { Exit::Failed }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_exits_failed_before_leak_before_clean() {
        use Verdict::*;
        assert_eq!(Exit::of_verdicts(true, [Stable, Stale]), Exit::Clean);
        assert_eq!(Exit::of_verdicts(true, []), Exit::Clean);
        assert_eq!(Exit::of_verdicts(true, [Stable, Leak, Stale]), Exit::Leak);
        assert_eq!(Exit::of_verdicts(true, [Leak, Unreadable]), Exit::Failed);
        assert_eq!(Exit::of_verdicts(false, [Leak]), Exit::Failed);
        assert_eq!(
            [Exit::Clean, Exit::Failed, Exit::BadInput, Exit::Leak].map(Exit::code),
            [0, 1, 2, 3]
        );
    }
}
