//! A run record's `summary.json` as the analyses read it, and its heap
//! table (process x before start / before stop / after stop) that
//! `daqctl heap report`, the run summary and report.html print.

use anyhow::{Context, Result};
use daq_format::record::{HEAP_BOUNDARIES, RunSummary};
use std::path::Path;

pub fn kib(v: i64) -> String {
    format!("{:.1}", v as f64 / 1024.0)
}

pub fn signed_kib(v: i64) -> String {
    format!("{:+.1}", v as f64 / 1024.0)
}

/// The heap table's columns after the process (jemalloc allocated, KiB,
/// unless named otherwise).
pub const COLUMNS: [&str; 7] = [
    "before_start",
    "before_stop",
    "after_stop",
    "run growth",
    "left after",
    "rss_anon after",
    "peak rss",
];

/// The heap table's rows: per process its name and a cell per [`COLUMNS`]
/// entry (KiB; `-` when unknown).
pub fn rows(s: &RunSummary) -> Vec<(String, [String; 7])> {
    s.processes
        .iter()
        .map(|(name, p)| {
            let get = |l: &str| p.heap.get(l).map(|h| h.allocated as i64);
            let [a, b, c] = HEAP_BOUNDARIES.map(get);
            let cell = |v: Option<i64>| v.map(kib).unwrap_or_else(|| "-".into());
            let diff = |x: Option<i64>, y: Option<i64>| match (x, y) {
                (Some(x), Some(y)) => signed_kib(y - x),
                _ => "-".into(),
            };
            let after = p.heap.get("after_stop").copied();
            let cells = [
                cell(a),
                cell(b),
                cell(c),
                diff(a, b),
                diff(a, c),
                cell(after.map(|h| h.rss_anon as i64)),
                cell(after.map(|h| h.vm_hwm as i64)),
            ];
            (name.clone(), cells)
        })
        .collect()
}

/// The heap table: process x before start / before stop / after stop
/// (jemalloc allocated, KiB), with the growth during the run and the growth
/// left after it, RssAnon after stop and the peak resident set (VmHWM).
pub fn table(s: &RunSummary) -> String {
    let line = |first: &str, name: &str, c: &[&str; 7]| {
        format!(
            "  {first:<10} {name:<16} {:>13} {:>13} {:>13} {:>12} {:>12} {:>14} {:>13}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        )
    };
    let mut out = line("heap", "allocated KiB", &COLUMNS);
    for (name, cells) in rows(s) {
        out.push_str(&line("", &name, &cells.each_ref().map(String::as_str)));
    }
    out
}

/// Whether a record's verdicts can be trusted: its run lost nothing (no
/// `errors`) and every process could read its heap statistics.
pub fn trusted(s: &RunSummary) -> bool {
    s.errors.is_empty()
        && s.processes
            .values()
            .all(|p| p.counters.heap_stats_failed == 0)
}

/// Says on stderr why a record's verdicts are not to be trusted.
pub fn warn_untrusted(run: &Path, s: &RunSummary) {
    if !trusted(s) {
        eprintln!(
            "daqctl: {}: the run lost data or could not read a heap ({} errors): its verdicts are not to be trusted",
            run.display(),
            s.errors.len()
        );
    }
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
