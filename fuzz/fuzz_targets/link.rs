//! Fuzzes the receiving end of a shared-memory link against a sender that
//! writes arbitrary bytes: a real link is created and attached in a private
//! directory, then the input overwrites its published head, the sender's
//! state and the ring's data, as a broken or hostile sender could. Reading
//! it must end (a record, the end, or an error) without a panic, a read
//! outside the ring or a hang; every batch parsed must have its items
//! inside its record. The input is also parsed as one batch record.
#![no_main]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use daq_shm::link::{DATA_OFFSET, LinkReader, LinkWriter, MIN_CAPACITY, link_path_in, parse_batch};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("daq-fuzz-link-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz dir");
        d
    })
}

/// Header offsets of the layout (see daq_shm::link): head, writer state.
const H_HEAD: u64 = 64;
const H_WRITER_STATE: u64 = 192;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = parse_batch(data) {
        for r in &b.items {
            assert!(r.start <= r.end && r.end <= data.len());
        }
    }
    if data.len() < 12 {
        return;
    }
    let path = link_path_in(dir(), 0, "fuzz", "reader");
    let mut writer = LinkWriter::create(&path, MIN_CAPACITY, 7).expect("create");
    let mut reader = LinkReader::attach(&path, std::process::id(), 7).expect("attach");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    writer.unlink();
    let head = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
    // Any state but "open": an open link with nothing published waits for
    // the sender, which here never comes.
    let mut state = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if state == 0 {
        state = 1;
    }
    let ring = &data[12..];
    let ring = &ring[..ring.len().min(MIN_CAPACITY)];
    file.write_all_at(ring, DATA_OFFSET as u64).expect("data");
    file.write_all_at(&state.to_le_bytes(), H_WRITER_STATE)
        .expect("state");
    file.write_all_at(&head.to_le_bytes(), H_HEAD).expect("head");
    let mut records = Vec::new();
    for _ in 0..256 {
        match reader.next() {
            Ok(Some(record)) => {
                let bytes = record.as_ref();
                assert!(bytes.len() <= MIN_CAPACITY);
                if let Ok(b) = parse_batch(bytes) {
                    for r in &b.items {
                        assert!(r.end <= bytes.len());
                        let _ = bytes[r.clone()].iter().map(|&x| u64::from(x)).sum::<u64>();
                    }
                }
                // Keep some lent, release others: out-of-order releases.
                if records.len() % 2 == 0 {
                    records.push(record);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(records);
    drop(writer);
});
