//! The run record every start/stop pair writes: after stop, what every
//! process reported (counters, heap boundaries, samples, profiles) is
//! collected into `summary.json`, `heap/<process>.csv` and heap profiles
//! (`finish_run`, shared by `daqctl demo`, `soak`, `stop`, `run` and the
//! bench), with the accounting equalities and what died with a process;
//! and the summary as a person reads it (`render`).

use crate::control::system::{Reply, System};
use crate::units::rate;
use anyhow::{Context, Result};
use daq_format::config::SystemConfig;
use daq_format::process::{Kind, ProcessId};
use daq_format::record::{
    self, DataFileLocation, InjectedLeak, LostWith, ProcessRecord, RunPaths, RunSummary,
};
use daq_format::seqranges;
use daq_runtime::sampler::write_csv;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a finished demo run produced.
pub struct Outcome {
    pub paths: RunPaths,
    pub summary: RunSummary,
}

/// After stop: collects what every process reported (counters, heap
/// boundaries, heap samples and profiles over gRPC), writes the run record
/// (summary.json, heap/<process>.csv, heap profiles) and returns it.
pub async fn finish_run(
    system: &mut System,
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    replies: Vec<Reply>,
    mut errors: Vec<String>,
) -> Result<Outcome> {
    errors.extend(system.reap());
    // A process that died left its shared-memory segment (its lock is free
    // now): removed here, on this host, so nothing of the run outlives it.
    let dead = system.dead_children();
    for id in &dead {
        let path = daq_shm::segment_path(config.partition, &id.to_string());
        match daq_shm::remove_abandoned(&path) {
            Ok(true) => eprintln!(
                "removed the shared-memory segment {} left by {id}",
                path.display()
            ),
            Ok(false) => {}
            Err(e) => errors.push(format!(
                "{id}: cannot remove its shared-memory segment: {e}"
            )),
        }
    }
    errors.extend(system.silent());
    let (statuses, e) = system.status().await;
    errors.extend(e);
    let (heaps, e) = system.heap().await;
    errors.extend(e);
    let (records, e) = system.run_records().await;
    errors.extend(e);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // From the end of the last start to the end of stop.
    let started_ms = statuses
        .iter()
        .filter(|s| s.run == run)
        .map(|s| s.run_started_unix_ms)
        .max()
        .filter(|&t| t > 0 && t <= now_ms);
    let duration = started_ms.map_or(Duration::ZERO, |t| Duration::from_millis(now_ms - t));
    let hosts: BTreeMap<String, String> = system
        .procs
        .iter()
        .map(|p| (p.name(), host_of(&p.addr)))
        .collect();
    let heap_dir = paths.root.join("heap");
    let mut profiles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, r) in records {
        if r.run != run {
            continue;
        }
        std::fs::create_dir_all(&heap_dir)?;
        if !r.samples.is_empty() {
            write_csv(&heap_dir.join(format!("{name}.csv")), &r.samples)?;
        }
        write_timed_profiles(&heap_dir, &name, &r.profiles)?;
        for p in r.profiles.into_iter().filter(|p| p.label != "timed") {
            let path = heap_dir.join(format!("{name}.{}.heap", p.label));
            std::fs::write(&path, &p.data)?;
            profiles
                .entry(name.clone())
                .or_default()
                .push(std::path::absolute(&path)?.display().to_string());
        }
        for f in r.files {
            match record_file_path(&paths.root, &f.path) {
                Some(path) => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&path, &f.data)?;
                }
                None => errors.push(format!(
                    "{name}: refused a record file outside the record: {:?}",
                    f.path
                )),
            }
        }
    }
    let collected = Collected {
        dead,
        statuses,
        heaps,
        replies,
        errors,
        profiles,
        hosts,
    };
    let summary = summarize(config, run, paths, duration, collected);
    let outcome = Outcome {
        paths: paths.clone(),
        summary,
    };
    write_summary(&outcome)?;
    Ok(outcome)
}

