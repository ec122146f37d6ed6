//! `daqctl bench`'s flags and how they resolve into [`BenchOptions`]
//! (`--quick` picks a small matrix; every other flag overrides its choice).

use super::{
    BenchOptions, DEFAULT_SIZES, QUICK_SIZES, default_bin_dir, default_topologies, parse_sizes,
    quick_topologies, table,
};
use crate::control::options::{parse_duration, parse_topology};
use crate::verdict::Exit;
use anyhow::Result;
use daq_format::config::{SystemConfig, Topology, TransferMode};
use std::path::PathBuf;
use std::time::Duration;

/// `daqctl bench`'s flags.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A small matrix in seconds (sizes 128 B and 64 KiB, topologies 1x1x1
    /// and 2x2, one round, no warm-up, 1 s runs); the other options
    /// override its choices.
    #[arg(long)]
    pub quick: bool,
    /// Measured rounds (default 3; 1 with --quick).
    #[arg(long)]
    pub repetitions: Option<u32>,
    /// Warm-up rounds, run first and left out of the figures (default 1; 0 with --quick).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Fragment sizes, comma-separated, binary units (default 128,1K,16K,256K,1M).
    #[arg(long)]
    pub sizes: Option<String>,
    /// Topologies, comma-separated (default 1x1x1,2x2,2x2x2,4x4x2).
    #[arg(long, value_delimiter = ',', value_parser = parse_topology)]
    pub topologies: Option<Vec<Topology>>,
    /// Transfer modes, comma-separated: auto, grpc, shm (default shm,grpc; auto with --quick).
    #[arg(long, value_delimiter = ',', value_parser = parse_mode)]
    pub modes: Option<Vec<TransferMode>>,
    /// Length of each pipeline run (default 3 s; 1 s with --quick).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Directory for bench.json, bench.svg, the run records (runs/) and the disk probe.
    #[arg(long, default_value = "bench")]
    pub out: PathBuf,
    /// Spawn the process binaries from DIR (default: daqctl's own
    /// directory). Give it twice or more to measure several builds in the
    /// same run, interleaved (before/after).
    #[arg(long = "bin-dir", value_name = "DIR")]
    pub bin_dirs: Vec<PathBuf>,
    /// Base system configuration (TOML) for everything the bench does not
    /// set: format, transfer, partition.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Partition number of the bench's systems.
    #[arg(long)]
    pub partition: Option<u32>,
}

fn parse_mode(s: &str) -> Result<TransferMode, String> {
    s.parse()
}

/// `daqctl bench`: exit 1 if any run lost data.
pub async fn command(a: BenchArgs) -> Result<Exit> {
    let mut base = match &a.config {
        Some(p) => SystemConfig::from_file(p)?,
        None => SystemConfig::default(),
    };
    if let Some(p) = a.partition {
        base.partition = p;
    }
    let bin_dirs = match a.bin_dirs.is_empty() {
        true => vec![default_bin_dir()?],
        false => a.bin_dirs,
    };
    let q = a.quick;
    let report = super::run(BenchOptions {
        quick: q,
        repetitions: a.repetitions.unwrap_or(if q { 1 } else { 3 }),
        warmup: a.warmup.unwrap_or(if q { 0 } else { 1 }),
        sizes: match (&a.sizes, q) {
            (Some(s), _) => parse_sizes(s).map_err(anyhow::Error::msg)?,
            (None, true) => QUICK_SIZES.to_vec(),
            (None, false) => DEFAULT_SIZES.to_vec(),
        },
        topologies: a.topologies.unwrap_or_else(|| match q {
            true => quick_topologies(),
            false => default_topologies(),
        }),
        modes: a.modes.unwrap_or_else(|| match q {
            true => vec![TransferMode::Auto],
            false => vec![TransferMode::Shm, TransferMode::Grpc],
        }),
        duration: a
            .duration
            .unwrap_or(Duration::from_secs(if q { 1 } else { 3 })),
        out: a.out,
        bin_dirs,
        base,
    })
    .await?;
    print!("{}", table(&report));
    Ok(Exit::ok_or_failed(report.failures.is_empty()))
}
