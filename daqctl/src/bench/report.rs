//! `bench.json` (its types, each field documented) and the table `daqctl
//! bench` prints. Figures are over the measured repetitions (warm-up
//! rounds excluded): median, min and max.

use daq_format::record::RunCounts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Layout version of `bench.json`.
pub const BENCH_VERSION: u32 = 1;

/// The whole of `bench.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Layout version of this file ([`BENCH_VERSION`]).
    pub version: u32,
    /// daqctl's version (the stages are always this build's code).
    pub daqctl_version: String,
    /// CPUs available to the bench.
    pub cores: usize,
    /// When the bench started and ended (seconds since the Unix epoch).
    pub started_unix_s: f64,
    pub finished_unix_s: f64,
    /// What was asked.
    pub options: OptionsRecord,
    /// This machine's limits, measured in the same rounds as the rest.
    pub machine: Vec<LimitResult>,
    /// Each stage alone, fed from memory on one thread.
    pub stages: Vec<StageResult>,
    /// The whole system at throttle 0, one entry per build x case.
    pub pipeline: Vec<PipelineResult>,
    /// One line per failed measurement or run with a loss, naming it; empty
    /// when the bench passed.
    pub failures: Vec<String>,
}

/// The options of the bench.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OptionsRecord {
    pub quick: bool,
    /// Measured rounds; each measurement appears once per round.
    pub repetitions: u32,
    /// Rounds run first and left out of every figure.
    pub warmup: u32,
    /// Length of each pipeline run.
    pub duration_s: f64,
    /// Length of each machine-limit and stage measurement.
    pub probe_s: f64,
    /// Fragment sizes asked for (the generator makes the nearest: `fragment_bytes` of each entry).
    pub sizes_bytes: Vec<u64>,
    /// Topologies, as `--topology` spells them.
    pub topologies: Vec<String>,
    /// Directories the process binaries were spawned from, one per build.
    pub bin_dirs: Vec<String>,
}

/// Median, min and max of one figure over the measured repetitions, and
/// every sample in round order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figure {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn of(samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => at(n / 2),
            _ => (at(n / 2 - 1) + at(n / 2)) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            samples,
        }
    }
}

/// One machine limit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LimitResult {
    /// `tcp loopback`, `disk write`, `disk write + fdatasync`, `memcpy`.
    pub limit: String,
    /// MB/s (10^6 bytes) moved.
    pub mb_s: Figure,
}

/// One stage at one fragment size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageResult {
    /// e.g. `generator uniform`, `event serialize`, `writer hdf5`.
    pub stage: String,
    /// What an item is: `fragments`, or `events` of `fragments_per_event` fragments.
    pub item: String,
    pub fragments_per_event: u16,
    /// Bytes of one fragment (header, metadata, payload).
    pub fragment_bytes: u64,
    /// MB/s of fragment bytes per second of the thread's CPU time.
    pub mb_s_per_core: Figure,
    /// Items per second of the thread's CPU time.
    pub items_per_s_per_core: Figure,
    /// MB/s of fragment bytes per second of wall time.
    pub mb_s_wall: Figure,
}

/// One build x pipeline case over its runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineResult {
    /// Index into `options.bin_dirs`.
    pub build: usize,
    /// As `--topology` spells it; `NxM` has no aggregators.
    pub topology: String,
    /// The transfer mode asked for (`auto`, `grpc`, `shm`); the run
    /// records say what each hop used.
    #[serde(default = "auto")]
    pub mode: String,
    /// Bytes of one fragment as generated.
    pub fragment_bytes: u64,
    /// The generator's `n_adc_counts` that makes it.
    pub n_adc_counts: u32,
    /// Whether the aggregators wrote data files (false also without aggregators).
    pub disk_writing: bool,
    /// Buffer size of the eventbuilders' and aggregators' stores (bytes).
    pub buffer_bytes: u64,
    /// MB/s of fragment bytes into the eventbuilders (with disk writing on
    /// and nothing lost, the same bytes reached the data files).
    pub payload_mb_s: Figure,
    /// MB/s of data-file bytes (format overhead included); disk writing only.
    pub file_mb_s: Option<Figure>,
    /// Events built per second.
    pub events_per_s: Figure,
    /// CPU seconds per GB (10^9 fragment bytes through the system) of all
    /// processes of each kind together, from /proc/<pid>/stat utime+stime
    /// between init and just before shutdown.
    pub cpu_s_per_gb: BTreeMap<String, Figure>,
    /// payload_mb_s median over the TCP loopback median of the same bench.
    pub ratio_to_tcp: f64,
    /// payload_mb_s median over the disk write + fdatasync median; disk writing only.
    pub ratio_to_disk: Option<f64>,
    /// Every run, warm-up ones included.
    pub runs: Vec<PipelineRun>,
}

fn auto() -> String {
    "auto".into()
}