/// Writes a process's timed heap profiles (dumped on its sampler's timer)
/// into `heap/<process>.timed/<unix_ms>-<events>.heap`, the directory
/// holding exactly the given ones (dumps the process thinned away since an
/// earlier call are removed, new ones added, the rest left as they are).
pub fn write_timed_profiles(
    heap_dir: &Path,
    process: &str,
    profiles: &[proto::HeapProfile],
) -> Result<()> {
    let timed: Vec<&proto::HeapProfile> = profiles.iter().filter(|p| p.label == "timed").collect();
    if timed.is_empty() {
        return Ok(());
    }
    let dir = heap_dir.join(format!(
        "{process}.{}",
        crate::analysis::heap::profile::TIMED_DIR
    ));
    std::fs::create_dir_all(&dir)?;
    let names: std::collections::BTreeSet<String> = timed
        .iter()
        .map(|p| format!("{}-{}.heap", p.unix_ms, p.events))
        .collect();
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        if let Some(n) = e.file_name().to_str()
            && !names.contains(n)
        {
            std::fs::remove_file(e.path())?;
        }
    }
    for p in timed {
        let path = dir.join(format!("{}-{}.heap", p.unix_ms, p.events));
        if !path.exists() {
            // Written whole under a temporary name, so a reader never sees half a dump.
            let tmp = dir.join(format!(".{}-{}.tmp", p.unix_ms, p.events));
            std::fs::write(&tmp, &p.data)?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(())
}

/// Where a file a process added to the record goes: under `root`, its
/// path relative and without `..` (`None`: refused).
fn record_file_path(root: &std::path::Path, rel: &str) -> Option<std::path::PathBuf> {
    let rel = std::path::Path::new(rel);
    let normal = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (normal && rel.components().next().is_some()).then(|| root.join(rel))
}

/// Writes `o`'s summary.json (again, after errors were added).
pub fn write_summary(o: &Outcome) -> Result<()> {
    std::fs::write(
        o.paths.summary(),
        serde_json::to_string_pretty(&o.summary).context("serializing summary")?,
    )?;
    Ok(())
}

/// The host part of `host:port` (without the brackets of an IPv6 address).
pub fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The kind of a process named in a reply.
pub fn kind_of(name: &str) -> Option<Kind> {
    name.parse::<ProcessId>().ok().map(|id| id.kind)
}

/// What the processes reported at the end of a run.
struct Collected {
    /// Processes that died during the run.
    dead: Vec<ProcessId>,
    statuses: Vec<proto::StatusReply>,
    heaps: Vec<(String, proto::HeapReply)>,
    replies: Vec<Reply>,
    errors: Vec<String>,
    /// Heap profiles written into the record, by process.
    profiles: BTreeMap<String, Vec<String>>,
    /// The host of each process.
    hosts: BTreeMap<String, String>,
}

fn summarize(
    config: &SystemConfig,
    run: u32,
    paths: &RunPaths,
    duration: Duration,
    collected: Collected,
) -> RunSummary {
    let Collected {
        dead,
        statuses,
        heaps,
        replies,
        mut errors,
        mut profiles,
        hosts,
    } = collected;
    let mut processes = std::collections::BTreeMap::new();
    for s in statuses {
        let counters = s.counters.unwrap_or_default();
        processes.insert(
            s.process,
            ProcessRecord {
                counters,
                links: s.links,
                ..Default::default()
            },
        );
    }
    for (name, h) in heaps {
        if let Some(rec) = processes.get_mut(&name) {
            rec.heap = h
                .boundaries
                .into_iter()
                .filter_map(|b| Some((b.label, b.snapshot?)))
                .collect();
            rec.profiles = profiles.remove(&name).unwrap_or_default();
        }
    }
    for r in replies {
        for p in &r.reply.problems {
            errors.push(format!("{}: {p}", r.process));
        }
        if let Some(rec) = processes.get_mut(&r.process) {
            rec.problems = r.reply.problems;
        }
    }
    let sum = |kind: Kind, f: fn(&record::Counters) -> u64| -> u64 {
        processes
            .iter()
            .filter(|(n, _)| kind_of(n) == Some(kind))
            .map(|(_, p)| f(&p.counters))
            .sum()
    };
    let secs = duration.as_secs_f64();
    let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    let bytes_received = sum(Kind::EventBuilder, |c| c.bytes_received);
    let bytes_written = sum(Kind::Aggregator, |c| c.bytes_written);
    let events_built = sum(Kind::EventBuilder, |c| c.events_built);
    let data_files = processes
        .values()
        .flat_map(|p| p.counters.data_files.iter())
        .map(|f| relative(Path::new(f), &paths.root))
        .collect();
    // Data files stay on the aggregator's host: say which.
    let data_file_locations = processes
        .iter()
        .flat_map(|(name, p)| {
            let host = hosts.get(name).cloned().unwrap_or_default();
            p.counters.data_files.iter().map(move |f| DataFileLocation {
                process: name.clone(),
                host: host.clone(),
                path: f.clone(),
            })
        })
        .collect();
    let mut drops = std::collections::BTreeMap::new();
    for p in processes.values() {
        for (k, v) in record::drops_of(&p.counters) {
            if v > 0 {
                *drops.entry(k.to_string()).or_insert(0) += v;
            }
        }
    }
    let mut summary = RunSummary {
        run,
        topology: config.topology,
        netmon_input: config.aggregator.netmon_input.as_str().into(),
        disk_writing: config.aggregator.write_data,
        injected_leak: InjectedLeak::of(&config.leak),
        throttle_us: config.generator.throttle_us,
        started_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() - secs)
            .unwrap_or(0.0),
        duration_s: secs,
        fragments_sent: sum(Kind::BoardReader, |c| c.fragments_sent),
        fragments_received: sum(Kind::EventBuilder, |c| c.fragments_received),
        events_built,
        events_incomplete: sum(Kind::EventBuilder, |c| c.events_incomplete),
        events_written: sum(Kind::Aggregator, |c| c.events_written),
        events_unwritten: sum(Kind::Aggregator, |c| c.events_unwritten),
        drops,
        bytes_written,
        data_files,
        data_file_locations,
        event_rate_hz: per_s(events_built as f64),
        throughput_mb_s: per_s(bytes_received as f64) / 1e6,
        write_mb_s: per_s(bytes_written as f64) / 1e6,
        errors: vec![],
        lost: vec![],
        transport: record::Transport::of(&processes),
        processes,
    };
    errors.extend(summary.accounting_errors());
    summary.lost = dead
        .iter()
        .map(|id| lost_with(config, *id, &summary.processes))
        .collect();
    for l in &summary.lost {
        if let Some(n) = l.events {
            let ids: Vec<String> = l.sequence_ids.iter().map(seqranges::display).collect();
            let ids = if ids.is_empty() {
                "none".into()
            } else {
                ids.join(", ")
            };
            if kind_of(&l.process) == Some(Kind::Monitor) {
                // Its death is named already; it held no data.
            } else if kind_of(&l.process) == Some(Kind::Aggregator) {
                errors.push(format!(
                    "{} died: {n} events routed to it after that never left their eventbuilders (sequence ids {ids}), besides those it held unwritten",
                    l.process
                ));
            } else {
                errors.push(format!(
                    "{} died: {n} events lost with it (sequence ids {ids})",
                    l.process
                ));
            }
        }
    }
    summary.errors = errors;
    summary
}

