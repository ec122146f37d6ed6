//! Heap analysis: the per-process heap table of a run record, the comparison
//! of a short and a long run (leak or stale allocations), and the robust
//! trend (Theil-Sen) that soak verdicts use.

use anyhow::{Context, Result, bail};
use daq_format::record::{HEAP_BOUNDARIES, RunSummary};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// Run scale (`heap compare`, [`across_runs`]): smallest per-event growth
/// of what is left after stop called a leak: one allocation of jemalloc's
/// smallest size class (8 bytes) per event.
pub const LEAK_BYTES_PER_EVENT: f64 = 8.0;
/// Run scale: smallest growth left after stop that counts (below it: stable).
pub const LEAK_MIN_BYTES: f64 = 1024.0 * 1024.0;
/// Soak trend: smallest per-event slope called a leak.
pub const SOAK_BYTES_PER_EVENT: f64 = 8.0;
/// Soak trend: smallest growth over the analysed window called a leak;
/// below it the growth is within what the allocator's caches and the
/// in-flight buffers move by.
pub const SOAK_MIN_GROWTH_BYTES: f64 = 256.0 * 1024.0;
/// The thresholds in words (soak.json `threshold.why`).
pub const THRESHOLD_WHY: &str = "leak = the Theil-Sen trend of jemalloc allocated bytes after the warm-up grows by at least 256 KiB over the window AND by at least 8 bytes per event handled, over the whole window and over each of its halves; the median of pairwise slopes ignores the allocator's sawtooth, the 256 KiB floor is 1.6x the largest growth of a clean process in the 60 s campaign (163 KiB, an aggregator's HDF5 batch filling at 10 Hz), and the halves keep a one-time step (bounded queues filling during backpressure, 375 KiB once) from being called a leak; README 'How sensitive the soak verdict is'";

fn kib(v: i64) -> String {
    format!("{:.1}", v as f64 / 1024.0)
}

fn signed_kib(v: i64) -> String {
    format!("{:+.1}", v as f64 / 1024.0)
}

/// The heap table: process x before start / before stop / after stop
/// (jemalloc allocated, KiB), with the growth during the run and the growth
/// left after it, RssAnon after stop and the peak resident set (VmHWM).
pub fn table(s: &RunSummary) -> String {
    let mut out = format!(
        "  heap       {:<16} {:>13} {:>13} {:>13} {:>12} {:>12} {:>14} {:>13}\n",
        "allocated KiB",
        "before_start",
        "before_stop",
        "after_stop",
        "run growth",
        "left after",
        "rss_anon after",
        "peak rss"
    );
    for (name, p) in &s.processes {
        let get = |l: &str| p.heap.get(l).map(|h| h.allocated as i64);
        let [a, b, c] = HEAP_BOUNDARIES.map(get);
        let cell = |v: Option<i64>| v.map(kib).unwrap_or_else(|| "-".into());
        let diff = |x: Option<i64>, y: Option<i64>| match (x, y) {
            (Some(x), Some(y)) => signed_kib(y - x),
            _ => "-".into(),
        };
        let after = p.heap.get("after_stop").copied();
        out.push_str(&format!(
            "             {:<16} {:>13} {:>13} {:>13} {:>12} {:>12} {:>14} {:>13}\n",
            name,
            cell(a),
            cell(b),
            cell(c),
            diff(a, b),
            diff(a, c),
            cell(after.map(|h| h.rss_anon as i64)),
            cell(after.map(|h| h.vm_hwm as i64)),
        ));
    }
    out
}

/// The binary of a process (`aggregator-1` -> `<bin dir>/aggregator`).
fn binary_of(process: &str) -> Result<std::path::PathBuf> {
    let kind = process.rsplit_once('-').map_or(process, |(k, _)| k);
    Ok(crate::system::bin_dir()?.join(kind))
}

/// The jeprof arguments that diff a process's profiles between two boundaries.
fn jeprof_args(root: &Path, process: &str, from: &str, to: &str) -> Result<Vec<String>> {
    let heap = root.join("heap");
    Ok(vec![
        "--text".into(),
        "--cum".into(),
        format!(
            "--base={}",
            heap.join(format!("{process}.{from}.heap")).display()
        ),
        binary_of(process)?.display().to_string(),
        heap.join(format!("{process}.{to}.heap"))
            .display()
            .to_string(),
    ])
}

/// How to diff the heap profiles of a run, by process.
pub fn profile_help(s: &RunSummary, root: &Path) -> String {
    let mut out = String::from(
        "  profiles   growth by call site, before start -> after stop (needs jeprof, Debian libjemalloc-dev):\n",
    );
    for (name, p) in &s.processes {
        if p.profiles.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "             daqctl heap sites {} --process {name}\n",
            root.display()
        ));
    }
    if let Some((name, _)) = s.processes.iter().find(|(_, p)| !p.profiles.is_empty())
        && let Ok(args) = jeprof_args(root, name, "before_start", "after_stop")
    {
        out.push_str(&format!("             (raw: jeprof {})\n", args.join(" ")));
    }
    out
}

