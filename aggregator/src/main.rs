//! `aggregator`: binds its address, serves run control, writes events to disk.

// jemalloc is the global allocator of every DAQ binary (daq-alloc owns it).
use daq_alloc as _;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "DAQ aggregator: NetMonInput receiver and HDF5 disk writer"
)]
struct Args {
    #[command(flatten)]
    process: daq_runtime::process::ProcessArgs,
}

fn main() -> anyhow::Result<()> {
    daq_runtime::net::init_tracing();
    let args = Args::parse();
    // Leaves within seconds of the end of `run`, even with a thread stuck.
    daq_runtime::process::block_on(async move {
        let listeners = args.process.bind().await?;
        aggregator::run(args.process.rank, listeners).await?;
        anyhow::Ok(())
    })?
}
