//! `daqctl run --runs N`: N consecutive runs in one boot, each with its own
//! run record, then `<run-dir>/session_<first run>/session.json`: every
//! run's counts and each process's heap after every stop, with a verdict
//! across runs (memory that stays after every stop and grows run over run
//! is a leak at the run scale).

use crate::demo::{self, Length, Progress};
use crate::heap::{LEAK_BYTES_PER_EVENT, LEAK_MIN_BYTES, theil_sen};
use crate::session;
use crate::system::Lifetime;
use anyhow::{Context, Result};
use daq_format::config::SystemConfig;
use daq_format::record::{RunPaths, RunSummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct RunsOptions {
    pub config: SystemConfig,
    pub runs: u32,
    pub length: Length,
    pub run_dir: PathBuf,
    pub heap_profile: bool,
}

/// One run of the session, as session.json lists it.
#[derive(Debug, Serialize)]
pub struct RunLine {
    pub run: u32,
    pub record: String,
    pub duration_s: f64,
    pub fragments_sent: u64,
    pub fragments_received: u64,
    pub events_built: u64,
    pub events_incomplete: u64,
    pub events_written: u64,
    pub bytes_written: u64,
    /// Every equality of the run held and nothing went wrong.
    pub ok: bool,
    pub errors: Vec<String>,
}

/// One process across the runs.
#[derive(Debug, Serialize)]
pub struct ProcessAcross {
    /// jemalloc allocated bytes after each stop, in run order.
    pub after_stop_allocated: Vec<u64>,
    /// RssAnon after each stop.
    pub after_stop_rss_anon: Vec<u64>,
    /// Events the process handled in each run.
    pub events: Vec<u64>,
    #[serde(flatten)]
    pub trend: AcrossRuns,
}

/// The trend of after-stop memory across runs, and its verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AcrossRuns {
    /// Runs left out at the start (warm-up: caches, pools, first files).
    pub warmup_runs: usize,
    pub slope_bytes_per_run: f64,
    pub slope_bytes_per_event: Option<f64>,
    /// The fitted growth over the runs after the warm-up.
    pub growth_bytes: f64,
    pub verdict: &'static str,
}

/// `session.json`.
#[derive(Debug, Serialize)]
pub struct SessionReport {
    pub first_run: u32,
    pub last_run: u32,
    pub topology: String,
    pub netmon_input: String,
    pub runs: Vec<RunLine>,
    pub processes: BTreeMap<String, ProcessAcross>,
    pub threshold: &'static str,
}

/// The verdict across runs from each run's after-stop `allocated` and the
/// events handled per run: the Theil-Sen trend (as the soak's) of memory
/// after stop against the run index and against cumulative events, after
/// a warm-up of 10% of the runs (at least one of three or more). `leak`
/// when it grows by at least 1 MiB over the runs and by at least 8 bytes
/// per event handled, `stable` otherwise.
///
/// A stand-in in one function: the leak analysis (issue 9) replaces it
/// with `heap::across_runs`.
pub fn across_runs(after_stop: &[u64], events: &[u64]) -> AcrossRuns {
    let n = after_stop.len();
    let warmup_runs = if n >= 3 { (n / 10).max(1) } else { 0 };
    let mut cumulative = 0u64;
    let mut by_run = Vec::new();
    let mut by_event = Vec::new();
    for (i, (&a, &e)) in after_stop.iter().zip(events).enumerate() {
        cumulative += e;
        if i >= warmup_runs {
            by_run.push((i as f64, a as f64));
            by_event.push((cumulative as f64, a as f64));
        }
    }
    let slope_run = theil_sen(&by_run).unwrap_or(0.0);
    let slope_event = theil_sen(&by_event);
    let growth = slope_run * by_run.len().saturating_sub(1) as f64;
    let leak = growth >= LEAK_MIN_BYTES
        && match slope_event {
            Some(e) => e >= LEAK_BYTES_PER_EVENT,
            None => true,
        };
    AcrossRuns {
        warmup_runs,
        slope_bytes_per_run: slope_run,
        slope_bytes_per_event: slope_event,
        growth_bytes: growth,
        verdict: if leak { "leak" } else { "stable" },
    }
}

fn line(s: &RunSummary, root: &std::path::Path) -> RunLine {
    RunLine {
        run: s.run,
        record: root.display().to_string(),
        duration_s: s.duration_s,
        fragments_sent: s.fragments_sent,
        fragments_received: s.fragments_received,
        events_built: s.events_built,
        events_incomplete: s.events_incomplete,
        events_written: s.events_written,
        bytes_written: s.bytes_written,
        ok: s.errors.is_empty(),
        errors: s.errors.clone(),
    }
}