/// One growing call site of a heap-profile diff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Site {
    pub function: String,
    /// Bytes allocated under this function (cumulative) that grew between the profiles.
    pub bytes: f64,
    pub percent: f64,
}

/// Crates whose functions count as call sites (the runtime, the allocator
/// and the standard library are the stack around them, not the cause).
const OWN_CRATES: [&str; 6] = [
    "daq_format::",
    "daq_runtime::",
    "daq_shm::",
    "aggregator::",
    "eventbuilder::",
    "boardreader::",
];

/// Parses `jeprof --text --cum` output into this project's functions,
/// largest cumulative growth first. jeprof sometimes names a real
/// (non-inlined) frame by its bare name (`inject_leak`) and gives the
/// qualified name only on an `(inline)` line; such a bare name is
/// qualified from that line when it names a function of this project.
pub fn parse_sites(jeprof_text: &str) -> Vec<Site> {
    let rows: Vec<(f64, f64, String, bool)> = jeprof_text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 6 {
                return None;
            }
            let cum_mb: f64 = cols.get(3)?.parse().ok()?;
            let pct: f64 = cols.get(4)?.trim_end_matches('%').parse().ok()?;
            let inline = cols.last() == Some(&"(inline)");
            let end = if inline { cols.len() - 1 } else { cols.len() };
            Some((cum_mb, pct, cols.get(5..end)?.join(" "), inline))
        })
        .collect();
    let own = |f: &str| OWN_CRATES.iter().any(|c| f.starts_with(c));
    let qualified: std::collections::HashMap<&str, &str> = rows
        .iter()
        .filter(|(_, _, f, inline)| *inline && own(f))
        .filter_map(|(_, _, f, _)| Some((f.rsplit_once("::")?.1, f.as_str())))
        .collect();
    let mut sites: Vec<Site> = rows
        .iter()
        .filter(|(_, _, _, inline)| !inline)
        .filter_map(|(cum_mb, pct, f, _)| {
            let function = match qualified.get(f.as_str()) {
                Some(q) if !f.contains("::") => q.to_string(),
                _ => f.clone(),
            };
            own(&function).then_some(Site {
                function,
                bytes: cum_mb * 1024.0 * 1024.0,
                percent: *pct,
            })
        })
        .collect();
    sites.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
    let mut seen = std::collections::HashSet::new();
    sites.retain(|s| seen.insert(s.function.clone()));
    // A caller's cumulative growth is at least its callee's, so the generic
    // loops every item passes through (the transport, run control) tie with
    // or just top the function that really allocates. Among sites within 2%
    // of each other, the one outside that plumbing ranks first; plumbing
    // that grows on its own (nothing under it ties) still ranks by bytes.
    let plumbing = |s: &Site| PLUMBING.iter().any(|p| s.function.starts_with(p));
    if let Some(first) = sites.first().filter(|s| plumbing(s)) {
        let floor = first.bytes * 0.98;
        if let Some(i) = sites
            .iter()
            .take_while(|s| s.bytes >= floor)
            .position(|s| !plumbing(s))
        {
            let cause = sites.remove(i);
            sites.insert(0, cause);
        }
    }
    sites
}

/// Generic code every event or command passes through: a site there that
/// ties with one of its callees is the stack around the cause, not the cause.
const PLUMBING: [&str; 2] = ["daq_runtime::transport::", "daq_runtime::control::"];

