//! `daqctl demo`: boot a local system, run it, stop it, write the run record
//! and print the summary.

use crate::system::{Kind, Reply, System};
use anyhow::{Context, Result};
use daq_format::config::SystemConfig;
use daq_format::record::{self, InjectedLeak, ProcessRecord, RunPaths, RunSummary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    Duration(Duration),
    /// Every boardreader generates exactly this many events.
    Events(u64),
}

/// How progress is shown while the run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A line per second on stderr.
    Lines,
    /// A progress bar with elapsed time, events and each process's allocated bytes.
    Bar,
}

pub struct DemoOptions {
    pub config: SystemConfig,
    pub length: Length,
    pub run_dir: PathBuf,
    /// Dump jemalloc heap profiles at the run-state boundaries.
    pub heap_profile: bool,
    pub progress: Progress,
}

/// Environment that turns jemalloc heap profiling on in a process
/// (sampling on average every 2^12 bytes allocated).
pub const HEAP_PROFILE_ENV: (&str, &str) = (
    "_RJEM_MALLOC_CONF",
    "prof:true,prof_active:true,lg_prof_sample:12",
);

/// What a finished demo run produced.
pub struct Outcome {
    pub paths: RunPaths,
    pub summary: RunSummary,
}

/// Runs one demo run end to end. Errors in the run (a shortfall, a failed
/// stop) end up in `summary.errors`; only failures that prevent a run record
/// are returned as `Err`.
pub async fn run(opts: DemoOptions) -> Result<Outcome> {
    let mut config = opts.config;
    if let Length::Events(n) = opts.length {
        config.generator.max_events = n;
    }
    config.validate()?;
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("cannot create run dir {}", opts.run_dir.display()))?;
    let run = record::next_run_number(&opts.run_dir)
        .with_context(|| format!("cannot read run dir {}", opts.run_dir.display()))?;
    let paths = RunPaths::new(&opts.run_dir, run);
    std::fs::create_dir_all(paths.logs())?;
    std::fs::create_dir_all(paths.data())?;
    std::fs::write(paths.config(), config.to_toml())?;
    let plan = crate::soak::Plan {
        run,
        duration_s: match opts.length {
            Length::Duration(d) => Some(d.as_secs_f64()),
            Length::Events(_) => None,
        },
        events: match opts.length {
            Length::Events(n) => Some(n),
            Length::Duration(_) => None,
        },
        written_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    };
    std::fs::write(
        paths.root.join(crate::soak::PLAN_FILE),
        serde_json::to_string_pretty(&plan).context("serializing the plan")?,
    )?;
    if let Some(l) = InjectedLeak::of(&config.leak) {
        eprintln!(
            "run {run}: leak injected on purpose: {} B/event into every {}",
            l.bytes_per_event,
            l.process_kind.as_str()
        );
    }
    let t = config.topology;
    eprintln!(
        "run {run}: booting {}x{}x{} system, record in {}",
        t.boardreaders,
        t.eventbuilders,
        t.aggregators,
        paths.root.display()
    );

    let env: Vec<(String, String)> = if opts.heap_profile {
        vec![(HEAP_PROFILE_ENV.0.into(), HEAP_PROFILE_ENV.1.into())]
    } else {
        vec![]
    };
    let mut system = System::boot(&config, &paths.logs(), &env).await?;
    for p in &system.procs {
        eprintln!("  {:<16} pid {:<8} {}", p.name, p.pid, p.addr);
    }
    let mut errors = Vec::new();
    let result = drive(
        &mut system,
        &config,
        run,
        &paths,
        opts.length,
        opts.progress,
        &mut errors,
    )
    .await;
    errors.extend(system.reap());
    let (statuses, e) = system.status().await;
    errors.extend(e);
    let (heaps, e) = system.heap().await;
    errors.extend(e);
    errors.extend(system.shutdown().await);
    let (duration, replies) = match result {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("{e:#}"));
            (Duration::ZERO, Vec::new())
        }
    };
    let collected = Collected {
        statuses,
        heaps,
        replies,
        errors,
    };
    let summary = summarize(&config, run, &paths, duration, collected);
    std::fs::write(
        paths.summary(),
        serde_json::to_string_pretty(&summary).context("serializing summary")?,
    )?;
    Ok(Outcome { paths, summary })
}

