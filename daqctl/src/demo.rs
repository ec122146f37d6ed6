//! `daqctl demo`: boot a local system, run it, stop it, write the run record
//! and print the summary; and the run record every start/stop pair writes
//! (`finish_run`, shared with `daqctl stop` and `daqctl run`).

use crate::session;
use crate::system::{Lifetime, Reply, System};
use anyhow::{Context, Result};
use daq_format::config::SystemConfig;
use daq_format::process::{Kind, ProcessId};
use daq_format::record::{
    self, DataFileLocation, InjectedLeak, LostWith, ProcessRecord, RunPaths, RunSummary,
};
use daq_format::seqranges;
use daq_runtime::sampler::write_csv;
use std::collections::BTreeMap;
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
    /// Nothing while the run lasts (`daqctl run` prints a line per run).
    Quiet,
}

pub struct DemoOptions {
    pub config: SystemConfig,
    pub length: Length,
    pub run_dir: PathBuf,
    /// Dump jemalloc heap profiles at the run-state boundaries.
    pub heap_profile: bool,
    pub progress: Progress,
    /// After the run record is written, keep the processes up (serving
    /// metrics) until stdin gives a line or closes.
    pub hold: bool,
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

/// `config` with the run's length applied and validated, the run dir
/// created, and the next run number in it: what every command that runs
/// does first.
pub fn prepare(
    mut config: SystemConfig,
    length: Length,
    run_dir: &Path,
) -> Result<(SystemConfig, u32)> {
    if let Length::Events(n) = length {
        config.generator.max_events = n;
    }
    config.validate()?;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run dir {}", run_dir.display()))?;
    let run = session::next_run(run_dir, &[])?;
    Ok((config, run))
}

/// Runs one demo run end to end: boot, init, start, wait, stop, shutdown,
/// through the same steps as the session commands (`daqctl boot`, `init`,
/// `start`, `stop`, `shutdown`). With an `[addresses]` table it attaches
/// instead of booting and leaves the processes running (Ready). Errors in
/// the run (a shortfall, a failed stop) end up in `summary.errors`; only
/// failures that prevent a run record are returned as `Err`.
pub async fn run(opts: DemoOptions) -> Result<Outcome> {
    let (config, run) = prepare(opts.config, opts.length, &opts.run_dir)?;
    let paths = RunPaths::new(&opts.run_dir, run);
    std::fs::create_dir_all(paths.logs())?;
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
    let env = session::profile_env(opts.heap_profile);
    let (mut system, owned) = session::boot(&config, &paths.logs(), &env, Lifetime::Owned).await?;
    for p in &system.procs {
        eprintln!(
            "  {:<16} pid {:<8} {:<21} {}",
            p.id,
            p.pid,
            p.addr,
            p.metrics_url.as_deref().unwrap_or("")
        );
    }
    // The address book next to the record, for a person or a script mid-run.
    session::write_processes(&paths.root.join(session::PROCESSES_FILE), &mut system).await?;
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
    let replies = replies_or_record(result, &mut errors);
    let outcome = finish_run(&mut system, &config, run, &paths, replies, errors).await;
    if let (true, Ok(o)) = (opts.hold, &outcome) {
        hold(&system, &o.paths).await;
    }
    let mut shutdown_errors = Vec::new();
    if owned {
        shutdown_errors = system.shutdown().await;
    }
    let mut outcome = outcome?;
    if !shutdown_errors.is_empty() {
        outcome.summary.errors.extend(shutdown_errors);
        write_summary(&outcome)?;
    }
    Ok(outcome)
}

/// Prints every process's readiness line and `DAQ-HOLD <record dir>` on
/// stdout, then waits for a line on stdin, its end, or Ctrl-C.
async fn hold(system: &System, paths: &RunPaths) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for p in &system.procs {
        let metrics = p
            .metrics_url
            .as_deref()
            .map(|u| format!(" metrics={u}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {} {} {}{metrics}",
            daq_runtime::net::READY_PREFIX,
            p.id,
            p.addr,
            p.pid
        );
    }
    let _ = writeln!(out, "DAQ-HOLD {}", paths.root.display());
    let _ = out.flush();
    drop(out);
    eprintln!("holding the processes up (metrics served) until a line or EOF on stdin");
    // A detached thread: a blocking read must not keep daqctl from exiting.
    let (tx, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = tx.send(std::io::stdin().read_line(&mut line));
    });
    tokio::select! {
        _ = line => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The stop replies of a run, or none: a failure to start, wait or stop
/// goes into `errors`, and so into the run record, instead of ending the
/// command before the record is written.
pub fn replies_or_record(result: Result<Vec<Reply>>, errors: &mut Vec<String>) -> Vec<Reply> {
    result.unwrap_or_else(|e| {
        errors.push(format!("{e:#}"));
        Vec::new()
    })
}

/// Init, start, wait, stop. Returns the stop replies.
async fn drive(
    system: &mut System,
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    length: Length,
    progress: Progress,
    errors: &mut Vec<String>,
) -> Result<Vec<Reply>> {
    session::init(system, config).await?;
    start_wait_stop(system, config, run, paths, length, progress, errors).await
}

/// Start, wait for the run's length, stop. Returns the stop replies.
pub async fn start_wait_stop(
    system: &mut System,
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    length: Length,
    progress: Progress,
    errors: &mut Vec<String>,
) -> Result<Vec<Reply>> {
    session::start(system, config, run, paths).await?;
    let started = Instant::now();
    if progress != Progress::Quiet {
        eprintln!("run {run}: running");
    }
    let heap_dir = paths.root.join("heap");
    if let Err(e) = wait(system, config, length, progress, started, &heap_dir, errors).await {
        errors.push(format!("{e:#}"));
    }
    if progress != Progress::Quiet {
        eprintln!("run {run}: stopping");
    }
    let stop_began = Instant::now();
    let (replies, e) = system.stop().await;
    errors.extend(e);
    if progress != Progress::Quiet {
        eprintln!(
            "run {run}: stopped in {:.1} s",
            stop_began.elapsed().as_secs_f64()
        );
    }
    Ok(replies)
}

/// After stop: collects what every process reported (counters, heap
/// boundaries, heap samples and profiles over gRPC), writes the run record
/// (summary.json, heap/<process>.csv, heap profiles) and returns it.
pub async fn finish_run(
    system: &mut System,
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    replies: Vec<Reply>,
    mut errors: Vec<String>,
) -> Result<Outcome> {
    errors.extend(system.reap());
    // A process that died left its shared-memory segment (its lock is free
    // now): removed here, on this host, so nothing of the run outlives it.
    let dead = system.dead_children();
    for id in &dead {
        let path = daq_shm::segment_path(config.partition, &id.to_string());
        match daq_shm::remove_abandoned(&path) {
            Ok(true) => eprintln!(
                "removed the shared-memory segment {} left by {id}",
                path.display()
            ),
            Ok(false) => {}
            Err(e) => errors.push(format!(
                "{id}: cannot remove its shared-memory segment: {e}"
            )),
        }
    }
    errors.extend(system.silent());
    let (statuses, e) = system.status().await;
    errors.extend(e);
    let (heaps, e) = system.heap().await;
    errors.extend(e);
    let (records, e) = system.run_records().await;
    errors.extend(e);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // From the end of the last start to the end of stop.
    let started_ms = statuses
        .iter()
        .filter(|s| s.run == run)
        .map(|s| s.run_started_unix_ms)
        .max()
        .filter(|&t| t > 0 && t <= now_ms);
    let duration = started_ms.map_or(Duration::ZERO, |t| Duration::from_millis(now_ms - t));
    let hosts: BTreeMap<String, String> = system
        .procs
        .iter()
        .map(|p| (p.name(), host_of(&p.addr)))
        .collect();
    let heap_dir = paths.root.join("heap");
    let mut profiles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, r) in records {
        if r.run != run {
            continue;
        }
        std::fs::create_dir_all(&heap_dir)?;
        if !r.samples.is_empty() {
            write_csv(&heap_dir.join(format!("{name}.csv")), &r.samples)?;
        }
        for p in r.profiles {
            let path = heap_dir.join(format!("{name}.{}.heap", p.label));
            std::fs::write(&path, &p.data)?;
            profiles
                .entry(name.clone())
                .or_default()
                .push(std::path::absolute(&path)?.display().to_string());
        }
    }
    let collected = Collected {
        dead,
        statuses,
        heaps,
        replies,
        errors,
        profiles,
        hosts,
    };
    let summary = summarize(config, run, paths, duration, collected);
    let outcome = Outcome {
        paths: paths.clone(),
        summary,
    };
    write_summary(&outcome)?;
    Ok(outcome)
}

fn write_summary(o: &Outcome) -> Result<()> {
    std::fs::write(
        o.paths.summary(),
        serde_json::to_string_pretty(&o.summary).context("serializing summary")?,
    )?;
    Ok(())
}

/// The host part of `host:port` (without the brackets of an IPv6 address).
pub fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Heap readings streamed to `heap/<process>.csv` while a soak runs (a
/// file per process, one row per reading, flushed at once; nothing held).
struct LiveSamples {
    dir: PathBuf,
    files: BTreeMap<String, csv::Writer<std::fs::File>>,
}

impl LiveSamples {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
        }
    }

