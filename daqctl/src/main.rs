//! `daqctl`: run control and analysis CLI for the DAQ (its DAQInterface).

mod demo;
mod system;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use common::config::SystemConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Run control for the DAQ: boot, drive and record systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a local system (default: the 2x2x2 demo), run it, stop it and
    /// write the run record.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// System configuration (TOML); the built-in default is the 2x2x2 demo on 127.0.0.1.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run for this many seconds (default 10).
    #[arg(long, conflicts_with = "events")]
    duration: Option<f64>,
    /// Run until every boardreader has generated this many events.
    #[arg(long)]
    events: Option<u64>,
    /// Directory of run records.
    #[arg(long, default_value = "runs")]
    run_dir: PathBuf,
    /// Override the generator's throttle (microseconds between events; 0 = as fast as possible).
    #[arg(long)]
    throttle_us: Option<u64>,
}

fn load_config(path: Option<&PathBuf>) -> Result<SystemConfig> {
    Ok(match path {
        Some(p) => SystemConfig::from_file(p)?,
        None => SystemConfig::default(),
    })
}

async fn demo(args: DemoArgs) -> Result<bool> {
    let mut config = load_config(args.config.as_ref())?;
    if let Some(t) = args.throttle_us {
        config.generator.throttle_us = t;
    }
    let length = match (args.duration, args.events) {
        (_, Some(0)) => bail!("--events must be at least 1"),
        (_, Some(n)) => demo::Length::Events(n),
        (Some(d), None) if !(d.is_finite() && d > 0.0) => {
            bail!("--duration must be a positive number of seconds, not {d}")
        }
        (Some(d), None) => demo::Length::Duration(Duration::from_secs_f64(d)),
        (None, None) => demo::Length::Duration(Duration::from_secs(10)),
    };
    let outcome = demo::run(demo::DemoOptions {
        config,
        length,
        run_dir: args.run_dir,
    })
    .await?;
    print!("{}", demo::render(&outcome));
    Ok(outcome.summary.errors.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Demo(a) => demo(a).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("daqctl: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
