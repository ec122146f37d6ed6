//! `daqctl bench`: this machine's limits, each stage of the data path alone
//! and the whole system at throttle 0, measured interleaved in one
//! invocation (every round measures everything once, warm-up rounds first
//! and left out), printed as a table, written to `bench.json` and drawn in
//! `bench.svg`. Every pipeline run checks its run record's equalities; any
//! loss fails the bench.
//!
//! Modules by concern: `machine` (TCP, disk, memcpy), `stages` (generator,
//! codec, serializer, writers fed from memory), `pipeline` (one system run
//! through daqctl's demo machinery), `cpu` (/proc and thread CPU time),
//! `report` (bench.json and the table), `plot` (bench.svg), `args` (the
//! command's flags).

pub mod args;
mod cpu;
mod machine;
mod pipeline;
mod plot;
mod report;
mod stages;

use anyhow::{Context, Result, bail};
use cpu::Measured;
use daq_format::config::{SystemConfig, Topology, TransferMode};
use machine::Limit;
use pipeline::Case;
use report::{BenchReport, Figure, LimitResult, OptionsRecord, PipelineResult, StageResult};
use stages::Stage;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use report::table;

/// Fragment sizes of a full bench: the demo's 128 B to 1 MiB.
pub const DEFAULT_SIZES: [u64; 5] = [128, 1 << 10, 16 << 10, 256 << 10, 1 << 20];
/// Fragment sizes of `--quick`.
pub const QUICK_SIZES: [u64; 2] = [128, 64 << 10];

/// The bench's options, resolved.
pub struct BenchOptions {
    pub quick: bool,
    pub repetitions: u32,
    pub warmup: u32,
    pub sizes: Vec<u64>,
    pub topologies: Vec<Topology>,
    /// Transfer modes (`[transfer] mode`) each case runs in.
    pub modes: Vec<TransferMode>,
    /// Length of each pipeline run.
    pub duration: Duration,
    pub out: PathBuf,
    /// One directory of process binaries per build (the first is build 0).
    pub bin_dirs: Vec<PathBuf>,
    /// Everything the cases do not set (partition, transfer, format, ...).
    pub base: SystemConfig,
}

/// The default topologies of a full bench.
pub fn default_topologies() -> Vec<Topology> {
    topologies(&[(1, 1, 1), (2, 2, 0), (2, 2, 2), (4, 4, 2)])
}

/// The topologies of `--quick`.
pub fn quick_topologies() -> Vec<Topology> {
    topologies(&[(1, 1, 1), (2, 2, 0)])
}

/// Topologies from (boardreaders, eventbuilders, aggregators).
fn topologies(counts: &[(u16, u16, u16)]) -> Vec<Topology> {
    counts
        .iter()
        .map(|&(boardreaders, eventbuilders, aggregators)| Topology {
            boardreaders,
            eventbuilders,
            aggregators,
            monitors: 0,
        })
        .collect()
}

/// What the bench measures once per round, in order.
#[derive(Clone, Debug)]
enum Item {
    Limit(Limit),
    /// A stage at a fragment size (bytes asked for).
    Stage(Stage, u64),
    /// A pipeline case with one build.
    Pipeline(Box<PipelineItem>),
}

/// A pipeline case, its configuration and the build that runs it.
#[derive(Clone, Debug)]
struct PipelineItem {
    case: Case,
    config: SystemConfig,
    /// Index into `BenchOptions::bin_dirs`.
    build: usize,
    bin_dir: PathBuf,
}

/// A measurement and its samples, one per round: (warm-up, sample).
struct Slot {
    item: Item,
    samples: Vec<(bool, Sample)>,
}

/// One measurement's outcome in a round.
enum Sample {
    Measured(Measured),
    Run(report::PipelineRun),
}

/// The cases of the matrix: every size x topology, disk writing on and off
/// where there are aggregators, x every transfer mode.
fn cases(o: &BenchOptions) -> Vec<Case> {
    let mut out = Vec::new();
    for &fragment_bytes in &o.sizes {
        for &topology in &o.topologies {
            let disks: &[bool] = if topology.aggregators == 0 {
                &[false]
            } else {
                &[true, false]
            };
            for &disk_writing in disks {
                for &mode in &o.modes {
                    out.push(Case {
                        topology,
                        fragment_bytes,
                        disk_writing,
                        mode,
                    });
                }
            }
        }
    }
    out
}