    fn append(&mut self, heaps: &[(String, proto::HeapReply)]) {
        for (name, h) in heaps {
            let Some(row) = h.current else { continue };
            let w = match self.files.entry(name.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let path = self.dir.join(format!("{name}.csv"));
                    let opened = std::fs::create_dir_all(&self.dir)
                        .map_err(csv::Error::from)
                        .and_then(|()| csv::Writer::from_path(&path));
                    match opened {
                        Ok(w) => e.insert(w),
                        Err(err) => {
                            eprintln!("daqctl: cannot write {}: {err}", path.display());
                            continue;
                        }
                    }
                }
            };
            if let Err(err) = w.serialize(row).and_then(|()| Ok(w.flush()?)) {
                eprintln!("daqctl: heap sample of {name} not written: {err}");
            }
        }
    }
}

/// Waits for the run's length, printing progress each second; Ctrl-C ends
/// the run early (it is still stopped cleanly).
async fn wait(
    system: &mut System,
    config: &SystemConfig,
    length: Length,
    progress: Progress,
    started: Instant,
    heap_dir: &Path,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // During a soak, the heap readings polled for the progress bar are
    // written to the record as they come (`heap/<process>.csv`), so a soak
    // whose daqctl dies still leaves samples for `soak analyse`; at stop
    // the processes' own sampler rows replace them.
    let mut live = LiveSamples::new(heap_dir);
    let sample_every = Duration::from_millis(config.heap.sample_interval_ms.max(200));
    let mut last_sample = Instant::now();
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
    let mut silent = std::collections::BTreeSet::new();
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
        // A process that stops answering (hung, cut off) is named once,
        // and again when it answers again; the run goes on.
        for p in system.procs.iter().filter(|p| p.alive_now()) {
            let name = p.name();
            let answers = statuses.iter().any(|s| s.process == name);
            if !answers && silent.insert(name.clone()) {
                eprintln!("warning: {name} does not answer status");
            } else if answers && silent.remove(&name) {
                eprintln!("warning: {name} answers again");
            }
        }
        let sum = |kind: Kind, f: fn(&proto::Counters) -> u64| -> u64 {
            statuses
                .iter()
                .filter(|s| kind_of(&s.process) == Some(kind))
                .filter_map(|s| s.counters.as_ref().map(f))
                .sum()
        };
        let sent = sum(Kind::BoardReader, |c| c.fragments_sent);
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
                    .filter(|s| kind_of(&s.process) == Some(Kind::BoardReader))
                    .all(|s| {
                        s.counters
                            .as_ref()
                            .is_some_and(|c| c.last_sequence_id >= last)
                    })
            }
        };
        if let Some((bar, provisional)) = &mut bar {
            // Heap readings at the configured sample interval (at most the
            // loop's tick), the bar redrawn each second.
            if last_sample.elapsed() >= sample_every || done {
                last_sample = Instant::now();
                let (heaps, _) = system.heap().await;
                live.append(&heaps);
                provisional.add(started.elapsed(), &heaps);
            }
            if last_print.elapsed() >= Duration::from_secs(1) || done {
                last_print = Instant::now();
                crate::soak::update_bar(
                    bar,
                    started.elapsed(),
                    sum(Kind::BoardReader, |c| c.fragments_sent),
                    provisional,
                );
            }
            if done {
                bar.finish();
                return Ok(());
            }
            continue;
        }
        if progress == Progress::Quiet {
            if done {
                return Ok(());
            }
            continue;
        }
        if done || last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "  {:>6.1} s  fragments sent {:>10}  events built {:>9}  written {:>9}",
                started.elapsed().as_secs_f64(),
                sum(Kind::BoardReader, |c| c.fragments_sent),
                sum(Kind::EventBuilder, |c| c.events_built),
                sum(Kind::Aggregator, |c| c.events_written),
            );
        }
        if done {
            return Ok(());
        }
    }
}

