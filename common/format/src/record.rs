//! Run records: the directory layout and `summary.json`, the contract that
//! tools and tests read.
//!
//! ```text
//! <run-dir>/run_<NNNNNN>/
//!   config.toml      the effective configuration
//!   summary.json     counts, rates, per-process counters and problems
//!   data/*.h5        data files
//!   logs/<process>.log
//! ```

use crate::config::{LeakConfig, Topology};
use crate::process::{Kind, ProcessId};
use proto::HeapSnapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Per-process counters of one run: the run-control `Counters` message,
/// stored as it travels (serde is derived on the generated type).
pub use proto::Counters;

/// Heap snapshot labels every run record holds, in run order.
pub const HEAP_BOUNDARIES: [&str; 3] = ["before_start", "before_stop", "after_stop"];

/// One process's part of a run record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub counters: Counters,
    /// Problems the process reported (e.g. an end-of-data shortfall).
    pub problems: Vec<String>,
    /// Heap snapshots by boundary (`before_start`, `before_stop`, `after_stop`, ...).
    pub heap: BTreeMap<String, HeapSnapshot>,
    /// Heap profiles written at the boundaries (with profiling on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The process's data links in the run and their mechanism:
    /// "eventbuilder-0 shm".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

/// Which mechanism carried each hop of a run: "shm", "grpc" or "mixed"
/// (some links of the hop one, some the other); absent for a hop with no
/// link (no aggregators).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragments: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
}

impl Transport {
    /// From the senders' links: boardreaders' to eventbuilders are the
    /// fragments hop, eventbuilders' to aggregators the events hop.
    pub fn of(processes: &BTreeMap<String, ProcessRecord>) -> Self {
        let hop = |sender: &str, receiver: &str| -> Option<String> {
            let mut seen = std::collections::BTreeSet::new();
            for (name, p) in processes {
                if !name.starts_with(sender) {
                    continue;
                }
                for line in &p.links {
                    if let Some((peer, mechanism)) = line.split_once(' ')
                        && peer.starts_with(receiver)
                    {
                        seen.insert(mechanism.to_string());
                    }
                }
            }
            match seen.len() {
                0 => None,
                1 => seen.pop_first(),
                _ => Some("mixed".into()),
            }
        };
        Self {
            fragments: hop("boardreader-", "eventbuilder-"),
            events: hop("eventbuilder-", "aggregator-"),
        }
    }
}

/// Where a data file is: on `host`, written by `process`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileLocation {
    pub process: String,
    pub host: String,
    pub path: String,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: u32,
    pub topology: Topology,
    pub netmon_input: String,
    /// Whether the aggregators wrote data files.
    #[serde(default = "yes")]
    pub disk_writing: bool,
    /// The leak injected on purpose in this run (`None`: none was).
    #[serde(default)]
    pub injected_leak: Option<InjectedLeak>,
    /// Generator throttle of the run, in microseconds (0: as fast as possible).
    pub throttle_us: u64,
    /// Unix time (s) when the run started.
    pub started_unix_s: f64,
    /// From the end of start to the end of stop.
    pub duration_s: f64,
    pub fragments_sent: u64,
    pub fragments_received: u64,
    pub events_built: u64,
    pub events_incomplete: u64,
    pub events_written: u64,
    /// Events the aggregators received but did not write (their data files
    /// failed: disk full, directory gone); also in `drops`.
    #[serde(default)]
    pub events_unwritten: u64,
    /// Fragments and events lost, by reason (the counter's name, summed
    /// over the processes; only reasons that occurred): `fragments_rejected`
    /// (malformed), `fragments_discarded` (well-formed, in a rejected
    /// batch), `fragments_unpublished`, `late_fragments`,
    /// `oversize_fragments`, `duplicate_fragments`, `fragments_unplaced`,
    /// `dropped` (for a lost destination), `events_unsendable`,
    /// `events_rejected`, `events_discarded`, `events_unwritten`.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    pub bytes_written: u64,
    /// Paths relative to the run directory.
    pub data_files: Vec<String>,
    /// Every data file with the process and host that wrote it (absolute
    /// paths on that host: data files stay where the aggregator runs).
    #[serde(default)]
    pub data_file_locations: Vec<DataFileLocation>,
    pub event_rate_hz: f64,
    /// Fragment bytes (headers included) received by the eventbuilders per second, in MB (1e6 B).
    pub throughput_mb_s: f64,
    /// Data-file bytes written per second, in MB (1e6 B).
    pub write_mb_s: f64,
    /// Everything that went wrong; empty for a clean run.
    pub errors: Vec<String>,
    /// Processes that died during the run, with what was lost with them
    /// (where it can be known); empty for a clean run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<LostWith>,
    /// The mechanism of each hop (`[transfer] mode`, and what `auto` chose).
    #[serde(default)]
    pub transport: Transport,
    pub processes: BTreeMap<String, ProcessRecord>,
}

/// The counts of a run that a line about it (a session's runs, a bench's
/// pipeline runs) repeats from its summary, under the summary's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCounts {
    pub duration_s: f64,
    pub fragments_sent: u64,
    pub fragments_received: u64,
    pub events_built: u64,
    pub events_incomplete: u64,
    pub events_written: u64,
}

impl From<&RunSummary> for RunCounts {
    fn from(s: &RunSummary) -> Self {
        Self {
            duration_s: s.duration_s,
            fragments_sent: s.fragments_sent,
            fragments_received: s.fragments_received,
            events_built: s.events_built,
            events_incomplete: s.events_incomplete,
            events_written: s.events_written,
        }
    }
}

