//! `daqctl`: run control and analysis CLI for the DAQ (its DAQInterface).
//! This file parses the command line and dispatches; each command, with its
//! flags, lives in its module: run control (`control`: demo, boot ...
//! shutdown, status, run, soak, monitor, config), heap analysis
//! (`analysis`: heap, soak analysis, plots, report.html), `bench`, `dump`;
//! exit statuses and verdicts in `verdict`, byte rates as printed in `units`.

// jemalloc is the global allocator of every DAQ binary (daq-alloc owns it).
use daq_alloc as _;

mod analysis;
mod bench;
mod bins;
mod control;
mod dump;
mod units;
mod verdict;

use analysis::heap::HeapCmd;
use analysis::report::ReportArgs;
use bench::args::BenchArgs;
use clap::{Parser, Subcommand};
use control::demo::DemoArgs;
use control::monitor::MonitorArgs;
use control::options::{ConfigArgs, SessionArgs, SystemArgs};
use control::runs::RunArgs;
use control::soak::SoakArgs;
use control::status::StatusArgs;
use dump::DumpArgs;
use std::process::ExitCode;
use verdict::Exit;

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
    Monitor(MonitorArgs),
    /// Print the default system configuration (TOML), or check a file.
    Config(ConfigArgs),
    /// Heap snapshots of run records.
    #[command(subcommand)]
    Heap(HeapCmd),
    /// Print the events and fragments of data files, HDF5 or artdaq-binary
    /// (told apart by their first bytes), as an artdaq user reads them.
    /// Exits 1 if a file is cut short or corrupt, or a --check fails.
    Dump(DumpArgs),
    /// Measure this machine's limits (loopback TCP, disk, memcpy), each
    /// stage alone (generator, codec, serializer, writers) and the whole
    /// system at throttle 0 over fragment sizes, topologies and disk writing
    /// on/off, interleaved, repeated after a warm-up. Prints a table, writes
    /// <out>/bench.json and <out>/bench.svg; exit 1 if any run lost data.
    Bench(BenchArgs),
    /// Write the run report page, RUN/report.html: summary, heap table,
    /// heap-over-time plots per process and, for soaks, the verdicts; one
    /// self-contained file.
    Report(ReportArgs),
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
        return Exit::BadInput.into();
    }
    let result = match cli.command {
        Cmd::Demo(a) => control::demo::command(a).await,
        Cmd::Boot(a) => control::session::boot_command(&a).await,
        Cmd::Init(a) => control::session::init_command(&a).await,
        Cmd::Start(a) => control::session::start_command(&a).await,
        Cmd::Stop(a) => control::session::stop_command(&a).await,
        Cmd::Status(a) => control::status::command(&a).await,
        Cmd::Shutdown(a) => control::session::shutdown_command(&a).await,
        Cmd::Run(a) => control::runs::command(a).await,
        Cmd::Soak(a) => control::soak::command(a).await,
        Cmd::Monitor(a) => control::monitor::command(a).await,
        Cmd::Config(a) => control::options::config_command(&a),
        Cmd::Heap(c) => analysis::heap::command(c),
        Cmd::Dump(a) => dump::command(&a),
        Cmd::Bench(a) => bench::args::command(a).await,
        Cmd::Report(a) => analysis::report::command(&a),
    };
    match result {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("daqctl: error: {e:#}");
            Exit::BadInput.into()
        }
    }
}
