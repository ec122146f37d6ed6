//! `daqctl monitor`: an online monitor. Attaches read-only to a running
//! process's shared-memory event store (a separate process, non-destructive:
//! the writer and its destructive reader never wait for it) and prints a line
//! per second.

use crate::control::book::find;
use crate::control::system::System;
use crate::verdict::Exit;
use anyhow::{Result, bail};
use daq_format::config::SystemConfig;
use daq_shm::{ShmError, ShmMonitor, segment_path};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `daqctl monitor`'s flags.
#[derive(clap::Args)]
pub struct MonitorArgs {
    /// The process, e.g. aggregator-0 or eventbuilder-1.
    #[arg(long)]
    process: String,
    /// The system's partition (default 0, or with --run-dir the partition
    /// of the system running from there).
    #[arg(long)]
    partition: Option<u32>,
    /// Find the process's system from this run directory (its
    /// processes.json, or that of the newest running record under it) and
    /// take its partition.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: when the run ends or on Ctrl-C).
    #[arg(long)]
    seconds: Option<f64>,
    /// How long to wait for the store to appear, in seconds.
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
}

/// `daqctl monitor`.
pub async fn command(a: MonitorArgs) -> Result<Exit> {
    if let Some(s) = a.seconds
        && !(s.is_finite() && s > 0.0)
    {
        bail!("--seconds must be a positive number, not {s}");
    }
    if !(a.wait.is_finite() && a.wait >= 0.0) {
        bail!("--wait must be a number of seconds >= 0, not {}", a.wait);
    }
    let partition = match (a.partition, &a.run_dir) {
        (Some(p), _) => p,
        (None, Some(dir)) => partition_of(&a.process, dir).await?,
        (None, None) => 0,
    };
    let ok = run(MonitorOptions {
        process: a.process,
        partition,
        duration: a.seconds.map(Duration::from_secs_f64),
        wait: Duration::from_secs_f64(a.wait),
    })
    .await?;
    Ok(Exit::ok_or_failed(ok))
}

/// The partition of the system running from `run_dir`, as its processes
/// hold it; `process` must be one of them.
async fn partition_of(process: &str, run_dir: &Path) -> Result<u32> {
    let book = find(&SystemConfig::default(), run_dir).await?;
    if !book.iter().any(|(id, _)| id.to_string() == process) {
        bail!(
            "{process} is not a process of the system running from {}",
            run_dir.display()
        );
    }
    let (mut system, _) = System::attach_answering(&book).await;
    let (statuses, _) = system.status().await;
    let Some(s) = statuses.first() else {
        bail!(
            "no process of the system in {} answers status",
            run_dir.display()
        );
    };
    let config = SystemConfig::from_toml(
        &s.config_toml,
        &format!("the configuration of {}", s.process),
    )?;
    Ok(config.partition)
}

/// What to monitor, resolved.
pub struct MonitorOptions {
    pub process: String,
    pub partition: u32,
    /// Stop after this long (None: until the store closes or Ctrl-C).
    pub duration: Option<Duration>,
    /// How long to wait for the store to appear.
    pub wait: Duration,
}

/// Opens the store, waiting for it to appear (the process may not have
/// started its run yet).
async fn attach(args: &MonitorOptions) -> Result<ShmMonitor> {
    let path = segment_path(args.partition, &args.process);
    let deadline = Instant::now() + args.wait;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match ShmMonitor::open(&path) {
            Ok(m) => return Ok(m),
            Err(ShmError::Open { .. } | ShmError::NotReady { .. }) if Instant::now() < deadline => {
            }
            Err(e) => bail!(
                "cannot attach to {} (is {} running in partition {}?): {e}",
                path.display(),
                args.process,
                args.partition
            ),
        }
    }
}

/// Prints a line per second until the store closes, `duration` is up or Ctrl-C.
pub async fn run(args: MonitorOptions) -> Result<bool> {
    let mut mon = attach(&args).await?;
    let h = mon.header();
    println!(
        "monitoring {} (pid {}): {} buffers of {} bytes",
        args.process, h.owner_pid, h.buffer_count, h.buffer_bytes
    );
    let started = Instant::now();
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let (mut seen, mut incomplete, mut last_seq) = (0u64, 0u64, None::<u64>);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut ctrl_c => true,
        };
        let events = mon.poll();
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let n = events.len() as u64;
        seen += n;
        incomplete += events.iter().filter(|e| !e.complete).count() as u64;
        if let Some(e) = events.iter().max_by_key(|e| e.publish_seq) {
            last_seq = Some(e.sequence_id);
        }
        let frags: u64 = events.iter().map(|e| u64::from(e.fragment_count)).sum();
        let bytes: u64 = events.iter().map(|e| e.data.len() as u64).sum();
        let counts = mon.counts();
        println!(
            "{:>7.1} s  events seen {:>9} ({:>8.1}/s)  last seq {:>10}  fragment bytes {:>7.1}  incomplete {}  missed {}  buffers full {} writing {}",
            started.elapsed().as_secs_f64(),
            seen,
            n as f64 / dt.max(1e-9),
            last_seq.map_or_else(|| "-".into(), |s| s.to_string()),
            if frags > 0 {
                bytes as f64 / frags as f64
            } else {
                0.0
            },
            incomplete,
            mon.missed(),
            counts.full,
            counts.writing,
        );
        if stop || mon.header().closed || args.duration.is_some_and(|d| started.elapsed() >= d) {
            if mon.header().closed {
                println!("store closed by {} (end of run)", args.process);
            }
            return Ok(true);
        }
    }
}