/// Init, start, wait, stop. Returns the run's duration and the stop replies.
async fn drive(
    system: &mut System,
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    length: Length,
    progress: Progress,
    errors: &mut Vec<String>,
) -> Result<(Duration, Vec<Reply>)> {
    system.init(config).await?;
    let data_dir = std::path::absolute(paths.data())?;
    let record_dir = std::path::absolute(&paths.root)?;
    system.start(run, &data_dir, &record_dir).await?;
    let started = Instant::now();
    eprintln!("run {run}: running");
    if let Err(e) = wait(system, config, length, progress, started, errors).await {
        errors.push(format!("{e:#}"));
    }
    eprintln!("run {run}: stopping");
    let (replies, e) = system.stop().await;
    errors.extend(e);
    Ok((started.elapsed(), replies))
}

/// Waits for the run's length, printing progress each second; Ctrl-C ends
/// the run early (it is still stopped cleanly).
async fn wait(
    system: &mut System,
    config: &SystemConfig,
    length: Length,
    progress: Progress,
    started: Instant,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_print = Instant::now();
    let mut bar = match (progress, length) {
        (Progress::Bar, Length::Duration(d)) => Some((
            crate::soak::progress_bar(d),
            crate::soak::Provisional::new(d),
        )),
        _ => None,
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // In --events mode, a generator that cannot go on (its eventbuilder is
    // gone) would keep the run waiting forever: give up after this long
    // without a new fragment.
    const STALLED: Duration = Duration::from_secs(15);
    let mut last_progress = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!("interrupted: stopping the run");
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        // A process that dies does not end the run: the others go on (its
        // events end incomplete) until the run is stopped as planned.
        for e in system.reap() {
            eprintln!("error: {e}");
            errors.push(e);
        }
        let (statuses, _) = system.status().await;
        let sum = |kind: &str, f: fn(&proto::Counters) -> u64| -> u64 {
            statuses
                .iter()
                .filter(|s| s.process.starts_with(kind))
                .filter_map(|s| s.counters.as_ref().map(f))
                .sum()
        };
        let sent = sum("boardreader", |c| c.fragments_sent);
        if sent != last_progress.0 {
            last_progress = (sent, Instant::now());
        } else if matches!(length, Length::Events(_)) && last_progress.1.elapsed() >= STALLED {
            anyhow::bail!(
                "no fragment generated for {} s: the run cannot reach its event count",
                STALLED.as_secs()
            );
        }
        let done = match length {
            Length::Duration(d) => started.elapsed() >= d,
            Length::Events(_) if system.all_dead(Kind::BoardReader) => true,
            Length::Events(n) => {
                let last = config.generator.initial_sequence_id + n - 1;
                statuses
                    .iter()
                    .filter(|s| s.process.starts_with("boardreader"))
                    .all(|s| {
                        s.counters
                            .as_ref()
                            .is_some_and(|c| c.last_sequence_id >= last)
                    })
            }
        };
        if let Some((bar, provisional)) = &mut bar {
            if last_print.elapsed() >= Duration::from_secs(1) || done {
                last_print = Instant::now();
                let (heaps, _) = system.heap().await;
                provisional.add(started.elapsed(), &heaps);
                crate::soak::update_bar(
                    bar,
                    started.elapsed(),
                    sum("boardreader", |c| c.fragments_sent),
                    provisional,
                );
            }
            if done {
                bar.finish();
                return Ok(());
            }
            continue;
        }
        if done || last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "  {:>6.1} s  fragments sent {:>10}  events built {:>9}  written {:>9}",
                started.elapsed().as_secs_f64(),
                sum("boardreader", |c| c.fragments_sent),
                sum("eventbuilder", |c| c.events_built),
                sum("aggregator", |c| c.events_written),
            );
        }
        if done {
            return Ok(());
        }
    }
}

/// What the processes reported at the end of a run.
struct Collected {
    statuses: Vec<proto::StatusReply>,
    heaps: Vec<(String, proto::HeapReply)>,
    replies: Vec<Reply>,
    errors: Vec<String>,
}

