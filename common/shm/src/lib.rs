//! Shared-memory event store: owns the `/dev/shm` event segments, the single
//! writer ([`ShmStore`]), the destructive readers of the next stage
//! ([`ShmReader`]), the read-only online monitors ([`ShmMonitor`]), and every
//! line of unsafe code the DAQ needs to share a memory-mapped file between
//! threads and processes.
//!
//! # Modules
//!
//! - `layout`: the segment layout (version 1): header and descriptor, state
//!   words, geometry, segment names.
//! - `region`: a mapped segment and every raw-pointer access to it, with the
//!   unsafe invariants that the SAFETY comments of this crate cite by number.
//! - `writer`: [`ShmStore`]: creating the segment, claim, append, publish.
//! - `reader`: [`ShmReader`] and [`ReadGuard`]: take in publication order,
//!   release, recovery of a dead reader's buffers.
//! - `monitor`: [`ShmMonitor`]: untorn (seqlock) copies for online
//!   monitoring.
//! - `link`: [`link::LinkWriter`] and [`link::LinkReader`]: the transport's
//!   ring between a sender and a receiver on one host, with futex wake-ups.
//! - `sys`: the libc calls: clocks, process liveness, futexes, pidfds.
//!
//! # Buffer state machine and ownership
//!
//! ```text
//!   Empty --claim (writer, CAS)--> Writing --publish (writer)--> Full
//!   Full --take (reader, CAS)--> Reading --release (reader, CAS)--> Empty
//!   Reading --recover_stale_reading (CAS, only if the reading pid is dead)--> Full
//!   Reading --guard dropped while panicking (CAS)--> Full
//! ```
//!
//! Only the writer ([`ShmStore`], one per segment, enforced by an exclusive
//! `flock` held for its lifetime) moves a buffer out of Empty or Writing, and
//! only the writer stores into the data of a buffer, and only while that
//! buffer is Writing. A reader stores into a buffer's state word (and its
//! `last_touch_ns`) and nothing else; it reads the data only while its own
//! lease (`Reading | pid << 2`) is in the state word. Monitors never store
//! anything (their mapping is read-only).
//!
//! # Memory ordering
//!
//! * claim: `CAS Empty -> Writing` with Acquire, synchronizing with the
//!   reader's Release CAS that returned the buffer to Empty, so the reader's
//!   reads of the old data happen-before the writer's new stores. The
//!   writer then makes `generation` odd and issues a Release fence before
//!   touching any field or data word.
//! * publish: descriptor fields and data are stored (Relaxed), then
//!   `generation` becomes even with Release, then `state = Full` with
//!   Release, then `published_total` with Release.
//! * take: `CAS Full -> Reading` with Acquire; it reads the value stored by
//!   the writer's Release store or by an RMW of its release sequence (a
//!   recovery CAS), so everything written before publish is visible.
//! * release: `CAS lease -> Empty` with Release (see claim).
//! * monitor (seqlock reader): `g1 = generation` (Acquire), skip if odd,
//!   read fields and data with Relaxed atomic loads, Acquire fence, `g2 =
//!   generation`; the copy is kept only if `g1 == g2`. If any value read
//!   came from a store made after a later claim, that store follows the
//!   writer's Release fence, which therefore synchronizes with the monitor's
//!   Acquire fence and makes the odd generation visible to `g2`.
//!
//! `generation` has a single writer (the store): odd from claim to publish,
//! even otherwise. Taking or releasing a buffer does not change its content,
//! so a released buffer keeps its even generation and a monitor may still
//! copy that event until the writer claims the buffer again.

#![allow(unsafe_code)]

use std::io;
use std::path::PathBuf;

mod layout;
pub mod link;
mod monitor;
mod reader;
mod region;
mod sys;
mod writer;

#[cfg(test)]
mod tests;

pub use layout::{
    BufferState, HeaderInfo, LAYOUT_VERSION, MAGIC, SHM_DIR_ENV, StateCounts, StoreSpec,
    segment_path, segment_path_in, shm_dir,
};
pub use monitor::{MonitoredEvent, ShmMonitor};
pub use reader::{ReadGuard, ShmReader};
pub use sys::{boot_id, pidfd_open};
pub use writer::{ShmStore, remove_abandoned};

/// Everything that can go wrong creating, attaching to or writing a store.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("invalid store spec: {0}")]
    InvalidSpec(&'static str),
    #[error("invalid segment path {}", path.display())]
    InvalidPath { path: PathBuf },
    #[error("segment {} is in use by live process {pid}", path.display())]
    InUse { path: PathBuf, pid: u32 },
    #[error("cannot create segment {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot lock segment {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot replace stale segment {}: {source}", path.display())]
    ReplaceStale { path: PathBuf, source: io::Error },
    #[error("cannot open segment {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot map segment {}: {source}", path.display())]
    Map { path: PathBuf, source: io::Error },
    #[error("segment {} is not initialized yet", path.display())]
    NotReady { path: PathBuf },
    #[error("segment {} is truncated: {len} bytes, shorter than its 128-byte header", path.display())]
    Truncated { path: PathBuf, len: u64 },
    #[error("segment {} has bad magic {found:#018x}", path.display())]
    BadMagic { path: PathBuf, found: u64 },
    #[error("segment {} has layout version {found}, expected {expected}", path.display())]
    VersionMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("segment {} has inconsistent geometry: {reason}", path.display())]
    BadGeometry { path: PathBuf, reason: &'static str },
    #[error("segment {} is {actual} bytes, its header says {expected}", path.display())]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("segment {} has a corrupt descriptor {idx}: {reason}", path.display())]
    BadDescriptor {
        path: PathBuf,
        idx: usize,
        reason: String,
    },
    #[error("{len} bytes do not fit buffer {idx}: {used} of {capacity} bytes used")]
    TooLarge {
        idx: usize,
        len: usize,
        used: usize,
        capacity: usize,
    },
    #[error("no buffer {idx}: the store has {count}")]
    NoSuchBuffer { idx: usize, count: usize },
    #[error("buffer {idx} is {state:?}, not writing")]
    NotWriting { idx: usize, state: BufferState },
}
