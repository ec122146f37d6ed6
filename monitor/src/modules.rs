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

#[cfg(test)]
mod tests {
    use super::*;
    use daq_format::config::{GeneratorConfig, ToyFragmentType};
    use daq_format::generator::ToySimulator;

    /// Event `seq` of `boards` boards, as an aggregator's store holds it.
    fn event(seq: u64, boards: u16, cfg: &GeneratorConfig) -> Vec<u8> {
        let mut out = Vec::new();
        for b in 0..boards {
            let f = ToySimulator::new(b, cfg).fragment(seq).expect("fragment");
            out.extend_from_slice(f.bytes());
        }
        out
    }

    fn view(seq: u64, data: &[u8], fragments: u32) -> EventView<'_> {
        EventView {
            sequence_id: seq,
            fragment_count: fragments,
            expected: fragments,
            complete: true,
            data,
            at: Duration::from_millis(seq * 10),
        }
    }

    fn alternate() -> GeneratorConfig {
        GeneratorConfig {
            fragment_type: ToyFragmentType::Alternate,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn clean_events_fill_histograms_by_their_own_adc_width_and_pass() {
        let cfg = alternate();
        let mut m = Modules::new(2, 2);
        for seq in 1..=50 {
            let data = event(seq, 2, &cfg);
            m.event(&view(seq, &data, 2));
        }
        let h = m.adc.histograms();
        assert_eq!(h.len(), 2);
        // Even boards TOY1 (12-bit), odd TOY2 (14-bit): the range is the
        // fragment's.
        assert_eq!((h[0].adc_bits, h[0].bin_width), (12, 16));
        assert_eq!((h[1].adc_bits, h[1].bin_width), (14, 64));
        for x in &h {
            assert_eq!(x.entries, 50 * u64::from(cfg.n_adc_counts));
            assert_eq!(x.bins.iter().sum::<u64>(), x.entries);
            assert_eq!(x.fragments, 50);
        }
        let i = m.integrity.figures();
        assert_eq!((i.events_checked, i.events_failed), (50, 0), "{i:?}");
        assert!(i.by_reason.is_empty());
    }

    #[test]
    fn bad_data_is_counted_by_reason_named_and_the_monitor_goes_on() {
        let cfg = GeneratorConfig::default();
        let mut m = Modules::new(2, 1);
        let good = |seq| event(seq, 2, &cfg);
        m.event(&view(1, &good(1), 2));
        // A corrupt fragment: the second header's word count is garbage.
        let mut corrupt = good(2);
        let second = corrupt.len() / 2;
        corrupt[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        m.event(&view(2, &corrupt, 2));
        // A torn event: cut short in the middle of its second fragment.
        let torn = good(3);
        m.event(&view(3, &torn[..torn.len() - 24], 2));
        // A missing board, and the store's count disagreeing.
        let one = event(4, 1, &cfg);
        m.event(&view(4, &one, 2));
        // An ADC value beyond the metadata's 12 bits.
        let mut wide = good(5);
        let at = wide.len() - 16;
        wide[at..at + 2].copy_from_slice(&0xFFFFu16.to_le_bytes());
        m.event(&view(5, &wide, 2));
        // Sequence ids going back.
        m.event(&view(3, &good(3), 2));
        // And the monitor goes on: a good event after all that passes.
        m.event(&view(7, &good(7), 2));

        let i = m.integrity.figures();
        assert_eq!(i.events_checked, 7);
        assert_eq!(i.events_failed, 5, "{i:?}");
        let n = |r: &str| i.by_reason.get(r).copied().unwrap_or(0);
        assert_eq!(n(reason::CORRUPT_FRAGMENT), 2, "{i:?}");
        assert_eq!(n(reason::MISSING_FRAGMENT), 3, "{i:?}");
        assert_eq!(n(reason::FRAGMENT_COUNT), 3, "{i:?}");
        assert_eq!(n(reason::ADC_OUT_OF_RANGE), 1, "{i:?}");
        assert_eq!(n(reason::SEQUENCE_NOT_INCREASING), 1, "{i:?}");
        assert!(i.first.len() <= FIRST_FAILURES);
        assert!(
            i.first[0].starts_with("event 2: corrupt_fragment"),
            "{:?}",
            i.first
        );
        // The histograms took the fragments that parse (board 0 in all
        // seven events, board 1 in four) and never the value out of range.
        let h = m.adc.histograms();
        assert!(h.iter().all(|x| x.bins.iter().sum::<u64>() == x.entries));
        let per = u64::from(cfg.n_adc_counts);
        assert_eq!((h[0].fragments, h[0].entries), (7, 7 * per));
        assert_eq!((h[1].fragments, h[1].entries), (4, 4 * per - 1));
    }

    #[test]
    fn rate_closes_one_point_per_second_and_never_grows_past_its_capacity() {
        let mut r = EventRate::default();
        let cap = r.points.capacity();
        for s in 0..(SERIES_POINTS as u64 + 50) {
            r.event(&EventView {
                at: Duration::from_secs(s),
                data: &[0; 100],
                ..EventView::empty()
            });
            r.skipped(2, Duration::from_secs(s));
        }
        let s = r.series();
        assert_eq!(s.len(), SERIES_POINTS);
        assert_eq!(r.points.capacity(), cap, "the series reallocated");
        let last = s.last().expect("points");
        assert_eq!((last.events, last.skipped), (1, 2));
        assert_eq!(last.mean_event_bytes, 100.0);
    }
}
