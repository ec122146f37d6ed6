//! The injected leak: real heap allocations orphaned per event handled, on
//! purpose, to calibrate the leak detector (`[leak]` in the configuration).
//!
//! Like the legacy NetMonInput path, the bytes are allocated on the event
//! path and never freed; the function is never inlined, so a heap-profile
//! diff names `daq_runtime::leak::inject_leak` as the growing call site.

/// Orphans `bytes_per_event` bytes of heap for each of `events` events: one
/// allocation per event, written to (so the pages are real) and leaked.
/// Does nothing when either is 0.
#[inline(never)]
pub fn inject_leak(bytes_per_event: u64, events: u64) {
    if bytes_per_event == 0 {
        return;
    }
    for _ in 0..events {
        let block = vec![0xA5u8; bytes_per_event as usize].into_boxed_slice();
        // black_box keeps the optimizer from proving the allocation unused.
        std::hint::black_box(Box::leak(block));
    }
}
