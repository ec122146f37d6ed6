//! `boardreader`: binds its address, serves run control, generates fragments.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "DAQ boardreader: ToySimulator fragment generator")]
struct Args {
    #[command(flatten)]
    process: common::process::ProcessArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::net::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.process.listen).await?;
    boardreader::run(args.process.rank, listener).await?;
    Ok(())
}