/// Most sequence ids `lost_with` enumerates to merge the aggregators'
/// shares into the eventbuilders' step (more are left per aggregator).
const MERGE_LIMIT: u64 = 4_000_000;

/// What died with `id`. For an eventbuilder: its sequence ids (those
/// `s % eventbuilders == rank` from the first one generated to the last)
/// that no aggregator received from it, from every aggregator's
/// `received_ranges`; unknown when an aggregator did not answer.
fn lost_with(
    config: &SystemConfig,
    id: ProcessId,
    processes: &BTreeMap<String, ProcessRecord>,
) -> LostWith {
    let mut lost = LostWith {
        process: id.to_string(),
        ..Default::default()
    };
    let t = config.topology;
    let (n_eb, n_ag) = (u64::from(t.eventbuilders), u64::from(t.aggregators));
    if id.kind == Kind::Aggregator {
        return lost_with_aggregator(lost, processes);
    }
    if id.kind == Kind::Monitor {
        // A monitor only reads an aggregator's store: nothing is lost with it.
        lost.events = Some(0);
        return lost;
    }
    if id.kind != Kind::EventBuilder || n_ag == 0 || n_eb == 0 {
        return lost;
    }
    let first = config.generator.initial_sequence_id;
    let last = processes
        .iter()
        .filter(|(n, _)| kind_of(n) == Some(Kind::BoardReader))
        .map(|(_, p)| p.counters.last_sequence_id)
        .max()
        .unwrap_or(0);
    let k = u64::from(id.rank);
    let step = n_eb * n_ag;
    let mut shares = Vec::new();
    for j in 0..n_ag {
        let name = ProcessId::new(Kind::Aggregator, j as u16).to_string();
        let Some(ag) = processes.get(&name) else {
            return lost; // Its share is unknown.
        };
        // Sequence ids of eventbuilder k routed to aggregator j.
        let routed = |s: u64| s % n_eb == k && (s / n_eb) % n_ag == j;
        let Some(lo) = (first..first.saturating_add(step)).find(|&s| routed(s)) else {
            continue;
        };
        let Some(hi) = (last.saturating_sub(step - 1)..=last)
            .rev()
            .find(|&s| routed(s))
        else {
            continue;
        };
        if hi < lo {
            continue;
        }
        let have = ag
            .counters
            .received_ranges
            .iter()
            .find(|r| r.source == lost.process)
            .map(|r| r.ranges.as_slice())
            .unwrap_or_default();
        let expected = seqranges::SequenceRange {
            first: lo,
            last: hi,
            step,
        };
        shares.extend(seqranges::subtract(&expected, have));
    }
    lost.events = Some(shares.iter().map(seqranges::count).sum());
    lost.sequence_ids = seqranges::merge(shares, n_eb, MERGE_LIMIT);
    lost
}

