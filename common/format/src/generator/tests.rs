//! The generator's output against artdaq-core-demo's layout and its own
//! determinism.

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
    let a = ToySimulator::new(1, &c);
    let b = ToySimulator::new(1, &c);
    let fa: Vec<_> = (1..50).map(|s| a.fragment(s).expect("valid")).collect();
    // Out of order: each fragment stands on its own.
    for s in (1..50).rev() {
        assert_eq!(b.fragment(s).expect("valid"), fa[s as usize - 1]);
    }
    let other_board = ToySimulator::new(0, &c);
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
            let g = ToySimulator::new(0, &cfg(d, t));
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
    let g = ToySimulator::new(5, &c);
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
            let g = ToySimulator::new(1, &c);
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
    let g = ToySimulator::new(0, &cfg(Distribution::Monotonic, ToyFragmentType::Toy1));
    let s = adc_samples(g.fragment(2).expect("valid").payload(), 40);
    assert_eq!(s, (80..120).collect::<Vec<u16>>());
    // Sequence 102 starts at 4080 and wraps at the 12-bit range.
    let s = adc_samples(g.fragment(102).expect("valid").payload(), 40);
    assert_eq!(s, (4080..4096).chain(0..24).collect::<Vec<u16>>());
}

#[test]
fn made_at_stamps_the_access_time_and_changes_nothing_else() {
    let c = cfg(Distribution::Gaussian, ToyFragmentType::Toy2);
    let g = ToySimulator::new(1, &c);
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_765_000_000, 123_456_789);
    let mut arena = BytesMut::new();
    let pure = g.fragment_bytes_in(9, &mut arena, 256).expect("valid");
    let made = g
        .fragment_bytes_made_at(9, &mut arena, 256, at)
        .expect("valid");
    let f = Fragment::parse(made.clone()).expect("parses");
    assert_eq!(
        (f.header().atime_s, f.header().atime_ns),
        (1_765_000_000, 123_456_789)
    );
    assert_eq!(
        Fragment::parse(pure.clone())
            .expect("parses")
            .header()
            .atime_s,
        0
    );
    // Every byte but header word 3's atime bits is the pure function's.
    let (w, p) = (&made[24..32], &pure[24..32]);
    assert_eq!(w[0] & 0b11, p[0] & 0b11);
    assert_eq!(made[..24], pure[..24]);
    assert_eq!(made[32..], pure[32..]);
}

/// `write_payload` into a buffer shorter (or longer) than the fragment's
/// payload: never a panic (debug builds check every shift and index), the
/// bytes it writes are the full payload's prefix in whole words, and the
/// rest of the buffer is zero.
#[test]
fn write_payload_into_any_buffer_length_writes_a_prefix_and_never_panics() {
    for d in [
        Distribution::Uniform,
        Distribution::Gaussian,
        Distribution::Monotonic,
    ] {
        for n_adc_counts in [0, 1, 2, 3, 4, 5, 7, 8, 9, 41] {
            let c = GeneratorConfig {
                distribution: d,
                n_adc_counts,
                ..GeneratorConfig::default()
            };
            let sim = ToySimulator::new(0, &c);
            let full_len = toy::HEADER_BYTES + (n_adc_counts as usize).div_ceil(4) * WORD_BYTES;
            let mut full = vec![0xAAu8; full_len];
            sim.write_payload(9, &mut full);
            for len in 0..full_len + 2 * WORD_BYTES {
                let mut out = vec![0xAAu8; len];
                sim.write_payload(9, &mut out);
                let common = len.min(full_len);
                // A whole word is written or none of it: compare whole words.
                let words = common.saturating_sub(toy::HEADER_BYTES) / WORD_BYTES;
                let same = toy::HEADER_BYTES.min(common) + words * WORD_BYTES;
                assert_eq!(
                    out[..same],
                    full[..same],
                    "{d:?} n {n_adc_counts} len {len}"
                );
                assert!(
                    out[same..].iter().all(|&b| b == 0),
                    "{d:?} n {n_adc_counts} len {len}: {out:?}"
                );
            }
        }
    }
}

#[test]
fn a_fragment_written_in_place_is_the_fragment_carved_from_the_arena() {
    let made = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
    for d in [
        Distribution::Uniform,
        Distribution::Gaussian,
        Distribution::Monotonic,
    ] {
        let g = ToySimulator::new(1, &cfg(d, ToyFragmentType::Alternate));
        let mut arena = BytesMut::new();
        let carved = g
            .fragment_bytes_made_at(77, &mut arena, ARENA_BYTES, made)
            .expect("carves");
        // In place, over bytes that held something else (a used ring).
        let mut ring = vec![0xA5u8; g.fragment_bytes()];
        g.write_fragment_into(77, &mut ring, Some(made))
            .expect("writes");
        assert_eq!(ring, carved.as_ref(), "{d:?}");
        let mut short = vec![0u8; g.fragment_bytes() - 8];
        assert!(g.write_fragment_into(77, &mut short, None).is_err());
    }
}
