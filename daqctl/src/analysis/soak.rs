//! Soak analysis: per process a robust trend of allocated bytes (per hour
//! and per event) after a warm-up, a leak verdict, `soak.json` and a
//! memory-over-time plot (`soak.svg`), from the heap samples of a soak's
//! record, finished or not (`daqctl soak analyse` recomputes both for a
//! soak that ended early: daqctl killed, host rebooted); and the run's
//! plan (`plan.json`) it is measured against.

use crate::analysis::heap::profile::{self, SiteSeries, Symbolizer};
use crate::analysis::heap::table::load;
use crate::analysis::trend::{
    SITE_BYTES_PER_EVENT, SITE_MIN_GROWTH_BYTES, SITE_THRESHOLD_WHY, SOAK_BYTES_PER_EVENT,
    SOAK_MIN_GROWTH_BYTES, THRESHOLD_WHY, theil_sen,
};
use crate::verdict::Verdict;
use anyhow::{Context, Result, bail};
use daq_format::config::SystemConfig;
use daq_format::record::{InjectedLeak, RunSummary};
use daq_runtime::sampler::{Sample, read_csv};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `plan.json` in a run record: what the run was meant to be, written
/// before it starts, so that a run that never finished can still be
/// analysed against its plan.
pub const PLAN_FILE: &str = "plan.json";

/// What a run was meant to be (`plan.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub run: u32,
    /// Planned length in seconds (`None`: the run was to stop after an event count).
    pub duration_s: Option<f64>,
    /// Planned events per boardreader (`None`: the run was to last `duration_s`).
    pub events: Option<u64>,
    /// Unix time (s) when the plan was written, just before boot.
    pub written_unix_s: f64,
}

/// The trend and verdict of one process.
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    pub samples: usize,
    pub events: u64,
    pub slope_bytes_per_hour: f64,
    pub slope_bytes_per_event: Option<f64>,
    /// slope_bytes_per_event of the first and the second half of the window.
    pub slope_bytes_per_event_halves: [Option<f64>; 2],
    /// slope_bytes_per_hour over the analysed window.
    pub growth_over_window_bytes: f64,
    pub rss_anon_slope_bytes_per_hour: f64,
    /// Bytes per event injected into this process on purpose (0: clean).
    pub injected_bytes_per_event: u64,
    /// The verdict of the process's total heap alone (the trend above).
    pub total_verdict: Verdict,
    /// Timed heap profiles analysed (0: the soak ran without profiling,
    /// and the verdict is the total's).
    pub profiles: usize,
    /// Call sites seen in those profiles.
    pub sites_analysed: usize,
    /// The call sites whose live bytes leak, largest growth first.
    pub leaking_sites: Vec<SiteTrend>,
    /// The site that grew most among those that do not leak: how close
    /// the clean sites come to the thresholds.
    pub largest_stable_site: Option<SiteTrend>,
    /// leak when the total or any site leaks.
    pub verdict: Verdict,
}

/// The trend of one call site's live bytes against the events handled.
#[derive(Clone, Debug, Serialize)]
pub struct SiteTrend {
    /// The innermost function of this project on the allocating stack.
    pub function: String,
    /// That function and this project's callers outward.
    pub chain: Vec<String>,
    pub slope_bytes_per_event: Option<f64>,
    pub slope_bytes_per_event_halves: [Option<f64>; 2],
    /// slope_bytes_per_event times the events of the window.
    pub growth_over_window_bytes: f64,
    /// The site's live bytes in the last profile.
    pub live_bytes_at_end: f64,
    pub leak: bool,
}

/// The trend of one site's series, from the points at or after
/// `from_unix_ms` (the end of the warm-up).
pub fn site_trend(function: &str, s: &SiteSeries, from_unix_ms: u64) -> SiteTrend {
    let pts: Vec<(f64, f64)> = s
        .points
        .iter()
        .filter(|p| p.unix_ms >= from_unix_ms)
        .map(|p| (p.events as f64, p.bytes))
        .collect();
    let slope = theil_sen(&pts);
    let (a, b) = pts.split_at(pts.len() / 2);
    let halves = [theil_sen(a), theil_sen(b)];
    let events = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let growth = slope.unwrap_or(0.0) * events;
    let per_event = |e: Option<f64>| e.is_some_and(|e| e >= SITE_BYTES_PER_EVENT);
    SiteTrend {
        function: function.to_string(),
        chain: s.chain.clone(),
        slope_bytes_per_event: slope,
        slope_bytes_per_event_halves: halves,
        growth_over_window_bytes: growth,
        live_bytes_at_end: s.points.last().map_or(0.0, |p| p.bytes),
        leak: growth >= SITE_MIN_GROWTH_BYTES
            && per_event(slope)
            && halves.into_iter().all(per_event),
    }
}

