//! Leak, stale or stable per process kept up over many runs, from what each
//! run left after its stop (`daqctl heap across-runs`, and session.json of
//! `daqctl run`).

use super::table::{load, trusted, warn_untrusted};
use crate::analysis::trend::{LEAK_BYTES_PER_EVENT, LEAK_MIN_BYTES, theil_sen};
use crate::verdict::Verdict;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One run of a process kept up over many runs: its heap after the run's
/// stop and the events it handled in that run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunHeap {
    pub run: u32,
    /// jemalloc allocated bytes at `after_stop`.
    pub after_stop_bytes: u64,
    /// Events the process handled in this run.
    pub events: u64,
}

/// The verdict of one process over many runs ([`across_runs`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcrossRuns {
    pub runs: usize,
    pub events: u64,
    /// Theil-Sen slope of after_stop against the events handled so far.
    pub slope_bytes_per_event: Option<f64>,
    /// Theil-Sen slope of after_stop against the run index.
    pub slope_bytes_per_run: Option<f64>,
    /// after_stop of the first run minus the baseline (before_start of the
    /// first run), when a baseline was given.
    pub first_step_bytes: Option<i64>,
    /// slope_bytes_per_event times the events of all runs but the first.
    pub growth_with_events_bytes: f64,
    pub verdict: Verdict,
}

/// [`across_runs`]'s rule in words, for records that carry its verdicts.
pub const ACROSS_RUNS_RULE: &str = "leak = the Theil-Sen trend of jemalloc allocated after stop against the events handled so far grows by at least 8 bytes per event AND by at least 1 MiB over the runs after the first; stale = a step of at least 1 MiB (after the first stop, or between runs) that does not grow with events; stable otherwise";

/// Leak, stale or stable for a process kept up over many runs, from its
/// `after_stop` heap per run (in run order) and, optionally, its heap
/// before the first start. Memory left after every stop that grows with the
/// events handled (Theil-Sen over cumulative events, so one odd run does not
/// decide) is a leak at the run scale; a step that does not grow again is
/// stale; neither is stable. Thresholds: [`LEAK_BYTES_PER_EVENT`] and
/// [`LEAK_MIN_BYTES`]. Fewer than two runs can only be stale or stable.
pub fn across_runs(baseline_bytes: Option<u64>, runs: &[RunHeap]) -> AcrossRuns {
    let mut cumulative = 0u64;
    let by_events: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| {
            cumulative += r.events;
            (cumulative as f64, r.after_stop_bytes as f64)
        })
        .collect();
    let by_run: Vec<(f64, f64)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64, r.after_stop_bytes as f64))
        .collect();
    let slope_ev = theil_sen(&by_events);
    let slope_run = theil_sen(&by_run);
    let later_events = cumulative.saturating_sub(runs.first().map_or(0, |r| r.events));
    let growth = slope_ev.map_or(0.0, |s| s * later_events as f64);
    let first_step = match (baseline_bytes, runs.first()) {
        (Some(b), Some(r)) => Some(r.after_stop_bytes as i64 - b as i64),
        _ => None,
    };
    let spread = {
        let lo = runs.iter().map(|r| r.after_stop_bytes).min().unwrap_or(0);
        let hi = runs.iter().map(|r| r.after_stop_bytes).max().unwrap_or(0);
        (hi - lo) as f64
    };
    let leak = runs.len() >= 2
        && growth >= LEAK_MIN_BYTES
        && slope_ev.is_some_and(|s| s >= LEAK_BYTES_PER_EVENT);
    let verdict = if leak {
        Verdict::Leak
    } else if first_step.is_some_and(|s| s as f64 >= LEAK_MIN_BYTES) || spread >= LEAK_MIN_BYTES {
        Verdict::Stale
    } else {
        Verdict::Stable
    };
    AcrossRuns {
        runs: runs.len(),
        events: cumulative,
        slope_bytes_per_event: slope_ev,
        slope_bytes_per_run: slope_run,
        first_step_bytes: first_step,
        growth_with_events_bytes: growth,
        verdict,
    }
}

