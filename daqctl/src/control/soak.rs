//! `daqctl soak`: a long run (demo's machinery) with a progress bar and
//! periodic heap samples, then the soak analysis (`analysis::soak`: a
//! verdict per process, soak.json, soak.svg); and `daqctl soak analyse`,
//! the analysis alone of a soak's record, finished or not. Both exit by the
//! verdict.

use crate::analysis::heap::table::load;
use crate::analysis::soak::{self, SoakReport};
use crate::control::demo::{self, DemoOptions};
use crate::control::drive::{Length, Progress};
use crate::control::options::{SystemArgs, parse_duration, resolve};
use crate::control::record;
use crate::verdict::Exit;
use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// `daqctl soak`'s flags, or `soak analyse`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SoakArgs {
    #[command(subcommand)]
    pub command: Option<SoakCmd>,
    #[command(flatten)]
    pub system: SystemArgs,
    /// How long: seconds (60) or with units (60s, 90m, 15h, 1h30m).
    #[arg(long, value_parser = parse_duration, required = true)]
    pub duration: Option<Duration>,
    /// A verdict per call site too: every process runs with jemalloc heap
    /// profiling and dumps a profile on its sampler's timer. Off by default:
    /// at 1 kHz it cost 22 % more CPU and 6 % more peak RSS
    /// (scripts/bench-site-profiles), over the 3 % a default may cost.
    #[arg(long)]
    pub site_profiles: bool,
}

#[derive(Subcommand)]
pub enum SoakCmd {
    /// Recompute soak.json and soak.svg from the heap samples of a soak's
    /// record, finished or not (daqctl killed, host rebooted); says how much
    /// of the planned duration the samples cover. Exits like `daqctl soak`.
    Analyse {
        /// The soak's run record directory (runs/run_000001).
        run: PathBuf,
    },
}

/// The exit status of a soak: a failed run first (its verdicts are not
/// to be trusted), then any leak.
fn soak_status(run_ok: bool, report: &SoakReport) -> Exit {
    Exit::of_verdicts(run_ok, [report.verdict()])
}

/// `daqctl soak` and `daqctl soak analyse`.
pub async fn command(args: SoakArgs) -> Result<Exit> {
    if let Some(SoakCmd::Analyse { run }) = args.command {
        let (report, text) = soak::analyse(&run)?;
        print!("{text}");
        let run_ok = match report.finished {
            true => load(&run)?.errors.is_empty(),
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
    let outcome = demo::run(DemoOptions {
        config,
        length: Length::Duration(duration),
        run_dir: args.system.run_dir,
        // Timed heap profiles for the per-site verdict, when asked for.
        heap_profile: args.system.heap_profile || args.site_profiles,
        progress: Progress::Bar,
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
            Ok(Exit::Failed)
        }
        Err(e) => Err(e),
    }
}
