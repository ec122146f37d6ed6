//! `aggregator`: binds its address, serves run control, writes events to disk.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "DAQ aggregator: NetMonInput receiver and HDF5 disk writer"
)]
struct Args {
    #[command(flatten)]
    process: common::process::ProcessArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::net::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.process.listen).await?;
    aggregator::run(args.process.rank, listener).await?;
    Ok(())
}
