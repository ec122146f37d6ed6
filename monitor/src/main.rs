//! `monitor`: binds its address, serves run control, reads an aggregator's
//! store and serves its live page.

// jemalloc is the global allocator of every DAQ binary (daq-alloc owns it).
use daq_alloc as _;

fn main() -> anyhow::Result<()> {
    Ok(daq_runtime::stage::main::<monitor::Monitor>()?)
}