/// A process that died during the run and the events lost with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LostWith {
    /// `eventbuilder-1`.
    pub process: String,
    /// Events lost with it. An eventbuilder: its sequence ids that reached
    /// no aggregator (known when every aggregator answered). An
    /// aggregator: the sequence ids routed to it after its stream broke,
    /// which never left their eventbuilders (those it held unwritten when
    /// it died are known to nobody and not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Those sequence ids, as ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequence_ids: Vec<crate::seqranges::SequenceRange>,
}

/// A leak injected on purpose (the `[leak]` configuration of the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedLeak {
    /// Bytes orphaned per event handled by every process of `process_kind`.
    pub bytes_per_event: u64,
    pub process_kind: Kind,
}

impl InjectedLeak {
    /// The injected leak of a configuration, `None` when it is off.
    pub fn of(leak: &LeakConfig) -> Option<Self> {
        (leak.inject_bytes_per_event > 0).then_some(Self {
            bytes_per_event: leak.inject_bytes_per_event,
            process_kind: leak.inject_in,
        })
    }

    /// Bytes per event injected into `process` (0 for the clean ones).
    pub fn bytes_per_event_in(injected: Option<Self>, process: &str) -> u64 {
        match injected {
            Some(i)
                if process.parse::<ProcessId>().ok().map(|p| p.kind) == Some(i.process_kind) =>
            {
                i.bytes_per_event
            }
            _ => 0,
        }
    }
}

fn yes() -> bool {
    true
}

impl RunSummary {
    /// The equalities of a run that lost nothing. Where they fail, the
    /// message says what the drop counters account for.
    pub fn accounting_errors(&self) -> Vec<String> {
        let mut e = Vec::new();
        let n_br = u64::from(self.topology.boardreaders);
        let drop = |k: &str| self.drops.get(k).copied().unwrap_or(0);
        if self.fragments_received != self.fragments_sent {
            // Every fragment sent was received, rejected or discarded with
            // its batch; the rest was lost in flight on a broken stream.
            let refused = drop("fragments_rejected") + drop("fragments_discarded");
            let unaccounted = self
                .fragments_sent
                .saturating_sub(self.fragments_received + refused);
            e.push(format!(
                "fragments_received {} != fragments_sent {} (rejected {}, discarded with their batch {}, unaccounted {unaccounted})",
                self.fragments_received,
                self.fragments_sent,
                drop("fragments_rejected"),
                drop("fragments_discarded"),
            ));
        }
        if self.fragments_sent != n_br * self.events_built {
            let lost = [
                "fragments_unpublished",
                "late_fragments",
                "oversize_fragments",
                "duplicate_fragments",
                "fragments_unplaced",
                "dropped",
            ]
            .map(|k| format!("{k} {}", drop(k)))
            .join(", ");
            e.push(format!(
                "fragments_sent {} != {n_br} x events_built {} (events_incomplete {}, {lost})",
                self.fragments_sent, self.events_built, self.events_incomplete
            ));
        }
        if self.events_incomplete != 0 {
            e.push(format!("{} events incomplete", self.events_incomplete));
        }
        // Incomplete events are written too (marked incomplete).
        let writing = self.topology.aggregators > 0 && self.disk_writing;
        let released = self.events_built + self.events_incomplete;
        if writing && self.events_written != released {
            e.push(format!(
                "events_written {} != events_built {} + events_incomplete {} (not written {}, rejected {}, discarded with their batch {}, unsendable {}, dropped {})",
                self.events_written,
                self.events_built,
                self.events_incomplete,
                self.events_unwritten,
                drop("events_rejected"),
                drop("events_discarded"),
                drop("events_unsendable"),
                drop("dropped"),
            ));
        }
        e
    }
}

/// `run_000042`.
pub fn run_dir_name(run: u32) -> String {
    format!("run_{run:06}")
}

/// The next run number in `run_dir`: one more than the largest existing.
pub fn next_run_number(run_dir: &Path) -> std::io::Result<u32> {
    let mut max = 0;
    match std::fs::read_dir(run_dir) {
        Ok(entries) => {
            for e in entries {
                let name = e?.file_name();
                if let Some(n) = name
                    .to_str()
                    .and_then(|s| s.strip_prefix("run_"))
                    .and_then(|s| s.parse::<u32>().ok())
                {
                    max = max.max(n);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(max + 1)
}

/// Paths inside one run's directory.
#[derive(Clone, Debug)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path, run: u32) -> Self {
        Self {
            root: run_dir.join(run_dir_name(run)),
        }
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
}

/// The drop counters of `Counters`, by name: the keys of
/// [`RunSummary::drops`].
pub fn drops_of(c: &Counters) -> [(&'static str, u64); 12] {
    [
        ("fragments_rejected", c.fragments_rejected),
        ("fragments_discarded", c.fragments_discarded),
        ("fragments_unpublished", c.fragments_unpublished),
        ("late_fragments", c.late_fragments),
        ("oversize_fragments", c.oversize_fragments),
        ("duplicate_fragments", c.duplicate_fragments),
        ("fragments_unplaced", c.fragments_unplaced),
        ("dropped", c.dropped),
        ("events_unsendable", c.events_unsendable),
        ("events_rejected", c.events_rejected),
        ("events_discarded", c.events_discarded),
        ("events_unwritten", c.events_unwritten),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_numbers_increase_past_the_largest() {
        let dir = std::env::temp_dir().join(format!("daq-record-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(next_run_number(&dir).expect("missing dir is fine"), 1);
        std::fs::create_dir_all(dir.join("run_000007")).expect("mkdir");
        std::fs::create_dir_all(dir.join("run_000002")).expect("mkdir");
        std::fs::create_dir_all(dir.join("other")).expect("mkdir");
        assert_eq!(next_run_number(&dir).expect("reads"), 8);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
