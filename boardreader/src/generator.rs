//! Fragment generators. [`ToySimulator`] is artdaq-demo's toy: a fragment
//! of ADC samples per event with a chosen distribution, in the byte layout
//! of artdaq-core-demo's `ToyFragment`, so its overlays read our data as it is.
//!
//! The output is a pure function of (seed, board, sequence id): each
//! fragment's random words are SplitMix64's output sequence started from a
//! key mixed from the board's seed and the sequence id. SplitMix64 is
//! counter based (word `i` is `mix(key + (i + 1) * golden)`), so any
//! fragment can be regenerated on its own (tests check data files against
//! it) and the words of one fragment are independent of each other, which
//! lets the CPU generate several at once. Samples are made in bulk, straight
//! into the fragment's bytes (the buffer that is sent), 64 bits at a time:
//! - uniform: the ADC range is a power of two, so a sample is 16 random bits
//!   masked to the ADC width (four samples per random word, no rejection);
//! - gaussian: Walker's alias method over the exact distribution of
//!   `round(mean + sd * z)` clamped to the ADC range (mean = max / 2,
//!   sd = max / 10, as before), one table lookup per sample and 32 random
//!   bits each (the table's probabilities are exact to 2^-32);
//! - monotonic: counts up from `sequence_id * n_adc_counts`, wrapping at the
//!   ADC range.
//!
//! Reference layout (artdaq-core-demo; encoded by [`daq_format::toy`]):
//! - fragment type: `TOY1 = 2` (12-bit ADC) or `TOY2 = 3` (14-bit ADC)
//!   (`MISSED = 1` is artdaq-core-demo's first user type);
//! - metadata, one u64 word: bits 0-15 `board_serial_number` (the board, =
//!   the fragment id), bits 16-23 `num_adc_bits`, bits 24-63 zero;
//! - payload header, two u32 words: bits 0-27 `event_size` (32-bit words of
//!   header and samples), bits 28-31 `distribution_type` (0 uniform,
//!   1 gaussian, 2 monotonic, as artdaq-demo's ToySimulator), then
//!   `trigger_number` (the low 32 bits of the sequence id);
//! - samples: `n_adc_counts` u16, zero-padded to a whole 64-bit word.

use bytes::{Bytes, BytesMut};
use daq_format::config::{Distribution, GeneratorConfig, ToyFragmentType};
use daq_format::fragment::{
    self, Fragment, FragmentError, FragmentHeader, FragmentType, HEADER_VERSION, WORD_BYTES,
};
use daq_format::toy::{self, ToyHeader, ToyMetadata};
use std::sync::Arc;

/// Fragment type code of TOY1 (12-bit ADC), artdaq-core-demo's.
pub const TOY1: u8 = toy::TOY1;
/// Fragment type code of TOY2 (14-bit ADC), artdaq-core-demo's.
pub const TOY2: u8 = toy::TOY2;

/// Produces this board's fragment for a sequence id.
/// The boardreader carves fragments out of buffers of this size (one
/// allocation per buffer, not per fragment); a larger fragment gets a
/// buffer of its own.
pub const ARENA_BYTES: usize = 256 * 1024;

