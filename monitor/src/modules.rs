//! Monitoring modules: each sees every event the monitor reads (and how
//! many it skipped) and reports its figures as JSON. The built-in ones are
//! [`AdcHistograms`] (ADC values per board), [`IntegrityCheck`]
//! (artdaq-demo's CheckIntegrity) and [`EventRate`] (event size and rate
//! over time); a user adds a module of their own by implementing
//! [`Module`] and listing it in [`user_modules`].
//!
//! A module of your own, counting the events whose fragments are all TOY2:
//!
//! ```
//! use monitor::modules::{EventView, Module};
//! use daq_format::fragment::split_packed;
//!
//! #[derive(Default)]
//! struct AllToy2 {
//!     events: u64,
//! }
//!
//! impl Module for AllToy2 {
//!     fn name(&self) -> &'static str {
//!         "all_toy2"
//!     }
//!     fn event(&mut self, ev: &EventView<'_>) {
//!         let toy2 = split_packed(ev.data)
//!             .all(|f| f.is_ok_and(|f| f.header.fragment_type == daq_format::toy::TOY2));
//!         self.events += u64::from(toy2);
//!     }
//!     fn report(&self) -> serde_json::Value {
//!         serde_json::json!({ "events": self.events })
//!     }
//! }
//!
//! // In `user_modules`: `vec![Box::new(AllToy2::default())]`; its figures
//! // then appear under `"modules": {"all_toy2": {...}}` in /monitor.json
//! // and in the run record's monitor/<monitor>.json.
//! let mut m = AllToy2::default();
//! m.event(&EventView::empty());
//! assert_eq!(m.report()["events"], 1); // no fragment: vacuously all TOY2
//! ```
//!
//! Modules run on the monitor's reader thread, never on the writer's: a
//! slow module makes the monitor skip more events, it never slows the
//! aggregator. They must not grow without bound (the monitor's heap is
//! checked for leaks like every process's): keep fixed-size figures.

use daq_format::fragment::{FragmentRef, split_packed};
use daq_format::monitor::{
    ADC_BINS, AdcHistogram, FIRST_FAILURES, Integrity, SERIES_POINTS, SeriesPoint,
};
use daq_format::toy::{ToyView, adc_bits_of};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One event as the monitor read it from the store (an untorn copy).
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    pub sequence_id: u64,
    /// Fragments in the event, as the store's descriptor says.
    pub fragment_count: u32,
    /// Fragments the event should have (the boardreaders).
    pub expected: u32,
    /// Whether the eventbuilder released it complete.
    pub complete: bool,
    /// The fragments, back to back (artdaq header-v2 each).
    pub data: &'a [u8],
    /// When it was read, since the run started.
    pub at: Duration,
}

impl EventView<'static> {
    /// An event with no fragments (for examples and tests).
    pub fn empty() -> Self {
        Self {
            sequence_id: 1,
            fragment_count: 0,
            expected: 0,
            complete: true,
            data: &[],
            at: Duration::ZERO,
        }
    }
}

/// A monitoring module.
pub trait Module: Send {
    /// Its key in the JSON (`"modules": {"<name>": ...}`).
    fn name(&self) -> &'static str;
    /// Called for every event read, in the order the store published them.
    fn event(&mut self, event: &EventView<'_>);
    /// `n` events were published but not read (overwritten first).
    fn skipped(&mut self, _n: u64, _at: Duration) {}
    /// The module's figures.
    fn report(&self) -> serde_json::Value;
}

/// Modules of your own, run after the built-in ones (see the module docs).
pub fn user_modules() -> Vec<Box<dyn Module>> {
    Vec::new()
}

/// ADC histograms per board, each over its own range: the ADC width comes
/// from the fragment's metadata (`num_adc_bits`, 12 for TOY1, 14 for TOY2).
#[derive(Debug, Default)]
pub struct AdcHistograms {
    /// By fragment id (boards beyond the topology are not histogrammed; the
    /// integrity check names them).
    boards: Vec<Option<AdcHistogram>>,
}

impl AdcHistograms {
    pub fn new(boards: u16) -> Self {
        Self {
            boards: vec![None; usize::from(boards)],
        }
    }

