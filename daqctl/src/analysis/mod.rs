//! Heap analysis of run records, run or not by this daqctl: the heap
//! table, comparisons and verdicts across runs and growing call sites
//! (`heap`), the soak trend and verdicts (`soak`), the robust trend and
//! the thresholds they share (`trend`), memory-over-time plots (`plot`) and
//! the run report page (`report`).

pub mod heap;
pub mod plot;
pub mod report;
pub mod soak;
pub mod trend;
