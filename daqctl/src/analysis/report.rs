//! `daqctl report RUN_DIR`: the run report page, `report.html`, one
//! self-contained file (inline CSS and SVG, no scripts, no network fetches)
//! with the summary, the heap table, a heap-over-time plot per process from
//! `heap/<process>.csv`, the online monitors' figures and plots
//! (`monitor/<monitor>.json` and its SVGs) and, for soaks (`soak.json`), the
//! verdicts.

use crate::analysis::heap::table::{COLUMNS, rows};
use crate::analysis::plot::{esc, process_svg};
use crate::units::rate;
use crate::verdict::Exit;
use anyhow::{Context, Result};
use daq_format::monitor::MonitorRecord;
use daq_format::record::RunSummary;
use daq_runtime::sampler::read_csv;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1000px}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}\
td:first-child,th:first-child{text-align:left}\
.ok{color:#1b5e20;font-weight:bold}.bad{color:#b00020;font-weight:bold}\
.plots{display:flex;flex-wrap:wrap;gap:8px}";

/// `daqctl report`'s arguments.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// A run record directory (runs/run_000001).
    run: PathBuf,
}

/// `daqctl report RUN`: writes the page and prints its path.
pub fn command(a: &ReportArgs) -> Result<Exit> {
    println!("{}", write(&a.run)?.display());
    Ok(Exit::Clean)
}

/// Writes `<run>/report.html`; returns its path.
pub fn write(run: &Path) -> Result<PathBuf> {
    let summary = crate::analysis::heap::table::load(run)?;
    let soak =
        match std::fs::read_to_string(run.join("soak.json")) {
            Ok(text) => Some(serde_json::from_str::<Value>(&text).with_context(|| {
                format!("{} is not valid JSON", run.join("soak.json").display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).context(format!("cannot read {}", run.join("soak.json").display()));
            }
        };
    let html = render(run, &summary, soak.as_ref());
    let path = run.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn row(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td></tr>",
        esc(key),
        esc(&value.to_string())
    );
}

/// The page.
pub fn render(run: &Path, s: &RunSummary, soak: Option<&Value>) -> String {
    let t = s.topology;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>DAQ run {} report</title><style>{STYLE}</style></head><body>",
        s.run
    );
    let _ = writeln!(
        out,
        "<h1>Run {} &middot; {}x{}x{} &middot; netmon {}</h1>",
        s.run,
        t.boardreaders,
        t.eventbuilders,
        t.aggregators,
        esc(&s.netmon_input)
    );
    out.push_str("<h2 id=\"summary\">Summary</h2>\n<table>\n");
    row(&mut out, "duration (s)", format!("{:.2}", s.duration_s));
    row(&mut out, "fragments sent", s.fragments_sent);
    row(&mut out, "fragments received", s.fragments_received);
    row(&mut out, "events built", s.events_built);
    row(&mut out, "events incomplete", s.events_incomplete);
    row(&mut out, "events written", s.events_written);
    row(&mut out, "bytes written", s.bytes_written);
    row(
        &mut out,
        "event rate (Hz)",
        format!("{:.1}", s.event_rate_hz),
    );
    row(
        &mut out,
        "into the eventbuilders",
        rate(s.throughput_mb_s * 1e6),
    );
    row(&mut out, "to disk", rate(s.write_mb_s * 1e6));
    row(&mut out, "throttle (us)", s.throttle_us);
    row(&mut out, "data files", s.data_files.len());
    out.push_str("</table>\n");
    if s.errors.is_empty() {
        out.push_str("<p class=\"ok\">OK: nothing lost</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p class=\"bad\">FAILED: {} errors</p><ul>",
            s.errors.len()
        );
        for e in &s.errors {
            let _ = writeln!(out, "<li>{}</li>", esc(e));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2 id=\"heap\">Heap at the run-state boundaries</h2>\n");
    heap_table(&mut out, s);
    let warmup_s = soak.and_then(|v| v["warmup_s"].as_f64()).unwrap_or(0.0);
    if let Some(v) = soak {
        verdicts(&mut out, v);
    }
    out.push_str("<h2 id=\"heap-over-time\">Heap over time</h2>\n<div class=\"plots\">\n");
    for name in s.processes.keys() {
        let csv = run.join("heap").join(format!("{name}.csv"));
        let verdict = soak.and_then(|v| {
            let verdict = v.get("processes")?.get(name)?.get("verdict")?;
            serde_json::from_value(verdict.clone()).ok()
        });
        match read_csv(&csv) {
            Ok(samples) if !samples.is_empty() => {
                out.push_str(&process_svg(name, verdict, &samples, warmup_s));
            }
            Ok(_) => {
                let _ = writeln!(
                    out,
                    "<p class=\"missing\">{}: no heap samples</p>",
                    esc(name)
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "<p class=\"missing\">{}: {}</p>",
                    esc(name),
                    esc(&e.to_string())
                );
            }
        }
    }
    out.push_str("</div>\n");
    monitors(&mut out, run);
    let _ = writeln!(
        out,
        "<p><small>run record {}</small></p>\n</body></html>",
        esc(&run.display().to_string())
    );
    out
}

/// The online monitors' section: counts, integrity, ADC entries per board
/// and the plots, from `monitor/` (nothing when the run had no monitor).
fn monitors(out: &mut String, run: &Path) {
    let dir = run.join("monitor");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return;
    }
    out.push_str("<h2 id=\"monitors\">Online monitors</h2>\n");
    for f in files {
        let m = match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<MonitorRecord>(&t).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "<p class=\"bad\">{}: {}</p>",
                    esc(&f.display().to_string()),
                    esc(&e)
                );
                continue;
            }
        };
        let name = esc(&m.process);
        let _ = writeln!(
            out,
            "<h3>{name}, reading {}</h3>\n<table class=\"monitor\" data-monitor=\"{name}\">",
            esc(&m.source)
        );
        row(out, "events read", m.events_read);
        row(out, "events skipped (overwritten first)", m.events_skipped);
        row(out, "of which torn copies", m.events_torn);
        row(out, "bytes read", m.bytes_read);
        row(out, "events checked", m.integrity.events_checked);
        row(
            out,
            "events failing the integrity check",
            m.integrity.events_failed,
        );
        for (why, n) in &m.integrity.by_reason {
            row(out, &format!("integrity: {why}"), n);
        }
        for h in &m.adc {
            let _ = writeln!(
                out,
                "<tr><td>ADC entries, board {} ({}-bit)</td><td class=\"adc-entries\" data-monitor=\"{name}\" data-board=\"{}\">{}</td></tr>",
                h.board, h.adc_bits, h.board, h.entries
            );
        }
        out.push_str("</table>\n");
        let class = if m.integrity.events_failed == 0 {
            "ok"
        } else {
            "bad"
        };
        let _ = writeln!(
            out,
            "<p class=\"{class}\">{} of {} events failed the integrity check</p>",
            m.integrity.events_failed, m.integrity.events_checked
        );
        if !m.integrity.first.is_empty() {
            out.push_str("<ul>\n");
            for e in &m.integrity.first {
                let _ = writeln!(out, "<li>{}</li>", esc(e));
            }
            out.push_str("</ul>\n");
        }
        out.push_str("<div class=\"plots\">\n");
        for plot in ["adc", "rate"] {
            let svg = dir.join(format!("{}-{plot}.svg", m.process));
            match std::fs::read_to_string(&svg) {
                Ok(text) => out.push_str(&text),
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "<p class=\"missing\">{}: {}</p>",
                        esc(&svg.display().to_string()),
                        esc(&e.to_string())
                    );
                }
            }
        }
        out.push_str("</div>\n");
    }
}