/// The kind of a process named in a reply.
pub fn kind_of(name: &str) -> Option<Kind> {
    name.parse::<ProcessId>().ok().map(|id| id.kind)
}

/// What the processes reported at the end of a run.
struct Collected {
    /// Processes that died during the run.
    dead: Vec<ProcessId>,
    statuses: Vec<proto::StatusReply>,
    heaps: Vec<(String, proto::HeapReply)>,
    replies: Vec<Reply>,
    errors: Vec<String>,
    /// Heap profiles written into the record, by process.
    profiles: BTreeMap<String, Vec<String>>,
    /// The host of each process.
    hosts: BTreeMap<String, String>,
}

fn summarize(
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    duration: Duration,
    collected: Collected,
) -> RunSummary {
    let Collected {
        dead,
        statuses,
        heaps,
        replies,
        mut errors,
        mut profiles,
        hosts,
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
            rec.profiles = profiles.remove(&name).unwrap_or_default();
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
            .filter(|(n, _)| kind_of(n) == Some(kind))
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
    // Data files stay on the aggregator's host: say which.
    let data_file_locations = processes
        .iter()
        .flat_map(|(name, p)| {
            let host = hosts.get(name).cloned().unwrap_or_default();
            p.counters.data_files.iter().map(move |f| DataFileLocation {
                process: name.clone(),
                host: host.clone(),
                path: f.clone(),
            })
        })
        .collect();
    let mut drops = std::collections::BTreeMap::new();
    for p in processes.values() {
        for (k, v) in record::drops_of(&p.counters) {
            if v > 0 {
                *drops.entry(k.to_string()).or_insert(0) += v;
            }
        }
    }
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
        events_unwritten: sum(Kind::Aggregator, |c| c.events_unwritten),
        drops,
        bytes_written,
        data_files,
        data_file_locations,
        event_rate_hz: per_s(events_built as f64),
        throughput_mb_s: per_s(bytes_received as f64) / 1e6,
        write_mb_s: per_s(bytes_written as f64) / 1e6,
        errors: vec![],
        lost: vec![],
        processes,
    };
    errors.extend(summary.accounting_errors());
    summary.lost = dead
        .iter()
        .map(|id| lost_with(config, *id, &summary.processes))
        .collect();
    for l in &summary.lost {
        if let Some(n) = l.events {
            let ids: Vec<String> = l.sequence_ids.iter().map(seqranges::display).collect();
            errors.push(format!(
                "{} died: {n} events lost with it (sequence ids {})",
                l.process,
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            ));
        }
    }
    summary.errors = errors;
    summary
}

