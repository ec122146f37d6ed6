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
