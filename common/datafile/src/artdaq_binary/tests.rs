//! The artdaq-binary writer and walker on real files in a temporary directory.

use super::*;
use crate::FileError;
use daq_format::fragment::{Fragment, FragmentError, FragmentSpec, FragmentType};
use std::path::Path;

fn fragment(seq: u64, id: u16, payload: usize) -> Fragment {
    Fragment::build(
        FragmentSpec {
            fragment_type: FragmentType::User(2),
            sequence_id: seq,
            fragment_id: id,
            timestamp: seq * 10,
        },
        &[id as u8; 8],
        &vec![seq as u8; payload],
    )
    .expect("valid")
}

/// An event as it sits in a store buffer: fragments back to back.
fn event(seq: u64, boards: u16, payload: usize) -> Vec<u8> {
    (0..boards)
        .flat_map(|b| fragment(seq, b, payload).into_bytes().to_vec())
        .collect()
}

#[test]
fn batches_are_written_back_to_back_and_read_back_as_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = BinaryWriter::create(dir.path(), 7, "aggregator-0", 0).expect("create");
    let events: Vec<Vec<u8>> = (1..=5).map(|s| event(s, 3, 20)).collect();
    w.write_batch(events[..2].iter().map(Vec::as_slice))
        .expect("write");
    w.write_batch(events[2..].iter().map(Vec::as_slice))
        .expect("write");
    w.write_batch(std::iter::empty()).expect("empty batch");
    let files = w.close().expect("close");
    assert_eq!(files.events, 5);
    assert_eq!(files.files.len(), 1);
    assert!(files.files[0].ends_with("run000007_aggregator-0_000.artdaq.bin"));
    let raw = std::fs::read(&files.files[0]).expect("read");
    assert_eq!(raw, events.concat());
    assert_eq!(files.bytes_on_disk, raw.len() as u64);
    let f = read_file(&files.files[0]).expect("reads");
    assert_eq!(f.stop, None);
    assert_eq!(f.fragments.len(), 15);
    let seqs: Vec<u64> = f.events().map(|e| e[0].sequence_id()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert!(f.events().all(|e| e.len() == 3));
    assert_eq!(f.fragments[4], fragment(2, 1, 20));
}

#[test]
fn files_roll_over_by_size_between_batches_and_never_end_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2 fragments of 4 + 1 + 3 words = 128 bytes per event.
    let e = event(1, 2, 20);
    assert_eq!(e.len(), 128);
    let mut w = BinaryWriter::create(dir.path(), 1, "ag", 300).expect("create");
    for _ in 0..3 {
        // Two events per batch: 256 bytes, then 512 > 300 rolls over.
        w.write_batch([e.as_slice(), e.as_slice()]).expect("write");
    }
    let files = w.close().expect("close");
    let sizes: Vec<u64> = files
        .files
        .iter()
        .map(|p| std::fs::metadata(p).expect("exists").len())
        .collect();
    assert_eq!(sizes, vec![512, 256]);
    assert_eq!(files.events, 6);
    assert_eq!(files.bytes_on_disk, 768);

    // A roll-over after the last batch leaves no empty file behind.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = BinaryWriter::create(dir.path(), 1, "ag", 100).expect("create");
    w.write_batch([e.as_slice()]).expect("write");
    let files = w.close().expect("close");
    assert_eq!(files.files.len(), 1);

    // No events at all: one empty file 000.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = BinaryWriter::create(dir.path(), 1, "ag", 100)
        .expect("create")
        .close()
        .expect("close");
    assert_eq!(files.files.len(), 1);
    assert_eq!(files.bytes_on_disk, 0);
    assert_eq!(
        read_file(&files.files[0]).expect("reads").fragments.len(),
        0
    );
    assert!(matches!(
        BinaryWriter::create(dir.path(), 1, "ag", 100),
        Err(BinaryFileError::File(FileError::FileExists { .. }))
    ));
}

