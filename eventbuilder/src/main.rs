//! `eventbuilder`: binds its address, serves run control, builds events.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "DAQ eventbuilder: fragment receiver and event builder"
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
    eventbuilder::run(args.process.rank, listener).await?;
    Ok(())
}