/// The per-site trends of one process.
#[derive(Debug, Default)]
pub struct Sites {
    pub profiles: usize,
    pub seen: usize,
    /// Largest growth first.
    pub leaking: Vec<SiteTrend>,
    pub largest_stable: Option<SiteTrend>,
}

/// Per-site trends of a process's timed profiles in a record's heap
/// directory.
pub fn site_trends(
    heap_dir: &Path,
    process: &str,
    from_unix_ms: u64,
    sym: &mut Symbolizer,
) -> Result<Sites> {
    let (profiles, _cut) = profile::load_timed(heap_dir, process)?;
    if profiles.is_empty() {
        return Ok(Sites::default());
    }
    let series = profile::site_series(&profiles, sym);
    let (mut leaking, stable): (Vec<SiteTrend>, Vec<SiteTrend>) = series
        .iter()
        .map(|(f, s)| site_trend(f, s, from_unix_ms))
        .partition(|t| t.leak);
    leaking.sort_by(|a, b| {
        b.growth_over_window_bytes
            .total_cmp(&a.growth_over_window_bytes)
    });
    let largest_stable = stable.into_iter().max_by(|a, b| {
        a.growth_over_window_bytes
            .total_cmp(&b.growth_over_window_bytes)
    });
    Ok(Sites {
        profiles: profiles.len(),
        seen: series.len(),
        leaking,
        largest_stable,
    })
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
    pub throttle_us: u64,
    /// The leak injected on purpose, if any.
    pub injected_leak: Option<InjectedLeak>,
    /// The length analysed: the run's duration, or for a soak that never
    /// finished, the span of its samples.
    pub duration_s: f64,
    /// The planned length (from plan.json), when known.
    pub planned_duration_s: Option<f64>,
    /// duration_s / planned_duration_s.
    pub coverage: Option<f64>,
    /// False for a soak that did not end normally (no summary.json).
    pub finished: bool,
    pub warmup_s: f64,
    pub threshold: Threshold,
    pub site_threshold: Threshold,
    /// Binaries the profiles name that could not be opened to symbolize them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsymbolized: Vec<String>,
    pub processes: BTreeMap<String, Trend>,
}

impl SoakReport {
    /// Unreadable if any process's statistics failed, else leak if any
    /// process leaks, else stable (a soak's verdicts are never stale).
    pub fn verdict(&self) -> Verdict {
        self.processes
            .values()
            .map(|t| t.verdict)
            .max()
            .unwrap_or(Verdict::Stable)
    }
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
    // The per-event slope of each half of the window: a leak grows in both,
    // a one-time step (a backpressure episode filling the bounded queues, a
    // cache warming up) in one only.
    let mid = ev_pts.len() / 2;
    let (first_half, second_half) = ev_pts.split_at(mid);
    let halves = [theil_sen(first_half), theil_sen(second_half)];
    let span_h = match (window.first(), window.last()) {
        (Some(a), Some(b)) => (b.elapsed_s - a.elapsed_s) / 3600.0,
        _ => 0.0,
    };
    let growth = slope_h * span_h;
    let events = window
        .last()
        .map_or(0, |s| s.snapshot.events)
        .saturating_sub(window.first().map_or(0, |s| s.snapshot.events));
    let per_event = |e: Option<f64>| e.is_some_and(|e| e >= SOAK_BYTES_PER_EVENT);
    let leak = growth >= SOAK_MIN_GROWTH_BYTES
        && (events == 0 || (per_event(slope_ev) && halves.into_iter().all(per_event)));
    Trend {
        samples: window.len(),
        events,
        slope_bytes_per_hour: slope_h,
        slope_bytes_per_event: slope_ev,
        slope_bytes_per_event_halves: halves,
        growth_over_window_bytes: growth,
        rss_anon_slope_bytes_per_hour: rss_h,
        injected_bytes_per_event: 0,
        total_verdict: if leak { Verdict::Leak } else { Verdict::Stable },
        profiles: 0,
        sites_analysed: 0,
        leaking_sites: vec![],
        largest_stable_site: None,
        verdict: if leak { Verdict::Leak } else { Verdict::Stable },
    }
}