    pub fn histograms(&self) -> Vec<AdcHistogram> {
        self.boards.iter().flatten().cloned().collect()
    }

    fn fill(&mut self, f: &FragmentRef<'_>) {
        let Some(slot) = self.boards.get_mut(usize::from(f.header.fragment_id)) else {
            return;
        };
        let Ok(toy) = ToyView::parse(f.metadata(), f.payload()) else {
            return;
        };
        let bits = toy.metadata.num_adc_bits;
        if !(8..=16).contains(&bits) {
            return;
        }
        let h = slot.get_or_insert_with(|| {
            AdcHistogram::new(f.header.fragment_id, toy.metadata.board_serial_number, bits)
        });
        if h.adc_bits != bits {
            return; // the integrity check counts the change
        }
        let shift = u32::from(bits) - 8;
        let mut n = 0;
        for v in toy.samples() {
            if let Some(b) = h.bins.get_mut(usize::from(v >> shift)) {
                *b += 1;
                n += 1;
            }
        }
        h.entries += n;
        h.fragments += 1;
    }
}

impl Module for AdcHistograms {
    fn name(&self) -> &'static str {
        "adc"
    }

    fn event(&mut self, ev: &EventView<'_>) {
        for f in split_packed(ev.data).flatten() {
            self.fill(&f);
        }
    }

    fn report(&self) -> serde_json::Value {
        serde_json::to_value(self.histograms()).unwrap_or_default()
    }
}

/// artdaq-demo's CheckIntegrity, over whole events: every fragment id
/// present once, sizes consistent (the descriptor's fragment count, every
/// header's word count, the toy payload's event size), the fragment's own
/// sequence id, ADC values within the metadata's width, and sequence ids
/// increasing along each eventbuilder's stream (an aggregator receives the
/// eventbuilders' streams interleaved; each alone is in order).
#[derive(Debug, Default)]
pub struct IntegrityCheck {
    boards: u16,
    eventbuilders: u64,
    /// The last sequence id read from each eventbuilder.
    last: Vec<Option<u64>>,
    figures: Integrity,
    /// The ADC width first seen per board.
    bits: Vec<Option<u8>>,
}

/// Why an event failed the integrity check (the JSON's `by_reason` keys).
pub mod reason {
    pub const CORRUPT_FRAGMENT: &str = "corrupt_fragment";
    pub const FRAGMENT_COUNT: &str = "fragment_count";
    pub const MISSING_FRAGMENT: &str = "missing_fragment";
    pub const DUPLICATE_FRAGMENT: &str = "duplicate_fragment";
    pub const UNKNOWN_FRAGMENT_ID: &str = "unknown_fragment_id";
    pub const SEQUENCE_MISMATCH: &str = "sequence_mismatch";
    pub const SEQUENCE_NOT_INCREASING: &str = "sequence_not_increasing";
    pub const BAD_PAYLOAD: &str = "bad_payload";
    pub const SIZE_MISMATCH: &str = "size_mismatch";
    pub const ADC_BITS: &str = "adc_bits";
    pub const ADC_OUT_OF_RANGE: &str = "adc_out_of_range";
}

impl IntegrityCheck {
    pub fn new(boards: u16, eventbuilders: u16) -> Self {
        Self {
            boards,
            eventbuilders: u64::from(eventbuilders).max(1),
            last: vec![None; usize::from(eventbuilders.max(1))],
            figures: Integrity::default(),
            bits: vec![None; usize::from(boards)],
        }
    }

    pub fn figures(&self) -> &Integrity {
        &self.figures
    }

