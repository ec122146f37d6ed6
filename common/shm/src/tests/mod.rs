//! Tests of the store: shared helpers (test directories, fixtures,
//! deterministic events, writer/reader/monitor loops); the tests are in
//! `store` (one process: state machine, ordering, monitors, threads) and
//! `processes` (files, permissions, stale segments, several processes).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::layout::{DEFAULT_SHM_DIR, Geometry, LAYOUT_VERSION, MAGIC};
use crate::sys::test_clock;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
// The tests run on the production allocator, as every binary does.
use daq_alloc as _;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

mod corrupt;
mod processes;
mod store;

// ---------------------------------------------------------------- helpers

/// A private directory under /dev/shm (or the temp dir), removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new(DEFAULT_SHM_DIR).is_dir() {
            PathBuf::from(DEFAULT_SHM_DIR)
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "daq-shm-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A store on a file (natively) or on the heap (under Miri).
struct Fixture {
    store: ShmStore,
    _dir: Option<TestDir>,
}

fn fixture(spec: StoreSpec) -> Fixture {
    if cfg!(miri) {
        Fixture {
            store: ShmStore::in_memory(spec).unwrap(),
            _dir: None,
        }
    } else {
        let dir = TestDir::new("unit");
        let store = ShmStore::create(&dir.path("daq-p0-unit-events"), spec).unwrap();
        Fixture {
            store,
            _dir: Some(dir),
        }
    }
}

fn spec(buffer_count: u32, buffer_bytes: u64) -> StoreSpec {
    StoreSpec {
        buffer_count,
        buffer_bytes,
    }
}

fn publish_one(store: &mut ShmStore, seq: u64, data: &[u8]) -> usize {
    let idx = store.claim(seq, 1).unwrap();
    store.append(idx, data).unwrap();
    store.publish(idx, true).unwrap();
    idx
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    if cfg!(miri) {
        return std::process::id() + 1; // pid_alive treats it as dead
    }
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no::such::test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn generation(store: &ShmStore, idx: usize) -> u64 {
    store.region.desc(idx).generation.load(Ordering::Relaxed)
}

// ------------------------------------------------ deterministic events

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
fn expected_frags(seq: u64) -> u32 {
    1 + (seq % 3) as u32
}
/// Every 997th event times out after its first fragment.
fn is_incomplete(seq: u64) -> bool {
    seq % 997 == 5
}
fn written_frags(seq: u64) -> u32 {
    if is_incomplete(seq) {
        1
    } else {
        expected_frags(seq)
    }
}
/// Fragment `j` of event `seq`: 1..=max bytes of seq-derived noise.
fn frag_bytes(seq: u64, j: u32, max: usize) -> Vec<u8> {
    let key = seq.wrapping_mul(0x0100_0000_01B3) ^ (u64::from(j) << 56);
    let len = 1 + (mix(key) % max as u64) as usize;
    let mut v = Vec::with_capacity(len + 8);
    let mut k = 0u64;
    while v.len() < len {
        v.extend_from_slice(&mix(key ^ k.wrapping_mul(0x5851_F42D)).to_le_bytes());
        k += 1;
    }
    v.truncate(len);
    v
}
fn event_bytes(seq: u64, max: usize) -> Vec<u8> {
    (0..written_frags(seq))
        .flat_map(|j| frag_bytes(seq, j, max))
        .collect()
}
fn check_event(seq: u64, frags: u32, expected: u32, complete: bool, data: &[u8], max: usize) {
    assert_eq!(frags, written_frags(seq), "fragment count of {seq}");
    assert_eq!(expected, expected_frags(seq), "expected count of {seq}");
    assert_eq!(complete, !is_incomplete(seq), "complete flag of {seq}");
    assert!(data == event_bytes(seq, max).as_slice(), "content of {seq}");
}

/// Writes events `seqs` like an eventbuilder: `group` events open at a
/// time, fragments interleaved, waiting for buffers when none is Empty.
/// Returns how often it had to wait.
fn write_events(
    store: &mut ShmStore,
    seqs: Range<u64>,
    max: usize,
    group: u64,
    deadline: Instant,
) -> u64 {
    let mut waits = 0;
    let mut base = seqs.start;
    while base < seqs.end {
        let members: Vec<u64> = (base..(base + group).min(seqs.end)).collect();
        for &s in &members {
            while store.claim(s, expected_frags(s)).is_none() {
                waits += 1;
                assert!(Instant::now() < deadline, "writer: no buffer freed in time");
                std::thread::yield_now();
            }
        }
        for j in 0..3 {
            for &s in &members {
                if j < written_frags(s) {
                    let idx = store.lookup(s).unwrap();
                    let count = store.append(idx, &frag_bytes(s, j, max)).unwrap();
                    assert_eq!(count, j + 1);
                    if count == written_frags(s) {
                        store.publish(idx, !is_incomplete(s)).unwrap();
                        assert_eq!(store.lookup(s), None);
                    }
                }
            }
        }
        base += members.len() as u64;
    }
    waits
}

/// Takes events until `taken` reaches `n`; checks each. With `ordered`
/// (a single reader) publication order must be strictly increasing.
fn drain(
    reader: &ShmReader,
    n: u64,
    taken: &AtomicU64,
    max: usize,
    ordered: bool,
    deadline: Instant,
) -> Vec<u64> {
    let mut mine = Vec::new();
    let mut last = 0;
    while taken.load(Ordering::Relaxed) < n {
        match reader.take() {
            Some(g) => {
                let seq = g.sequence_id();
                check_event(
                    seq,
                    g.fragment_count(),
                    g.expected(),
                    g.complete(),
                    g.data(),
                    max,
                );
                if ordered {
                    assert!(g.publish_seq() > last, "publication order");
                }
                last = g.publish_seq();
                assert!(g.release());
                mine.push(seq);
                taken.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                assert!(Instant::now() < deadline, "reader: events missing");
                std::thread::yield_now();
            }
        }
    }
    mine
}

/// Polls until all `n` publications are accounted for; checks each event.
fn watch(mon: &mut ShmMonitor, n: u64, max: usize, deadline: Instant) {
    let mut publish_seqs = HashSet::new();
    loop {
        let done = mon.header().published_total >= n;
        for ev in mon.poll() {
            check_event(
                ev.sequence_id,
                ev.fragment_count,
                ev.expected,
                ev.complete,
                &ev.data,
                max,
            );
            assert!(
                publish_seqs.insert(ev.publish_seq),
                "publication seen twice"
            );
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "monitor: publications missing");
        std::thread::yield_now();
    }
    assert_eq!(mon.seen(), publish_seqs.len() as u64);
    assert_eq!(mon.seen() + mon.missed(), n - mon.attached_at());
    assert!(mon.torn() <= mon.missed());
    // The last publication is never recycled (nothing is written after
    // it), so a monitor attached before the end sees at least that one.
    assert!(mon.attached_at() >= n || mon.seen() >= 1);
}
