//! `daqctl demo`: boot a local system, run it, stop it, write the run record
//! and print the summary (through the same steps as the session commands).

use crate::control::drive::length;
use crate::control::drive::{self, Length, Progress};
use crate::control::options::{SystemArgs, parse_duration, resolve};
use crate::control::record::{self, Outcome};
use crate::control::system::{Lifetime, System};
use crate::control::{book, session};
use crate::verdict::Exit;
use anyhow::{Context, Result};
use daq_format::config::SystemConfig;
use daq_format::record::{InjectedLeak, RunPaths};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// How long (default 10 s): seconds (10, 2.5) or with units (10s, 90m, 1h30m).
    #[arg(long, conflicts_with = "events", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Run until every boardreader has generated this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// After the run is stopped and its record written, keep the processes
    /// up (still serving /metrics) until a line or EOF arrives on stdin.
    /// Prints each process's readiness line and `DAQ-HOLD <record dir>` on
    /// stdout first. For scraping a run's final values.
    #[arg(long)]
    pub hold: bool,
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

/// Runs one demo run end to end: boot, init, start, wait, stop, shutdown,
/// through the same steps as the session commands (`daqctl boot`, `init`,
/// `start`, `stop`, `shutdown`). With an `[addresses]` table it attaches
/// instead of booting and leaves the processes running (Ready). Errors in
/// the run (a shortfall, a failed stop) end up in `summary.errors`; only
/// failures that prevent a run record are returned as `Err`.
pub async fn run(opts: DemoOptions) -> Result<Outcome> {
    let (config, run) = drive::prepare(opts.config, opts.length, &opts.run_dir)?;
    let paths = RunPaths::new(&opts.run_dir, run);
    std::fs::create_dir_all(paths.logs())?;
    let plan = crate::analysis::soak::Plan {
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
        paths.root.join(crate::analysis::soak::PLAN_FILE),
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
    let monitors = match t.monitors {
        0 => String::new(),
        n => format!(" with {n} monitor{}", if n == 1 { "" } else { "s" }),
    };
    eprintln!(
        "run {run}: booting {}x{}x{} system{monitors}, record in {}",
        t.boardreaders,
        t.eventbuilders,
        t.aggregators,
        paths.root.display()
    );
    let env = session::profile_env(opts.heap_profile);
    let (mut system, owned) = session::boot(&config, &paths.logs(), &env, Lifetime::Owned).await?;
    for p in &system.procs {
        let page = page_url(p)
            .map(|u| format!(" page={u}"))
            .unwrap_or_default();
        eprintln!(
            "  {:<16} pid {:<8} {:<21} {}{page}",
            p.id,
            p.pid,
            p.addr,
            p.metrics_url.as_deref().unwrap_or("")
        );
    }
    // The address book next to the record, for a person or a script mid-run.
    book::write_processes(&paths.root.join(book::PROCESSES_FILE), &mut system).await?;
    let mut errors = Vec::new();
    let (length, progress) = (opts.length, opts.progress);
    let result = match session::init(&mut system, &config).await {
        Ok(()) => {
            let e = &mut errors;
            drive::start_wait_stop(&mut system, &config, run, &paths, length, progress, e).await
        }
        Err(e) => Err(e),
    };
    let replies = drive::replies_or_record(result, &mut errors);
    let outcome = record::finish_run(&mut system, &config, run, &paths, replies, errors).await;
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
        record::write_summary(&outcome)?;
    }
    Ok(outcome)
}

/// A monitor's live page: `/` on its metrics port (`None`: not a monitor).
pub fn page_url(p: &crate::control::system::Proc) -> Option<String> {
    if p.id.kind != daq_format::process::Kind::Monitor {
        return None;
    }
    p.metrics_url
        .as_deref()
        .and_then(|u| u.strip_suffix("metrics"))
        .map(str::to_string)
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
        let page = page_url(p)
            .map(|u| format!(" page={u}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {} {} {}{metrics}{page}",
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

/// `daqctl demo`: exit 0 when nothing was lost, else 1.
pub async fn command(args: DemoArgs) -> Result<Exit> {
    let config = resolve(&args.system, false)?;
    let length = length(args.duration, args.events)?;
    let outcome = run(DemoOptions {
        config,
        length,
        run_dir: args.system.run_dir,
        heap_profile: args.system.heap_profile,
        progress: Progress::Lines,
        hold: args.hold,
    })
    .await?;
    print!("{}", record::render(&outcome));
    Ok(Exit::ok_or_failed(outcome.summary.errors.is_empty()))
}
