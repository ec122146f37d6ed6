//! The injected leak orphans exactly what it is asked to: alone in its test
//! binary, so no other test's allocations blur process-wide jemalloc stats.

use daq_runtime::leak::inject_leak;

#[test]
fn inject_leak_orphans_the_requested_bytes_per_event() {
    // Warm up: the first snapshot and the first fills of the thread cache
    // allocate once.
    inject_leak(64, 1_000);
    let allocated = || daq_alloc::snapshot().expect("heap stats").allocated;
    let _ = allocated();
    let before = allocated();
    inject_leak(64, 10_000);
    let grown = allocated() as i64 - before as i64;
    // 640 000 bytes orphaned; jemalloc counts a thread cache's batch fill as
    // allocated at once: a few KiB either way.
    assert!((grown - 640_000).abs() < 16 * 1024, "{grown}");
    let before = allocated();
    inject_leak(0, 10_000);
    inject_leak(64, 0);
    let grown = allocated() as i64 - before as i64;
    assert!(grown.abs() < 16 * 1024, "{grown}");
}