/// Length of each machine-limit and stage measurement.
fn probe(o: &BenchOptions) -> Duration {
    (o.duration / 6).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs the bench: measures everything, writes `bench.json` and
/// `bench.svg` into `out`, returns the report (its `failures` say whether it passed).
pub async fn run(o: BenchOptions) -> Result<BenchReport> {
    if o.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    if o.sizes.is_empty() || o.topologies.is_empty() || o.bin_dirs.is_empty() {
        bail!("nothing to measure: --sizes, --topologies and --bin-dir need at least one value");
    }
    if o.base.addresses.is_some() {
        bail!("the bench spawns its own processes: the config must have no [addresses] table");
    }
    for d in &o.bin_dirs {
        for b in ["boardreader", "eventbuilder", "aggregator"] {
            if !d.join(b).is_file() {
                bail!("--bin-dir {}: no {b} binary there", d.display());
            }
        }
    }
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let started_unix_s = unix_now();
    let cases = cases(&o);
    let pipeline_runs = cases.len() * o.bin_dirs.len();
    let mut items: Vec<Item> = Limit::ALL.into_iter().map(Item::Limit).collect();
    for &size in &o.sizes {
        items.extend(Stage::ALL.into_iter().map(|s| Item::Stage(s, size)));
    }
    for case in cases {
        let config = pipeline::configure(&o.base, &case)?;
        for (build, bin_dir) in o.bin_dirs.iter().enumerate() {
            items.push(Item::Pipeline(Box::new(PipelineItem {
                case: case.clone(),
                config: config.clone(),
                build,
                bin_dir: bin_dir.clone(),
            })));
        }
    }
    let rounds = o.warmup + o.repetitions;
    let total = items.len() * rounds as usize;
    let probe = probe(&o);
    let scratch = o.out.join("scratch");
    let runs_dir = o.out.join("runs");
    eprintln!(
        "bench: {} measurements x {rounds} rounds ({} warm-up): {} limits, {} stages x {} sizes, \
         {pipeline_runs} pipeline runs of {:.1} s per round; output in {}",
        items.len(),
        o.warmup,
        Limit::ALL.len(),
        Stage::ALL.len(),
        o.sizes.len(),
        o.duration.as_secs_f64(),
        o.out.display()
    );
    let mut slots: Vec<Slot> = items
        .into_iter()
        .map(|item| Slot {
            item,
            samples: Vec::new(),
        })
        .collect();
    let mut failures = Vec::new();
    let bench_start = Instant::now();
    let mut done = 0usize;
    // Ctrl-C stops the run in progress cleanly (demo's wait sees it too),
    // then the bench ends with what it measured.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    'rounds: for round in 0..rounds {
        let warmup = round < o.warmup;
        let round_name = if warmup {
            format!("warm-up {}/{}", round + 1, o.warmup)
        } else {
            format!("round {}/{}", round - o.warmup + 1, o.repetitions)
        };
        for slot in &mut slots {
            done += 1;
            let (name, result) = match &slot.item {
                Item::Limit(l) => {
                    let (l, dir) = (*l, scratch.clone());
                    let r = tokio::task::spawn_blocking(move || l.measure(probe, &dir))
                        .await
                        .context("the measuring thread panicked")
                        .and_then(|r| r);
                    (format!("limit {}", l.name()), r.map(Sample::Measured))
                }
                Item::Stage(s, size) => {
                    let (s, size, dir) = (*s, *size, scratch.clone());
                    let n = pipeline::n_adc_counts(size);
                    let r = tokio::task::spawn_blocking(move || s.measure(n, probe, &dir))
                        .await
                        .context("the measuring thread panicked")
                        .and_then(|r| r);
                    (
                        format!("stage {} {}", s.name(), report::bytes_name(size)),
                        r.map(Sample::Measured),
                    )
                }
                Item::Pipeline(p) => {
                    let name = format!("pipeline build {} {}", p.build, p.case.label());
                    let r = pipeline::run(&p.config, &p.bin_dir, &runs_dir, o.duration)
                        .await
                        .map(|mut run| {
                            run.warmup = warmup;
                            Sample::Run(run)
                        });
                    (name, r)
                }
            };
            let line = match &result {
                Ok(Sample::Measured(m)) => {
                    crate::units::rate(Measured::mb_s(m.bytes, m.cpu.unwrap_or(m.wall)) * 1e6)
                }
                Ok(Sample::Run(r)) if r.ok => format!(
                    "{}, {:.0} events/s, nothing lost",
                    crate::units::rate(r.payload_mb_s * 1e6),
                    r.events_per_s
                ),
                Ok(Sample::Run(r)) => format!("LOSS in {}: {}", r.record, r.errors.join("; ")),
                Err(e) => format!("FAILED: {e:#}"),
            };
            eprintln!(
                "[{done:>4}/{total}] {:>6.0} s  {round_name}  {name}: {line}",
                bench_start.elapsed().as_secs_f64()
            );
            match result {
                Ok(Sample::Run(r)) if !r.ok => {
                    failures.push(format!(
                        "{name} ({round_name}): run {} lost data or failed: {}",
                        r.record,
                        r.errors.join("; ")
                    ));
                    slot.samples.push((warmup, Sample::Run(r)));
                }
                Ok(s) => slot.samples.push((warmup, s)),
                Err(e) => failures.push(format!("{name} ({round_name}): {e:#}")),
            }
            if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("bench: interrupted; writing what was measured");
                failures.push(format!("interrupted after {done} of {total} measurements"));
                break 'rounds;
            }
        }
    }
    ctrl_c.abort();
    let _ = std::fs::remove_dir_all(&scratch);
    let report = summarize(&o, &slots, failures, started_unix_s);
    let json = o.out.join("bench.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).context("serializing bench.json")?,
    )
    .with_context(|| format!("cannot write {}", json.display()))?;
    let svg = o.out.join("bench.svg");
    std::fs::write(&svg, plot::svg(&report))
        .with_context(|| format!("cannot write {}", svg.display()))?;
    eprintln!("bench: wrote {} and {}", json.display(), svg.display());
    Ok(report)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The figures from the measured (non-warm-up) samples.
