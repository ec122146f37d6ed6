//! `daqctl`: run control and analysis CLI for the DAQ (its DAQInterface).

// jemalloc is the global allocator of every DAQ binary (daq-alloc owns it).
use daq_alloc as _;

mod bench;
mod demo;
mod drive;
mod dump;
mod heap;
mod monitor;
mod plot;
mod record;
mod report;
mod runs;
mod session;
mod soak;
mod status;
mod system;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use daq_format::config::{DataFormat, NetMonInput, SystemConfig, Topology};
use daq_format::process::Kind;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Run control for the DAQ: boot, drive and record systems, analyse their heaps"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Token and TLS files for talking to the processes (also passed to the
    /// processes daqctl spawns).
    #[command(flatten)]
    access: daq_runtime::auth::AccessArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a local system (default: the 2x2x2 demo), run it, stop it and
    /// write the run record: the quick start (boot, init, start, wait, stop,
    /// shutdown in one command).
    Demo(DemoArgs),
    /// Boot a system and leave it running: spawn every process locally
    /// (detached; address book in <run-dir>/processes.json), or, with an
    /// [addresses] table, check that every process answers and is who the
    /// table says.
    Boot(SystemArgs),
    /// Configure every process (again, to reconfigure without restarting any).
    Init(SystemArgs),
    /// Start the next run (its record in <run-dir>/run_<N>); it runs until `daqctl stop`.
    Start(SessionArgs),
    /// Stop the run in progress and write its record (summary.json, heap, data
    /// files); exit 1 if anything was lost.
    Stop(SessionArgs),
    /// The processes: address, pid, state, run, counters; --watch refreshes every second.
    Status(StatusArgs),
    /// Shut every process down.
    Shutdown(SessionArgs),
    /// N consecutive runs in one boot, each with its own record, then
    /// session.json with every run's counts and a heap verdict across runs.
    Run(RunArgs),
    /// A long run with a progress bar, periodic heap samples, a leak verdict
    /// per process (soak.json) and a memory-over-time plot (soak.svg).
    Soak(SoakArgs),
    /// Attach to a running process's shared-memory event store as a
    /// non-destructive reader (online monitor) and print a line per second.
    Monitor {
        /// The process, e.g. aggregator-0 or eventbuilder-1.
        #[arg(long)]
        process: String,
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// Stop after this many seconds (default: when the run ends or on Ctrl-C).
        #[arg(long)]
        seconds: Option<f64>,
        /// How long to wait for the store to appear, in seconds.
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
    },
    /// Print the default system configuration (TOML), or check a file.
    Config {
        /// Check this file instead: parse, validate, print the effective configuration.
        #[arg(long)]
        check: Option<PathBuf>,
    },
    /// Heap snapshots of run records.
    #[command(subcommand)]
    Heap(HeapCmd),
    /// Print the events and fragments of data files, HDF5 or artdaq-binary
    /// (told apart by their first bytes), as an artdaq user reads them.
    /// Exits 1 if a file is cut short or corrupt, or a --check fails.
    Dump {
        /// Data files, or run-record directories (runs/run_000001: all its data files).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only the first N events.
        #[arg(long)]
        events: Option<u64>,
        /// Print every fragment: id, type, sequence id, timestamp and, for
        /// toy fragments, board, ADC bits, trigger number and the first samples.
        #[arg(long)]
        fragments: bool,
        /// Verify every toy sample fits its ADC width (artdaq-core-demo's
        /// fastVerify) and every sequence id from the lowest to the highest
        /// is present exactly once (give every file of the run).
        #[arg(long)]
        check: bool,
    },
    /// Measure this machine's limits (loopback TCP, disk, memcpy), each
    /// stage alone (generator, codec, serializer, writers) and the whole
    /// system at throttle 0 over fragment sizes, topologies and disk writing
    /// on/off, interleaved, repeated after a warm-up. Prints a table, writes
    /// <out>/bench.json and <out>/bench.svg; exit 1 if any run lost data.
    Bench(BenchArgs),
    /// Write the run report page, RUN/report.html: summary, heap table,
    /// heap-over-time plots per process and, for soaks, the verdicts; one
    /// self-contained file.
    Report {
        /// A run record directory (runs/run_000001).
        run: PathBuf,
    },
}

