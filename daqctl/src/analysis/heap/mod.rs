//! Heap analysis of run records: the heap table (`table`), short vs long
//! run (`compare`), across runs (`across`), growing call sites from heap
//! profiles (`sites`); and the `daqctl heap` commands that print them.

pub mod across;
pub mod compare;
pub mod profile;
pub mod sites;
pub mod table;

use crate::verdict::Exit;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

/// `daqctl heap`'s subcommands.
#[derive(Subcommand)]
pub enum HeapCmd {
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

/// Prints `rows` as JSON, or `text`.
fn print_json_or<T: serde::Serialize>(json: bool, rows: &T, text: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

/// `daqctl heap ...`: `compare` and `across-runs` exit by their verdicts
/// (README "Exit codes"), `report` and `sites` 0.
pub fn command(cmd: HeapCmd) -> Result<Exit> {
    match cmd {
        HeapCmd::Report { run } => print!("{}", table::report(&run)?),
        HeapCmd::Compare { run_a, run_b, json } => {
            let (rows, text, trusted) = compare::compare(&run_a, &run_b)?;
            print_json_or(json, &rows, &text)?;
            return Ok(Exit::of_verdicts(trusted, rows.iter().map(|r| r.verdict)));
        }
        HeapCmd::AcrossRuns { runs, json } => {
            let (rows, text, trusted) = across::across_run_records(&runs)?;
            print_json_or(json, &rows, &text)?;
            return Ok(Exit::of_verdicts(trusted, rows.values().map(|r| r.verdict)));
        }
        HeapCmd::Sites {
            run,
            process,
            from,
            to,
            json,
        } => {
            let sites = sites::sites(&run, &process, &from, &to)?;
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
        }
    }
    Ok(Exit::Clean)
}
