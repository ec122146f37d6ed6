//! The fragment codec and the event serializer fed from memory: building and
//! parsing artdaq fragments, splitting an event's packed fragments, and
//! NetMonOutput `encode` / NetMonInput `decode`, for the demo's toy event
//! (2 x 128 B fragments) and the throughput goal's (2 x 256 KiB).
//! Run: `nice cargo bench -p daq-format --bench codec`.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daq_format::fragment::{Fragment, FragmentSpec, FragmentType, split_packed};
use daq_format::netmon::{self, Event, EventAux, History, HistoryEntry};
use std::hint::black_box;
use std::time::Duration;

/// (name, payload bytes of each of the event's two fragments): the demo's
/// 88-byte toy payload makes 128-byte fragments.
const SIZES: [(&str, usize); 2] = [("2x128B", 88), ("2x256KiB", 256 * 1024)];

fn spec(seq: u64, board: u16) -> FragmentSpec {
    FragmentSpec {
        fragment_type: FragmentType::User(2),
        sequence_id: seq,
        fragment_id: board,
        timestamp: seq,
    }
}

fn fragment(seq: u64, board: u16, payload: &[u8]) -> Fragment {
    Fragment::build(spec(seq, board), &[0; 8], payload).unwrap_or_else(|e| panic!("{e}"))
}

fn event(payload: usize) -> Event {
    let bytes: Vec<u8> = (0..payload).map(|i| i as u8).collect();
    Event {
        aux: EventAux {
            run: 1,
            subrun: 1,
            event: 7,
            sequence_id: 7,
            timestamp: 7,
            complete: true,
        },
        history: History {
            entries: vec![HistoryEntry {
                process: "eventbuilder-0".into(),
                release: "bench".into(),
                parameter_set_id: "0".into(),
                time_ns: 1,
            }],
        },
        missing: Vec::new(),
        fragments: (0..2).map(|b| fragment(7, b, &bytes)).collect(),
    }
}

fn fragments(c: &mut Criterion) {
    let mut g = c.benchmark_group("fragment");
    g.measurement_time(Duration::from_secs(3));
    for (name, payload) in SIZES {
        let bytes: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        let built = fragment(1, 0, &bytes);
        g.throughput(Throughput::Bytes(built.len() as u64));
        g.bench_with_input(BenchmarkId::new("build", name), &bytes, |b, p| {
            b.iter(|| black_box(fragment(1, 0, p)))
        });
        let wire = built.bytes().clone();
        g.bench_with_input(BenchmarkId::new("parse", name), &wire, |b, w| {
            b.iter(|| black_box(Fragment::parse(w.clone()).is_ok()))
        });
        let packed: Vec<u8> = event(payload)
            .fragments
            .iter()
            .flat_map(|f| f.bytes().to_vec())
            .collect();
        g.throughput(Throughput::Bytes(packed.len() as u64));
        g.bench_with_input(BenchmarkId::new("split_packed", name), &packed, |b, p| {
            b.iter(|| black_box(split_packed(p).filter(Result::is_ok).count()))
        });
    }
    g.finish();
}

fn events(c: &mut Criterion) {
    let mut g = c.benchmark_group("netmon");
    g.measurement_time(Duration::from_secs(3));
    for (name, payload) in SIZES {
        let e = event(payload);
        g.throughput(Throughput::Bytes(e.encoded_len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", name), &e, |b, e| {
            b.iter(|| black_box(netmon::encode(e).is_ok()))
        });
        let wire: Bytes = netmon::encode(&e).unwrap_or_else(|err| panic!("{err}"));
        g.bench_with_input(BenchmarkId::new("decode", name), &wire, |b, w| {
            b.iter(|| black_box(netmon::decode(w.clone()).is_ok()))
        });
    }
    g.finish();
}

criterion_group!(benches, fragments, events);
criterion_main!(benches);
