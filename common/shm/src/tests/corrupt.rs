//! Corrupted and truncated segments: one test per kind of damage, each
//! refused by both the reader and the monitor with its own error; a damaged
//! leftover is replaced at start without being read; and the fuzz seed
//! corpus of `fuzz/corpus/shm_segment`, which these tests generate.

use super::*;

/// Header field offsets (see the layout table in `layout`).
const BUFFER_COUNT: usize = 12;
const BUFFER_BYTES: usize = 16;
const OWNER_PID: usize = 24;
const CREATED: usize = 32;
const PUBLISHED_TOTAL: usize = 40;
const DESCRIPTOR_SIZE: usize = 52;
const STRIDE: usize = 56;
const DATA_OFFSET: usize = 64;
const TOTAL_BYTES: usize = 72;
/// Descriptor field offsets, from the descriptor's start.
const DATA_LEN: usize = 24;
const LAST_TOUCH: usize = 32;
const PUBLISH_SEQ: usize = 48;

fn desc(idx: usize, field: usize) -> usize {
    128 + 64 * idx + field
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The bytes of a 2 x 64-byte segment with `full` events published and not
/// taken, with the pid and clock fields zeroed so the bytes are the same on
/// every run.
fn segment_bytes(dir: &TestDir, full: u64) -> Vec<u8> {
    let path = dir.path("daq-p0-source-events");
    let mut store = ShmStore::create(&path, spec(2, 64)).unwrap();
    for seq in 0..full {
        publish_one(&mut store, seq + 1, &[seq as u8 + 0xA0; 40]);
    }
    let mut b = fs::read(&path).unwrap();
    put_u32(&mut b, OWNER_PID, 0);
    put_u64(&mut b, CREATED, 0);
    for idx in 0..2 {
        put_u64(&mut b, desc(idx, LAST_TOUCH), 0);
    }
    b
}

/// Writes `bytes` as a segment and attaches a reader and a monitor to it:
/// both must fail, and with the same error text.
fn refused(dir: &TestDir, name: &str, bytes: &[u8]) -> ShmError {
    let path = dir.path(name);
    fs::write(&path, bytes).unwrap();
    let reader = ShmReader::attach(&path).map(|_| ()).unwrap_err();
    let monitor = ShmMonitor::open(&path).map(|_| ()).unwrap_err();
    assert_eq!(reader.to_string(), monitor.to_string());
    assert!(
        reader.to_string().contains(&path.display().to_string()),
        "the error names the file: {reader}"
    );
    reader
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn the_undamaged_segment_is_accepted() {
    let dir = TestDir::new("corrupt");
    let path = dir.path("daq-p0-good-events");
    fs::write(&path, segment_bytes(&dir, 1)).unwrap();
    let reader = ShmReader::attach(&path).unwrap();
    let g = reader.take().unwrap();
    assert_eq!(g.sequence_id(), 1);
    assert_eq!(g.data(), &[0xA0; 40]);
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn a_segment_cut_inside_its_header_is_truncated() {
    let dir = TestDir::new("corrupt");
    let b = segment_bytes(&dir, 1);
    for len in [1, 8, 127] {
        let e = refused(&dir, &format!("cut-{len}"), &b[..len]);
        assert!(
            matches!(e, ShmError::Truncated { len: l, .. } if l == len as u64),
            "{e}"
        );
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn a_segment_cut_after_its_header_is_a_size_mismatch() {
    let dir = TestDir::new("corrupt");
    let b = segment_bytes(&dir, 1);
    for len in [128, 200, 383] {
        let e = refused(&dir, &format!("cut-{len}"), &b[..len]);
        assert!(
            matches!(e, ShmError::SizeMismatch { expected: 384, actual, .. } if actual == len as u64),
            "{e}"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn a_header_whose_sizes_disagree_with_its_geometry_is_refused() {
    let dir = TestDir::new("corrupt");
    let good = segment_bytes(&dir, 1);
    let cases: [(&str, usize, u64, &str); 5] = [
        ("count", BUFFER_COUNT, 3, "data offset differs"),
        (
            "size",
            BUFFER_BYTES,
            1 << 41,
            "buffer count or size out of range",
        ),
        ("descriptor", DESCRIPTOR_SIZE, 32, "descriptor size differs"),
        ("stride", STRIDE, 128, "buffer stride differs"),
        ("offset", DATA_OFFSET, 0, "data offset differs"),
    ];
    for (name, at, value, message) in cases {
        let mut b = good.clone();
        if at == BUFFER_COUNT || at == DESCRIPTOR_SIZE {
            put_u32(&mut b, at, value as u32);
        } else {
            put_u64(&mut b, at, value);
        }
        let e = refused(&dir, name, &b);
        assert!(e.to_string().contains(message), "{name}: {e}");
    }
    let mut b = good;
    put_u64(&mut b, TOTAL_BYTES, 1 << 20);
    let e = refused(&dir, "total", &b);
    assert!(
        matches!(
            e,
            ShmError::SizeMismatch {
                expected: 384,
                actual: 384,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn a_descriptor_longer_than_its_buffer_is_refused() {
    let dir = TestDir::new("corrupt");
    let mut b = segment_bytes(&dir, 1);
    put_u64(&mut b, desc(1, DATA_LEN), 65);
    let e = refused(&dir, "data-len", &b);
    assert!(matches!(e, ShmError::BadDescriptor { idx: 1, .. }), "{e}");
    assert!(e.to_string().contains("data_len 65 exceeds"), "{e}");
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn a_descriptor_published_ahead_of_the_header_is_refused() {
    let dir = TestDir::new("corrupt");
    let mut b = segment_bytes(&dir, 1);
    put_u64(&mut b, desc(0, PUBLISH_SEQ), 3);
    let e = refused(&dir, "publish-seq", &b);
    assert!(matches!(e, ShmError::BadDescriptor { idx: 0, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("publish_seq 3 is ahead of published_total 1"),
        "{e}"
    );
}

/// One publication ahead is what a reader sees while the writer is between
/// its last two stores, so it is accepted; if the header never catches up
/// (damage after attaching), `take` gives up instead of spinning.
#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn take_gives_up_on_a_publication_that_never_completes() {
    let dir = TestDir::new("corrupt");
    let mut b = segment_bytes(&dir, 1);
    put_u64(&mut b, PUBLISHED_TOTAL, 0);
    let path = dir.path("stuck");
    fs::write(&path, &b).unwrap();
    let reader = ShmReader::attach(&path).unwrap();
    let t = Instant::now();
    assert!(reader.take().is_none());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(reader.counts().full, 1);
    let mut monitor = ShmMonitor::open(&path).unwrap();
    assert!(monitor.poll().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn a_damaged_leftover_is_replaced_at_start_without_being_read() {
    let dir = TestDir::new("corrupt");
    let path = dir.path("daq-p0-leftover-events");
    let mut garbage = segment_bytes(&dir, 2);
    put_u64(&mut garbage, desc(0, DATA_LEN), u64::MAX);
    put_u32(&mut garbage, BUFFER_COUNT, u32::MAX);
    garbage.truncate(200);
    fs::write(&path, &garbage).unwrap();
    let store = ShmStore::create(&path, spec(4, 128)).unwrap();
    assert!(store.replaced_stale());
    let reader = ShmReader::attach(&path).unwrap();
    assert_eq!(reader.spec(), spec(4, 128));
    assert_eq!(reader.counts().empty, 4);
    assert_eq!(reader.header().published_total, 0);
    assert!(reader.take().is_none());
}

/// `DAQ_WRITE_FUZZ_SEEDS=1 cargo test -p daq-shm fuzz_seed` rewrites the
/// committed seeds of the `shm_segment` fuzz target; every run checks them.
#[test]
#[cfg_attr(miri, ignore = "files and mmap")]
fn fuzz_seed_corpus_is_valid_segments() {
    let dir = TestDir::new("seeds");
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/shm_segment");
    let write = std::env::var_os("DAQ_WRITE_FUZZ_SEEDS").is_some();
    if write {
        fs::create_dir_all(&corpus).unwrap();
    }
    for (name, full) in [("empty", 0), ("one_full", 1), ("two_full", 2)] {
        let bytes = segment_bytes(&dir, full);
        let path = corpus.join(name);
        if write {
            fs::write(&path, &bytes).unwrap();
        }
        let committed = fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (set DAQ_WRITE_FUZZ_SEEDS=1)", path.display()));
        assert_eq!(committed, bytes, "{} is stale", path.display());
        let copy = dir.path(name);
        fs::write(&copy, &committed).unwrap();
        let reader = ShmReader::attach(&copy).unwrap();
        assert_eq!(reader.counts().full, full as u32);
    }
}