#[derive(Subcommand)]
enum HeapCmd {
    /// Print the heap table (process x before start / before stop / after stop) of a run.
    Report {
        /// A run record directory (runs/run_000001).
        run: PathBuf,
    },
    /// Compare a short and a long run: growth with the events is a leak,
    /// the same growth in both is stale allocations.
    Compare {
        run_a: PathBuf,
        run_b: PathBuf,
        /// Print the classification as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Leak, stale or stable per process across runs, from what each run
    /// left after its stop (the processes must be the same ones, kept up
    /// across the runs, for the verdict to mean a leak at the run scale).
    AcrossRuns {
        /// Run record directories, in run order.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The functions under which a process's heap grew between two run-state
    /// boundaries (from a run with --heap-profile; uses jeprof).
    Sites {
        /// A run record directory made with --heap-profile.
        run: PathBuf,
        /// The process, e.g. aggregator-0.
        #[arg(long)]
        process: String,
        #[arg(long, default_value = "before_start")]
        from: String,
        #[arg(long, default_value = "after_stop")]
        to: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by demo and soak.
#[derive(clap::Args)]
struct SystemArgs {
    /// System configuration (TOML); the built-in default is the 2x2x2 demo on 127.0.0.1.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of run records.
    #[arg(long, default_value = "runs")]
    run_dir: PathBuf,
    /// Partition number: systems with different partitions share a host
    /// without sharing shared-memory segments.
    #[arg(long)]
    partition: Option<u32>,
    /// Processes: NxMxK (boardreaders x eventbuilders x aggregators); NxM means K = 0 (eventbuilders discard built events).
    #[arg(long, value_parser = parse_topology)]
    topology: Option<Topology>,
    /// Override the generator's throttle (microseconds between events; 0 = as fast as possible).
    #[arg(long)]
    throttle_us: Option<u64>,
    /// Aggregators receive and deserialize events but write no files.
    #[arg(long)]
    no_disk_writing: bool,
    /// How aggregators deserialize events: fixed, or legacy (the original artdaq leak, on purpose).
    #[arg(long, value_parser = parse_netmon)]
    netmon_input: Option<NetMonInput>,
    /// Data-file format of the aggregators: hdf5, or artdaq-binary (artdaq's BinaryFileOutput layout).
    #[arg(long, value_parser = parse_data_format)]
    data_format: Option<DataFormat>,
    /// Heap sample period in seconds (0 = no samples).
    #[arg(long)]
    sample_interval: Option<f64>,
    /// Turn jemalloc heap profiling on and dump a profile per process at each run-state boundary.
    #[arg(long)]
    heap_profile: bool,
    /// Calibration: the processes of --inject-leak-in orphan this many bytes
    /// of heap per event they handle (a real leak, on purpose; 0 = none).
    #[arg(long, value_name = "BYTES")]
    inject_leak: Option<u64>,
    /// Which processes leak with --inject-leak: boardreader, eventbuilder (default) or aggregator.
    #[arg(long, value_name = "KIND", requires = "inject_leak")]
    inject_leak_in: Option<Kind>,
}

/// Where the session is: the config (for its [addresses]) and the run dir
/// (for processes.json and run records).
#[derive(clap::Args)]
struct SessionArgs {
    /// System configuration (TOML); with an [addresses] table daqctl attaches to those processes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of run records (and processes.json of a locally booted system).
    #[arg(long, default_value = "runs")]
    run_dir: PathBuf,
}

impl SessionArgs {
    fn config(&self) -> Result<SystemConfig> {
        Ok(match &self.config {
            Some(p) => SystemConfig::from_file(p)?,
            None => SystemConfig::default(),
        })
    }
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Refresh every second (rate, MB/s, incomplete, backpressure, heap and its slope) until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this many refreshes.
    #[arg(long, requires = "watch")]
    count: Option<u64>,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    system: SystemArgs,
    /// How many consecutive runs.
    #[arg(long)]
    runs: u32,
    /// Each run lasts this long (default 10 s): seconds (10, 2.5) or with units (10s, 90m).
    #[arg(long, conflicts_with = "events", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Each run lasts until every boardreader has generated this many events.
    #[arg(long)]
    events: Option<u64>,
}

#[derive(clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    system: SystemArgs,
    /// How long (default 10 s): seconds (10, 2.5) or with units (10s, 90m, 1h30m).
    #[arg(long, conflicts_with = "events", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Run until every boardreader has generated this many events.
    #[arg(long)]
    events: Option<u64>,
    /// After the run is stopped and its record written, keep the processes
    /// up (still serving /metrics) until a line or EOF arrives on stdin.
    /// Prints each process's readiness line and `DAQ-HOLD <record dir>` on
    /// stdout first. For scraping a run's final values.
    #[arg(long)]
    hold: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A small matrix in seconds (sizes 128 B and 64 KiB, topologies 1x1x1
    /// and 2x2, one round, no warm-up, 1 s runs); the other options
    /// override its choices.
    #[arg(long)]
    quick: bool,
    /// Measured rounds (default 3; 1 with --quick).
    #[arg(long)]
    repetitions: Option<u32>,
    /// Warm-up rounds, run first and left out of the figures (default 1; 0 with --quick).
    #[arg(long)]
    warmup: Option<u32>,
    /// Fragment sizes, comma-separated, binary units (default 128,1K,16K,256K,1M).
    #[arg(long)]
    sizes: Option<String>,
    /// Topologies, comma-separated (default 1x1x1,2x2,2x2x2,4x4x2).
    #[arg(long, value_delimiter = ',', value_parser = parse_topology)]
    topologies: Option<Vec<Topology>>,
    /// Length of each pipeline run (default 3 s; 1 s with --quick).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Directory for bench.json, bench.svg, the run records (runs/) and the disk probe.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// Spawn the process binaries from DIR (default: daqctl's own
    /// directory). Give it twice or more to measure several builds in the
    /// same run, interleaved (before/after).
    #[arg(long = "bin-dir", value_name = "DIR")]
    bin_dirs: Vec<PathBuf>,
    /// Base system configuration (TOML) for everything the bench does not
    /// set: format, transfer, partition.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Partition number of the bench's systems.
    #[arg(long)]
    partition: Option<u32>,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SoakArgs {
    #[command(subcommand)]
    command: Option<SoakCmd>,
    #[command(flatten)]
    system: SystemArgs,
    /// How long: seconds (60) or with units (60s, 90m, 15h, 1h30m).
    #[arg(long, value_parser = parse_duration, required = true)]
    duration: Option<Duration>,
}

#[derive(Subcommand)]
enum SoakCmd {
    /// Recompute soak.json and soak.svg from the heap samples of a soak's
    /// record, finished or not (daqctl killed, host rebooted); says how much
    /// of the planned duration the samples cover. Exits like `daqctl soak`.
    Analyse {
        /// The soak's run record directory (runs/run_000001).
        run: PathBuf,
    },
}

/// Exit statuses (README "Exit statuses"): all stable / the run went well.
const EXIT_OK: u8 = 0;
/// The run itself failed (a shortfall, a process died, a failed command).
const EXIT_RUN_FAILED: u8 = 1;
/// Bad input or an error before or outside the run (no record, bad config).
const EXIT_ERROR: u8 = 2;
/// A soak whose run went well found at least one process leaking.
const EXIT_LEAK: u8 = 3;

/// A duration: bare seconds (`60`, `2.5`) or humantime (`60s`, `15h`, `1h30m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "--duration must be a positive number of seconds (60) or a duration (60s, 90m, 15h, 1h30m), not {s:?}"
        )
    };
    let d = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e12 => Duration::from_secs_f64(secs),
        Ok(_) => return Err(bad()),
        Err(_) => humantime::parse_duration(t).map_err(|_| bad())?,
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

fn parse_topology(s: &str) -> Result<Topology, String> {
    let parts: Vec<&str> = s.split('x').collect();
    let num = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{p:?} is not a process count"))
    };
    match parts.as_slice() {
        [b, e] => Ok(Topology {
            boardreaders: num(b)?,
            eventbuilders: num(e)?,
            aggregators: 0,
        }),
        [b, e, a] => Ok(Topology {
            boardreaders: num(b)?,
            eventbuilders: num(e)?,
            aggregators: num(a)?,
        }),
        _ => Err(format!("{s:?}: expected NxM or NxMxK, e.g. 2x2x2")),
    }
}

fn parse_data_format(s: &str) -> Result<DataFormat, String> {
    match s {
        "hdf5" => Ok(DataFormat::Hdf5),
        "artdaq-binary" => Ok(DataFormat::ArtdaqBinary),
        _ => Err(format!("{s:?}: expected hdf5 or artdaq-binary")),
    }
}

fn parse_netmon(s: &str) -> Result<NetMonInput, String> {
    match s {
        "fixed" => Ok(NetMonInput::Fixed),
        "legacy" => Ok(NetMonInput::Legacy),
        _ => Err(format!("{s:?}: expected fixed or legacy")),
    }
}

/// The configuration after the file, the defaults of the command and the flags.
fn resolve(a: &SystemArgs, soak_defaults: bool) -> Result<SystemConfig> {
    let mut c = match &a.config {
        Some(p) => SystemConfig::from_file(p)?,
        None => {
            let mut c = SystemConfig::default();
            if soak_defaults {
                // 1 kHz: a 60 s soak handles tens of thousands of events, so
                // a per-event leak of 100 bytes is megabytes, not noise.
                c.generator.throttle_us = 1_000;
            }
            c
        }
    };
    if let Some(p) = a.partition {
        c.partition = p;
    }
    if let Some(t) = a.topology {
        c.topology = t;
    }
    if let Some(t) = a.throttle_us {
        c.generator.throttle_us = t;
    }
    if a.no_disk_writing {
        c.aggregator.write_data = false;
    }
    if let Some(n) = a.netmon_input {
        c.aggregator.netmon_input = n;
    }
    if let Some(f) = a.data_format {
        c.aggregator.format = f;
    }
    if let Some(b) = a.inject_leak {
        c.leak.inject_bytes_per_event = b;
    }
    if let Some(k) = a.inject_leak_in {
        c.leak.inject_in = k;
    }
    if let Some(s) = a.sample_interval {
        if !(s.is_finite() && s >= 0.0) {
            bail!("--sample-interval must be a number of seconds >= 0, not {s}");
        }
        c.heap.sample_interval_ms = (s * 1000.0).round() as u64;
    }
    c.validate()?;
    Ok(c)
}

fn length(duration: Option<Duration>, events: Option<u64>) -> Result<drive::Length> {
    Ok(match (duration, events) {
        (_, Some(0)) => bail!("--events must be at least 1"),
        (_, Some(n)) => drive::Length::Events(n),
        (Some(d), None) => drive::Length::Duration(d),
        (None, None) => drive::Length::Duration(Duration::from_secs(10)),
    })
}

async fn demo(args: DemoArgs) -> Result<u8> {
    let config = resolve(&args.system, false)?;
    let length = length(args.duration, args.events)?;
    let outcome = demo::run(demo::DemoOptions {
        config,
        length,
        run_dir: args.system.run_dir,
        heap_profile: args.system.heap_profile,
        progress: drive::Progress::Lines,
        hold: args.hold,
    })
    .await?;
    print!("{}", record::render(&outcome));
    Ok(if outcome.summary.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_RUN_FAILED
    })
}

/// 0 when everything went well, else the run-failed status.
fn ok_or_failed(ok: bool) -> u8 {
    if ok { EXIT_OK } else { EXIT_RUN_FAILED }
}

/// The exit status of a soak: a failed run first (its verdicts are not
/// to be trusted), then any leak.
fn soak_status(run_ok: bool, report: &soak::SoakReport) -> u8 {
    if !run_ok || report.verdict() == heap::Verdict::Unreadable {
        EXIT_RUN_FAILED
    } else if report.verdict() == heap::Verdict::Leak {
        EXIT_LEAK
    } else {
        EXIT_OK
    }
}

async fn soak(args: SoakArgs) -> Result<u8> {
    if let Some(SoakCmd::Analyse { run }) = args.command {
        let (report, text) = soak::analyse(&run)?;
        print!("{text}");
        let run_ok = match report.finished {
            true => heap::load(&run)?.errors.is_empty(),
            // An unfinished soak did not fail: it was cut short.
            false => true,
        };
        return Ok(soak_status(run_ok, &report));
    }
    let Some(duration) = args.duration else {
        bail!("--duration is required");
    };
    let config = resolve(&args.system, true)?;
    if config.heap.sample_interval_ms == 0 {
        bail!("a soak needs heap samples: --sample-interval must be > 0");
    }
    let outcome = demo::run(demo::DemoOptions {
        config,
        length: drive::Length::Duration(duration),
        run_dir: args.system.run_dir,
        heap_profile: args.system.heap_profile,
        progress: drive::Progress::Bar,
        hold: false,
    })
    .await?;
    print!("{}", record::render(&outcome));
    let run_ok = outcome.summary.errors.is_empty();
    match soak::analyse(&outcome.paths.root) {
        Ok((report, text)) => {
            print!("{text}");
            Ok(soak_status(run_ok, &report))
        }
        // A run that failed early may have no samples to analyse.
        Err(e) if !run_ok => {
            eprintln!("daqctl: no soak analysis: {e:#}");
            Ok(EXIT_RUN_FAILED)
        }
        Err(e) => Err(e),
    }
}

async fn bench_cmd(a: BenchArgs) -> Result<u8> {
    let mut base = match &a.config {
        Some(p) => SystemConfig::from_file(p)?,
        None => SystemConfig::default(),
    };
    if let Some(p) = a.partition {
        base.partition = p;
    }
    let bin_dirs = match a.bin_dirs.is_empty() {
        true => vec![bench::default_bin_dir()?],
        false => a.bin_dirs,
    };
    let q = a.quick;
    let report = bench::run(bench::BenchOptions {
        quick: q,
        repetitions: a.repetitions.unwrap_or(if q { 1 } else { 3 }),
        warmup: a.warmup.unwrap_or(if q { 0 } else { 1 }),
        sizes: match (&a.sizes, q) {
            (Some(s), _) => bench::parse_sizes(s).map_err(anyhow::Error::msg)?,
            (None, true) => bench::QUICK_SIZES.to_vec(),
            (None, false) => bench::DEFAULT_SIZES.to_vec(),
        },
        topologies: a.topologies.unwrap_or_else(|| match q {
            true => bench::quick_topologies(),
            false => bench::default_topologies(),
        }),
        duration: a
            .duration
            .unwrap_or(Duration::from_secs(if q { 1 } else { 3 })),
        out: a.out,
        bin_dirs,
        base,
    })
    .await?;
    print!("{}", bench::table(&report));
    Ok(ok_or_failed(report.failures.is_empty()))
}

async fn run_session(args: RunArgs) -> Result<bool> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Soak defaults (1 kHz) without a config: a leak of 100 bytes per event
    // is megabytes over the runs, not noise.
    let config = resolve(&args.system, true)?;
    let length = length(args.duration, args.events)?;
    let (report, path) = runs::run(runs::RunsOptions {
        config,
        runs: args.runs,
        length,
        run_dir: args.system.run_dir,
        heap_profile: args.system.heap_profile,
    })
    .await?;
    print!("{}", runs::render(&report, &path));
    Ok(report.runs.len() == args.runs as usize && report.runs.iter().all(|r| r.ok))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every channel daqctl opens (and every process it spawns) uses these.
    let installed = cli
        .access
        .load()
        .map_err(anyhow::Error::from)
        .and_then(|c| Ok(daq_runtime::auth::install(c)?));
    if let Err(e) = installed {
        eprintln!("daqctl: error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Cmd::Demo(a) => demo(a).await,
        Cmd::Boot(a) => match resolve(&a, false) {
            Ok(c) => session::boot_cmd(&c, &a.run_dir, a.heap_profile)
                .await
                .map(|_| EXIT_OK),
            Err(e) => Err(e),
        },
        Cmd::Init(a) => match resolve(&a, false) {
            Ok(c) => session::init_cmd(&c, &a.run_dir).await.map(|_| EXIT_OK),
            Err(e) => Err(e),
        },
        Cmd::Start(a) => match a.config() {
            Ok(c) => session::start_cmd(&c, &a.run_dir).await.map(|_| EXIT_OK),
            Err(e) => Err(e),
        },
        Cmd::Stop(a) => match a.config() {
            Ok(c) => session::stop_cmd(&c, &a.run_dir).await.map(|o| {
                print!("{}", record::render(&o));
                ok_or_failed(o.summary.errors.is_empty())
            }),
            Err(e) => Err(e),
        },
        Cmd::Status(a) => match a.session.config() {
            Ok(c) if a.watch => match session::connect(&c, &a.session.run_dir).await {
                Ok(mut system) => status::watch(&mut system, a.count).await.map(|_| EXIT_OK),
                Err(e) => Err(e),
            },
            Ok(c) => match session::address_book(&c, &a.session.run_dir) {
                Ok(book) => {
                    // Exit 1 when a process does not answer.
                    let (table, all) = status::once(&book).await;
                    print!("{table}");
                    Ok(ok_or_failed(all))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Cmd::Shutdown(a) => match a.config() {
            Ok(c) => session::shutdown_cmd(&c, &a.run_dir)
                .await
                .map(ok_or_failed),
            Err(e) => Err(e),
        },
        Cmd::Run(a) => run_session(a).await.map(ok_or_failed),
        Cmd::Soak(a) => soak(a).await,
        Cmd::Bench(a) => bench_cmd(a).await,
        Cmd::Config { check } => {
            let config = match check {
                Some(p) => SystemConfig::from_file(&p).map_err(anyhow::Error::from),
                None => Ok(SystemConfig::default()),
            };
            config.map(|c| {
                print!("{}", c.to_toml());
                EXIT_OK
            })
        }
        Cmd::Monitor {
            process,
            partition,
            seconds,
            wait,
        } => match (seconds, wait) {
            (Some(s), _) if !(s.is_finite() && s > 0.0) => Err(anyhow::anyhow!(
                "--seconds must be a positive number, not {s}"
            )),
            (_, w) if !(w.is_finite() && w >= 0.0) => Err(anyhow::anyhow!(
                "--wait must be a number of seconds >= 0, not {w}"
            )),
            (s, w) => monitor::run(monitor::MonitorArgs {
                process,
                partition,
                duration: s.map(Duration::from_secs_f64),
                wait: Duration::from_secs_f64(w),
            })
            .await
            .map(|ok| if ok { EXIT_OK } else { EXIT_RUN_FAILED }),
        },
        Cmd::Dump {
            files,
            events,
            fragments,
            check,
        } => {
            let args = dump::DumpArgs {
                paths: files,
                events,
                fragments,
                check,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            dump::run(&args, &mut out).and_then(|ok| {
                std::io::Write::flush(&mut out)
                    .map(|()| ok_or_failed(ok))
                    .map_err(Into::into)
            })
        }
        Cmd::Report { run } => report::write(&run).map(|path| {
            println!("{}", path.display());
            EXIT_OK
        }),
        Cmd::Heap(HeapCmd::Report { run }) => heap::report(&run).map(|t| {
            print!("{t}");
            EXIT_OK
        }),
        Cmd::Heap(HeapCmd::Compare { run_a, run_b, json }) => heap::compare(&run_a, &run_b)
            .and_then(|(rows, text)| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print!("{text}");
                }
                Ok(EXIT_OK)
            }),
        Cmd::Heap(HeapCmd::AcrossRuns { runs, json }) => {
            heap::across_run_records(&runs).and_then(|(rows, text)| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print!("{text}");
                }
                Ok(EXIT_OK)
            })
        }
        Cmd::Heap(HeapCmd::Sites {
            run,
            process,
            from,
            to,
            json,
        }) => heap::sites(&run, &process, &from, &to).and_then(|sites| {
            if json {
                println!("{}", serde_json::to_string_pretty(&sites)?);
            } else {
                println!("heap growth of {process}, {from} -> {to}, by function (cumulative):");
                for s in sites.iter().take(15) {
                    println!(
                        "  {:>10.1} KiB {:>6.1}%  {}",
                        s.bytes / 1024.0,
                        s.percent,
                        s.function
                    );
                }
            }
            Ok(EXIT_OK)
        }),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("daqctl: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bare_seconds_or_have_units() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("15h"), Ok(Duration::from_secs(15 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["0", "-3", "nan", "inf", "0s", "ten", ""] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.starts_with("--duration must be a positive number"), "{e}");
        }
    }
}