/// `daqctl heap across-runs RUN...`: [`across_runs`] per process of the
/// records (in the given order), with before_start of the first as
/// baseline; and whether every record can be trusted ([`trusted`]).
pub fn across_run_records(
    roots: &[std::path::PathBuf],
) -> Result<(std::collections::BTreeMap<String, AcrossRuns>, String, bool)> {
    let summaries = roots.iter().map(|r| load(r)).collect::<Result<Vec<_>>>()?;
    for (root, s) in roots.iter().zip(&summaries) {
        warn_untrusted(root, s);
    }
    let all_trusted = summaries.iter().all(trusted);
    let mut per_process: std::collections::BTreeMap<String, (Option<u64>, Vec<RunHeap>)> =
        Default::default();
    for s in &summaries {
        for (name, p) in &s.processes {
            let Some(after) = p.heap.get("after_stop") else {
                continue;
            };
            let entry = per_process
                .entry(name.clone())
                .or_insert_with(|| (p.heap.get("before_start").map(|h| h.allocated), Vec::new()));
            entry.1.push(RunHeap {
                run: s.run,
                after_stop_bytes: after.allocated,
                events: after.events,
            });
        }
    }
    if per_process.is_empty() {
        bail!("no process of these runs has an after_stop heap snapshot");
    }
    let rows: std::collections::BTreeMap<String, AcrossRuns> = per_process
        .into_iter()
        .map(|(n, (base, runs))| (n, across_runs(base, &runs)))
        .collect();
    let mut out = format!(
        "  {:<16} {:>5} {:>12} {:>12} {:>14} {:>14}  verdict\n",
        "process", "runs", "events", "B/event", "KiB/run", "first step KiB"
    );
    for (name, r) in &rows {
        let opt = |v: Option<f64>, scale: f64| {
            v.map_or_else(|| "-".into(), |v| format!("{:.1}", v / scale))
        };
        out.push_str(&format!(
            "  {:<16} {:>5} {:>12} {:>12} {:>14} {:>14}  {}\n",
            name,
            r.runs,
            r.events,
            opt(r.slope_bytes_per_event, 1.0),
            opt(r.slope_bytes_per_run, 1024.0),
            opt(r.first_step_bytes.map(|v| v as f64), 1024.0),
            r.verdict
        ));
    }
    Ok((rows, out, all_trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(after: &[u64], events: u64) -> Vec<RunHeap> {
        after
            .iter()
            .enumerate()
            .map(|(i, &a)| RunHeap {
                run: i as u32 + 1,
                after_stop_bytes: a,
                events,
            })
            .collect()
    }

    #[test]
    fn after_stop_growing_with_the_events_over_runs_is_a_leak() {
        // 100 000 events a run, 64 B/event left behind, plus +-100 KiB noise.
        let after: Vec<u64> = (0..5u64)
            .map(|i| 10_000_000 + (i + 1) * 6_400_000 + (i % 2) * 100_000)
            .collect();
        let a = across_runs(Some(10_000_000), &runs(&after, 100_000));
        assert_eq!(a.verdict, Verdict::Leak, "{a:?}");
        let e = a.slope_bytes_per_event.expect("slope");
        assert!((e - 64.0).abs() < 2.0, "{e}");
        assert_eq!(a.runs, 5);
        assert_eq!(a.events, 500_000);
    }

    #[test]
    fn a_one_time_step_after_the_first_run_is_stale() {
        // +5 MB after the first run, then flat within 50 KB.
        let a = across_runs(
            Some(10_000_000),
            &runs(&[15_000_000, 15_050_000, 14_990_000, 15_020_000], 100_000),
        );
        assert_eq!(a.verdict, Verdict::Stale, "{a:?}");
        assert_eq!(a.first_step_bytes, Some(5_000_000));
    }

    #[test]
    fn flat_after_stop_heaps_are_stable_and_one_odd_run_does_not_decide() {
        let a = across_runs(
            Some(10_000_000),
            &runs(&[10_010_000, 10_020_000, 9_990_000, 10_000_000], 100_000),
        );
        assert_eq!(a.verdict, Verdict::Stable, "{a:?}");
        // One run leaves 3 MB (a cache filled once), the others do not.
        let b = across_runs(
            Some(10_000_000),
            &runs(
                &[10_000_000, 10_010_000, 13_000_000, 10_020_000, 10_000_000],
                100_000,
            ),
        );
        assert_eq!(b.verdict, Verdict::Stale, "{b:?}");
        // A single run cannot show growth run over run.
        let c = across_runs(None, &runs(&[50_000_000], 100_000));
        assert_eq!(c.verdict, Verdict::Stable, "{c:?}");
        assert_eq!(c.slope_bytes_per_event, None);
        // Growth without events is no leak at the event scale.
        let d = across_runs(None, &runs(&[10_000_000, 20_000_000, 30_000_000], 0));
        assert_ne!(d.verdict, Verdict::Leak, "{d:?}");
    }
}
