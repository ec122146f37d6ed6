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

use crate::config::Topology;
use daq_alloc::HeapSnapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Per-process counters of one run (the run-control `Counters`, as stored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub fragments_sent: u64,
    pub fragments_received: u64,
    pub fragments_rejected: u64,
    pub events_built: u64,
    pub events_incomplete: u64,
    pub events_sent: u64,
    pub events_received: u64,
    pub events_written: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_written: u64,
    pub streams_rejected: u64,
    pub dropped: u64,
    pub last_sequence_id: u64,
    #[serde(default)]
    pub late_fragments: u64,
    #[serde(default)]
    pub oversize_fragments: u64,
    #[serde(default)]
    pub backpressure_wait_ms: u64,
    pub data_files: Vec<String>,
}

impl From<proto::Counters> for Counters {
    fn from(c: proto::Counters) -> Self {
        Self {
            fragments_sent: c.fragments_sent,
            fragments_received: c.fragments_received,
            fragments_rejected: c.fragments_rejected,
            events_built: c.events_built,
            events_incomplete: c.events_incomplete,
            events_sent: c.events_sent,
            events_received: c.events_received,
            events_written: c.events_written,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            bytes_written: c.bytes_written,
            streams_rejected: c.streams_rejected,
            dropped: c.dropped,
            last_sequence_id: c.last_sequence_id,
            late_fragments: c.late_fragments,
            oversize_fragments: c.oversize_fragments,
            backpressure_wait_ms: c.backpressure_wait_ms,
            data_files: c.data_files,
        }
    }
}

/// A heap snapshot as the run record stores it: the snapshot and the
/// events the process had handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapRecord {
    #[serde(flatten)]
    pub snapshot: HeapSnapshot,
    pub events: u64,
}

pub fn snapshot_to_proto(s: &HeapSnapshot, events: u64) -> proto::HeapSnapshot {
    proto::HeapSnapshot {
        unix_ms: s.unix_ms,
        allocated: s.allocated,
        active: s.active,
        resident: s.resident,
        mapped: s.mapped,
        retained: s.retained,
        metadata: s.metadata,
        rss_anon: s.rss_anon,
        vm_rss: s.vm_rss,
        live_allocations: s.live_allocations,
        vm_hwm: s.vm_hwm,
        events,
    }
}

impl From<proto::HeapSnapshot> for HeapRecord {
    fn from(p: proto::HeapSnapshot) -> Self {
        Self {
            snapshot: HeapSnapshot {
                unix_ms: p.unix_ms,
                allocated: p.allocated,
                active: p.active,
                resident: p.resident,
                mapped: p.mapped,
                retained: p.retained,
                metadata: p.metadata,
                rss_anon: p.rss_anon,
                vm_rss: p.vm_rss,
                live_allocations: p.live_allocations,
                vm_hwm: p.vm_hwm,
            },
            events: p.events,
        }
    }
}

/// Heap snapshot labels every run record holds, in run order.
pub const HEAP_BOUNDARIES: [&str; 3] = ["before_start", "before_stop", "after_stop"];

/// One process's part of a run record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub counters: Counters,
    /// Problems the process reported (e.g. an end-of-data shortfall).
    pub problems: Vec<String>,
    /// Heap snapshots by boundary (`before_start`, `before_stop`, `after_stop`, ...).
    pub heap: BTreeMap<String, HeapRecord>,
    /// Heap profiles written at the boundaries (with profiling on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
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
    pub bytes_written: u64,
    /// Paths relative to the run directory.
    pub data_files: Vec<String>,
    pub event_rate_hz: f64,
    /// Fragment bytes (headers included) received by the eventbuilders per second, in MB (1e6 B).
    pub throughput_mb_s: f64,
    /// Data-file bytes written per second, in MB (1e6 B).
    pub write_mb_s: f64,
    /// Everything that went wrong; empty for a clean run.
    pub errors: Vec<String>,
    pub processes: BTreeMap<String, ProcessRecord>,
}

fn yes() -> bool {
    true
}

impl RunSummary {
    /// The equalities of a run that lost nothing.
    pub fn accounting_errors(&self) -> Vec<String> {
        let mut e = Vec::new();
        let n_br = u64::from(self.topology.boardreaders);
        if self.fragments_received != self.fragments_sent {
            e.push(format!(
                "fragments_received {} != fragments_sent {}",
                self.fragments_received, self.fragments_sent
            ));
        }
        if self.fragments_sent != n_br * self.events_built {
            e.push(format!(
                "fragments_sent {} != {n_br} x events_built {}",
                self.fragments_sent, self.events_built
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
                "events_written {} != events_built {} + events_incomplete {}",
                self.events_written, self.events_built, self.events_incomplete
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
