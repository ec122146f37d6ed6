//! The options the run-control commands share: the system flags of `demo`,
//! `soak`, `run`, `boot` and `init` ([`SystemArgs`]), where a session is
//! (`--config`, `--run-dir`: [`SessionArgs`]), the value parsers of
//! durations, topologies and formats, and the configuration they resolve to
//! (the file, the command's defaults, then the flags); and `daqctl config`.

use crate::verdict::Exit;
use anyhow::{Result, bail};
use daq_format::config::{DataFormat, NetMonInput, SystemConfig, Topology, TransferMode};
use daq_format::process::Kind;
use std::path::PathBuf;
use std::time::Duration;

/// The system flags of `demo`, `soak`, `run`, `boot` and `init`.
#[derive(clap::Args)]
pub struct SystemArgs {
    /// System configuration (TOML); the built-in default is the 2x2x2 demo on 127.0.0.1.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of run records.
    #[arg(long, default_value = "runs")]
    pub run_dir: PathBuf,
    /// Partition number: systems with different partitions share a host
    /// without sharing shared-memory segments.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Processes: NxMxK (boardreaders x eventbuilders x aggregators); NxM means K = 0 (eventbuilders discard built events).
    #[arg(long, value_parser = parse_topology)]
    pub topology: Option<Topology>,
    /// Online monitors: monitor-i reads aggregator-(i % K)'s store read-only and serves a live page (`--topology 2x2x1 --monitors 1` is the seed's system).
    #[arg(long, value_name = "N")]
    pub monitors: Option<u16>,
    /// Override the generator's throttle (microseconds between events; 0 = as fast as possible).
    #[arg(long)]
    pub throttle_us: Option<u64>,
    /// Aggregators receive and deserialize events but write no files.
    #[arg(long)]
    pub no_disk_writing: bool,
    /// How aggregators deserialize events: fixed, or legacy (the original artdaq leak, on purpose).
    #[arg(long, value_parser = parse_netmon)]
    pub netmon_input: Option<NetMonInput>,
    /// The data plane between processes: auto (shared memory between processes of one host, gRPC between hosts), grpc, or shm (refuse where shared memory cannot be used).
    #[arg(long, value_name = "MODE", env = "DAQ_TRANSFER", value_parser = parse_transfer_mode)]
    pub transfer: Option<TransferMode>,
    /// Data-file format of the aggregators: hdf5, or artdaq-binary (artdaq's BinaryFileOutput layout).
    #[arg(long, value_parser = parse_data_format)]
    pub data_format: Option<DataFormat>,
    /// Heap sample period in seconds (0 = no samples).
    #[arg(long)]
    pub sample_interval: Option<f64>,
    /// Turn jemalloc heap profiling on and dump a profile per process at each run-state boundary.
    #[arg(long)]
    pub heap_profile: bool,
    /// Calibration: the processes of --inject-leak-in orphan this many bytes
    /// of heap per event they handle (a real leak, on purpose; 0 = none).
    #[arg(long, value_name = "BYTES")]
    pub inject_leak: Option<u64>,
    /// Which processes leak with --inject-leak: boardreader, eventbuilder (default) or aggregator.
    #[arg(long, value_name = "KIND", requires = "inject_leak")]
    pub inject_leak_in: Option<Kind>,
}

/// Where the session is: the config (for its [addresses]) and the run dir
/// (for processes.json and run records).
#[derive(clap::Args)]
pub struct SessionArgs {
    /// System configuration (TOML); with an [addresses] table daqctl attaches to those processes.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of run records (and processes.json of a locally booted system).
    #[arg(long, default_value = "runs")]
    pub run_dir: PathBuf,
}

impl SessionArgs {
    pub fn config(&self) -> Result<SystemConfig> {
        Ok(match &self.config {
            Some(p) => SystemConfig::from_file(p)?,
            None => SystemConfig::default(),
        })
    }
}

/// A duration: bare seconds (`60`, `2.5`) or humantime (`60s`, `15h`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

pub fn parse_topology(s: &str) -> Result<Topology, String> {
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
            monitors: 0,
        }),
        [b, e, a] => Ok(Topology {
            boardreaders: num(b)?,
            eventbuilders: num(e)?,
            aggregators: num(a)?,
            monitors: 0,
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

fn parse_transfer_mode(s: &str) -> Result<TransferMode, String> {
    s.parse()
}

/// The configuration after the file, the defaults of the command and the flags.
pub fn resolve(a: &SystemArgs, soak_defaults: bool) -> Result<SystemConfig> {
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
        // The topology names no monitors: those of the file stay.
        c.topology = Topology {
            monitors: c.topology.monitors,
            ..t
        };
    }
    if let Some(m) = a.monitors {
        c.topology.monitors = m;
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
    if let Some(m) = a.transfer {
        c.transfer.mode = m;
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

/// `daqctl config`'s flags.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Check this file instead: parse, validate, print the effective configuration.
    #[arg(long)]
    check: Option<PathBuf>,
}

/// `daqctl config`: prints the default configuration, or the effective one of `--check FILE`.
pub fn config_command(a: &ConfigArgs) -> Result<Exit> {
    let c = match &a.check {
        Some(p) => SystemConfig::from_file(p)?,
        None => SystemConfig::default(),
    };
    print!("{}", c.to_toml());
    Ok(Exit::Clean)
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