#[test]
fn a_cut_file_yields_its_whole_fragments_and_the_offset_where_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.artdaq.bin");
    let bytes: Vec<u8> = (1..=3).flat_map(|s| event(s, 2, 20)).collect();
    // Cut 3 bytes into the 5th fragment (each is 64 bytes).
    std::fs::write(&path, &bytes[..64 * 4 + 3]).expect("write");
    let f = read_file(&path).expect("reads");
    assert_eq!(f.fragments.len(), 4);
    assert_eq!(
        f.stop,
        Some(Stop {
            offset: 256,
            whole_fragments: 4,
            reason: StopReason::Truncated {
                fragment_bytes: 32,
                available: 3
            }
        })
    );
    std::fs::write(&path, &bytes[..64 * 4 + 40]).expect("write");
    let f = read_file(&path).expect("reads");
    let stop = f.stop.expect("stops");
    assert_eq!((stop.offset, stop.whole_fragments), (256, 4));
    assert_eq!(
        stop.reason,
        StopReason::Truncated {
            fragment_bytes: 64,
            available: 40
        }
    );
    assert!(
        stop.to_string()
            .starts_with("truncated at byte offset 256: 4 whole fragments before it")
    );
    // Garbage after two whole fragments.
    let mut bad = bytes[..128].to_vec();
    bad.extend_from_slice(&[0xFF; 40]);
    std::fs::write(&path, &bad).expect("write");
    let f = read_file(&path).expect("reads");
    assert_eq!(f.fragments.len(), 2);
    assert_eq!(
        f.stop.expect("stops").reason,
        StopReason::BadFragment(FragmentError::UnknownVersion { version: 0xFFFF })
    );
}

#[test]
fn other_formats_are_refused_saying_what_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h5 = dir.path().join("x.h5");
    let mut b = HDF5_SIGNATURE.to_vec();
    b.extend_from_slice(&[0; 100]);
    std::fs::write(&h5, &b).expect("write");
    let e = read_file(&h5).expect_err("refused");
    assert!(
        e.to_string()
            .ends_with("is not an artdaq-binary file: it is an HDF5 file"),
        "{e}"
    );
    let txt = dir.path().join("x.toml");
    std::fs::write(&txt, "host = \"127.0.0.1\"\n").expect("write");
    let e = read_file(&txt).expect_err("refused");
    assert!(e.to_string().contains("is not a fragment header"), "{e}");
}

#[test]
fn bytes_written_is_the_files_size_after_every_batch_across_roll_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = event(1, 2, 20);
    let mut w = BinaryWriter::create(dir.path(), 1, "ag", 300).expect("create");
    for n in 1..=7u64 {
        w.write_batch([e.as_slice()]).expect("write");
        let on_disk: u64 = w
            .files()
            .iter()
            .map(|p| std::fs::metadata(p).expect("exists").len())
            .sum();
        assert_eq!(w.bytes_written(), on_disk, "after batch {n}");
        assert_eq!(w.bytes_written(), n * 128);
        assert_eq!(w.events_written(), n);
    }
    assert!(w.files().len() > 1, "rolled over");
    let files = w.close().expect("close");
    assert_eq!(files.bytes_on_disk, 7 * 128);
}

/// Whether `dir`'s file system takes `O_DIRECT` (tmpfs before Linux 6.6,
/// for one, does not).
fn takes_o_direct(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").expect("probe");
    let ok = direct::reopen_direct(&probe).expect("reopen").is_some();
    std::fs::remove_file(&probe).expect("remove probe");
    ok
}

#[test]
fn direct_io_writes_the_same_bytes_and_the_file_is_its_count_after_every_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expect_direct = takes_o_direct(dir.path());
    // Events of 4 boards: 160 B up to a few MiB, so that batches end inside
    // a block, on a block, and cross the 4 MiB buffer several times.
    let sizes = [2, 20, 500, 16_000, 300_000, 1_100_000, 7, 1];
    let mut w = BinaryWriter::create_with(dir.path(), 3, "ag", 20 << 20, true).expect("create");
    assert_eq!(
        w.direct_io(),
        expect_direct,
        "O_DIRECT taken where the fs takes it"
    );
    let mut all: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    let mut seq = 0;
    for round in 0..6 {
        for (i, &payload) in sizes.iter().enumerate() {
            seq += 1;
            let batch: Vec<Vec<u8>> = (0..=((i + round) % 3) as u64)
                .map(|k| event(seq * 10 + k, 4, payload))
                .collect();
            let files_before = w.files().len();
            w.write_batch(batch.iter().map(Vec::as_slice))
                .expect("write");
            if w.files().len() > files_before {
                all.push(Vec::new());
            }
            all.last_mut().expect("a file").extend(batch);
            // The files hold exactly what was counted, batch after batch.
            let on_disk: u64 = w
                .files()
                .iter()
                .map(|p| std::fs::metadata(p).expect("exists").len())
                .sum();
            assert_eq!(on_disk, w.bytes_written());
        }
    }
    let files = w.close().expect("close");
    assert!(files.files.len() > 1, "rolled over: {:?}", files.files);
    assert_eq!(files.files.len(), all.len());
    for (path, events) in files.files.iter().zip(&all) {
        let raw = std::fs::read(path).expect("read");
        assert_eq!(raw.len(), events.iter().map(Vec::len).sum::<usize>());
        assert!(raw == events.concat(), "{} differs", path.display());
        let f = read_file(path).expect("reads");
        assert_eq!(f.stop, None);
        assert_eq!(f.events().count(), events.len());
    }
}
