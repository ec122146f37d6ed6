//! What a soak shows while it runs: a progress bar with elapsed time,
//! fragments and each process's provisional per-event slope and verdict
//! (`e0 +66B/ev leak?`), from a bounded, evenly thinned window of samples.

use crate::analysis::soak::{trend, warmup};
use daq_runtime::sampler::Sample;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub fn progress_bar(total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}%  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The last samples of one process, kept for the progress bar's provisional
/// trend: at most [`Provisional::CAPACITY`] samples, evenly thinned (every
/// second one dropped when full, then only every 2^k-th one kept), so
/// daqctl's memory stays flat however long the soak. The full samples are
/// on disk (`heap/<process>.csv`, written by the process itself).
#[derive(Default)]
struct Thinned {
    samples: VecDeque<Sample>,
    stride: u64,
    seen: u64,
}

impl Thinned {
    fn push(&mut self, s: Sample) {
        let stride = self.stride.max(1);
        self.seen += 1;
        if !(self.seen - 1).is_multiple_of(stride) {
            return;
        }
        self.samples.push_back(s);
        if self.samples.len() >= Provisional::CAPACITY {
            let kept: VecDeque<Sample> = self.samples.iter().step_by(2).copied().collect();
            self.samples = kept;
            self.stride = stride * 2;
        }
    }
}

/// Each process's provisional trend and verdict while a soak runs.
pub struct Provisional {
    warmup: Duration,
    processes: BTreeMap<String, Thinned>,
}

impl Provisional {
    /// Samples kept per process.
    pub const CAPACITY: usize = 128;

    pub fn new(planned: Duration) -> Self {
        Self {
            warmup: warmup(planned),
            processes: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, elapsed: Duration, heaps: &[(String, proto::HeapReply)]) {
        for (name, h) in heaps {
            if let Some(c) = &h.current {
                self.processes
                    .entry(name.clone())
                    .or_default()
                    .push(Sample {
                        elapsed_s: elapsed.as_secs_f64(),
                        snapshot: *c,
                    });
            }
        }
    }

    /// `e0 +3.1B/ev leak?  a1 -0.2B/ev stable?` (`warm-up` before the trend starts).
    pub fn message(&self, elapsed: Duration) -> String {
        let mut msg = String::new();
        for (name, t) in &self.processes {
            let short: String = name
                .split('-')
                .map(|p| p.chars().next().unwrap_or('?'))
                .collect();
            if elapsed < self.warmup {
                let mib = t
                    .samples
                    .back()
                    .map_or(0.0, |s| s.snapshot.allocated as f64 / 1048576.0);
                msg.push_str(&format!(" {short} {mib:.1}M"));
                continue;
            }
            let samples: Vec<Sample> = t.samples.iter().copied().collect();
            let tr = trend(&samples, self.warmup.as_secs_f64());
            let slope = tr
                .slope_bytes_per_event
                .map_or_else(|| "-".into(), |v| format!("{v:+.0}"));
            msg.push_str(&format!(" {short} {slope}B/ev {}?", tr.verdict));
        }
        if elapsed < self.warmup {
            msg.push_str(" (warm-up)");
        }
        msg
    }
}

pub fn update_bar(bar: &ProgressBar, elapsed: Duration, fragments: u64, provisional: &Provisional) {
    bar.set_position(elapsed.as_secs());
    bar.set_message(format!("{fragments} frags{}", provisional.message(elapsed)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::soak::tests::samples;

    #[test]
    fn the_provisional_trend_keeps_a_bounded_evenly_thinned_window() {
        let mut t = Thinned::default();
        for s in samples(100, 0).into_iter().cycle().take(100_000) {
            t.push(s);
        }
        assert!(
            t.samples.len() < Provisional::CAPACITY,
            "{}",
            t.samples.len()
        );
        assert!(t.samples.len() >= Provisional::CAPACITY / 2 - 1);
        assert_eq!(t.seen, 100_000);
    }
}
