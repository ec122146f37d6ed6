//! What an online monitor reports: `GET /monitor.json` on its HTTP port
//! while it runs, and `monitor/<monitor>.json` in the run record. Written
//! by the `monitor` process, read by daqctl (the report) and the tests;
//! defined once, here. Fields a reader does not know (a user's own
//! monitoring module) are ignored on reading.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bins of every ADC histogram: each bin is `2^(adc_bits - 8)` ADC counts
/// wide, so a 12-bit and a 14-bit board both fill 256 bins.
pub const ADC_BINS: usize = 256;
/// How many integrity failures are named (the rest are only counted).
pub const FIRST_FAILURES: usize = 10;
/// Points kept of the time series (one per second): the last ten minutes.
pub const SERIES_POINTS: usize = 600;

/// One monitor's figures of the current (or last) run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorRecord {
    /// `monitor-0`.
    pub process: String,
    /// The aggregator whose store it reads (`aggregator-0`).
    pub source: String,
    pub run: u32,
    /// Whether the run is over (the figures are final).
    pub finished: bool,
    /// Events read from the store, each an untorn copy.
    pub events_read: u64,
    /// Events published in the store and not read: overwritten before the
    /// monitor got to them (or while it copied them), never waited for.
    pub events_skipped: u64,
    /// Of the skipped: copies the seqlock found torn and discarded.
    pub events_torn: u64,
    /// Bytes of the events read.
    pub bytes_read: u64,
    /// Seconds from the start of the run to the last figure.
    pub elapsed_s: f64,
    /// ADC histograms, one per board (fragment id), in board order.
    pub adc: Vec<AdcHistogram>,
    pub integrity: Integrity,
    /// Event size and rate, one point per second of the run.
    pub series: Vec<SeriesPoint>,
}

/// ADC values of one board.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdcHistogram {
    /// The fragment id (= the boardreader's rank).
    pub board: u16,
    /// `board_serial_number` of the fragment's metadata.
    pub serial: u16,
    /// `num_adc_bits` of the fragment's metadata: 12 (TOY1) or 14 (TOY2).
    pub adc_bits: u8,
    /// ADC counts per bin.
    pub bin_width: u32,
    /// [`ADC_BINS`] counts.
    pub bins: Vec<u64>,
    /// The sum of `bins`: samples histogrammed.
    pub entries: u64,
    /// Fragments histogrammed.
    pub fragments: u64,
}

impl AdcHistogram {
    /// An empty histogram of `adc_bits`-bit values.
    pub fn new(board: u16, serial: u16, adc_bits: u8) -> Self {
        let span = 1u64.checked_shl(u32::from(adc_bits)).unwrap_or(u64::MAX);
        Self {
            board,
            serial,
            adc_bits,
            bin_width: u32::try_from(span.div_ceil(ADC_BINS as u64).max(1)).unwrap_or(u32::MAX),
            bins: vec![0; ADC_BINS],
            entries: 0,
            fragments: 0,
        }
    }
}

/// The integrity check's results (artdaq-demo's CheckIntegrity).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Integrity {
    /// Events checked (every event read).
    pub events_checked: u64,
    /// Events with at least one failure.
    pub events_failed: u64,
    /// Failures by reason (one event may fail for several reasons).
    pub by_reason: BTreeMap<String, u64>,
    /// The first [`FIRST_FAILURES`] failures, each naming the event.
    pub first: Vec<String>,
}

/// One second of the run, as the monitor saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeriesPoint {
    /// Seconds since the run started (end of this second).
    pub t_s: f64,
    /// Events read in this second.
    pub events: u64,
    /// Events skipped in this second.
    pub skipped: u64,
    /// Mean size of the events read in this second (bytes; 0 if none).
    pub mean_event_bytes: f64,
}

/// The record's file of monitor `process`, relative to the record root.
pub fn record_path(process: &str) -> String {
    format!("monitor/{process}.json")
}
