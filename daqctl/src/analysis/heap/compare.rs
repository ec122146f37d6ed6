//! `daqctl heap compare`: a short and a long run side by side; growth left
//! after stop that grows with the events is a leak, the same growth in
//! both is stale allocations.

use super::table::{load, signed_kib, trusted, warn_untrusted};
use crate::analysis::trend::{LEAK_BYTES_PER_EVENT, LEAK_MIN_BYTES};
use crate::verdict::Verdict;
use anyhow::{Result, bail};
use daq_format::record::RunSummary;
use serde::Serialize;
use std::path::Path;

/// The classification of one process in a short-vs-long comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub process: String,
    pub events_a: u64,
    pub events_b: u64,
    /// after_stop - before_start, bytes.
    pub growth_a: i64,
    pub growth_b: i64,
    pub bytes_per_event_b: f64,
    pub verdict: Verdict,
}

/// Classifies one process from the growth left after a short run (a) and a
/// long run (b): a leak grows with the events handled, stale allocations
/// are the same whatever the length.
pub fn classify(
    process: &str,
    events_a: u64,
    growth_a: i64,
    events_b: u64,
    growth_b: i64,
) -> Comparison {
    let per_event_b = if events_b > 0 {
        growth_b as f64 / events_b as f64
    } else {
        0.0
    };
    let more_events = events_b as f64 / (events_a.max(1)) as f64;
    let verdict = if growth_a.abs().max(growth_b.abs()) as f64 <= LEAK_MIN_BYTES {
        Verdict::Stable
    } else if growth_b as f64 > LEAK_MIN_BYTES
        && per_event_b >= LEAK_BYTES_PER_EVENT
        && more_events > 1.5
        && growth_b as f64 >= growth_a.max(0) as f64 * (1.0 + (more_events - 1.0) / 2.0)
    {
        // b handled k times the events and its growth is at least halfway
        // to k times a's: it grows with the work.
        Verdict::Leak
    } else {
        Verdict::Stale
    };
    Comparison {
        process: process.to_string(),
        events_a,
        events_b,
        growth_a,
        growth_b,
        bytes_per_event_b: per_event_b,
        verdict,
    }
}

/// `daqctl heap compare RUN_A RUN_B` (a: the shorter run). Returns the
/// rows, the table and whether both records can be trusted ([`trusted`]).
pub fn compare(a: &Path, b: &Path) -> Result<(Vec<Comparison>, String, bool)> {
    let (mut sa, mut sb) = (load(a)?, load(b)?);
    warn_untrusted(a, &sa);
    warn_untrusted(b, &sb);
    let all_trusted = trusted(&sa) && trusted(&sb);
    let events = |s: &RunSummary, p: &str| {
        s.processes
            .get(p)
            .and_then(|r| r.heap.get("before_stop"))
            .map_or(0, |h| h.events)
    };
    if events(&sa, "boardreader-0") > events(&sb, "boardreader-0") {
        std::mem::swap(&mut sa, &mut sb);
    }
    let mut rows = Vec::new();
    for (name, pa) in &sa.processes {
        let Some(pb) = sb.processes.get(name) else {
            continue;
        };
        let left = |r: &daq_format::record::ProcessRecord| -> Option<(i64, u64)> {
            let start = r.heap.get("before_start")?;
            let after = r.heap.get("after_stop")?;
            Some((
                after.allocated as i64 - start.allocated as i64,
                after.events,
            ))
        };
        let (Some((ga, ea)), Some((gb, eb))) = (left(pa), left(pb)) else {
            continue;
        };
        rows.push(classify(name, ea, ga, eb, gb));
    }
    if rows.is_empty() {
        bail!("the two runs have no process with heap snapshots in common");
    }
    let mut out = format!(
        "short run {} ({:.1} s) vs long run {} ({:.1} s): allocated after stop minus before start\n",
        sa.run, sa.duration_s, sb.run, sb.duration_s
    );
    out.push_str(&format!(
        "  {:<16} {:>12} {:>12} {:>14} {:>14} {:>12}  verdict\n",
        "process", "events a", "events b", "growth a KiB", "growth b KiB", "B/event b"
    ));
    for r in &rows {
        out.push_str(&format!(
            "  {:<16} {:>12} {:>12} {:>14} {:>14} {:>12.1}  {}\n",
            r.process,
            r.events_a,
            r.events_b,
            signed_kib(r.growth_a),
            signed_kib(r.growth_b),
            r.bytes_per_event_b,
            r.verdict
        ));
    }
    out.push_str(&format!(
        "  leak: grows with the events (>= {LEAK_BYTES_PER_EVENT} B/event and > {:.0} KiB); stale: the same in both runs; stable: below {:.0} KiB\n",
        LEAK_MIN_BYTES / 1024.0,
        LEAK_MIN_BYTES / 1024.0
    ));
    Ok((rows, out, all_trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_proportional_to_events_is_a_leak_and_constant_growth_is_stale() {
        // 10x the events, 10x the growth at 100 B/event.
        let c = classify("aggregator-0", 100_000, 10_000_000, 1_000_000, 100_000_000);
        assert_eq!(c.verdict, Verdict::Leak);
        assert_eq!(c.bytes_per_event_b, 100.0);
        // 10x the events, the same 5 MB both times: allocated once, kept.
        assert_eq!(
            classify("eventbuilder-0", 100_000, 5_000_000, 1_000_000, 5_100_000).verdict,
            Verdict::Stale
        );
        // Tiny differences either way.
        assert_eq!(
            classify("boardreader-0", 100_000, 20_000, 1_000_000, -50_000).verdict,
            Verdict::Stable
        );
    }
}
