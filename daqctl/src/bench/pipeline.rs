//! One whole-system run of the bench: daqctl's own demo machinery (boot,
//! init, start, wait, stop, the run record) at throttle 0, with the
//! fragment size, topology and disk writing of the case, buffers sized to
//! the fragments, each process's CPU time read from /proc before start and
//! just before it exits, and the data files removed afterwards.

use super::cpu::process_cpu;
use super::report::PipelineRun;
use crate::control::drive::{self, Length, Progress};
use crate::control::record;
use crate::control::session;
use crate::control::system::{self, Lifetime};
use anyhow::{Context, Result};
use daq_format::config::{MAX_ADC_COUNTS, SystemConfig, Topology, TransferMode};
use daq_format::process::Kind;
use daq_format::record::RunCounts;
use daq_format::record::RunPaths;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes of a toy fragment besides its samples: header (32), metadata (8),
/// payload header (8).
const FRAGMENT_OVERHEAD_BYTES: u64 = 48;
/// Shared memory per event store the bench aims at: buffers are as large as
/// one event needs and as many as fit (at least `MIN_BUFFERS`, at most the
/// default 256).
const STORE_BYTES: u64 = 128 << 20;
const MIN_BUFFERS: u64 = 8;

/// One cell of the pipeline matrix.
#[derive(Clone, Debug)]
pub struct Case {
    pub topology: Topology,
    /// The fragment size asked for; the generator's is the nearest it makes.
    pub fragment_bytes: u64,
    pub disk_writing: bool,
    pub mode: TransferMode,
}

impl Case {
    pub fn label(&self) -> String {
        let disk = match (self.topology.aggregators, self.disk_writing) {
            (0, _) => "no aggregators",
            (_, true) => "disk on",
            (_, false) => "disk off",
        };
        format!(
            "{} {} {disk} {}",
            topology_name(self.topology),
            super::report::bytes_name(self.fragment_bytes),
            self.mode.as_str()
        )
    }
}

/// `2x2x2`, or `2x2` without aggregators (as `--topology` spells them).
pub fn topology_name(t: Topology) -> String {
    if t.aggregators == 0 {
        format!("{}x{}", t.boardreaders, t.eventbuilders)
    } else {
        format!("{}x{}x{}", t.boardreaders, t.eventbuilders, t.aggregators)
    }
}

/// The ADC sample count whose fragments come nearest `fragment_bytes` (at
/// least one sample).
pub fn n_adc_counts(fragment_bytes: u64) -> u32 {
    let n = fragment_bytes.saturating_sub(FRAGMENT_OVERHEAD_BYTES) / 2;
    n.clamp(1, u64::from(MAX_ADC_COUNTS)) as u32
}

/// `base` with the case applied: topology, fragment size, throttle 0, disk
/// writing, and both stores' buffers sized to one event of the case.
pub fn configure(base: &SystemConfig, case: &Case) -> Result<SystemConfig> {
    let mut c = base.clone();
    c.topology = case.topology;
    c.generator.n_adc_counts = n_adc_counts(case.fragment_bytes);
    c.generator.throttle_us = 0;
    c.generator.max_events = 0;
    c.aggregator.write_data = case.disk_writing;
    c.transfer.mode = case.mode;
    let event = c.generator_fragment_bytes() * u64::from(case.topology.boardreaders.max(1));
    let buffer = event.div_ceil(4096).max(1) * 4096;
    let count = (STORE_BYTES / buffer).clamp(MIN_BUFFERS, 256) as u32;
    for (bytes, n) in [
        (
            &mut c.eventbuilder.buffer_bytes,
            &mut c.eventbuilder.buffer_count,
        ),
        (
            &mut c.aggregator.buffer_bytes,
            &mut c.aggregator.buffer_count,
        ),
    ] {
        if *bytes < buffer {
            *bytes = buffer;
            *n = (*n).min(count);
        }
    }
    c.validate().context("the bench's configuration")?;
    Ok(c)
}