/// The heap table (the one `daqctl heap report` prints) as an HTML table.
fn heap_table(out: &mut String, s: &RunSummary) {
    out.push_str("<table class=\"heap\">\n<tr><th>allocated KiB</th>");
    for c in COLUMNS {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr>\n");
    for (name, cells) in rows(s) {
        let _ = write!(out, "<tr><td>{}</td>", esc(&name));
        for c in &cells {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// The soak verdicts table, from soak.json.
fn verdicts(out: &mut String, v: &Value) {
    let _ = writeln!(
        out,
        "<h2 id=\"verdicts\">Soak verdicts</h2>\n<p>trend after {:.0} s warm-up; {}</p>\n<table>\
<tr><th>process</th><th>samples</th><th>events</th><th>KiB/hour</th><th>B/event</th><th>RssAnon KiB/hour</th><th>verdict</th></tr>",
        v["warmup_s"].as_f64().unwrap_or(0.0),
        esc(v
            .get("threshold")
            .and_then(|t| t.get("why"))
            .and_then(Value::as_str)
            .unwrap_or(""))
    );
    let Some(procs) = v["processes"].as_object() else {
        out.push_str("</table>\n");
        return;
    };
    for (name, p) in procs {
        let f = |k: &str, scale: f64| {
            p[k].as_f64()
                .map_or_else(|| "-".to_string(), |x| format!("{:.1}", x / scale))
        };
        let verdict = p["verdict"].as_str().unwrap_or("?");
        let class = if verdict == "leak" { "bad" } else { "ok" };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            esc(name),
            p["samples"].as_u64().unwrap_or(0),
            p["events"].as_u64().unwrap_or(0),
            f("slope_bytes_per_hour", 1024.0),
            f("slope_bytes_per_event", 1.0),
            f("rss_anon_slope_bytes_per_hour", 1024.0),
            esc(verdict)
        );
    }
    out.push_str("</table>\n");
}
