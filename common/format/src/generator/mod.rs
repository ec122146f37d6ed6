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
//! Reference layout (artdaq-core-demo; encoded by [`crate::toy`]):
//! - fragment type: `TOY1 = 2` (12-bit ADC) or `TOY2 = 3` (14-bit ADC)
//!   (`MISSED = 1` is artdaq-core-demo's first user type);
//! - metadata, one u64 word: bits 0-15 `board_serial_number` (the board, =
//!   the fragment id), bits 16-23 `num_adc_bits`, bits 24-63 zero;
//! - payload header, two u32 words: bits 0-27 `event_size` (32-bit words of
//!   header and samples), bits 28-31 `distribution_type` (0 uniform,
//!   1 gaussian, 2 monotonic, as artdaq-demo's ToySimulator), then
//!   `trigger_number` (the low 32 bits of the sequence id);
//! - samples: `n_adc_counts` u16, zero-padded to a whole 64-bit word.

use crate::config::{Distribution, GeneratorConfig, ToyFragmentType};
use crate::fragment::{
    self, Fragment, FragmentError, FragmentHeader, FragmentType, HEADER_VERSION, WORD_BYTES,
};
use crate::toy::{self, ToyHeader, ToyMetadata};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// Fragment type code of TOY1 (12-bit ADC), artdaq-core-demo's.
pub const TOY1: u8 = toy::TOY1;
/// Fragment type code of TOY2 (14-bit ADC), artdaq-core-demo's.
pub const TOY2: u8 = toy::TOY2;

/// The boardreader carves fragments out of buffers of this size (one
/// allocation per buffer, not per fragment); a larger fragment gets a
/// buffer of its own.
pub const ARENA_BYTES: usize = 256 * 1024;

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
            // 1..=3 lanes here (a whole tail word exists only when the
            // buffer holds every sample); checked all the same.
            let keep = 1u64
                .checked_shl(16 * last_lanes as u32)
                .map_or(u64::MAX, |v| v - 1);
            word_of(last & keep, c);
        }
        for c in chunks.by_ref() {
            c.fill(0);
        }
        chunks.into_remainder().fill(0);
    }

    /// Appends `sequence_id`'s whole fragment to `buf`: header, metadata
    /// and payload are written once, in place (by
    /// [`Self::write_fragment_into`]). `buf.split().freeze()` then gives the
    /// fragment's bytes with no copy; successive fragments appended to one
    /// buffer share its allocation.
    pub fn write_fragment(
        &self,
        sequence_id: u64,
        buf: &mut BytesMut,
    ) -> Result<(), FragmentError> {
        let len = self.fragment_bytes();
        let start = buf.len();
        buf.resize(start + len, 0);
        let out = buf.get_mut(start..).unwrap_or_default();
        let written = self.write_fragment_into(sequence_id, out, None);
        if written.is_err() {
            // Nothing of a fragment that failed stays in the buffer.
            buf.truncate(start);
        }
        written
    }

    /// Writes `sequence_id`'s whole fragment into `out`, which must be
    /// [`Self::fragment_bytes`] long, every byte of it: the header (its
    /// access time stamped `made_at` if given, see
    /// [`fragment_bytes_made_at`](Self::fragment_bytes_made_at)), the
    /// metadata word and the payload. This is how a fragment is made
    /// straight in the memory it is sent in (a shared-memory link's ring).
    pub fn write_fragment_into(
        &self,
        sequence_id: u64,
        out: &mut [u8],
        made_at: Option<std::time::SystemTime>,
    ) -> Result<(), FragmentError> {
        let len = self.fragment_bytes();
        let words = len / WORD_BYTES;
        let word_count = u32::try_from(words).map_err(|_| FragmentError::TooLong { words })?;
        if out.len() != len {
            return Err(FragmentError::WordCountMismatch {
                word_count,
                buffer_words: out.len() / WORD_BYTES,
            });
        }
        let header = FragmentHeader {
            word_count,
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
        let (head, rest) = out.split_at_mut(fragment::HEADER_BYTES);
        for (d, w) in head.chunks_exact_mut(WORD_BYTES).zip(header) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        let (metadata, payload) = rest.split_at_mut(WORD_BYTES);
        metadata.copy_from_slice(&self.metadata());
        self.write_payload(sequence_id, payload);
        if let Some(at) = made_at {
            fragment::touch(out, at);
        }
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
        self.carve(sequence_id, arena, arena_bytes, None)
    }

    /// [`fragment_bytes_in`](Self::fragment_bytes_in) with the header's
    /// access time stamped `made_at` ([`fragment::touch`], artdaq's
    /// `Fragment::touch()` at creation): what the boardreader sends. The
    /// access time is the one field that is not a function of (seed,
    /// board, sequence id).
    pub fn fragment_bytes_made_at(
        &self,
        sequence_id: u64,
        arena: &mut BytesMut,
        arena_bytes: usize,
        made_at: std::time::SystemTime,
    ) -> Result<Bytes, FragmentError> {
        self.carve(sequence_id, arena, arena_bytes, Some(made_at))
    }

    /// The fragment carved out of `arena` (refilled when short), stamped
    /// `made_at` if given.
    fn carve(
        &self,
        sequence_id: u64,
        arena: &mut BytesMut,
        arena_bytes: usize,
        made_at: Option<std::time::SystemTime>,
    ) -> Result<Bytes, FragmentError> {
        let len = self.fragment_bytes();
        if arena.capacity() < len {
            *arena = BytesMut::with_capacity(arena_bytes.max(len));
        }
        let start = arena.len();
        self.write_fragment(sequence_id, arena)?;
        if let (Some(at), Some(made)) = (made_at, arena.get_mut(start..)) {
            fragment::touch(made, at);
        }
        Ok(arena.split().freeze())
    }
}

impl ToySimulator {
    /// `sequence_id`'s fragment, parsed (tests and tools; the data path
    /// uses [`fragment_bytes_in`](Self::fragment_bytes_in)).
    pub fn fragment(&self, sequence_id: u64) -> Result<Fragment, FragmentError> {
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
mod tests;
