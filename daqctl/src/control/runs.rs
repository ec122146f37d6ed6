//! `daqctl run --runs N`: N consecutive runs in one boot, each with its own
//! run record, then `<run-dir>/session_<first run>/session.json`: every
//! run's counts and each process's heap after every stop, with a verdict
//! across runs (memory that stays after every stop and grows run over run
//! is a leak at the run scale).

use crate::analysis::heap::across::{ACROSS_RUNS_RULE, AcrossRuns, RunHeap, across_runs};
use crate::control::drive::length;
use crate::control::drive::{self, Length, Progress};
use crate::control::options::{SystemArgs, parse_duration, resolve};
use crate::control::record;
use crate::control::system::Lifetime;
use crate::control::{book, session};
use crate::verdict::Exit;
use anyhow::Result;
use anyhow::bail;
use daq_format::config::SystemConfig;
use daq_format::record::RunCounts;
use daq_format::record::{RunPaths, RunSummary};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `daqctl run`'s flags.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// How many consecutive runs.
    #[arg(long)]
    pub runs: u32,
    /// Each run lasts this long (default 10 s): seconds (10, 2.5) or with units (10s, 90m).
    #[arg(long, conflicts_with = "events", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Each run lasts until every boardreader has generated this many events.
    #[arg(long)]
    pub events: Option<u64>,
}

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
    /// The run's counts, under summary.json's names.
    #[serde(flatten)]
    pub counts: RunCounts,
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

fn line(s: &RunSummary, root: &std::path::Path) -> RunLine {
    RunLine {
        run: s.run,
        record: root.display().to_string(),
        counts: RunCounts::from(s),
        bytes_written: s.bytes_written,
        ok: s.errors.is_empty(),
        errors: s.errors.clone(),
    }
}

/// Boots (or attaches), inits, runs `runs` runs, shuts down what it booted,
/// writes session.json. Returns the report and where it was written.
pub async fn run(opts: RunsOptions) -> Result<(SessionReport, PathBuf)> {
    let (config, first) = drive::prepare(opts.config, opts.length, &opts.run_dir)?;
    let dir = opts.run_dir.join(format!("session_{first:06}"));
    std::fs::create_dir_all(&dir)?;
    let env = session::profile_env(opts.heap_profile);
    let (mut system, owned) =
        session::boot(&config, &dir.join("logs"), &env, Lifetime::Owned).await?;
    book::write_processes(&dir.join(book::PROCESSES_FILE), &mut system).await?;
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
            let result = drive::start_wait_stop(
                &mut system,
                &config,
                run,
                &paths,
                opts.length,
                Progress::Quiet,
                &mut errors,
            )
            .await;
            let replies = drive::replies_or_record(result, &mut errors);
            let o = record::finish_run(&mut system, &config, run, &paths, replies, errors).await?;
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
    /// (allocated before the first start, allocated, rss_anon and events
    /// after each stop).
    type PerRun = (Option<u64>, Vec<u64>, Vec<u64>, Vec<u64>);
    let mut per: BTreeMap<String, PerRun> = BTreeMap::new();
    for o in &outcomes {
        for (name, p) in &o.summary.processes {
            let e = per.entry(name.clone()).or_default();
            if e.1.is_empty() {
                e.0 = p.heap.get("before_start").map(|h| h.allocated);
            }
            let after = p.heap.get("after_stop").copied().unwrap_or_default();
            e.1.push(after.allocated);
            e.2.push(after.rss_anon);
            e.3.push(after.events);
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
            .map(|(name, (baseline, alloc, rss, events))| {
                let runs: Vec<RunHeap> = (outcomes.iter().map(|o| o.summary.run))
                    .zip(alloc.iter().zip(&events))
                    .map(|(run, (&after_stop_bytes, &events))| RunHeap {
                        run,
                        after_stop_bytes,
                        events,
                    })
                    .collect();
                let trend = across_runs(baseline, &runs);
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
        threshold: ACROSS_RUNS_RULE,
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
            p.trend.slope_bytes_per_run.unwrap_or(0.0),
            p.trend
                .slope_bytes_per_event
                .map_or("-".into(), |e| format!("{e:.2}")),
            p.trend.verdict
        ));
    }
    out.push_str(&format!("  session    {}\n", path.display()));
    out
}

/// `daqctl run`: exits by the verdicts across runs (README "Exit codes"):
/// 1 when a run failed, else 3 when a process leaks, else 0.
pub async fn command(args: RunArgs) -> Result<Exit> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Soak defaults (1 kHz) without a config: a leak of 100 bytes per event
    // is megabytes over the runs, not noise.
    let config = resolve(&args.system, true)?;
    let length = length(args.duration, args.events)?;
    let (report, path) = run(RunsOptions {
        config,
        runs: args.runs,
        length,
        run_dir: args.system.run_dir,
        heap_profile: args.system.heap_profile,
    })
    .await?;
    print!("{}", render(&report, &path));
    let all_ok = report.runs.len() == args.runs as usize && report.runs.iter().all(|r| r.ok);
    Ok(Exit::of_verdicts(
        all_ok,
        report.processes.values().map(|p| p.trend.verdict),
    ))
}