/// What died with an aggregator, as far as anyone knows: the sequence ids
/// its eventbuilders routed to it once its stream had broken (they never
/// left them: `undelivered_ranges`). What it had received and not yet
/// written when it died is known to nobody and not counted here (its
/// closed files are whole, its open one reads up to its last flush).
/// Unknown when an eventbuilder did not answer.
fn lost_with_aggregator(
    mut lost: LostWith,
    processes: &BTreeMap<String, ProcessRecord>,
) -> LostWith {
    let ebs: Vec<&ProcessRecord> = processes
        .iter()
        .filter(|(n, _)| kind_of(n) == Some(Kind::EventBuilder))
        .map(|(_, p)| p)
        .collect();
    if ebs.is_empty() {
        return lost;
    }
    let mut shares: Vec<seqranges::SequenceRange> = ebs
        .iter()
        .flat_map(|p| &p.counters.undelivered_ranges)
        .filter(|r| r.source == lost.process)
        .flat_map(|r| r.ranges.iter().copied())
        .collect();
    shares.sort_by_key(|r| (r.first, r.step));
    lost.events = Some(shares.iter().map(seqranges::count).sum());
    lost.sequence_ids = shares;
    lost
}

fn relative(file: &Path, root: &Path) -> String {
    let abs_root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    file.strip_prefix(&abs_root)
        .or_else(|_| file.strip_prefix(root))
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The human-readable summary.
pub fn render(o: &Outcome) -> String {
    let s = &o.summary;
    let t = s.topology;
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(
        "run {}  topology {}x{}x{}  throttle {} us  duration {:.2} s",
        s.run, t.boardreaders, t.eventbuilders, t.aggregators, s.throttle_us, s.duration_s
    ));
    line(format!(
        "  fragments  sent {}  received {}",
        s.fragments_sent, s.fragments_received
    ));
    line(format!(
        "  events     built {}  incomplete {}  written {}",
        s.events_built, s.events_incomplete, s.events_written
    ));
    if !s.drops.is_empty() {
        let d: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line(format!("  dropped    {}", d.join("  ")));
    }
    line(format!(
        "  rate       {:.1} events/s  {} into the eventbuilders  {} to disk",
        s.event_rate_hz,
        rate(s.throughput_mb_s * 1e6),
        rate(s.write_mb_s * 1e6)
    ));
    line(format!(
        "  data       {} files, {} bytes",
        s.data_files.len(),
        s.bytes_written
    ));
    for f in &s.data_files {
        line(format!("             {f}"));
    }
    line(format!("  netmon     {}", s.netmon_input));
    let tr = &s.transport;
    if tr.fragments.is_some() || tr.events.is_some() {
        let or_none = |m: &Option<String>| m.clone().unwrap_or_else(|| "-".into());
        line(format!(
            "  transport  fragments {}, events {}",
            or_none(&tr.fragments),
            or_none(&tr.events)
        ));
    }
    for (name, p) in s
        .processes
        .iter()
        .filter(|(n, _)| kind_of(n) == Some(Kind::Monitor))
    {
        let c = &p.counters;
        line(format!(
            "  monitor    {name}: read {}  skipped {}  integrity failures {} (monitor/{name}.json)",
            c.events_monitored,
            c.events_skipped,
            c.integrity_failures.values().sum::<u64>()
        ));
    }
    if let Some(l) = s.injected_leak {
        line(format!(
            "  leak       {} B/event injected on purpose into every {}",
            l.bytes_per_event,
            l.process_kind.as_str()
        ));
    }
    out.push_str(&crate::analysis::heap::table::table(s));
    let profiles: Vec<&String> = s.processes.values().flat_map(|p| &p.profiles).collect();
    if !profiles.is_empty() {
        out.push_str(&crate::analysis::heap::sites::profile_help(
            s,
            &o.paths.root,
        ));
    }
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("  record     {}", o.paths.root.display()));
    if s.errors.is_empty() {
        let written = if t.aggregators == 0 {
            "no aggregators: built events discarded"
        } else if s.disk_writing {
            "every built event written"
        } else {
            "disk writing off"
        };
        line(format!(
            "OK: nothing lost (fragments sent = received = {} x events built; {written})",
            t.boardreaders
        ));
    } else {
        line(format!("FAILED: {} errors", s.errors.len()));
        for e in &s.errors {
            line(format!("  error: {e}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_files_stay_inside_the_record() {
        let root = std::path::Path::new("/r");
        assert_eq!(
            record_file_path(root, "monitor/monitor-0.json"),
            Some(root.join("monitor/monitor-0.json"))
        );
        for bad in ["", "/etc/passwd", "../x", "monitor/../../x", "./a"] {
            assert_eq!(record_file_path(root, bad), None, "{bad}");
        }
    }

    fn status(process: &str, counters: proto::Counters) -> proto::StatusReply {
        proto::StatusReply {
            process: process.into(),
            counters: Some(counters),
            ..Default::default()
        }
    }

    #[test]
    fn the_record_says_how_many_events_were_not_written_and_why_counts_differ() {
        let mut config = SystemConfig::default();
        config.topology.boardreaders = 1;
        config.topology.eventbuilders = 1;
        config.topology.aggregators = 2;
        let statuses = vec![
            status(
                "boardreader-0",
                proto::Counters {
                    fragments_sent: 100,
                    ..Default::default()
                },
            ),
            status(
                "eventbuilder-0",
                proto::Counters {
                    fragments_received: 97,
                    fragments_rejected: 1,
                    fragments_discarded: 2,
                    events_built: 97,
                    ..Default::default()
                },
            ),
            status(
                "aggregator-0",
                proto::Counters {
                    events_received: 50,
                    events_written: 20,
                    events_unwritten: 30,
                    ..Default::default()
                },
            ),
            status(
                "aggregator-1",
                proto::Counters {
                    events_received: 47,
                    events_written: 47,
                    ..Default::default()
                },
            ),
        ];
        let collected = Collected {
            dead: vec![],
            statuses,
            heaps: vec![],
            replies: vec![],
            errors: vec![],
            profiles: BTreeMap::new(),
            hosts: BTreeMap::new(),
        };
        let paths = RunPaths::new(Path::new("runs"), 1);
        let s = summarize(&config, 1, &paths, Duration::from_secs(1), collected);
        assert_eq!((s.events_written, s.events_unwritten), (67, 30));
        assert_eq!(
            s.drops,
            BTreeMap::from([
                ("events_unwritten".to_string(), 30),
                ("fragments_discarded".to_string(), 2),
                ("fragments_rejected".to_string(), 1),
            ])
        );
        assert_eq!(
            s.errors,
            [
                "fragments_received 97 != fragments_sent 100 (rejected 1, discarded with their batch 2, unaccounted 0)",
                "fragments_sent 100 != 1 x events_built 97 (events_incomplete 0, fragments_unpublished 0, late_fragments 0, oversize_fragments 0, duplicate_fragments 0, fragments_unplaced 0, dropped 0)",
                "events_written 67 != events_built 97 + events_incomplete 0 (not written 30, rejected 0, discarded with their batch 0, unsendable 0, dropped 0)",
            ]
        );
    }

    #[test]
    fn a_dead_monitor_lost_nothing_and_a_dead_aggregator_lists_what_never_left() {
        let config = SystemConfig::default();
        let mut processes = BTreeMap::new();
        let monitor = lost_with(&config, ProcessId::new(Kind::Monitor, 0), &processes);
        assert_eq!((monitor.events, monitor.sequence_ids.len()), (Some(0), 0));
        // No eventbuilder answered: what the aggregator lost is unknown.
        let ag = ProcessId::new(Kind::Aggregator, 1);
        assert_eq!(lost_with(&config, ag, &processes).events, None);
        let range = |first, last| seqranges::SequenceRange {
            first,
            last,
            step: 4,
        };
        for (eb, first) in [(0u16, 6u64), (1, 3)] {
            let counters = proto::Counters {
                undelivered_ranges: vec![
                    proto::SourceRanges {
                        source: "aggregator-1".into(),
                        ranges: vec![range(first, first + 8)],
                    },
                    proto::SourceRanges {
                        source: "aggregator-0".into(),
                        ranges: vec![range(100, 200)],
                    },
                ],
                ..Default::default()
            };
            let name = ProcessId::new(Kind::EventBuilder, eb).to_string();
            processes.insert(
                name,
                ProcessRecord {
                    counters,
                    ..Default::default()
                },
            );
        }
        let lost = lost_with(&config, ag, &processes);
        assert_eq!(lost.events, Some(6));
        assert_eq!(lost.sequence_ids, vec![range(3, 11), range(6, 14)]);
    }
}