    /// The failures of one event: (reason, what).
    fn check(&mut self, ev: &EventView<'_>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut seen = vec![false; usize::from(self.boards)];
        let mut parsed = 0u32;
        for (i, f) in split_packed(ev.data).enumerate() {
            let f = match f {
                Ok(f) => f,
                Err(e) => {
                    out.push((reason::CORRUPT_FRAGMENT, format!("fragment {i}: {e}")));
                    break; // the rest cannot be told apart
                }
            };
            parsed += 1;
            let id = f.header.fragment_id;
            match seen.get_mut(usize::from(id)) {
                Some(s) if *s => {
                    out.push((
                        reason::DUPLICATE_FRAGMENT,
                        format!("fragment id {id} twice"),
                    ));
                }
                Some(s) => *s = true,
                None => out.push((
                    reason::UNKNOWN_FRAGMENT_ID,
                    format!("fragment id {id}, the topology has {} boards", self.boards),
                )),
            }
            if f.header.sequence_id != ev.sequence_id {
                out.push((
                    reason::SEQUENCE_MISMATCH,
                    format!("fragment {id} has sequence id {}", f.header.sequence_id),
                ));
            }
            self.check_toy(&f, &mut out);
        }
        if parsed != ev.fragment_count {
            out.push((
                reason::FRAGMENT_COUNT,
                format!(
                    "{parsed} fragments in the data, the store says {}",
                    ev.fragment_count
                ),
            ));
        }
        let missing: Vec<String> = seen
            .iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(i, _)| i.to_string())
            .collect();
        if !missing.is_empty() {
            out.push((
                reason::MISSING_FRAGMENT,
                format!("fragment ids {} missing", missing.join(", ")),
            ));
        }
        let source = (ev.sequence_id % self.eventbuilders) as usize;
        if let Some(last) = self.last.get_mut(source) {
            if let Some(prev) = *last
                && ev.sequence_id <= prev
            {
                out.push((
                    reason::SEQUENCE_NOT_INCREASING,
                    format!("after {prev} from eventbuilder-{source}"),
                ));
            }
            *last = Some(ev.sequence_id);
        }
        out
    }

    fn check_toy(&mut self, f: &FragmentRef<'_>, out: &mut Vec<(&'static str, String)>) {
        let id = f.header.fragment_id;
        let Some(type_bits) = adc_bits_of(f.header.fragment_type) else {
            out.push((
                reason::BAD_PAYLOAD,
                format!(
                    "fragment {id} is of type {}, not a toy",
                    daq_format::toy::type_name(f.header.fragment_type)
                ),
            ));
            return;
        };
        let toy = match ToyView::parse(f.metadata(), f.payload()) {
            Ok(t) => t,
            Err(e) => {
                out.push((reason::BAD_PAYLOAD, format!("fragment {id}: {e}")));
                return;
            }
        };
        let bits = toy.metadata.num_adc_bits;
        if bits != type_bits {
            out.push((
                reason::ADC_BITS,
                format!("fragment {id}: {bits}-bit metadata in a {type_bits}-bit type"),
            ));
        }
        if let Some(slot) = self.bits.get_mut(usize::from(id)) {
            match *slot {
                Some(b) if b != bits => out.push((
                    reason::ADC_BITS,
                    format!("fragment {id}: {bits}-bit, the board was {b}-bit"),
                )),
                Some(_) => {}
                None => *slot = Some(bits),
            }
        }
        // The payload is the toy header and samples, padded to a word.
        let want = (toy.header.event_size as usize * 4).div_ceil(8) * 8;
        if want != f.payload().len() {
            out.push((
                reason::SIZE_MISMATCH,
                format!(
                    "fragment {id}: event_size says {want} payload bytes, the header {}",
                    f.payload().len()
                ),
            ));
        }
        if let Some((i, v)) = toy.first_bad_sample() {
            out.push((
                reason::ADC_OUT_OF_RANGE,
                format!("fragment {id}: sample {i} = {v} exceeds {bits} bits"),
            ));
        }
    }
}