/// Most sequence ids `lost_with` enumerates to merge the aggregators'
/// shares into the eventbuilders' step (more are left per aggregator).
const MERGE_LIMIT: u64 = 4_000_000;

/// What died with `id`. For an eventbuilder: its sequence ids (those
/// `s % eventbuilders == rank` from the first one generated to the last)
/// that no aggregator received from it, from every aggregator's
/// `received_ranges`; unknown when an aggregator did not answer.
fn lost_with(
    config: &SystemConfig,
    id: ProcessId,
    processes: &BTreeMap<String, ProcessRecord>,
) -> LostWith {
    let mut lost = LostWith {
        process: id.to_string(),
        ..Default::default()
    };
    let t = config.topology;
    let (n_eb, n_ag) = (u64::from(t.eventbuilders), u64::from(t.aggregators));
    if id.kind != Kind::EventBuilder || n_ag == 0 || n_eb == 0 {
        return lost;
    }
    let first = config.generator.initial_sequence_id;
    let last = processes
        .iter()
        .filter(|(n, _)| kind_of(n) == Some(Kind::BoardReader))
        .map(|(_, p)| p.counters.last_sequence_id)
        .max()
        .unwrap_or(0);
    let k = u64::from(id.rank);
    let step = n_eb * n_ag;
    let mut shares = Vec::new();
    for j in 0..n_ag {
        let name = ProcessId::new(Kind::Aggregator, j as u16).to_string();
        let Some(ag) = processes.get(&name) else {
            return lost; // Its share is unknown.
        };
        // Sequence ids of eventbuilder k routed to aggregator j.
        let routed = |s: u64| s % n_eb == k && (s / n_eb) % n_ag == j;
        let Some(lo) = (first..first.saturating_add(step)).find(|&s| routed(s)) else {
            continue;
        };
        let Some(hi) = (last.saturating_sub(step - 1)..=last)
            .rev()
            .find(|&s| routed(s))
        else {
            continue;
        };
        if hi < lo {
            continue;
        }
        let have = ag
            .counters
            .received_ranges
            .iter()
            .find(|r| r.source == lost.process)
            .map(|r| r.ranges.as_slice())
            .unwrap_or_default();
        let expected = seqranges::SequenceRange {
            first: lo,
            last: hi,
            step,
        };
        shares.extend(seqranges::subtract(&expected, have));
    }
    lost.events = Some(shares.iter().map(seqranges::count).sum());
    lost.sequence_ids = seqranges::merge(shares, n_eb, MERGE_LIMIT);
    lost
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
    if !s.drops.is_empty() {
        let d: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line(format!("  dropped    {}", d.join("  ")));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(process: &str, counters: proto::Counters) -> proto::StatusReply {
        proto::StatusReply {
            process: process.into(),
            counters: Some(counters),
            ..Default::default()
        }
    }

    #[test]
    fn the_record_says_how_many_events_were_not_written_and_why_counts_differ() {
        let mut config = SystemConfig::default();
        config.topology.boardreaders = 1;
        config.topology.eventbuilders = 1;
        config.topology.aggregators = 2;
        let statuses = vec![
            status(
                "boardreader-0",
                proto::Counters {
                    fragments_sent: 100,
                    ..Default::default()
                },
            ),
            status(
                "eventbuilder-0",
                proto::Counters {
                    fragments_received: 97,
                    fragments_rejected: 1,
                    fragments_discarded: 2,
                    events_built: 97,
                    ..Default::default()
                },
            ),
            status(
                "aggregator-0",
                proto::Counters {
                    events_received: 50,
                    events_written: 20,
                    events_unwritten: 30,
                    ..Default::default()
                },
            ),
            status(
                "aggregator-1",
                proto::Counters {
                    events_received: 47,
                    events_written: 47,
                    ..Default::default()
                },
            ),
        ];
        let collected = Collected {
            dead: vec![],
            statuses,
            heaps: vec![],
            replies: vec![],
            errors: vec![],
            profiles: BTreeMap::new(),
            hosts: BTreeMap::new(),
        };
        let paths = RunPaths::new(Path::new("runs"), 1);
        let s = summarize(&config, 1, &paths, Duration::from_secs(1), collected);
        assert_eq!((s.events_written, s.events_unwritten), (67, 30));
        assert_eq!(
            s.drops,
            BTreeMap::from([
                ("events_unwritten".to_string(), 30),
                ("fragments_discarded".to_string(), 2),
                ("fragments_rejected".to_string(), 1),
            ])
        );
        assert_eq!(
            s.errors,
            [
                "fragments_received 97 != fragments_sent 100 (rejected 1, discarded with their batch 2, unaccounted 0)",
                "fragments_sent 100 != 1 x events_built 97 (events_incomplete 0, fragments_unpublished 0, late_fragments 0, oversize_fragments 0, dropped 0)",
                "events_written 67 != events_built 97 + events_incomplete 0 (not written 30, rejected 0, discarded with their batch 0)",
            ]
        );
    }
}