/// `daqctl heap sites RUN --process P`: the project's functions under which
/// the heap grew between two boundaries, from the run's heap profiles.
pub fn sites(root: &Path, process: &str, from: &str, to: &str) -> Result<Vec<Site>> {
    let heap = root.join("heap");
    for label in [from, to] {
        let p = heap.join(format!("{process}.{label}.heap"));
        if !p.exists() {
            bail!(
                "{} not found: run with --heap-profile to dump heap profiles",
                p.display()
            );
        }
    }
    let out = std::process::Command::new("jeprof")
        .args(jeprof_args(root, process, from, to)?)
        .output()
        .context("cannot run jeprof (Debian: apt-get install libjemalloc-dev)")?;
    if !out.status.success() {
        bail!(
            "jeprof failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_sites(&String::from_utf8_lossy(&out.stdout)))
}

/// Reads a run record's summary.json (`run` is the run's directory).
pub fn load(run: &Path) -> Result<RunSummary> {
    let path = run.join("summary.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is {} a run record?)",
            path.display(),
            run.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid run summary", path.display()))
}

/// `daqctl heap report RUN`.
pub fn report(run: &Path) -> Result<String> {
    let s = load(run)?;
    let t = s.topology;
    Ok(format!(
        "run {}  topology {}x{}x{}  netmon {}  duration {:.1} s  events built {}\n{}",
        s.run,
        t.boardreaders,
        t.eventbuilders,
        t.aggregators,
        s.netmon_input,
        s.duration_s,
        s.events_built,
        table(&s)
    ))
}

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

/// `daqctl heap compare RUN_A RUN_B` (a: the shorter run).
pub fn compare(a: &Path, b: &Path) -> Result<(Vec<Comparison>, String)> {
    let (mut sa, mut sb) = (load(a)?, load(b)?);
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
    Ok((rows, out))
}

/// Theil-Sen slope: the median of the pairwise slopes, robust to outliers
/// and to the allocator's sawtooth. `None` with fewer than two distinct x.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    // Subsample to bound the O(n^2) pairs on long soaks (15 h at 1 s = 54k points).
    const MAX_POINTS: usize = 2000;
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let pts: Vec<(f64, f64)> = points.iter().step_by(step).copied().collect();
    let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
    for (i, a) in pts.iter().enumerate() {
        for b in pts.iter().skip(i + 1) {
            let dx = b.0 - a.0;
            if dx != 0.0 {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    let mid = slopes.len() / 2;
    let (_, m, _) = slopes.select_nth_unstable_by(mid, f64::total_cmp);
    Some(*m)
}

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
/// records (in the given order), with before_start of the first as baseline.
pub fn across_run_records(
    roots: &[std::path::PathBuf],
) -> Result<(std::collections::BTreeMap<String, AcrossRuns>, String)> {
    let summaries = roots.iter().map(|r| load(r)).collect::<Result<Vec<_>>>()?;
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
    Ok((rows, out))
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

    #[test]
    fn jeprof_output_is_reduced_to_this_projects_functions() {
        let text = "Total: 8.3 MB
     8.3 100.0% 100.0%      8.3 100.0% prof_backtrace_impl
     0.0   0.0% 100.0%      8.3  99.9% tokio::runtime::scheduler::multi_thread::worker::run
     0.0   0.0% 100.0%      8.2  99.4% daq_format::netmon::decode_legacy
     0.0   0.0% 100.0%      3.0  36.7% daq_format::netmon::decode_history
     0.0   0.0% 100.0%      3.7  44.7% decode_history
     0.0   0.0% 100.0%      0.1   1.0% aggregator::core::write_loop (inline)
";
        let s = parse_sites(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].function, "daq_format::netmon::decode_legacy");
        assert_eq!(s[0].percent, 99.4);
        assert_eq!(s[1].function, "daq_format::netmon::decode_history");
    }

    #[test]
    fn the_function_under_the_generic_receive_loop_is_named_before_it() {
        // The loop's cumulative growth includes the decoder's and a little more.
        let text = "Total: 1.6 MB
     0.0   0.0% 100.0%      1.6  98.9% daq_runtime::transport::inbound::serve::{{closure}}
     0.0   0.0% 100.0%      1.6  98.7% daq_format::netmon::decode_legacy
     0.0   0.0% 100.0%      1.3  78.8% daq_format::netmon::decode_history
";
        let s = parse_sites(text);
        assert_eq!(s[0].function, "daq_format::netmon::decode_legacy");
        assert_eq!(
            s[1].function,
            "daq_runtime::transport::inbound::serve::{{closure}}"
        );
        // Plumbing that grows with nothing of ours under it keeps its rank.
        let alone = "Total: 2.0 MB
     0.0   0.0% 100.0%      2.0  99.0% daq_runtime::transport::inbound::serve::{{closure}}
     0.0   0.0% 100.0%      0.2   9.0% daq_format::netmon::decode_history
";
        let s = parse_sites(alone);
        assert_eq!(
            s[0].function,
            "daq_runtime::transport::inbound::serve::{{closure}}"
        );
    }

    #[test]
    fn a_bare_frame_name_is_qualified_from_its_inline_line() {
        let text = "Total: 0.3 MB
     0.0   0.0% 100.0%      0.3 100.0% _rjem_je_prof_backtrace
     0.0   0.0% 100.0%      0.3  98.5% eventbuilder::core::Builder::place_parked
     0.0   0.0% 100.0%      0.3  98.5% inject_leak
     0.0   0.0% 100.0%      0.0   6.0% daq_runtime::leak::inject_leak (inline)
     0.0   0.0% 100.0%      0.3  98.5% from_elem (inline)
";
        let s = parse_sites(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].function, "eventbuilder::core::Builder::place_parked");
        assert_eq!(s[1].function, "daq_runtime::leak::inject_leak");
        assert_eq!(s[1].percent, 98.5);
    }

    #[test]
    fn theil_sen_ignores_a_sawtooth_and_outliers() {
        // 100 B/s growth plus a 1 MB sawtooth every 10 points and two spikes.
        let mut pts: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                let x = i as f64;
                (x, 100.0 * x + if i % 10 < 5 { 0.0 } else { 1e6 })
            })
            .collect();
        pts[50].1 = 1e9;
        pts[150].1 = -1e9;
        let s = theil_sen(&pts).expect("slope");
        assert!((s - 100.0).abs() < 1.0, "{s}");
        assert_eq!(theil_sen(&[(1.0, 1.0), (1.0, 5.0)]), None);
        assert_eq!(theil_sen(&[(0.0, 0.0), (2.0, 6.0)]), Some(3.0));
    }

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
