//! The live counters of a process's current run: the one `Counters` record
//! (defined in `daq.proto`, stored as is in `summary.json`) behind a lock,
//! shared by the process's tasks and updated once per batch.
//!
//! There is no per-process mirror of the record to keep in sync: a process
//! updates the fields that apply to it, and `Status` returns a copy.

use daq_format::record::Counters;
use std::sync::{Mutex, MutexGuard};

/// The counters of the current run. Cheap to update (one uncontended lock
/// per batch); never updated per fragment.
#[derive(Debug, Default)]
pub struct LiveCounters(Mutex<Counters>);

impl LiveCounters {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain integers: still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the counters (e.g. `|c| c.events_sent += n`).
    pub fn update<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        f(&mut self.lock())
    }

    /// Reads from the counters without copying them.
    pub fn read<R>(&self, f: impl FnOnce(&Counters) -> R) -> R {
        f(&self.lock())
    }

    /// A copy of every counter (for `Status` and the run record).
    pub fn snapshot(&self) -> Counters {
        self.lock().clone()
    }

    /// Zeroes every counter (at the start of a run).
    pub fn reset(&self) {
        *self.lock() = Counters::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_read_back_and_reset_clears_everything() {
        let c = LiveCounters::default();
        c.update(|c| {
            c.events_sent += 3;
            c.data_files.push("a.h5".into());
        });
        c.update(|c| c.events_sent += 2);
        assert_eq!(c.read(|c| c.events_sent), 5);
        assert_eq!(c.snapshot().data_files, ["a.h5"]);
        c.reset();
        assert_eq!(c.snapshot(), Counters::default());
    }
}