pub trait Generator: Send {
    fn fragment(&mut self, sequence_id: u64) -> Result<Fragment, FragmentError>;
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Stafford's mix13).
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The counter-based random words of one fragment.
struct Words {
    state: u64,
}

impl Words {
    fn new(board_seed: u64, sequence_id: u64) -> Self {
        Self {
            state: mix(board_seed ^ mix(sequence_id.wrapping_add(GOLDEN))),
        }
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }
}

/// Walker's alias table of the quantized gaussian over `2^bits` ADC values.
#[derive(Debug)]
struct AliasTable {
    bits: u32,
    /// Per bucket, one word: bits 0-31 the threshold (accept the bucket's
    /// own value when the low `32 - bits` random bits are below it;
    /// `2^(32 - bits)` = always), bits 32-47 the value taken otherwise.
    entries: Vec<u64>,
}

/// The standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

impl AliasTable {
    /// The distribution of `round(mean + sd * z).clamp(0, max)`, with
    /// `max = 2^bits - 1`, mean `max / 2` and sd `max / 10`.
    #[allow(
        clippy::indexing_slicing,
        reason = "every index is a bucket in 0..n of vectors of n buckets"
    )]
    fn gaussian(bits: u32) -> Self {
        let n = 1usize << bits;
        let max = (n - 1) as f64;
        let (mean, sd) = (max / 2.0, max / 10.0);
        let cdf = |x: f64| phi((x - mean) / sd);
        let p: Vec<f64> = (0..n)
            .map(|k| {
                let k = k as f64;
                let lo = if k == 0.0 { 0.0 } else { cdf(k - 0.5) };
                let hi = if k == max { 1.0 } else { cdf(k + 0.5) };
                (hi - lo).max(0.0)
            })
            .collect();
        let total: f64 = p.iter().sum();
        // Vose's construction, scaled so the average bucket holds 1.
        let mut q: Vec<f64> = p.iter().map(|v| v * n as f64 / total).collect();
        let mut alias: Vec<u16> = (0..n).map(|k| k as u16).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&k| q[k] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u16;
            q[l] -= 1.0 - q[s];
            if q[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // What is left holds 1 up to rounding.
        for k in large.into_iter().chain(small) {
            q[k] = 1.0;
        }
        let one = (1u64 << (32 - bits)) as f64;
        let entries = q
            .iter()
            .zip(&alias)
            .map(|(&v, &a)| (v * one).round() as u64 | u64::from(a) << 32)
            .collect();
        Self { bits, entries }
    }

    /// The sample of 32 random bits (branch free: the accept test is
    /// unpredictable).
    #[inline(always)]
    fn sample(&self, r: u32) -> u16 {
        let idx = (r >> (32 - self.bits)) as usize & (self.entries.len() - 1);
        let low = r & ((1u32 << (32 - self.bits)) - 1);
        let e = self.entries.get(idx).copied().unwrap_or_default();
        let accept = u64::from(low < e as u32);
        // accept: the bucket's own value; otherwise its alias.
        (accept * idx as u64 + (1 - accept) * (e >> 32)) as u16
    }
}

/// The artdaq-demo ToySimulator.
#[derive(Clone, Debug)]
pub struct ToySimulator {
    board: u16,
    seed: u64,
    cfg: GeneratorConfig,
    /// The gaussian's alias table (built once, shared by clones).
    gaussian: Option<Arc<AliasTable>>,
}

impl ToySimulator {
    /// Board `board` of a system configured with `cfg` (seed `random_seed + board`).
    pub fn new(board: u16, cfg: &GeneratorConfig) -> Self {
        let mut g = Self {
            board,
            seed: cfg.random_seed.wrapping_add(u64::from(board)),
            cfg: cfg.clone(),
            gaussian: None,
        };
        if cfg.distribution == Distribution::Gaussian {
            g.gaussian = Some(Arc::new(AliasTable::gaussian(u32::from(g.adc_bits()))));
        }
        g
    }

    /// The fragment type of this board: TOY1 or TOY2 (alternating by board
    /// parity if so configured).
    pub fn type_code(&self) -> u8 {
        match self.cfg.fragment_type {
            ToyFragmentType::Toy1 => TOY1,
            ToyFragmentType::Toy2 => TOY2,
            ToyFragmentType::Alternate if self.board.is_multiple_of(2) => TOY1,
            ToyFragmentType::Alternate => TOY2,
        }
    }

    /// 12 for TOY1, 14 for TOY2.
    pub fn adc_bits(&self) -> u8 {
        if self.type_code() == TOY1 { 12 } else { 14 }
    }

    fn distribution_code(&self) -> u8 {
        match self.cfg.distribution {
            Distribution::Uniform => toy::DISTRIBUTION_UNIFORM,
            Distribution::Gaussian => toy::DISTRIBUTION_GAUSSIAN,
            Distribution::Monotonic => toy::DISTRIBUTION_MONOTONIC,
        }
    }

    /// The metadata word (`ToyFragment::Metadata`).
    pub fn metadata(&self) -> [u8; 8] {
        ToyMetadata {
            board_serial_number: self.board,
            num_adc_bits: self.adc_bits(),
        }
        .encode()
    }

