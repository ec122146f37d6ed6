//! Driving one run of a booted system: the run's length and progress,
//! what every command that runs does first (`prepare`), and start, wait
//! (progress, live heap samples, Ctrl-C) and stop (`start_wait_stop`),
//! shared by `daqctl demo`, `soak`, `run` and the bench.

use crate::control::record::kind_of;
use crate::control::session;
use crate::control::system::{Reply, System};
use anyhow::{Context, Result, bail};
use daq_format::config::SystemConfig;
use daq_format::process::Kind;
use daq_format::record::RunPaths;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    Duration(Duration),
    /// Every boardreader generates exactly this many events.
    Events(u64),
}

/// The run's length from `--duration` or `--events` (default 10 s).
pub fn length(duration: Option<Duration>, events: Option<u64>) -> Result<Length> {
    Ok(match (duration, events) {
        (_, Some(0)) => bail!("--events must be at least 1"),
        (_, Some(n)) => Length::Events(n),
        (Some(d), None) => Length::Duration(d),
        (None, None) => Length::Duration(Duration::from_secs(10)),
    })
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

/// The stop replies of a run, or none: a failure to start, wait or stop
/// goes into `errors`, and so into the run record, instead of ending the
/// command before the record is written.
pub fn replies_or_record(result: Result<Vec<Reply>>, errors: &mut Vec<String>) -> Vec<Reply> {
    result.unwrap_or_else(|e| {
        errors.push(format!("{e:#}"));
        Vec::new()
    })
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

/// How often a soak copies the processes' timed heap profiles into its record.
const PROFILES_EVERY: Duration = Duration::from_secs(60);

/// Copies every process's timed heap profiles into `heap_dir` now (the
/// processes that profile; a failure is printed, the soak goes on).
async fn copy_timed_profiles(system: &mut System, heap_dir: &Path) {
    let (records, _) = system.run_records().await;
    for (name, r) in records {
        if let Err(e) = crate::control::record::write_timed_profiles(heap_dir, &name, &r.profiles) {
            eprintln!("daqctl: timed heap profiles of {name} not copied: {e:#}");
        }
    }
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
    // The timed heap profiles, copied into the record as the soak goes
    // (heap/<process>.timed/), so one cut short keeps what it had.
    let mut last_profiles = Instant::now();
    let mut bar = match (progress, length) {
        (Progress::Bar, Length::Duration(d)) => Some((
            crate::control::progress::progress_bar(d),
            crate::control::progress::Provisional::new(d),
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
            if last_profiles.elapsed() >= PROFILES_EVERY && !done {
                last_profiles = Instant::now();
                copy_timed_profiles(system, heap_dir).await;
            }
            if last_print.elapsed() >= Duration::from_secs(1) || done {
                last_print = Instant::now();
                crate::control::progress::update_bar(
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