/// One pipeline run: its record and what it counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineRun {
    /// The run record directory (summary.json, logs; data files removed).
    pub record: String,
    /// A warm-up run: checked, left out of the figures.
    pub warmup: bool,
    /// The run record's equalities held and no process reported a problem.
    pub ok: bool,
    /// What went wrong (the run record's errors), empty when ok.
    pub errors: Vec<String>,
    /// The run's counts, under summary.json's names.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// Fragment bytes received by the eventbuilders.
    pub payload_bytes: u64,
    /// Data-file bytes on disk.
    pub file_bytes: u64,
    pub payload_mb_s: f64,
    pub events_per_s: f64,
    /// CPU seconds of the run by process kind (all processes of the kind).
    pub cpu_s: BTreeMap<String, f64>,
}

impl PipelineRun {
    /// CPU seconds per GB of payload, by process kind.
    pub fn cpu_s_per_gb(&self) -> BTreeMap<String, f64> {
        let gb = self.payload_bytes as f64 / 1e9;
        self.cpu_s
            .iter()
            .filter(|_| gb > 0.0)
            .map(|(k, s)| (k.clone(), s / gb))
            .collect()
    }
}

/// `128 B`, `16 KiB`, `1 MiB` (exact binary units when they divide).
pub fn bytes_name(b: u64) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn spread(f: &Figure) -> String {
    if f.samples.len() < 2 {
        String::new()
    } else {
        format!("({}-{})", rate(f.min), rate(f.max))
    }
}

/// The table `daqctl bench` prints.
pub fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let o = &r.options;
    let _ = writeln!(
        out,
        "daqctl bench: {} cores, {} measured round(s) after {} warm-up; medians (min-max)",
        r.cores, o.repetitions, o.warmup
    );
    let _ = writeln!(out, "\nmachine limits");
    for l in &r.machine {
        let _ = writeln!(
            out,
            "  {:<24} {:>8} MB/s  {}",
            l.limit,
            rate(l.mb_s.median),
            spread(&l.mb_s)
        );
    }
    let _ = writeln!(
        out,
        "\nstages alone (one thread, fed from memory; per second of its CPU time)"
    );
    let _ = writeln!(
        out,
        "  {:<27} {:>9} {:>10} {:>10} {:>10}",
        "stage", "fragment", "MB/s/core", "items/s", "MB/s wall"
    );
    for s in &r.stages {
        let _ = writeln!(
            out,
            "  {:<27} {:>9} {:>10} {:>10} {:>10}",
            s.stage,
            bytes_name(s.fragment_bytes),
            rate(s.mb_s_per_core.median),
            count(s.items_per_s_per_core.median),
            rate(s.mb_s_wall.median),
        );
    }
    let _ = writeln!(
        out,
        "\nwhole system at throttle 0 (MB/s of fragment bytes through the system, to disk when writing)"
    );
    if o.bin_dirs.len() > 1 {
        for (i, d) in o.bin_dirs.iter().enumerate() {
            let _ = writeln!(out, "  build {i}: {d}");
        }
    }
    let _ = writeln!(
        out,
        "  {:>1} {:<8} {:<4} {:>9} {:<5} {:>8} {:>15} {:>9} {:>13} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "b",
        "topology",
        "mode",
        "fragment",
        "disk",
        "MB/s",
        "(min-max)",
        "events/s",
        "file MB/s",
        "br s/GB",
        "eb s/GB",
        "ag s/GB",
        "/tcp",
        "/disk"
    );
    for p in &r.pipeline {
        let cpu = |k: &str| {
            p.cpu_s_per_gb
                .get(k)
                .map_or("-".to_string(), |f| format!("{:.2}", f.median))
        };
        let _ = writeln!(
            out,
            "  {:>1} {:<8} {:<4} {:>9} {:<5} {:>8} {:>15} {:>9} {:>13} {:>6} {:>6} {:>6} {:>6} {:>6}",
            p.build,
            p.topology,
            p.mode,
            bytes_name(p.fragment_bytes),
            match (p.topology.matches('x').count(), p.disk_writing) {
                (1, _) => "-",
                (_, true) => "on",
                (_, false) => "off",
            },
            rate(p.payload_mb_s.median),
            spread(&p.payload_mb_s),
            count(p.events_per_s.median),
            p.file_mb_s
                .as_ref()
                .map_or("-".to_string(), |f| rate(f.median)),
            cpu("boardreader"),
            cpu("eventbuilder"),
            cpu("aggregator"),
            format!("{:.3}", p.ratio_to_tcp),
            p.ratio_to_disk
                .map_or("-".to_string(), |x| format!("{x:.3}")),
        );
    }
    if r.failures.is_empty() {
        let runs: usize = r.pipeline.iter().map(|p| p.runs.len()).sum();
        let _ = writeln!(
            out,
            "\nOK: nothing lost in any of the {runs} pipeline runs (every run record's equalities held)"
        );
    } else {
        let _ = writeln!(out, "\nFAILED: {} failure(s)", r.failures.len());
        for f in &r.failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_median_min_max_of_their_samples() {
        let f = Figure::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((f.median, f.min, f.max), (2.0, 1.0, 3.0));
        assert_eq!(Figure::of(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Figure::of(vec![]).median, 0.0);
    }

    #[test]
    fn sizes_are_named_in_binary_units() {
        assert_eq!(bytes_name(128), "128 B");
        assert_eq!(bytes_name(16384), "16 KiB");
        assert_eq!(bytes_name(1 << 20), "1 MiB");
        assert_eq!(bytes_name(1000), "1000 B");
    }
}