impl Module for IntegrityCheck {
    fn name(&self) -> &'static str {
        "integrity"
    }

    fn event(&mut self, ev: &EventView<'_>) {
        let failures = self.check(ev);
        let f = &mut self.figures;
        f.events_checked += 1;
        if failures.is_empty() {
            return;
        }
        f.events_failed += 1;
        for (why, what) in failures {
            *f.by_reason.entry(why.to_string()).or_default() += 1;
            if f.first.len() < FIRST_FAILURES {
                f.first
                    .push(format!("event {}: {why}: {what}", ev.sequence_id));
            }
        }
    }

    fn report(&self) -> serde_json::Value {
        serde_json::to_value(&self.figures).unwrap_or_default()
    }
}

/// Event size and rate over time: one point per second of the run, the
/// last [`SERIES_POINTS`] kept (allocated once: the series never grows the
/// heap).
#[derive(Debug)]
pub struct EventRate {
    points: VecDeque<SeriesPoint>,
    /// The second being filled: (second, events, skipped, bytes).
    current: (u64, u64, u64, u64),
}

impl Default for EventRate {
    fn default() -> Self {
        Self {
            points: VecDeque::with_capacity(SERIES_POINTS),
            current: (0, 0, 0, 0),
        }
    }
}

impl EventRate {
    /// Closes every second before `at`.
    pub fn advance(&mut self, at: Duration) {
        let sec = at.as_secs();
        while self.current.0 < sec {
            self.close();
        }
    }

    /// Closes the second being filled (also at the end of the run).
    pub fn close(&mut self) {
        let (s, events, skipped, bytes) = self.current;
        if self.points.len() == SERIES_POINTS {
            self.points.pop_front();
        }
        self.points.push_back(SeriesPoint {
            t_s: (s + 1) as f64,
            events,
            skipped,
            mean_event_bytes: if events == 0 {
                0.0
            } else {
                bytes as f64 / events as f64
            },
        });
        self.current = (s + 1, 0, 0, 0);
    }

    pub fn series(&self) -> Vec<SeriesPoint> {
        self.points.iter().cloned().collect()
    }
}

impl Module for EventRate {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn event(&mut self, ev: &EventView<'_>) {
        self.advance(ev.at);
        self.current.1 += 1;
        self.current.3 += ev.data.len() as u64;
    }

    fn skipped(&mut self, n: u64, at: Duration) {
        self.advance(at);
        self.current.2 += n;
    }

    fn report(&self) -> serde_json::Value {
        serde_json::to_value(self.series()).unwrap_or_default()
    }
}

/// Every module of a monitor: the built-in ones by name (their figures are
/// typed fields of the record) and the user's.
pub struct Modules {
    pub adc: AdcHistograms,
    pub integrity: IntegrityCheck,
    pub rate: EventRate,
    pub user: Vec<Box<dyn Module>>,
}

impl Modules {
    pub fn new(boards: u16, eventbuilders: u16) -> Self {
        Self {
            adc: AdcHistograms::new(boards),
            integrity: IntegrityCheck::new(boards, eventbuilders),
            rate: EventRate::default(),
            user: user_modules(),
        }
    }

    pub fn event(&mut self, ev: &EventView<'_>) {
        self.adc.event(ev);
        self.integrity.event(ev);
        self.rate.event(ev);
        for m in &mut self.user {
            m.event(ev);
        }
    }

    pub fn skipped(&mut self, n: u64, at: Duration) {
        self.rate.skipped(n, at);
        for m in &mut self.user {
            m.skipped(n, at);
        }
    }

    /// The user modules' figures, by name.
    pub fn user_reports(&self) -> BTreeMap<String, serde_json::Value> {
        self.user
            .iter()
            .map(|m| (m.name().to_string(), m.report()))
            .collect()
    }
}

// `AdcHistograms::fill` bins a `bits`-bit value by `v >> (bits - 8)`.
const _: () = assert!(ADC_BINS == 256);