    /// Bytes of one fragment's payload: the toy header and the samples,
    /// zero-padded to a whole word.
    pub fn payload_bytes(&self) -> usize {
        (toy::HEADER_BYTES + 2 * self.cfg.n_adc_counts as usize).div_ceil(WORD_BYTES) * WORD_BYTES
    }

    /// Bytes of one whole fragment (header, metadata word, payload).
    pub fn fragment_bytes(&self) -> usize {
        fragment::HEADER_BYTES + WORD_BYTES + self.payload_bytes()
    }

    /// Writes the payload of `sequence_id`'s fragment (toy header, samples,
    /// zero padding) into `out`, which must be [`Self::payload_bytes`] long
    /// (a shorter one gets what fits). This is the generator stage alone:
    /// no allocation, no copy.
    pub fn write_payload(&self, sequence_id: u64, out: &mut [u8]) {
        let n = self.cfg.n_adc_counts as usize;
        let header = ToyHeader::for_samples(n, self.distribution_code(), sequence_id as u32);
        let (head, samples) = out.split_at_mut(toy::HEADER_BYTES.min(out.len()));
        for (d, s) in head.iter_mut().zip(header.encode()) {
            *d = s;
        }
        let mut words = Words::new(self.seed, sequence_id);
        let max = (1u16 << self.adc_bits()) - 1;
        // Whole words of four samples, then the last word's samples (the
        // rest of it is padding, zero), then nothing (a short `out`).
        let whole = (n / 4).min(samples.len() / WORD_BYTES);
        let (body, tail) = samples.split_at_mut(whole * WORD_BYTES);
        let last_lanes = n - 4 * whole;
        let word_of = |w: u64, c: &mut [u8]| c.copy_from_slice(&w.to_le_bytes());
        let last = match self.cfg.distribution {
            Distribution::Uniform => {
                let mask = u64::from(max) * 0x0001_0001_0001_0001;
                for c in body.chunks_exact_mut(WORD_BYTES) {
                    word_of(words.next() & mask, c);
                }
                words.next() & mask
            }
            Distribution::Gaussian => {
                let Some(table) = self.gaussian.as_deref() else {
                    return;
                };
                let mut four = move || {
                    let (a, b) = (words.next(), words.next());
                    u64::from(table.sample(a as u32))
                        | u64::from(table.sample((a >> 32) as u32)) << 16
                        | u64::from(table.sample(b as u32)) << 32
                        | u64::from(table.sample((b >> 32) as u32)) << 48
                };
                for c in body.chunks_exact_mut(WORD_BYTES) {
                    word_of(four(), c);
                }
                four()
            }
            Distribution::Monotonic => {
                let start = sequence_id.wrapping_mul(n as u64);
                let max = u64::from(max) * 0x0001_0001_0001_0001;
                // Lanes count up from the word's first value, masked to the
                // ADC range first so that no lane carries into the next
                // (at most max + 3 < 2^16), then wrapped by the mask.
                let at = move |i: u64| {
                    let base = start.wrapping_add(4 * i);
                    let lanes =
                        (base & max & 0xFFFF) * 0x0001_0001_0001_0001 + 0x0003_0002_0001_0000;
                    lanes & max
                };
                for (i, c) in body.chunks_exact_mut(WORD_BYTES).enumerate() {
                    word_of(at(i as u64), c);
                }
                at(whole as u64)
            }
        };
        let mut chunks = tail.chunks_exact_mut(WORD_BYTES);
        if last_lanes > 0
            && let Some(c) = chunks.next()
        {
            let keep = (1u64 << (16 * last_lanes)) - 1;
            word_of(last & keep, c);
        }
        for c in chunks.by_ref() {
            c.fill(0);
        }
        chunks.into_remainder().fill(0);
    }

