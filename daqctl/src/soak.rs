//! `daqctl soak`: a long run with a progress bar and periodic heap samples,
//! then per process a robust trend of allocated bytes (per hour and per
//! event), a leak verdict, `soak.json` and a memory-over-time plot
//! (`soak.svg`).

use crate::heap::{LEAK_BYTES_PER_EVENT, LEAK_MIN_BYTES, theil_sen};
use anyhow::{Context, Result};
use daq_format::record::RunSummary;
use daq_runtime::sampler::{Sample, read_csv};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub fn progress_bar(total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {percent:>3}%  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn update_bar(
    bar: &ProgressBar,
    elapsed: Duration,
    fragments: u64,
    heaps: &[(String, proto::HeapReply)],
) {
    bar.set_position(elapsed.as_secs());
    let mut msg = format!("{fragments} fragments");
    for (name, h) in heaps {
        if let Some(c) = &h.current {
            let short: String = name
                .split('-')
                .map(|p| p.chars().next().unwrap_or('?'))
                .collect();
            msg.push_str(&format!("  {short} {:.1}M", c.allocated as f64 / 1048576.0));
        }
    }
    bar.set_message(msg);
}

/// The trend and verdict of one process.
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    pub samples: usize,
    pub events: u64,
    pub slope_bytes_per_hour: f64,
    pub slope_bytes_per_event: Option<f64>,
    /// slope_bytes_per_hour over the analysed window.
    pub growth_over_window_bytes: f64,
    pub rss_anon_slope_bytes_per_hour: f64,
    pub verdict: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Threshold {
    pub bytes_per_event: f64,
    pub min_growth_bytes: f64,
    pub why: &'static str,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub run: u32,
    pub netmon_input: String,
    pub topology: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub threshold: Threshold,
    pub processes: BTreeMap<String, Trend>,
}

/// Warm-up excluded from the trend: 15% of the run, between 5 s and 30 min.
pub fn warmup(duration: Duration) -> Duration {
    duration
        .mul_f64(0.15)
        .clamp(Duration::from_secs(5), Duration::from_secs(1800))
}

/// The trend of one process's samples after the warm-up.
pub fn trend(samples: &[Sample], warmup_s: f64) -> Trend {
    let window: Vec<&Sample> = samples.iter().filter(|s| s.elapsed_s >= warmup_s).collect();
    let per_hour = |f: fn(&Sample) -> u64| {
        let pts: Vec<(f64, f64)> = window
            .iter()
            .map(|s| (s.elapsed_s / 3600.0, f(s) as f64))
            .collect();
        theil_sen(&pts).unwrap_or(0.0)
    };
    let slope_h = per_hour(|s| s.snapshot.allocated);
    let rss_h = per_hour(|s| s.snapshot.rss_anon);
    let ev_pts: Vec<(f64, f64)> = window
        .iter()
        .map(|s| (s.snapshot.events as f64, s.snapshot.allocated as f64))
        .collect();
    let slope_ev = theil_sen(&ev_pts);
    let span_h = match (window.first(), window.last()) {
        (Some(a), Some(b)) => (b.elapsed_s - a.elapsed_s) / 3600.0,
        _ => 0.0,
    };
    let growth = slope_h * span_h;
    let events = window.last().map_or(0, |s| s.snapshot.events)
        - window.first().map_or(0, |s| s.snapshot.events);
    let leak = growth >= LEAK_MIN_BYTES
        && match slope_ev {
            Some(e) if events > 0 => e >= LEAK_BYTES_PER_EVENT,
            _ => true,
        };
    Trend {
        samples: window.len(),
        events,
        slope_bytes_per_hour: slope_h,
        slope_bytes_per_event: slope_ev,
        growth_over_window_bytes: growth,
        rss_anon_slope_bytes_per_hour: rss_h,
        verdict: if leak { "leak" } else { "stable" },
    }
}

/// Reads every process's heap CSV of a run record.
pub fn load_samples(root: &Path, s: &RunSummary) -> Result<BTreeMap<String, Vec<Sample>>> {
    let mut out = BTreeMap::new();
    for name in s.processes.keys() {
        let path = root.join("heap").join(format!("{name}.csv"));
        out.insert(name.clone(), read_csv(&path)?);
    }
    Ok(out)
}

/// Analyses a finished soak run; writes soak.json and soak.svg into its record.
pub fn analyse(root: &Path, s: &RunSummary) -> Result<(SoakReport, String)> {
    let samples = load_samples(root, s)?;
    let warm = warmup(Duration::from_secs_f64(s.duration_s)).as_secs_f64();
    let processes: BTreeMap<String, Trend> = samples
        .iter()
        .map(|(n, v)| (n.clone(), trend(v, warm)))
        .collect();
    let t = s.topology;
    let report = SoakReport {
        run: s.run,
        netmon_input: s.netmon_input.clone(),
        topology: format!("{}x{}x{}", t.boardreaders, t.eventbuilders, t.aggregators),
        duration_s: s.duration_s,
        warmup_s: warm,
        threshold: Threshold {
            bytes_per_event: LEAK_BYTES_PER_EVENT,
            min_growth_bytes: LEAK_MIN_BYTES,
            why: "leak = the Theil-Sen trend of jemalloc allocated bytes after the warm-up grows by at least 1 MiB over the window AND by at least 8 bytes per event handled (one object of jemalloc's smallest size class per event); the median of pairwise slopes ignores the allocator's sawtooth and batch buffers, the 1 MiB floor keeps in-flight buffers and caches from being called a leak",
        },
        processes,
    };
    std::fs::write(
        root.join("soak.json"),
        serde_json::to_string_pretty(&report).context("serializing soak.json")?,
    )?;
    std::fs::write(root.join("soak.svg"), crate::plot::svg(&samples, &report))?;
    let text = render(&report, root);
    Ok((report, text))
}

pub fn render(r: &SoakReport, root: &Path) -> String {
    let mut out = format!(
        "soak run {}  {}  netmon {}  {:.0} s (trend after {:.0} s warm-up)\n  {:<16} {:>8} {:>10} {:>14} {:>12} {:>14}  verdict\n",
        r.run,
        r.topology,
        r.netmon_input,
        r.duration_s,
        r.warmup_s,
        "process",
        "samples",
        "events",
        "KiB/hour",
        "B/event",
        "rss_anon KiB/h"
    );
    for (name, t) in &r.processes {
        out.push_str(&format!(
            "  {:<16} {:>8} {:>10} {:>14.1} {:>12} {:>14.1}  {}\n",
            name,
            t.samples,
            t.events,
            t.slope_bytes_per_hour / 1024.0,
            t.slope_bytes_per_event
                .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            t.rss_anon_slope_bytes_per_hour / 1024.0,
            t.verdict
        ));
    }
    out.push_str(&format!(
        "  report {}  plot {}\n",
        root.join("soak.json").display(),
        root.join("soak.svg").display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use daq_alloc::HeapSnapshot;

    fn samples(bytes_per_event: u64, noise: u64) -> Vec<Sample> {
        (0..120)
            .map(|i| {
                let events = i * 500;
                Sample {
                    elapsed_s: i as f64 * 0.5,
                    snapshot: HeapSnapshot {
                        events,
                        allocated: 8_000_000 + events * bytes_per_event + (i % 7) * noise,
                        ..Default::default()
                    },
                }
            })
            .collect()
    }

    #[test]
    fn steady_growth_per_event_is_a_leak() {
        let t = trend(&samples(100, 200_000), 10.0);
        assert_eq!(t.verdict, "leak");
        let e = t.slope_bytes_per_event.expect("slope");
        assert!((e - 100.0).abs() < 1.0, "{e}");
    }

    #[test]
    fn a_sawtooth_without_growth_is_stable() {
        let t = trend(&samples(0, 3_000_000), 10.0);
        assert_eq!(t.verdict, "stable", "{t:?}");
    }
}
