//! The generator stage alone, single thread: MB/s of payload per core for
//! each distribution, written straight into a caller's buffer
//! (`ToySimulator::write_payload`), for demo-sized and 256 KiB fragments,
//! and whole demo-sized fragments carved out of one arena
//! (`ToySimulator::fragment_bytes_in`, what the boardreader's loop does).
//! Run: `nice cargo bench -p daq-format --bench generator`.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daq_format::config::{Distribution, GeneratorConfig};
use daq_format::generator::ToySimulator;
use std::hint::black_box;

fn payload(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_payload");
    for n_adc_counts in [40u32, 131_072] {
        for d in [
            Distribution::Uniform,
            Distribution::Gaussian,
            Distribution::Monotonic,
        ] {
            let cfg = GeneratorConfig {
                n_adc_counts,
                distribution: d,
                ..GeneratorConfig::default()
            };
            let g = ToySimulator::new(0, &cfg);
            let mut buf = vec![0u8; g.payload_bytes()];
            // Enough fragments per iteration that each takes about 1 MiB.
            let per_iter = (1 << 20) / buf.len() + 1;
            group.throughput(Throughput::Bytes((per_iter * buf.len()) as u64));
            let id = BenchmarkId::new(format!("{d:?}").to_lowercase(), n_adc_counts);
            let mut seq = 0u64;
            group.bench_function(id, |b| {
                b.iter(|| {
                    for _ in 0..per_iter {
                        seq += 1;
                        g.write_payload(seq, &mut buf);
                    }
                    black_box(&buf);
                })
            });
        }
    }
    group.finish();
}

fn fragments(c: &mut Criterion) {
    let mut group = c.benchmark_group("fragment_bytes_in");
    let g = ToySimulator::new(0, &GeneratorConfig::default());
    let per_iter = 1000u64;
    group.throughput(Throughput::Elements(per_iter));
    let mut arena = BytesMut::new();
    let mut seq = 0u64;
    group.bench_function("demo_fragments", |b| {
        b.iter(|| {
            for _ in 0..per_iter {
                seq += 1;
                let f = g.fragment_bytes_in(seq, &mut arena, 64 * 1024);
                black_box(f.ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, payload, fragments);
criterion_main!(benches);
