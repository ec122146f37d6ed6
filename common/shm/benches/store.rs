//! The shared-memory event store's write/read cycle in one process: claim a
//! buffer, append an event's fragments, publish, take it and release it, on a
//! store in /dev/shm (as every process has it), for the demo's toy event
//! (2 x 128 B fragments) and the throughput goal's (2 x 256 KiB).
//! Run: `nice cargo bench -p daq-shm --bench store`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daq_shm::{ShmStore, StoreSpec};
use std::hint::black_box;
use std::time::Duration;

fn cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("shm_store");
    g.measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, fragment_bytes) in [("2x128B", 128usize), ("2x256KiB", 256 * 1024 + 48)] {
        let fragment: Vec<u8> = (0..fragment_bytes).map(|i| i as u8).collect();
        let spec = StoreSpec {
            buffer_count: 8,
            buffer_bytes: (2 * fragment_bytes) as u64,
        };
        let path = dir.path().join(format!("daq-p0-bench-{name}"));
        let mut store = ShmStore::create(&path, spec).unwrap_or_else(|e| panic!("{e}"));
        let reader = store.reader();
        g.throughput(Throughput::Bytes(2 * fragment_bytes as u64));
        let mut seq = 0u64;
        g.bench_function(BenchmarkId::new("write_read", name), |b| {
            b.iter(|| {
                seq += 1;
                let Some(idx) = store.claim(seq, 2) else {
                    panic!("no free buffer")
                };
                for _ in 0..2 {
                    if store.append(idx, &fragment).is_err() {
                        panic!("append");
                    }
                }
                if store.publish(idx, true).is_err() {
                    panic!("publish");
                }
                let Some(guard) = reader.take() else {
                    panic!("nothing to take")
                };
                black_box(guard.data().iter().step_by(4096).count());
                guard.release();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
