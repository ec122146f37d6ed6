//! Fuzzes attaching to a shared-memory segment whose bytes are arbitrary:
//! the input becomes the whole file (a memfd, so nothing lands in /dev/shm),
//! then a destructive reader and a monitor attach and use it. A segment
//! with a bad header or descriptor table must be refused with an error;
//! one that is accepted must be usable without a panic or a hang.
#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use daq_shm::{ShmMonitor, ShmReader};
use libfuzzer_sys::fuzz_target;

fn memfd() -> &'static (File, PathBuf) {
    static FD: OnceLock<(File, PathBuf)> = OnceLock::new();
    FD.get_or_init(|| {
        let fd = rustix::fs::memfd_create("daq-fuzz-segment", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        let file = File::from(fd);
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        (file, path)
    })
}

fuzz_target!(|data: &[u8]| {
    let (file, path) = memfd();
    let mut file = file;
    file.set_len(0).expect("truncate");
    std::os::unix::fs::FileExt::write_all_at(file, data, 0).expect("write");
    file.flush().expect("flush");
    if let Ok(reader) = ShmReader::attach(path) {
        let spec = reader.spec();
        let counts = reader.counts();
        assert_eq!(
            counts.empty + counts.writing + counts.full + counts.reading,
            spec.buffer_count
        );
        let _ = reader.header();
        let _ = reader.recover_stale_reading(Duration::ZERO);
        for _ in 0..=spec.buffer_count.min(64) {
            let Some(guard) = reader.take() else { break };
            assert!(guard.data().len() as u64 <= spec.buffer_bytes);
            let _ = (
                guard.sequence_id(),
                guard.fragment_count(),
                guard.expected(),
            );
            let _ = (guard.complete(), guard.publish_seq(), guard.index());
            guard.release();
        }
    }
    if let Ok(mut monitor) = ShmMonitor::open(path) {
        for event in monitor.poll() {
            assert!(event.data.len() as u64 <= monitor.header().buffer_bytes);
        }
        let _ = (
            monitor.missed(),
            monitor.seen(),
            monitor.torn(),
            monitor.counts(),
        );
    }
});