/// Reads every process's heap CSV of a run record (`heap/<process>.csv`).
pub fn load_samples(root: &Path) -> Result<BTreeMap<String, Vec<Sample>>> {
    let dir = root.join("heap");
    let mut out = BTreeMap::new();
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("no heap samples in {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        let (Some(name), Some("csv")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        out.insert(name.to_string(), read_csv(&path)?);
    }
    if out.is_empty() {
        bail!("no heap samples (heap/*.csv) in {}", dir.display());
    }
    Ok(out)
}

/// What the analysis knows of the run: from summary.json when the run
/// finished, else from config.toml and plan.json.
struct RunFacts {
    run: u32,
    netmon_input: String,
    topology: String,
    throttle_us: u64,
    injected_leak: Option<InjectedLeak>,
    duration_s: Option<f64>,
}

fn facts(root: &Path, summary: Option<&RunSummary>) -> Result<RunFacts> {
    if let Some(s) = summary {
        let t = s.topology;
        return Ok(RunFacts {
            run: s.run,
            netmon_input: s.netmon_input.clone(),
            topology: format!("{}x{}x{}", t.boardreaders, t.eventbuilders, t.aggregators),
            throttle_us: s.throttle_us,
            injected_leak: s.injected_leak,
            duration_s: Some(s.duration_s),
        });
    }
    let config_path = root.join("config.toml");
    let c = SystemConfig::from_file(&config_path)
        .with_context(|| format!("{} is not a run record", root.display()))?;
    let t = c.topology;
    let run = root
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("run_"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(RunFacts {
        run,
        netmon_input: c.aggregator.netmon_input.as_str().into(),
        topology: format!("{}x{}x{}", t.boardreaders, t.eventbuilders, t.aggregators),
        throttle_us: c.generator.throttle_us,
        injected_leak: InjectedLeak::of(&c.leak),
        duration_s: None,
    })
}

/// How many heap-statistics reads of `process` failed in the run (from
/// summary.json; 0 when unknown).
fn heap_stats_failed(summary: Option<&RunSummary>, process: &str) -> u64 {
    summary
        .and_then(|s| s.processes.get(process))
        .map_or(0, |p| p.counters.heap_stats_failed)
}

/// Reads `plan.json` of a run record, if there is one.
pub fn load_plan(root: &Path) -> Option<Plan> {
    let text = std::fs::read_to_string(root.join(PLAN_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Analyses a soak's record (finished or not) and writes soak.json and
/// soak.svg into it.
pub fn analyse(root: &Path) -> Result<(SoakReport, String)> {
    let summary = if root.join("summary.json").exists() {
        Some(load(root)?)
    } else {
        None
    };
    let facts = facts(root, summary.as_ref())?;
    let samples = load_samples(root)?;
    let covered = samples
        .values()
        .filter_map(|v| v.last().map(|s| s.elapsed_s))
        .fold(0.0f64, f64::max);
    let duration_s = facts.duration_s.unwrap_or(covered);
    let plan = load_plan(root);
    let planned = plan.as_ref().and_then(|p| p.duration_s);
    let warm = warmup(Duration::from_secs_f64(duration_s.max(0.0))).as_secs_f64();
    // Binaries named in the profiles that are not on this host (the process
    // ran elsewhere) are looked for beside daqctl.
    let bin_dir = crate::bins::bin_dir().ok();
    let mut sym = Symbolizer::new(Box::new(move |path: &str| {
        let name = Path::new(path).file_name()?;
        bin_dir.as_ref().map(|d| d.join(name))
    }));
    let mut processes: BTreeMap<String, Trend> = BTreeMap::new();
    for (n, v) in &samples {
        let mut t = trend(v, warm);
        t.injected_bytes_per_event = InjectedLeak::bytes_per_event_in(facts.injected_leak, n);
        let from_ms = v.first().map_or(0, |s| s.snapshot.unix_ms) + (warm * 1000.0) as u64;
        let sites = site_trends(&root.join("heap"), n, from_ms, &mut sym)?;
        t.profiles = sites.profiles;
        t.sites_analysed = sites.seen;
        if !sites.leaking.is_empty() {
            t.verdict = Verdict::Leak;
        }
        t.leaking_sites = sites.leaking;
        t.largest_stable_site = sites.largest_stable;
        if heap_stats_failed(summary.as_ref(), n) > 0 {
            t.verdict = Verdict::Unreadable;
        }
        processes.insert(n.clone(), t);
    }
    let report = SoakReport {
        run: facts.run,
        netmon_input: facts.netmon_input,
        topology: facts.topology,
        throttle_us: facts.throttle_us,
        injected_leak: facts.injected_leak,
        duration_s,
        planned_duration_s: planned,
        coverage: planned.filter(|p| *p > 0.0).map(|p| duration_s / p),
        finished: summary.is_some(),
        warmup_s: warm,
        threshold: Threshold {
            bytes_per_event: SOAK_BYTES_PER_EVENT,
            min_growth_bytes: SOAK_MIN_GROWTH_BYTES,
            why: THRESHOLD_WHY,
        },
        site_threshold: Threshold {
            bytes_per_event: SITE_BYTES_PER_EVENT,
            min_growth_bytes: SITE_MIN_GROWTH_BYTES,
            why: SITE_THRESHOLD_WHY,
        },
        unsymbolized: std::mem::take(&mut sym.missing),
        processes,
    };
    std::fs::write(
        root.join("soak.json"),
        serde_json::to_string_pretty(&report).context("serializing soak.json")?,
    )?;
    let figure = crate::analysis::plot::Figure {
        run: report.run,
        topology: &report.topology,
        netmon_input: &report.netmon_input,
        warmup_s: report.warmup_s,
        verdicts: (report.processes.iter())
            .map(|(n, t)| (n.as_str(), t.verdict))
            .collect(),
    };
    std::fs::write(
        root.join("soak.svg"),
        crate::analysis::plot::svg(&samples, &figure),
    )?;
    let text = render(&report, root);
    Ok((report, text))
}

pub fn render(r: &SoakReport, root: &Path) -> String {
    let mut out = format!(
        "soak run {}  {}  netmon {}  {:.0} s (trend after {:.0} s warm-up)\n",
        r.run, r.topology, r.netmon_input, r.duration_s, r.warmup_s,
    );
    if !r.finished {
        out.push_str(&match (r.planned_duration_s, r.coverage) {
            (Some(p), Some(c)) => format!(
                "  unfinished: the samples cover {:.0} s of the planned {:.0} s ({:.1}%)\n",
                r.duration_s,
                p,
                c * 100.0
            ),
            _ => format!(
                "  unfinished: the samples cover {:.0} s (planned length unknown: no {PLAN_FILE})\n",
                r.duration_s
            ),
        });
    }
    if let Some(l) = r.injected_leak {
        out.push_str(&format!(
            "  injected leak: {} B/event into every {}\n",
            l.bytes_per_event,
            l.process_kind.as_str()
        ));
    }
    out.push_str(&format!(
        "  {:<16} {:>8} {:>10} {:>14} {:>12} {:>14}  verdict\n",
        "process", "samples", "events", "KiB/hour", "B/event", "rss_anon KiB/h"
    ));
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
        for site in &t.leaking_sites {
            out.push_str(&format!(
                "    leaking site {:.1} B/event, {:.0} KiB over the window: {}\n",
                site.slope_bytes_per_event.unwrap_or(0.0),
                site.growth_over_window_bytes / 1024.0,
                site.chain.join(" <- ")
            ));
        }
    }
    let profiled = r.processes.values().filter(|t| t.profiles > 0).count();
    out.push_str(&match profiled {
        0 => "  call sites: no timed heap profiles (verdicts from the totals alone)\n".into(),
        n => format!(
            "  call sites: {n} processes profiled; verdict leak when the total or any site leaks\n"
        ),
    });
    for u in &r.unsymbolized {
        out.push_str(&format!("  warning: not symbolized: {u}\n"));
    }
    out.push_str(&format!(
        "  report {}  plot {}\n",
        root.join("soak.json").display(),
        root.join("soak.svg").display()
    ));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::HeapSnapshot;

    /// 120 samples, 0.5 s and 500 events apart, growing `bytes_per_event`
    /// with a periodic `noise` (the progress bar's tests use them too).
    pub(crate) fn samples(bytes_per_event: u64, noise: u64) -> Vec<Sample> {
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
        assert_eq!(t.verdict, Verdict::Leak);
        let e = t.slope_bytes_per_event.expect("slope");
        assert!((e - 100.0).abs() < 1.0, "{e}");
    }

    #[test]
    fn a_one_time_step_in_one_half_of_the_window_is_stable() {
        // 400 B/event for the first 60% of the window (queues filling while
        // the pipeline stalls), flat after: megabytes over the window, but
        // the second half does not grow.
        let mut s = samples(0, 0);
        for x in &mut s {
            x.snapshot.allocated += x.snapshot.events.min(40_000) * 400;
        }
        let t = trend(&s, 10.0);
        assert!(t.growth_over_window_bytes > 1e6, "{t:?}");
        assert_eq!(t.verdict, Verdict::Stable, "{t:?}");
        let h = t.slope_bytes_per_event_halves;
        assert!(h[1].is_some_and(|e| e.abs() < 1.0), "{t:?}");
    }

    #[test]
    fn a_process_whose_heap_statistics_failed_is_unreadable_never_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("heap")).expect("mkdir");
        // Two processes with the same flat heap; one had failed reads, so
        // its samples have gaps a trend would read as flat.
        let rows: Vec<HeapSnapshot> = samples(0, 0)
            .into_iter()
            .map(|s| HeapSnapshot {
                unix_ms: 1_000 + (s.elapsed_s * 1000.0) as u64,
                ..s.snapshot
            })
            .collect();
        for p in ["aggregator-0", "eventbuilder-0"] {
            daq_runtime::sampler::write_csv(&dir.path().join(format!("heap/{p}.csv")), &rows)
                .expect("csv");
        }
        let summary = serde_json::json!({
            "run": 1, "topology": {"boardreaders": 1, "eventbuilders": 1, "aggregators": 1},
            "netmon_input": "fixed", "throttle_us": 0, "started_unix_s": 0.0,
            "duration_s": 60.0, "fragments_sent": 0, "fragments_received": 0,
            "events_built": 0, "events_incomplete": 0, "events_written": 0,
            "bytes_written": 0, "data_files": [], "event_rate_hz": 0.0,
            "throughput_mb_s": 0.0, "write_mb_s": 0.0, "errors": [],
            "processes": {
                "aggregator-0": {"counters": {"heap_stats_failed": 3}, "problems": [], "heap": {}},
                "eventbuilder-0": {"counters": {}, "problems": [], "heap": {}}
            }
        });
        std::fs::write(dir.path().join("summary.json"), summary.to_string()).expect("write");
        let (report, text) = analyse(dir.path()).expect("analyses");
        assert_eq!(
            report.processes["aggregator-0"].verdict,
            Verdict::Unreadable
        );
        assert_eq!(report.processes["eventbuilder-0"].verdict, Verdict::Stable);
        assert_eq!(report.verdict(), Verdict::Unreadable);
        assert!(text.contains("unreadable"), "{text}");
    }

    /// A site's series as the sampled profiles see it: live bytes in
    /// steps of one sample (~4 KiB unsampled) at `bytes_per_event`, with
    /// `churn` samples coming and going.
    fn site(bytes_per_event: f64, churn: u64, step_at: Option<(u64, f64)>) -> SiteSeries {
        use crate::analysis::heap::profile::SitePoint;
        let points = (0..80u64)
            .map(|i| {
                let events = i * 100;
                let quanta = (events as f64 * bytes_per_event / 4096.0).floor();
                let noise = ((i * 7919) % 5).min(churn) as f64;
                let step = step_at.map_or(0.0, |(at, b)| if events >= at { b } else { 0.0 });
                SitePoint {
                    unix_ms: 1_000 * i,
                    events,
                    bytes: 200_000.0 + (quanta + noise) * 4096.0 + step,
                }
            })
            .collect();
        SiteSeries {
            chain: vec![
                "daq_runtime::leak::inject_leak".into(),
                "aggregator::x".into(),
            ],
            points,
        }
    }

    #[test]
    fn a_site_growing_per_event_leaks_at_its_size() {
        let t = site_trend(
            "daq_runtime::leak::inject_leak",
            &site(64.0, 2, None),
            10_000,
        );
        assert!(t.leak, "{t:?}");
        let e = t.slope_bytes_per_event.expect("slope");
        assert!((e - 64.0).abs() < 8.0, "{e}");
        assert!(
            (t.growth_over_window_bytes - 64.0 * 6_900.0).abs() < 60_000.0,
            "{t:?}"
        );
        assert_eq!(t.chain[0], "daq_runtime::leak::inject_leak");
    }

    #[test]
    fn a_churning_site_and_a_one_time_step_are_not_leaks() {
        let churn = site_trend("h2::buf", &site(0.0, 4, None), 10_000);
        assert!(!churn.leak, "{churn:?}");
        // A buffer pool doubling once in the middle of the run: 1 MiB.
        let step = site_trend(
            "daq_shm::x",
            &site(0.0, 1, Some((4_000, 1_048_576.0))),
            10_000,
        );
        assert!(!step.leak, "{step:?}");
        // Too little growth over the window to tell from sampling: 2 B/event.
        let small = site_trend("x", &site(2.0, 0, None), 10_000);
        assert!(!small.leak, "{small:?}");
    }

    #[test]
    fn a_sawtooth_without_growth_is_stable() {
        let t = trend(&samples(0, 3_000_000), 10.0);
        assert_eq!(t.verdict, Verdict::Stable, "{t:?}");
    }
}