fn summarize(
    o: &BenchOptions,
    slots: &[Slot],
    failures: Vec<String>,
    started_unix_s: f64,
) -> BenchReport {
    let measured = |s: &[(bool, Sample)], f: &dyn Fn(&Measured) -> f64| -> Figure {
        Figure::of(
            s.iter()
                .filter(|(w, _)| !w)
                .filter_map(|(_, s)| match s {
                    Sample::Measured(m) => Some(f(m)),
                    Sample::Run(_) => None,
                })
                .collect(),
        )
    };
    let mut machine = Vec::new();
    let mut stages = Vec::new();
    let mut pipeline = Vec::new();
    for Slot { item, samples: s } in slots {
        match item {
            Item::Limit(l) => machine.push(LimitResult {
                limit: l.name().into(),
                mb_s: measured(s, &|m| Measured::mb_s(m.bytes, m.wall)),
            }),
            Item::Stage(st, size) => {
                let per_core = |m: &Measured| m.cpu.unwrap_or(m.wall);
                let frag_bytes = {
                    let mut c = SystemConfig::default();
                    c.generator.n_adc_counts = pipeline::n_adc_counts(*size);
                    c.generator_fragment_bytes()
                };
                stages.push(StageResult {
                    stage: st.name().into(),
                    item: st.item().into(),
                    fragments_per_event: if st.item() == "events" {
                        stages::BOARDS
                    } else {
                        1
                    },
                    fragment_bytes: frag_bytes,
                    mb_s_per_core: measured(s, &|m| Measured::mb_s(m.bytes, per_core(m))),
                    items_per_s_per_core: measured(s, &|m| {
                        m.items as f64 / per_core(m).as_secs_f64().max(1e-9)
                    }),
                    mb_s_wall: measured(s, &|m| Measured::mb_s(m.bytes, m.wall)),
                })
            }
            Item::Pipeline(p) => {
                let runs: Vec<report::PipelineRun> = s
                    .iter()
                    .filter_map(|(_, s)| match s {
                        Sample::Run(r) => Some(r.clone()),
                        Sample::Measured(_) => None,
                    })
                    .collect();
                let counted: Vec<&report::PipelineRun> =
                    runs.iter().filter(|r| !r.warmup && r.ok).collect();
                let fig = |f: &dyn Fn(&report::PipelineRun) -> f64| {
                    Figure::of(counted.iter().map(|r| f(r)).collect())
                };
                let mut cpu: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for r in &counted {
                    for (k, v) in r.cpu_s_per_gb() {
                        cpu.entry(k).or_default().push(v);
                    }
                }
                let (case, config) = (&p.case, &p.config);
                let writing = case.disk_writing && case.topology.aggregators > 0;
                pipeline.push(PipelineResult {
                    build: p.build,
                    topology: pipeline::topology_name(case.topology),
                    mode: case.mode.as_str().into(),
                    fragment_bytes: config.generator_fragment_bytes(),
                    n_adc_counts: config.generator.n_adc_counts,
                    disk_writing: writing,
                    buffer_bytes: config.eventbuilder.buffer_bytes,
                    payload_mb_s: fig(&|r| r.payload_mb_s),
                    file_mb_s: writing.then(|| {
                        fig(&|r| r.file_bytes as f64 / 1e6 / r.counts.duration_s.max(1e-9))
                    }),
                    events_per_s: fig(&|r| r.events_per_s),
                    cpu_s_per_gb: cpu.into_iter().map(|(k, v)| (k, Figure::of(v))).collect(),
                    ratio_to_tcp: 0.0,
                    ratio_to_disk: None,
                    runs,
                });
            }
        }
    }
    let limit = |name: &str| {
        machine
            .iter()
            .find(|l| l.limit == name)
            .map_or(0.0, |l| l.mb_s.median)
    };
    let (tcp, disk) = (limit(Limit::Tcp.name()), limit(Limit::DiskFdatasync.name()));
    let ratio = |x: f64, of: f64| if of > 0.0 { x / of } else { 0.0 };
    for p in &mut pipeline {
        p.ratio_to_tcp = ratio(p.payload_mb_s.median, tcp);
        if p.disk_writing {
            p.ratio_to_disk = Some(ratio(p.payload_mb_s.median, disk));
        }
    }
    BenchReport {
        version: report::BENCH_VERSION,
        daqctl_version: env!("CARGO_PKG_VERSION").into(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        started_unix_s,
        finished_unix_s: unix_now(),
        options: OptionsRecord {
            quick: o.quick,
            repetitions: o.repetitions,
            warmup: o.warmup,
            duration_s: o.duration.as_secs_f64(),
            probe_s: probe(o).as_secs_f64(),
            sizes_bytes: o.sizes.clone(),
            topologies: o
                .topologies
                .iter()
                .map(|t| pipeline::topology_name(*t))
                .collect(),
            bin_dirs: o
                .bin_dirs
                .iter()
                .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
                .map(|d| d.display().to_string())
                .collect(),
        },
        machine,
        stages,
        pipeline,
        failures,
    }
}

/// The default build: daqctl's own directory (or `DAQ_BIN_DIR`).
pub fn default_bin_dir() -> Result<PathBuf> {
    pipeline::default_bin_dir()
}

/// Parses `--sizes`: comma-separated byte counts, with an optional
/// K/KiB or M/MiB suffix (binary units): `128,1K,16KiB,1M`.
pub fn parse_sizes(s: &str) -> Result<Vec<u64>, String> {
    s.split(',')
        .map(|p| {
            let t = p.trim();
            let lower = t.to_ascii_lowercase();
            let (num, mult) = if let Some(n) = lower.strip_suffix("kib").or(lower.strip_suffix('k'))
            {
                (n.to_string(), 1u64 << 10)
            } else if let Some(n) = lower.strip_suffix("mib").or(lower.strip_suffix('m')) {
                (n.to_string(), 1u64 << 20)
            } else {
                (lower.strip_suffix('b').unwrap_or(&lower).to_string(), 1)
            };
            let n: u64 = num
                .trim()
                .parse()
                .map_err(|_| format!("--sizes: {t:?} is not a size (128, 1K, 256KiB, 1M)"))?;
            let bytes = n.saturating_mul(mult);
            if !(64..=8 << 20).contains(&bytes) {
                return Err(format!("--sizes: {t:?} must be 64 B to 8 MiB"));
            }
            Ok(bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(
            parse_sizes("128,1K,16KiB, 256k,1M"),
            Ok(vec![128, 1024, 16384, 262144, 1 << 20])
        );
        assert!(parse_sizes("12").is_err());
        assert!(parse_sizes("ten").is_err());
        assert!(parse_sizes("1G").is_err());
    }
}