    /// Appends `sequence_id`'s whole fragment to `buf`: header, metadata
    /// and payload are written once, in place (the payload by
    /// [`Self::write_payload`]). `buf.split().freeze()` then gives the
    /// fragment's bytes with no copy; successive fragments appended to one
    /// buffer share its allocation.
    pub fn write_fragment(
        &self,
        sequence_id: u64,
        buf: &mut BytesMut,
    ) -> Result<(), FragmentError> {
        let len = self.fragment_bytes();
        let words = len / WORD_BYTES;
        let header = FragmentHeader {
            word_count: u32::try_from(words).map_err(|_| FragmentError::TooLong { words })?,
            version: HEADER_VERSION,
            fragment_type: FragmentType::User(self.type_code()).as_u8(),
            metadata_word_count: 1,
            sequence_id,
            fragment_id: self.board,
            timestamp: sequence_id.wrapping_mul(self.cfg.timestamp_scale_factor),
            valid: true,
            complete: true,
            atime_ns: 0,
            atime_s: 0,
        }
        .encode()?;
        let start = buf.len();
        buf.reserve(len);
        for w in header {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        buf.extend_from_slice(&self.metadata());
        buf.resize(start + len, 0);
        let (_, payload) = buf.split_at_mut(start + len - self.payload_bytes());
        self.write_payload(sequence_id, payload);
        Ok(())
    }

    /// `sequence_id`'s fragment as bytes of its own, carved out of `arena`
    /// (the boardreader's data path, with [`ARENA_BYTES`])
    /// (which is refilled with `arena_bytes` when it runs short), so that
    /// small fragments do not cost one allocation each.
    pub fn fragment_bytes_in(
        &self,
        sequence_id: u64,
        arena: &mut BytesMut,
        arena_bytes: usize,
    ) -> Result<Bytes, FragmentError> {
        let len = self.fragment_bytes();
        if arena.capacity() < len {
            *arena = BytesMut::with_capacity(arena_bytes.max(len));
        }
        self.write_fragment(sequence_id, arena)?;
        Ok(arena.split().freeze())
    }
}

impl Generator for ToySimulator {
    fn fragment(&mut self, sequence_id: u64) -> Result<Fragment, FragmentError> {
        let mut buf = BytesMut::with_capacity(self.fragment_bytes());
        self.write_fragment(sequence_id, &mut buf)?;
        Fragment::parse(buf.freeze())
    }
}

/// Reads the ADC samples back out of a ToySimulator fragment's payload.
pub fn adc_samples(payload: &[u8], n_adc_counts: usize) -> Vec<u16> {
    payload
        .get(8..8 + 2 * n_adc_counts)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| c.try_into().map_or(0, u16::from_le_bytes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(d: Distribution, t: ToyFragmentType) -> GeneratorConfig {
        GeneratorConfig {
            distribution: d,
            fragment_type: t,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn same_seed_board_and_sequence_give_the_same_fragment() {
        let c = GeneratorConfig::default();
        let mut a = ToySimulator::new(1, &c);
        let mut b = ToySimulator::new(1, &c);
        let fa: Vec<_> = (1..50).map(|s| a.fragment(s).expect("valid")).collect();
        // Out of order: each fragment stands on its own.
        for s in (1..50).rev() {
            assert_eq!(b.fragment(s).expect("valid"), fa[s as usize - 1]);
        }
        let mut other_board = ToySimulator::new(0, &c);
        assert_ne!(
            other_board.fragment(1).expect("valid").payload(),
            fa[0].payload()
        );
    }

    #[test]
    fn fragment_fields_follow_the_reference_layout() {
        let c = GeneratorConfig {
            timestamp_scale_factor: 3,
            ..GeneratorConfig::default()
        };
        let f = ToySimulator::new(1, &c).fragment(7).expect("valid");
        assert_eq!(f.fragment_id(), 1);
        assert_eq!(f.sequence_id(), 7);
        assert_eq!(f.timestamp(), 21);
        assert_eq!(f.kind(), FragmentType::User(2));
        // board_serial_number in bits 0-15, num_adc_bits in bits 16-23.
        assert_eq!(f.metadata(), &[1, 0, 12, 0, 0, 0, 0, 0]);
        let p = f.payload();
        // 8-byte header + 40 samples = 88 bytes = 11 words.
        assert_eq!(p.len(), 88);
        let size = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        assert_eq!(size & 0x0FFF_FFFF, 2 + 20);
        assert_eq!(size >> 28, 0);
        assert_eq!(u32::from_le_bytes([p[4], p[5], p[6], p[7]]), 7);
    }

    #[test]
    fn samples_stay_within_the_adc_range_for_every_distribution() {
        for t in [ToyFragmentType::Toy1, ToyFragmentType::Toy2] {
            for d in [
                Distribution::Uniform,
                Distribution::Gaussian,
                Distribution::Monotonic,
            ] {
                let mut g = ToySimulator::new(0, &cfg(d, t));
                let max = (1u16 << g.adc_bits()) - 1;
                let mut all = Vec::new();
                for s in 1..200 {
                    let f = g.fragment(s).expect("valid");
                    all.extend(adc_samples(f.payload(), 40));
                }
                assert_eq!(all.len(), 199 * 40);
                assert!(all.iter().all(|&v| v <= max), "{t:?} {d:?}");
                if d == Distribution::Monotonic {
                    continue; // Covered by monotonic_samples_count_up.
                }
                let mean = all.iter().map(|&v| f64::from(v)).sum::<f64>() / all.len() as f64;
                let half = f64::from(max) / 2.0;
                assert!((mean - half).abs() < half * 0.1, "{t:?} {d:?} mean {mean}");
            }
        }
    }

    #[test]
    fn toy2_gaussian_fragment_reads_back_through_the_toy_overlay() {
        let c = GeneratorConfig {
            n_adc_counts: 41,
            ..cfg(Distribution::Gaussian, ToyFragmentType::Toy2)
        };
        let f = ToySimulator::new(3, &c)
            .fragment(0x1_0000_0005)
            .expect("valid");
        assert_eq!(f.kind(), FragmentType::User(3));
        let v = toy::ToyView::parse(f.metadata(), f.payload()).expect("toy layout");
        assert_eq!(v.metadata.board_serial_number, 3);
        assert_eq!(v.metadata.num_adc_bits, 14);
        assert_eq!(v.header.distribution_type, 1);
        assert_eq!(v.header.trigger_number, 5);
        // 41 samples round up to 21 words plus the 2-word header.
        assert_eq!(v.header.event_size, 23);
        assert_eq!(v.samples().len(), 42);
        assert_eq!(v.first_bad_sample(), None);
    }

    #[test]
    fn alternate_gives_even_boards_toy1_and_odd_boards_toy2() {
        let c = cfg(Distribution::Uniform, ToyFragmentType::Alternate);
        let kinds: Vec<(u8, u8)> = (0..4)
            .map(|b| {
                let g = ToySimulator::new(b, &c);
                (g.type_code(), g.adc_bits())
            })
            .collect();
        assert_eq!(kinds, vec![(2, 12), (3, 14), (2, 12), (3, 14)]);
    }

    /// Mean and standard deviation of many fragments' samples.
    fn moments(d: Distribution, t: ToyFragmentType) -> (f64, f64, u16, u16, u16) {
        let c = GeneratorConfig {
            n_adc_counts: 1001,
            ..cfg(d, t)
        };
        let mut g = ToySimulator::new(5, &c);
        let max = (1u16 << g.adc_bits()) - 1;
        let all: Vec<u16> = (1..=200)
            .flat_map(|s| adc_samples(g.fragment(s).expect("valid").payload(), 1001))
            .collect();
        assert_eq!(all.len(), 200 * 1001);
        let n = all.len() as f64;
        let mean = all.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = all
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let (lo, hi) = (
            *all.iter().min().unwrap_or(&0),
            *all.iter().max().unwrap_or(&0),
        );
        (mean, var.sqrt(), lo, hi, max)
    }

    #[test]
    fn uniform_samples_cover_the_adc_range_with_its_mean_and_spread() {
        for t in [ToyFragmentType::Toy1, ToyFragmentType::Toy2] {
            let (mean, sd, lo, hi, max) = moments(Distribution::Uniform, t);
            let m = f64::from(max);
            // Uniform over 0..=max: mean max/2, sd ((max+1)^2-1)/12 squared-rooted.
            let want_sd = (((m + 1.0).powi(2) - 1.0) / 12.0).sqrt();
            assert_eq!((lo, hi), (0, max), "{t:?}");
            assert!((mean - m / 2.0).abs() < m * 0.005, "{t:?} mean {mean}");
            assert!((sd / want_sd - 1.0).abs() < 0.01, "{t:?} sd {sd}");
        }
    }

    #[test]
    fn gaussian_samples_have_the_configured_mean_and_sd() {
        for t in [ToyFragmentType::Toy1, ToyFragmentType::Toy2] {
            let (mean, sd, lo, hi, max) = moments(Distribution::Gaussian, t);
            let m = f64::from(max);
            assert!((mean - m / 2.0).abs() < m * 0.002, "{t:?} mean {mean}");
            assert!((sd / (m / 10.0) - 1.0).abs() < 0.01, "{t:?} sd {sd}");
            // 200,200 samples: nothing near the 5-sd clamp, most within 4 sd.
            assert!(lo > 0 && hi < max, "{t:?} {lo}..{hi}");
            assert!(f64::from(lo) < m / 2.0 - 3.0 * m / 10.0, "{t:?} min {lo}");
            assert!(f64::from(hi) > m / 2.0 + 3.0 * m / 10.0, "{t:?} max {hi}");
        }
    }

    #[test]
    fn gaussian_alias_table_reproduces_the_normal_probabilities() {
        let t = AliasTable::gaussian(12);
        let one = f64::from(1u32 << 20);
        // Each value's probability: its own bucket's share plus every
        // bucket that aliases to it.
        let mut p = vec![0f64; 4096];
        for k in 0..4096 {
            let own = ((t.entries[k] as u32) as f64).min(one) / one;
            p[k] += own / 4096.0;
            p[(t.entries[k] >> 32) as usize] += (1.0 - own) / 4096.0;
        }
        let (mean, sd) = (4095.0 / 2.0, 409.5);
        let at = |k: f64| phi((k + 0.5 - mean) / sd) - phi((k - 0.5 - mean) / sd);
        for k in [0usize, 1000, 2047, 2048, 3000, 4095] {
            let want = if k == 0 {
                phi((0.5 - mean) / sd)
            } else if k == 4095 {
                1.0 - phi((4094.5 - mean) / sd)
            } else {
                at(k as f64)
            };
            assert!((p[k] - want).abs() < 1e-9, "value {k}: {} vs {want}", p[k]);
        }
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn fragments_carved_from_one_arena_equal_fragments_of_their_own() {
        for d in [
            Distribution::Uniform,
            Distribution::Gaussian,
            Distribution::Monotonic,
        ] {
            for n_adc_counts in [1, 2, 3, 4, 5, 40, 41] {
                let c = GeneratorConfig {
                    n_adc_counts,
                    ..cfg(d, ToyFragmentType::Toy2)
                };
                let mut g = ToySimulator::new(1, &c);
                let mut arena = BytesMut::new();
                for s in 1..20 {
                    let carved = g.fragment_bytes_in(s, &mut arena, 256).expect("valid");
                    let own = g.fragment(s).expect("valid");
                    assert_eq!(carved, own.bytes(), "{d:?} {n_adc_counts} seq {s}");
                    let v = toy::ToyView::parse(own.metadata(), own.payload()).expect("toy");
                    assert_eq!(v.first_bad_sample(), None);
                    // The padding after the last sample is zero.
                    let p = own.payload();
                    assert!(p[8 + 2 * n_adc_counts as usize..].iter().all(|&b| b == 0));
                }
            }
        }
    }

    #[test]
    fn monotonic_samples_count_up() {
        let mut g = ToySimulator::new(0, &cfg(Distribution::Monotonic, ToyFragmentType::Toy1));
        let s = adc_samples(g.fragment(2).expect("valid").payload(), 40);
        assert_eq!(s, (80..120).collect::<Vec<u16>>());
        // Sequence 102 starts at 4080 and wraps at the 12-bit range.
        let s = adc_samples(g.fragment(102).expect("valid").payload(), 40);
        assert_eq!(s, (4080..4096).chain(0..24).collect::<Vec<u16>>());
    }
}
