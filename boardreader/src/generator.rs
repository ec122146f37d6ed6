//! Fragment generators. [`ToySimulator`] is artdaq-demo's toy: a fragment
//! of ADC samples per event with a chosen distribution, in the byte layout
//! of artdaq-core-demo's `ToyFragment`, so its overlays read our data as it is.
//!
//! The output is a pure function of (seed, board, sequence id): the random
//! stream of each fragment is ChaCha8 seeded with the board's seed and set to
//! the sequence id as its stream number, so any fragment can be regenerated
//! on its own (tests check data files against it).
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

use daq_format::config::{Distribution, GeneratorConfig, ToyFragmentType};
use daq_format::fragment::{Fragment, FragmentError, FragmentSpec, FragmentType};
use daq_format::toy::{self, ToyHeader, ToyMetadata};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};

/// Fragment type code of TOY1 (12-bit ADC), artdaq-core-demo's.
pub const TOY1: u8 = toy::TOY1;
/// Fragment type code of TOY2 (14-bit ADC), artdaq-core-demo's.
pub const TOY2: u8 = toy::TOY2;

/// Produces this board's fragment for a sequence id.
pub trait Generator: Send {
    fn fragment(&mut self, sequence_id: u64) -> Result<Fragment, FragmentError>;
}

/// The artdaq-demo ToySimulator.
#[derive(Clone, Debug)]
pub struct ToySimulator {
    board: u16,
    seed: u64,
    cfg: GeneratorConfig,
    payload: Vec<u8>,
}

impl ToySimulator {
    /// Board `board` of a system configured with `cfg` (seed `random_seed + board`).
    pub fn new(board: u16, cfg: &GeneratorConfig) -> Self {
        Self {
            board,
            seed: cfg.random_seed.wrapping_add(u64::from(board)),
            cfg: cfg.clone(),
            payload: Vec::new(),
        }
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

    fn fill_payload(&mut self, sequence_id: u64) {
        let n = self.cfg.n_adc_counts as usize;
        let max = (1u32 << self.adc_bits()) - 1;
        let header = ToyHeader::for_samples(n, self.distribution_code(), sequence_id as u32);
        self.payload.clear();
        self.payload.reserve(toy::HEADER_BYTES + 2 * n);
        self.payload.extend_from_slice(&header.encode());
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(sequence_id);
        match self.cfg.distribution {
            Distribution::Uniform => {
                for _ in 0..n {
                    let v = rng.random_range(0..=max) as u16;
                    self.payload.extend_from_slice(&v.to_le_bytes());
                }
            }
            Distribution::Gaussian => {
                let (mean, sd) = (f64::from(max) / 2.0, f64::from(max) / 10.0);
                for _ in 0..n {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    let v = (mean + sd * z).round().clamp(0.0, f64::from(max)) as u16;
                    self.payload.extend_from_slice(&v.to_le_bytes());
                }
            }
            Distribution::Monotonic => {
                let start = sequence_id.wrapping_mul(n as u64);
                for i in 0..n as u64 {
                    let v = (start.wrapping_add(i) % (u64::from(max) + 1)) as u16;
                    self.payload.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

impl Generator for ToySimulator {
    fn fragment(&mut self, sequence_id: u64) -> Result<Fragment, FragmentError> {
        self.fill_payload(sequence_id);
        Fragment::build(
            FragmentSpec {
                fragment_type: FragmentType::User(self.type_code()),
                sequence_id,
                fragment_id: self.board,
                timestamp: sequence_id.wrapping_mul(self.cfg.timestamp_scale_factor),
            },
            &self.metadata(),
            &self.payload,
        )
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

    #[test]
    fn monotonic_samples_count_up() {
        let mut g = ToySimulator::new(0, &cfg(Distribution::Monotonic, ToyFragmentType::Toy1));
        let s = adc_samples(g.fragment(2).expect("valid").payload(), 40);
        assert_eq!(s, (80..120).collect::<Vec<u16>>());
    }
}
