//! `aggregator`: binds its address, serves run control, writes events to disk.

// jemalloc is the global allocator of every DAQ binary (daq-alloc owns it).
use daq_alloc as _;

fn main() -> anyhow::Result<()> {
    Ok(daq_runtime::stage::main::<aggregator::Aggregator>()?)
}