/// Boots (or attaches), inits, runs `runs` runs, shuts down what it booted,
/// writes session.json. Returns the report and where it was written.
pub async fn run(opts: RunsOptions) -> Result<(SessionReport, PathBuf)> {
    let mut config = opts.config;
    if let Length::Events(n) = opts.length {
        config.generator.max_events = n;
    }
    config.validate()?;
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("cannot create run dir {}", opts.run_dir.display()))?;
    let first = session::next_run(&opts.run_dir, &[])?;
    let dir = opts.run_dir.join(format!("session_{first:06}"));
    std::fs::create_dir_all(&dir)?;
    let env = session::profile_env(opts.heap_profile);
    let (mut system, owned) =
        session::boot(&config, &dir.join("logs"), &env, Lifetime::Owned).await?;
    session::write_processes(&dir.join(session::PROCESSES_FILE), &mut system).await?;
    let t = config.topology;
    eprintln!(
        "session: {}x{}x{}, {} runs, record in {}",
        t.boardreaders,
        t.eventbuilders,
        t.aggregators,
        opts.runs,
        dir.display()
    );
    let result = async {
        session::init(&mut system, &config).await?;
        let mut summaries = Vec::new();
        for _ in 0..opts.runs {
            let (statuses, _) = system.status().await;
            let run = session::next_run(&opts.run_dir, &statuses)?;
            let paths = RunPaths::new(&opts.run_dir, run);
            let mut errors = Vec::new();
            let replies = match demo::start_wait_stop(
                &mut system,
                &config,
                run,
                &paths,
                opts.length,
                Progress::Quiet,
                &mut errors,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    Vec::new()
                }
            };
            let o = demo::finish_run(&mut system, &config, run, &paths, replies, errors).await?;
            let s = &o.summary;
            eprintln!(
                "run {:>6}  {:>6.2} s  fragments {} / {}  events built {} incomplete {} written {}  {}",
                s.run,
                s.duration_s,
                s.fragments_sent,
                s.fragments_received,
                s.events_built,
                s.events_incomplete,
                s.events_written,
                if s.errors.is_empty() {
                    "OK".to_string()
                } else {
                    format!("FAILED: {}", s.errors.join("; "))
                }
            );
            let failed_to_run = s.duration_s == 0.0 && !s.errors.is_empty();
            summaries.push(o);
            if failed_to_run {
                break;
            }
        }
        Ok::<_, anyhow::Error>(summaries)
    }
    .await;
    let shutdown_errors = if owned {
        system.shutdown().await
    } else {
        vec![]
    };
    let outcomes = result?;
    for e in &shutdown_errors {
        eprintln!("error: {e}");
    }
    /// (allocated, rss_anon, events) after each stop.
    type PerRun = (Vec<u64>, Vec<u64>, Vec<u64>);
    let mut per: BTreeMap<String, PerRun> = BTreeMap::new();
    for o in &outcomes {
        for (name, p) in &o.summary.processes {
            let e = per.entry(name.clone()).or_default();
            let after = p.heap.get("after_stop").copied().unwrap_or_default();
            e.0.push(after.allocated);
            e.1.push(after.rss_anon);
            e.2.push(after.events);
        }
    }
    let report = SessionReport {
        first_run: outcomes.first().map_or(first, |o| o.summary.run),
        last_run: outcomes.last().map_or(first, |o| o.summary.run),
        topology: format!("{}x{}x{}", t.boardreaders, t.eventbuilders, t.aggregators),
        netmon_input: config.aggregator.netmon_input.as_str().into(),
        runs: outcomes
            .iter()
            .map(|o| line(&o.summary, &o.paths.root))
            .collect(),
        processes: per
            .into_iter()
            .map(|(name, (alloc, rss, events))| {
                let trend = across_runs(&alloc, &events);
                (
                    name,
                    ProcessAcross {
                        after_stop_allocated: alloc,
                        after_stop_rss_anon: rss,
                        events,
                        trend,
                    },
                )
            })
            .collect(),
        threshold: "leak = the Theil-Sen trend of jemalloc allocated after stop, across the runs after a 10% warm-up, grows by at least 1 MiB AND by at least 8 bytes per event handled",
    };
    let path = dir.join("session.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    Ok((report, path))
}

/// The closing table of a session.
pub fn render(r: &SessionReport, path: &std::path::Path) -> String {
    let ok = r.runs.iter().filter(|l| l.ok).count();
    let mut out = format!(
        "session runs {}..{}  {}  netmon {}: {ok} of {} runs with every equality exact\n",
        r.first_run,
        r.last_run,
        r.topology,
        r.netmon_input,
        r.runs.len()
    );
    out.push_str(&format!(
        "  {:<16} {:>14} {:>14} {:>16} {:>14}  verdict\n",
        "after stop", "first KiB", "last KiB", "slope B/run", "B/event"
    ));
    for (name, p) in &r.processes {
        out.push_str(&format!(
            "  {:<16} {:>14.1} {:>14.1} {:>16.1} {:>14}  {}\n",
            name,
            p.after_stop_allocated.first().copied().unwrap_or(0) as f64 / 1024.0,
            p.after_stop_allocated.last().copied().unwrap_or(0) as f64 / 1024.0,
            p.trend.slope_bytes_per_run,
            p.trend
                .slope_bytes_per_event
                .map_or("-".into(), |e| format!("{e:.2}")),
            p.trend.verdict
        ));
    }
    out.push_str(&format!("  session    {}\n", path.display()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_that_stays_after_every_stop_and_grows_is_a_leak() {
        // 20 runs of 10000 events; 175 bytes per event stay after every stop.
        let events = vec![10_000u64; 20];
        let leaking: Vec<u64> = (0..20).map(|i| 8_000_000 + i * 1_750_000).collect();
        let t = across_runs(&leaking, &events);
        assert_eq!(t.verdict, "leak");
        assert_eq!(t.warmup_runs, 2);
        assert_eq!(t.slope_bytes_per_run, 1_750_000.0);
        assert_eq!(t.slope_bytes_per_event, Some(175.0));
        // A first run that fills caches, then a sawtooth around a level.
        let mut flat: Vec<u64> = (0..20).map(|i| 8_000_000 + (i % 3) * 200_000).collect();
        flat[0] = 1_000_000;
        assert_eq!(across_runs(&flat, &events).verdict, "stable");
    }
}
