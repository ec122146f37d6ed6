//! The disk writers' throughput fed from memory: HDF5 (as the aggregator's
//! writer thread drives it, one event at a time) against artdaq-binary (one
//! `writev` per batch of events), for the demo's toy events, 16 KiB events
//! and 512 KiB events of two 256 KiB fragments.
//! Each iteration writes a whole run into a fresh directory and closes it
//! (fsync included). Run: `nice cargo bench -p daq-datafile --bench writers`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daq_datafile::artdaq_binary::BinaryWriter;
use daq_datafile::hdf5::{EventView, FileAttributes, FragmentView, RunWriter, WriterOptions};
use daq_format::fragment::{Fragment, FragmentSpec, FragmentType, split_packed};
use std::hint::black_box;
use std::path::Path;

/// `events` events of `boards` fragments of `payload` bytes, each event's
/// fragments back to back as in a shared-memory buffer.
fn events(events: u64, boards: u16, payload: usize) -> Vec<Vec<u8>> {
    (1..=events)
        .map(|seq| {
            (0..boards)
                .flat_map(|b| {
                    Fragment::build(
                        FragmentSpec {
                            fragment_type: FragmentType::User(2),
                            sequence_id: seq,
                            fragment_id: b,
                            timestamp: seq,
                        },
                        &[0; 8],
                        &vec![(seq as u8) ^ (b as u8); payload],
                    )
                    .map(|f| f.into_bytes().to_vec())
                    .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

fn write_hdf5(dir: &Path, events: &[Vec<u8>]) {
    let attrs = FileAttributes {
        run: 1,
        subrun: 1,
        process: "bench".into(),
        config_toml: String::new(),
        software_version: "bench".into(),
    };
    let Ok(mut w) = RunWriter::create(dir, attrs, WriterOptions::default()) else {
        panic!("hdf5 writer")
    };
    let mut frags = Vec::with_capacity(4);
    for (i, e) in events.iter().enumerate() {
        frags.clear();
        for f in split_packed(e).flatten() {
            frags.push(FragmentView {
                fragment_id: f.header.fragment_id,
                fragment_type: f.header.fragment_type,
                sequence_id: f.header.sequence_id,
                timestamp: f.header.timestamp,
                metadata: f.metadata(),
                payload: f.payload(),
            });
        }
        let seq = i as u64 + 1;
        let view = EventView {
            run: 1,
            subrun: 1,
            event: seq,
            sequence_id: seq,
            timestamp: seq,
            complete: true,
            fragments: &frags,
        };
        if w.append(&view).is_err() {
            panic!("hdf5 append");
        }
    }
    black_box(w.close().is_ok());
}

fn write_binary(dir: &Path, events: &[Vec<u8>], batch: usize) {
    let Ok(mut w) = BinaryWriter::create(dir, 1, "bench", 1 << 30) else {
        panic!("binary writer")
    };
    for chunk in events.chunks(batch) {
        if w.write_batch(chunk.iter().map(Vec::as_slice)).is_err() {
            panic!("binary write");
        }
    }
    black_box(w.close().is_ok());
}

fn writers(c: &mut Criterion) {
    let mut g = c.benchmark_group("writers");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(4));
    // (name, events, boards, payload bytes): the demo's toy event (2 x 128 B),
    // 2 x 8 KiB fragments, and the throughput goal's 2 x 256 KiB fragments;
    // about 64 MB per run each.
    for (name, n, boards, payload) in [
        ("toy_256B_events", 250_000u64, 2u16, 88usize),
        ("16KiB_events", 4_000, 2, 8192),
        ("512KiB_events", 128, 2, 256 * 1024),
    ] {
        let data = events(n, boards, payload);
        let bytes: u64 = data.iter().map(|e| e.len() as u64).sum();
        g.throughput(Throughput::Bytes(bytes));
        let base =
            tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap_or_else(|e| panic!("{e}"));
        let mut round = 0u32;
        g.bench_with_input(BenchmarkId::new("hdf5", name), &data, |b, d| {
            b.iter(|| {
                round += 1;
                let dir = base.path().join(format!("h5-{round}"));
                write_hdf5(&dir, d);
                let _ = std::fs::remove_dir_all(&dir);
            })
        });
        g.bench_with_input(BenchmarkId::new("artdaq_binary", name), &data, |b, d| {
            b.iter(|| {
                round += 1;
                let dir = base.path().join(format!("bin-{round}"));
                write_binary(&dir, d, 256);
                let _ = std::fs::remove_dir_all(&dir);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, writers);
criterion_main!(benches);