fn summarize(
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    duration: Duration,
    collected: Collected,
) -> RunSummary {
    let Collected {
        statuses,
        heaps,
        replies,
        mut errors,
    } = collected;
    let mut processes = std::collections::BTreeMap::new();
    for s in statuses {
        let counters = s.counters.unwrap_or_default();
        processes.insert(
            s.process,
            ProcessRecord {
                counters,
                ..Default::default()
            },
        );
    }
    for (name, h) in heaps {
        if let Some(rec) = processes.get_mut(&name) {
            rec.heap = h
                .boundaries
                .into_iter()
                .filter_map(|b| Some((b.label, b.snapshot?)))
                .collect();
            rec.profiles = h.profiles;
        }
    }
    for r in replies {
        for p in &r.reply.problems {
            errors.push(format!("{}: {p}", r.process));
        }
        if let Some(rec) = processes.get_mut(&r.process) {
            rec.problems = r.reply.problems;
        }
    }
    let sum = |kind: Kind, f: fn(&record::Counters) -> u64| -> u64 {
        processes
            .iter()
            .filter(|(n, _)| n.starts_with(kind.binary()))
            .map(|(_, p)| f(&p.counters))
            .sum()
    };
    let secs = duration.as_secs_f64();
    let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    let bytes_received = sum(Kind::EventBuilder, |c| c.bytes_received);
    let bytes_written = sum(Kind::Aggregator, |c| c.bytes_written);
    let events_built = sum(Kind::EventBuilder, |c| c.events_built);
    let data_files = processes
        .values()
        .flat_map(|p| p.counters.data_files.iter())
        .map(|f| relative(Path::new(f), &paths.root))
        .collect();
    let mut summary = RunSummary {
        run,
        topology: config.topology,
        netmon_input: config.aggregator.netmon_input.as_str().into(),
        disk_writing: config.aggregator.write_data,
        injected_leak: InjectedLeak::of(&config.leak),
        throttle_us: config.generator.throttle_us,
        started_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() - secs)
            .unwrap_or(0.0),
        duration_s: secs,
        fragments_sent: sum(Kind::BoardReader, |c| c.fragments_sent),
        fragments_received: sum(Kind::EventBuilder, |c| c.fragments_received),
        events_built,
        events_incomplete: sum(Kind::EventBuilder, |c| c.events_incomplete),
        events_written: sum(Kind::Aggregator, |c| c.events_written),
        bytes_written,
        data_files,
        event_rate_hz: per_s(events_built as f64),
        throughput_mb_s: per_s(bytes_received as f64) / 1e6,
        write_mb_s: per_s(bytes_written as f64) / 1e6,
        errors: vec![],
        processes,
    };
    errors.extend(summary.accounting_errors());
    summary.errors = errors;
    summary
}

fn relative(file: &Path, root: &Path) -> String {
    let abs_root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    file.strip_prefix(&abs_root)
        .or_else(|_| file.strip_prefix(root))
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The human-readable summary.
pub fn render(o: &Outcome) -> String {
    let s = &o.summary;
    let t = s.topology;
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(
        "run {}  topology {}x{}x{}  throttle {} us  duration {:.2} s",
        s.run, t.boardreaders, t.eventbuilders, t.aggregators, s.throttle_us, s.duration_s
    ));
    line(format!(
        "  fragments  sent {}  received {}",
        s.fragments_sent, s.fragments_received
    ));
    line(format!(
        "  events     built {}  incomplete {}  written {}",
        s.events_built, s.events_incomplete, s.events_written
    ));
    line(format!(
        "  rate       {:.1} events/s  {:.2} MB/s into the eventbuilders  {:.2} MB/s to disk",
        s.event_rate_hz, s.throughput_mb_s, s.write_mb_s
    ));
    line(format!(
        "  data       {} files, {} bytes",
        s.data_files.len(),
        s.bytes_written
    ));
    for f in &s.data_files {
        line(format!("             {f}"));
    }
    line(format!("  netmon     {}", s.netmon_input));
    if let Some(l) = s.injected_leak {
        line(format!(
            "  leak       {} B/event injected on purpose into every {}",
            l.bytes_per_event,
            l.process_kind.as_str()
        ));
    }
    out.push_str(&crate::heap::table(s));
    let profiles: Vec<&String> = s.processes.values().flat_map(|p| &p.profiles).collect();
    if !profiles.is_empty() {
        out.push_str(&crate::heap::profile_help(s, &o.paths.root));
    }
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("  record     {}", o.paths.root.display()));
    if s.errors.is_empty() {
        let written = if t.aggregators == 0 {
            "no aggregators: built events discarded"
        } else if s.disk_writing {
            "every built event written"
        } else {
            "disk writing off"
        };
        line(format!(
            "OK: nothing lost (fragments sent = received = {} x events built; {written})",
            t.boardreaders
        ));
    } else {
        line(format!("FAILED: {} errors", s.errors.len()));
        for e in &s.errors {
            line(format!("  error: {e}"));
        }
    }
    out
}