/// Runs `case` once with the binaries of `bin_dir` for `duration`, its
/// record under `runs_dir`. A run that could not happen (boot failed) is
/// an `Err`; a run with losses is an `Ok` whose `errors` say what.
pub async fn run(
    config: &SystemConfig,
    bin_dir: &Path,
    runs_dir: &Path,
    duration: Duration,
) -> Result<PipelineRun> {
    crate::bins::set_bin_dir(Some(bin_dir.to_path_buf()));
    std::fs::create_dir_all(runs_dir)
        .with_context(|| format!("cannot create {}", runs_dir.display()))?;
    let run = session::next_run(runs_dir, &[])?;
    let paths = RunPaths::new(runs_dir, run);
    std::fs::create_dir_all(paths.logs())?;
    let (mut system, _) = session::boot(config, &paths.logs(), &[], Lifetime::Owned)
        .await
        .with_context(|| format!("{}: boot", paths.root.display()))?;
    let mut errors = Vec::new();
    let mut cpu_before = BTreeMap::new();
    let replies = match session::init(&mut system, config).await {
        Ok(()) => {
            cpu_before = cpu_by_pid(&system);
            let result = drive::start_wait_stop(
                &mut system,
                config,
                run,
                &paths,
                Length::Duration(duration),
                Progress::Quiet,
                &mut errors,
            )
            .await;
            drive::replies_or_record(result, &mut errors)
        }
        Err(e) => {
            errors.push(format!("init: {e:#}"));
            Vec::new()
        }
    };
    let outcome = record::finish_run(&mut system, config, run, &paths, replies, errors).await;
    // Just before the processes exit: everything they did for the run is counted.
    let cpu_after = cpu_by_pid(&system);
    let kinds: BTreeMap<u32, Kind> = system.procs.iter().map(|p| (p.pid, p.id.kind)).collect();
    let shutdown_errors = system.shutdown().await;
    let outcome = outcome?;
    let mut cpu_s: BTreeMap<String, f64> = BTreeMap::new();
    for (pid, after) in &cpu_after {
        let before = cpu_before.get(pid).copied().unwrap_or_default();
        if let Some(kind) = kinds.get(pid) {
            *cpu_s.entry(kind.as_str().to_string()).or_default() +=
                after.saturating_sub(before).as_secs_f64();
        }
    }
    let s = &outcome.summary;
    let mut errors = s.errors.clone();
    errors.extend(shutdown_errors);
    let payload_bytes: u64 = s
        .processes
        .iter()
        .filter(|(n, _)| record::kind_of(n) == Some(Kind::EventBuilder))
        .map(|(_, p)| p.counters.bytes_received)
        .sum();
    let data = paths.data();
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot remove the data files in {}", data.display()))?;
    }
    Ok(PipelineRun {
        record: std::path::absolute(&paths.root)
            .unwrap_or_else(|_| paths.root.clone())
            .display()
            .to_string(),
        warmup: false,
        ok: errors.is_empty(),
        errors,
        counts: RunCounts::from(s),
        payload_bytes,
        file_bytes: s.bytes_written,
        payload_mb_s: s.throughput_mb_s,
        events_per_s: s.event_rate_hz,
        cpu_s,
    })
}

/// Every live process's CPU time so far, by pid.
fn cpu_by_pid(system: &system::System) -> BTreeMap<u32, Duration> {
    system
        .procs
        .iter()
        .filter_map(|p| Some((p.pid, process_cpu(p.pid)?)))
        .collect()
}

/// The directory holding daqctl's own process binaries (the default build).
pub fn default_bin_dir() -> Result<PathBuf> {
    crate::bins::set_bin_dir(None);
    crate::bins::bin_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_sizes_map_to_the_generators_nearest() {
        let mut c = SystemConfig::default();
        for (asked, got) in [
            (128, 128),
            (1024, 1024),
            (256 << 10, 256 << 10),
            (1 << 20, 1 << 20),
        ] {
            c.generator.n_adc_counts = n_adc_counts(asked);
            assert_eq!(c.generator_fragment_bytes(), got, "{asked}");
        }
        assert_eq!(n_adc_counts(0), 1);
    }

    #[test]
    fn buffers_are_sized_to_one_event_of_the_case() {
        let case = Case {
            topology: Topology {
                boardreaders: 4,
                eventbuilders: 4,
                aggregators: 2,
                monitors: 0,
            },
            fragment_bytes: 1 << 20,
            disk_writing: true,
            mode: TransferMode::Auto,
        };
        let c = configure(&SystemConfig::default(), &case).expect("valid");
        assert_eq!(c.eventbuilder.buffer_bytes, 4 << 20);
        assert_eq!(c.eventbuilder.buffer_count, 32);
        assert_eq!(c.aggregator.buffer_bytes, 4 << 20);
        assert_eq!(c.generator.throttle_us, 0);
        // The demo's size keeps the default buffers.
        let small = Case {
            fragment_bytes: 128,
            ..case
        };
        let c = configure(&SystemConfig::default(), &small).expect("valid");
        assert_eq!(c.eventbuilder.buffer_bytes, 64 * 1024);
        assert_eq!(c.eventbuilder.buffer_count, 256);
    }
}
