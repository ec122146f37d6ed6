//! Shared-memory event store: owns the layout of the `/dev/shm` event
//! segments, the single writer ([`ShmStore`]), the destructive readers of the
//! next stage ([`ShmReader`]), the read-only online monitors
//! ([`ShmMonitor`]), and every line of unsafe code the DAQ needs to share a
//! memory-mapped file between threads and processes.
//!
//! # Segment layout (version 1)
//!
//! One file, `daq-p<partition>-<process>-events` (see [`segment_path`]),
//! mode 0600, mapped `MAP_SHARED` with `memmap2`. Every section starts on a
//! 64-byte boundary; all integers are little endian (the module refuses to
//! compile for big-endian targets, since fields are accessed as native
//! atomics):
//!
//! ```text
//! offset 0     header, 128 bytes
//!   0  magic            u64  "DAQSHM01"
//!   8  version          u32  1
//!  12  buffer_count     u32
//!  16  buffer_bytes     u64  capacity of one buffer
//!  24  owner_pid        u32  pid of the writer process
//!  28  ready            u32  1 once the header is complete (stored last, Release)
//!  32  created_unix_ns  u64
//!  40  published_total  u64  number of publications so far (= highest publish_seq)
//!  48  closed           u32  1 once the writer has dropped its store
//!  52  descriptor_bytes u32  64
//!  56  buffer_stride    u64  buffer_bytes rounded up to 64
//!  64  data_offset      u64  128 + 64 * buffer_count
//!  72  total_bytes      u64  data_offset + buffer_stride * buffer_count = file size
//!  80  reserved (zero)
//! offset 128   descriptor table, 64 bytes per buffer
//!   0  state            u32  bits 0-1: Empty=0 Writing=1 Full=2 Reading=3;
//!                            bits 2-31: pid of the Reading process (0 = unknown)
//!   4  flags            u32  bit 0: complete
//!   8  sequence_id      u64
//!  16  fragment_count   u32
//!  20  expected_count   u32
//!  24  data_len         u64  bytes used in the buffer
//!  32  last_touch_ns    u64  CLOCK_MONOTONIC ns (system wide, so comparable between processes)
//!  40  generation       u64  seqlock: odd while the writer owns the buffer
//!  48  publish_seq      u64  publication order, 1-based; 0 while being written
//!  56  reserved
//! offset data_offset   buffer i at data_offset + i * buffer_stride
//! ```
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
//!
//! # Unsafe invariants
//!
//! 1. The mapping (a `memmap2` map or, in tests, a heap block) lives in a
//!    `Region` behind an `Arc`; every handle ([`ShmStore`], [`ShmReader`],
//!    [`ShmMonitor`], [`ReadGuard`] through its borrow) keeps it alive, so a
//!    reader may outlive the store: the file name is unlinked when the store
//!    drops, the memory when the last handle drops.
//! 2. Header, descriptors and data words are only accessed through
//!    `AtomicU32`/`AtomicU64` references. Any bit pattern is a valid atomic
//!    and the base is 64-byte aligned (page-aligned mmap), offsets are
//!    multiples of 8 and checked against the mapping length, so the
//!    references are valid for the life of the region. Concurrent atomic
//!    accesses, from any thread or process, are never a data race.
//! 3. The only non-atomic access is the `&[u8]` a [`ReadGuard`] hands out.
//!    While it exists the guard's lease is in the state word: the writer
//!    stores data only into buffers it claimed from Empty, other readers
//!    only CAS from Full, and recovery only revokes leases whose pid is dead
//!    (ours is alive while the guard exists). So nobody stores into those
//!    bytes while the slice lives; concurrent monitor loads are reads.
//! 4. The writer writes data with 8-byte atomic stores at 8-byte aligned
//!    addresses (partial words by read-merge-write of its own word), and
//!    monitors load the same words, so all racing accesses are same-size
//!    atomics.
//! 5. Monitors map the file read-only and only perform plain atomic loads
//!    (at most 8 bytes, natively supported), which Rust allows on
//!    read-only memory.
//! 6. Processes must cooperate: a foreign process that truncates the file
//!    makes accesses fault (SIGBUS), one that ignores the state machine can
//!    hand a reader torn data. Nothing in this module ever resizes the file
//!    after it is linked into place. All attached processes must share a pid
//!    namespace (leases and owners are pids).

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memmap2::{Mmap, MmapMut, MmapOptions};

#[cfg(not(target_endian = "little"))]
compile_error!("the shared-memory layout is little endian and accessed through native atomics");

/// `"DAQSHM01"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DAQSHM01");
/// Layout version written into (and required from) the header.
pub const LAYOUT_VERSION: u32 = 1;
/// Environment variable that replaces `/dev/shm` in [`segment_path`].
pub const SHM_DIR_ENV: &str = "DAQ_SHM_DIR";

const DEFAULT_SHM_DIR: &str = "/dev/shm";
const HEADER_BYTES: usize = 128;
const DESCRIPTOR_BYTES: usize = 64;
const SECTION_ALIGN: usize = 64;
const MAX_BUFFER_COUNT: u32 = 1 << 16;
const MAX_BUFFER_BYTES: u64 = 1 << 40;

const ST_EMPTY: u32 = 0;
const ST_WRITING: u32 = 1;
const ST_FULL: u32 = 2;
const ST_READING: u32 = 3;
const STATE_MASK: u32 = 3;
const PID_SHIFT: u32 = 2;
const FLAG_COMPLETE: u32 = 1;

/// Header at offset 0 (see the module docs for the field table).
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    buffer_count: AtomicU32,
    buffer_bytes: AtomicU64,
    owner_pid: AtomicU32,
    ready: AtomicU32,
    created_unix_ns: AtomicU64,
    published_total: AtomicU64,
    closed: AtomicU32,
    descriptor_bytes: AtomicU32,
    buffer_stride: AtomicU64,
    data_offset: AtomicU64,
    total_bytes: AtomicU64,
    _reserved: [AtomicU64; 6],
}

/// One descriptor per buffer, in the table at offset [`HEADER_BYTES`].
#[repr(C)]
struct Descriptor {
    state: AtomicU32,
    flags: AtomicU32,
    sequence_id: AtomicU64,
    fragment_count: AtomicU32,
    expected_count: AtomicU32,
    data_len: AtomicU64,
    last_touch_ns: AtomicU64,
    generation: AtomicU64,
    publish_seq: AtomicU64,
    _reserved: AtomicU64,
}

const _: () = {
    assert!(std::mem::size_of::<Header>() == HEADER_BYTES);
    assert!(std::mem::align_of::<Header>() <= SECTION_ALIGN);
    assert!(std::mem::offset_of!(Header, owner_pid) == 24);
    assert!(std::mem::offset_of!(Header, ready) == 28);
    assert!(std::mem::offset_of!(Header, published_total) == 40);
    assert!(std::mem::offset_of!(Header, total_bytes) == 72);
    assert!(std::mem::size_of::<Descriptor>() == DESCRIPTOR_BYTES);
    assert!(std::mem::align_of::<Descriptor>() <= SECTION_ALIGN);
    assert!(std::mem::offset_of!(Descriptor, sequence_id) == 8);
    assert!(std::mem::offset_of!(Descriptor, generation) == 40);
    assert!(std::mem::offset_of!(Descriptor, publish_seq) == 48);
    assert!(std::mem::align_of::<AtomicU64>() == 8);
};

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

/// Size of a store: how many buffers and how many bytes each holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSpec {
    pub buffer_count: u32,
    pub buffer_bytes: u64,
}

/// State of one buffer (bits 0-1 of its descriptor's state word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum BufferState {
    Empty = 0,
    Writing = 1,
    Full = 2,
    Reading = 3,
}

impl BufferState {
    fn from_word(word: u32) -> Self {
        match word & STATE_MASK {
            ST_EMPTY => Self::Empty,
            ST_WRITING => Self::Writing,
            ST_FULL => Self::Full,
            _ => Self::Reading,
        }
    }
}

/// Buffers per state, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub empty: u32,
    pub writing: u32,
    pub full: u32,
    pub reading: u32,
}

impl StateCounts {
    /// Buffers the writer can claim.
    pub fn available(&self) -> u32 {
        self.empty
    }
    /// Events being assembled (not yet published).
    pub fn pending(&self) -> u32 {
        self.writing
    }
    /// Published events waiting for, or held by, the next stage.
    pub fn occupied(&self) -> u32 {
        self.full + self.reading
    }
}

/// The header as seen by an attached process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    pub buffer_count: u32,
    pub buffer_bytes: u64,
    pub owner_pid: u32,
    pub published_total: u64,
    pub created_unix_ns: u64,
    /// The writer has dropped its store (no more events will come).
    pub closed: bool,
}

/// One event copied out by a monitor, guaranteed untorn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitoredEvent {
    pub sequence_id: u64,
    pub fragment_count: u32,
    pub expected: u32,
    pub complete: bool,
    pub publish_seq: u64,
    pub data: Vec<u8>,
}

/// `/dev/shm/daq-p<partition>-<process>-events`, or the same name in the
/// directory named by `DAQ_SHM_DIR` when that is set and not empty.
pub fn segment_path(partition: u32, process: &str) -> PathBuf {
    let dir = std::env::var_os(SHM_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SHM_DIR), PathBuf::from);
    segment_path_in(&dir, partition, process)
}

/// The segment name in `dir`; `/` and NUL in `process` become `_`.
pub fn segment_path_in(dir: &Path, partition: u32, process: &str) -> PathBuf {
    let process: String = process
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    dir.join(format!("daq-p{partition}-{process}-events"))
}

/// Sizes and offsets derived from a [`StoreSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    buffer_count: usize,
    buffer_bytes: usize,
    stride: usize,
    data_offset: usize,
    total: usize,
}

impl Geometry {
    /// A geometry with no buffers, used while a header is being validated.
    const HEADER_ONLY: Self = Self {
        buffer_count: 0,
        buffer_bytes: 0,
        stride: 0,
        data_offset: HEADER_BYTES,
        total: HEADER_BYTES,
    };

    fn new(spec: StoreSpec) -> Result<Self, ShmError> {
        if spec.buffer_count == 0 {
            return Err(ShmError::InvalidSpec("buffer_count must be at least 1"));
        }
        if spec.buffer_count > MAX_BUFFER_COUNT {
            return Err(ShmError::InvalidSpec("buffer_count must be at most 65536"));
        }
        if spec.buffer_bytes == 0 {
            return Err(ShmError::InvalidSpec("buffer_bytes must be at least 1"));
        }
        if spec.buffer_bytes > MAX_BUFFER_BYTES {
            return Err(ShmError::InvalidSpec("buffer_bytes must be at most 1 TiB"));
        }
        let too_big = || ShmError::InvalidSpec("segment does not fit the address space");
        let buffer_count = spec.buffer_count as usize;
        let buffer_bytes = usize::try_from(spec.buffer_bytes).map_err(|_| too_big())?;
        let stride = buffer_bytes
            .checked_next_multiple_of(SECTION_ALIGN)
            .ok_or_else(too_big)?;
        let data_offset = HEADER_BYTES + DESCRIPTOR_BYTES * buffer_count;
        let total = stride
            .checked_mul(buffer_count)
            .and_then(|d| d.checked_add(data_offset))
            .filter(|&t| isize::try_from(t).is_ok())
            .ok_or_else(too_big)?;
        Ok(Self {
            buffer_count,
            buffer_bytes,
            stride,
            data_offset,
            total,
        })
    }
}

/// What keeps the memory of a [`Region`] alive (held, never read).
#[allow(dead_code)]
enum Backing {
    ReadWrite(MmapMut),
    ReadOnly(Mmap),
    #[cfg(test)]
    Heap(HeapBlock),
}

/// A mapped segment: base pointer, geometry and the owner of the memory.
/// Shared behind an `Arc` by every handle onto the same mapping.
struct Region {
    base: NonNull<u8>,
    len: usize,
    geo: Geometry,
    _backing: Backing,
}

// SAFETY: the region is a plain block of memory that stays mapped until the
// Region drops. Everything shared through it is accessed through atomics,
// except the data slice of a ReadGuard, whose exclusivity against writes is
// guaranteed by the buffer state machine (module docs, invariant 3), which is
// the same whether the other party is a thread or a process.
unsafe impl Send for Region {}
// SAFETY: as for Send; `&Region` only exposes atomics and raw pointers.
unsafe impl Sync for Region {}

impl Region {
    /// `geo` must be `HEADER_ONLY` or describe exactly `map.len()` bytes.
    fn from_rw(mut map: MmapMut, geo: Geometry) -> Option<Self> {
        let len = map.len();
        let base = NonNull::new(map.as_mut_ptr())?;
        debug_assert!(geo.buffer_count == 0 || geo.total == len);
        Some(Self {
            base,
            len,
            geo,
            _backing: Backing::ReadWrite(map),
        })
    }

    /// As `from_rw`. Never written through: a read-only region is only used
    /// by monitors, which only load.
    fn from_ro(map: Mmap, geo: Geometry) -> Option<Self> {
        let len = map.len();
        let base = NonNull::new(map.as_ptr().cast_mut())?;
        debug_assert!(geo.buffer_count == 0 || geo.total == len);
        Some(Self {
            base,
            len,
            geo,
            _backing: Backing::ReadOnly(map),
        })
    }

    fn header(&self) -> &Header {
        assert!(self.len >= HEADER_BYTES, "region smaller than its header");
        // SAFETY: base is page aligned (mmap) or 64-byte aligned (heap), the
        // first HEADER_BYTES are mapped (checked above), Header consists only
        // of atomics (valid for every bit pattern, interior mutability), and
        // the memory lives as long as `self` (invariants 1, 2).
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    fn desc(&self, idx: usize) -> &Descriptor {
        assert!(idx < self.geo.buffer_count, "descriptor index out of range");
        let off = HEADER_BYTES + idx * DESCRIPTOR_BYTES;
        assert!(
            off + DESCRIPTOR_BYTES <= self.len,
            "descriptor outside the mapping"
        );
        // SAFETY: the geometry was validated against the mapping length, so
        // the descriptor lies inside the mapping; the offset is a multiple of
        // 64 from an aligned base; Descriptor consists only of atomics
        // (invariant 2).
        unsafe { self.base.add(off).cast::<Descriptor>().as_ref() }
    }

    fn buffer_offset(&self, idx: usize) -> usize {
        assert!(idx < self.geo.buffer_count, "buffer index out of range");
        self.geo.data_offset + idx * self.geo.stride
    }

    /// Buffer `idx` as 8-byte atomic words (its whole stride).
    fn words(&self, idx: usize) -> &[AtomicU64] {
        let off = self.buffer_offset(idx);
        assert!(
            off + self.geo.stride <= self.len,
            "buffer outside the mapping"
        );
        // SAFETY: the buffer lies inside the mapping (validated geometry),
        // starts 64-byte aligned and its stride is a multiple of 64; AtomicU64
        // is valid for every bit pattern and shared references to atomics
        // allow concurrent atomic access (invariants 2, 4).
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(off).cast::<AtomicU64>().as_ptr(),
                self.geo.stride / 8,
            )
        }
    }

    fn data_ptr(&self, idx: usize) -> *const u8 {
        let off = self.buffer_offset(idx);
        assert!(
            off + self.geo.stride <= self.len,
            "buffer outside the mapping"
        );
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.base.add(off).as_ptr().cast_const() }
    }

    /// Writes the header of a fresh, zero-filled segment; `ready` last.
    fn init(&self, spec: StoreSpec, owner_pid: u32) {
        let h = self.header();
        let g = self.geo;
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.buffer_count.store(spec.buffer_count, Ordering::Relaxed);
        h.buffer_bytes.store(spec.buffer_bytes, Ordering::Relaxed);
        h.owner_pid.store(owner_pid, Ordering::Relaxed);
        h.created_unix_ns.store(unix_ns(), Ordering::Relaxed);
        h.published_total.store(0, Ordering::Relaxed);
        h.closed.store(0, Ordering::Relaxed);
        h.descriptor_bytes
            .store(DESCRIPTOR_BYTES as u32, Ordering::Relaxed);
        h.buffer_stride.store(g.stride as u64, Ordering::Relaxed);
        h.data_offset.store(g.data_offset as u64, Ordering::Relaxed);
        h.total_bytes.store(g.total as u64, Ordering::Relaxed);
        // Descriptors are all zero: Empty, generation 0 (even, no content),
        // publish_seq 0 (never published).
        h.ready.store(1, Ordering::Release);
    }

    /// Maps an existing segment and validates its header.
    fn attach(path: &Path, writable: bool) -> Result<Self, ShmError> {
        let open_err = |source| ShmError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(open_err)?;
        let file_len = file.metadata().map_err(open_err)?.len();
        if file_len < HEADER_BYTES as u64 {
            return Err(ShmError::NotReady {
                path: path.to_path_buf(),
            });
        }
        let len = usize::try_from(file_len).map_err(|_| ShmError::BadGeometry {
            path: path.to_path_buf(),
            reason: "file does not fit the address space",
        })?;
        let map_err = |source| ShmError::Map {
            path: path.to_path_buf(),
            source,
        };
        let mut region = if writable {
            // SAFETY: the file is shared with other processes by design; all
            // shared accesses follow invariants 2-4, and nobody in this
            // module resizes it (invariant 6).
            let map = unsafe { MmapOptions::new().len(len).map_mut(&file) }.map_err(map_err)?;
            Self::from_rw(map, Geometry::HEADER_ONLY)
        } else {
            // SAFETY: as above; the mapping is read-only and only loaded from
            // (invariant 5).
            let map = unsafe { MmapOptions::new().len(len).map(&file) }.map_err(map_err)?;
            Self::from_ro(map, Geometry::HEADER_ONLY)
        }
        .ok_or_else(|| map_err(io::Error::other("mmap returned a null pointer")))?;
        region.geo = region.validate(path)?;
        Ok(region)
    }

    /// Checks magic, version, readiness and geometry against the mapping.
    fn validate(&self, path: &Path) -> Result<Geometry, ShmError> {
        let h = self.header();
        let path_buf = || path.to_path_buf();
        let magic = h.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            // An all-zero header is a file somebody is still initializing.
            return Err(if magic == 0 {
                ShmError::NotReady { path: path_buf() }
            } else {
                ShmError::BadMagic {
                    path: path_buf(),
                    found: magic,
                }
            });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(ShmError::VersionMismatch {
                path: path_buf(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        // Acquire: pairs with the Release store in `init`.
        if h.ready.load(Ordering::Acquire) != 1 {
            return Err(ShmError::NotReady { path: path_buf() });
        }
        let spec = StoreSpec {
            buffer_count: h.buffer_count.load(Ordering::Relaxed),
            buffer_bytes: h.buffer_bytes.load(Ordering::Relaxed),
        };
        let geo = Geometry::new(spec).map_err(|_| ShmError::BadGeometry {
            path: path_buf(),
            reason: "buffer count or size out of range",
        })?;
        let bad = |reason| ShmError::BadGeometry {
            path: path_buf(),
            reason,
        };
        if h.descriptor_bytes.load(Ordering::Relaxed) as usize != DESCRIPTOR_BYTES {
            return Err(bad("descriptor size differs"));
        }
        if h.buffer_stride.load(Ordering::Relaxed) != geo.stride as u64 {
            return Err(bad("buffer stride differs"));
        }
        if h.data_offset.load(Ordering::Relaxed) != geo.data_offset as u64 {
            return Err(bad("data offset differs"));
        }
        let expected = h.total_bytes.load(Ordering::Relaxed);
        if expected != geo.total as u64 || self.len != geo.total {
            return Err(ShmError::SizeMismatch {
                path: path_buf(),
                expected: geo.total as u64,
                actual: self.len as u64,
            });
        }
        Ok(geo)
    }

    fn counts(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for idx in 0..self.geo.buffer_count {
            match BufferState::from_word(self.desc(idx).state.load(Ordering::Relaxed)) {
                BufferState::Empty => c.empty += 1,
                BufferState::Writing => c.writing += 1,
                BufferState::Full => c.full += 1,
                BufferState::Reading => c.reading += 1,
            }
        }
        c
    }

    fn header_info(&self) -> HeaderInfo {
        let h = self.header();
        HeaderInfo {
            buffer_count: h.buffer_count.load(Ordering::Relaxed),
            buffer_bytes: h.buffer_bytes.load(Ordering::Relaxed),
            owner_pid: h.owner_pid.load(Ordering::Relaxed),
            published_total: h.published_total.load(Ordering::Acquire),
            created_unix_ns: h.created_unix_ns.load(Ordering::Relaxed),
            closed: h.closed.load(Ordering::Acquire) != 0,
        }
    }

    fn spec(&self) -> StoreSpec {
        StoreSpec {
            buffer_count: self.geo.buffer_count as u32,
            buffer_bytes: self.geo.buffer_bytes as u64,
        }
    }
}

/// Heap memory standing in for a mapping, so the state machine and the
/// atomics can be exercised under Miri (which cannot map files).
#[cfg(test)]
struct HeapBlock {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

#[cfg(test)]
impl Region {
    fn heap(geo: Geometry) -> Self {
        let layout = std::alloc::Layout::from_size_align(geo.total, SECTION_ALIGN)
            .unwrap_or_else(|_| panic!("bad test layout"));
        // SAFETY: layout has non-zero size (geometry has at least a header).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self {
            base: ptr,
            len: geo.total,
            geo,
            _backing: Backing::Heap(HeapBlock { ptr, layout }),
        }
    }
}

#[cfg(test)]
impl Drop for HeapBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `Region::heap` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: system wide, so last-touch times written by
/// one process can be aged by another on the same host.
fn monotonic_ns() -> u64 {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts` is valid for writes of one timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: clock_gettime returned 0, so it initialized `ts`.
    let ts = unsafe { ts.assume_init() };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The clock of last-touch times: CLOCK_MONOTONIC, plus (in tests) a
/// per-thread offset that lets tests age buffers without sleeping.
fn now_ns() -> u64 {
    #[cfg(test)]
    let skew = test_clock::SKEW_NS.with(|s| s.get());
    #[cfg(not(test))]
    let skew = 0;
    monotonic_ns().saturating_add(skew)
}

#[cfg(test)]
mod test_clock {
    thread_local! {
        pub(super) static SKEW_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Moves this thread's clock `d` forward.
    pub(super) fn advance(d: std::time::Duration) {
        SKEW_NS.with(|s| s.set(s.get().saturating_add(super::duration_ns(d))));
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether `pid` names a live process (an existing one we may not signal
/// counts as live). 0 and out-of-range pids are not live.
fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    if cfg!(miri) {
        // Miri cannot call kill(2); in tests every other pid counts as dead.
        return pid == std::process::id();
    }
    // SAFETY: signal 0 only checks existence and permission; nothing is sent.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The state word of a buffer leased to `pid` (pid 0 = unknown, never
/// recovered; pids that do not fit 30 bits are stored as unknown).
fn lease_word(pid: u32) -> u32 {
    if pid < (1 << (32 - PID_SHIFT)) {
        ST_READING | (pid << PID_SHIFT)
    } else {
        ST_READING
    }
}

/// Stores `src` at byte `off` of a buffer with 8-byte atomic stores. The
/// caller owns the buffer (Writing) and checked `off + src.len()` against
/// its capacity. Partial words are read, merged and written back.
fn write_bytes(words: &[AtomicU64], off: usize, src: &[u8]) {
    let mut pos = off;
    let mut rest = src;
    let head = pos % 8;
    if head != 0 && !rest.is_empty() {
        let n = (8 - head).min(rest.len());
        let w = &words[pos / 8];
        let mut b = w.load(Ordering::Relaxed).to_ne_bytes();
        b[head..head + n].copy_from_slice(&rest[..n]);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        pos += n;
        rest = &rest[n..];
    }
    let mut chunks = rest.chunks_exact(8);
    let first = pos / 8;
    let mut full = 0;
    for (w, c) in words[first..].iter().zip(&mut chunks) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        full += 1;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let w = &words[first + full];
        let mut b = w.load(Ordering::Relaxed).to_ne_bytes();
        b[..tail.len()].copy_from_slice(tail);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
}

/// Copies the first `len` bytes of a buffer with 8-byte atomic loads.
fn read_bytes(words: &[AtomicU64], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    for w in &words[..len.div_ceil(8)] {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    out.truncate(len);
    out
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The owner pid in the header of an existing file, 0 if unreadable.
fn read_owner_pid(file: &File) -> u32 {
    let mut buf = [0u8; 32];
    if file.read_exact_at(&mut buf, 0).is_err() {
        return 0;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[0..8]);
    if u64::from_le_bytes(word) != MAGIC {
        return 0;
    }
    let mut pid = [0u8; 4];
    pid.copy_from_slice(&buf[24..28]);
    u32::from_le_bytes(pid)
}

enum Existing {
    /// The name vanished (or changed) while we looked: try again.
    Gone,
    /// Somebody holds the owner lock.
    Live { pid: u32 },
    /// Nobody holds the lock: the owner is dead. We now hold it.
    Stale(File),
}

fn probe_existing(path: &Path) -> Result<Existing, ShmError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Gone),
        Err(source) => {
            return Err(ShmError::Open {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match file.try_lock() {
        Ok(()) if same_file(&file, path) => Ok(Existing::Stale(file)),
        Ok(()) => Ok(Existing::Gone),
        Err(TryLockError::WouldBlock) => Ok(Existing::Live {
            pid: read_owner_pid(&file),
        }),
        Err(TryLockError::Error(source)) => Err(ShmError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The single writer of a segment. Holds an exclusive `flock` on the file
/// for its lifetime (that lock, not the pid, is what makes a segment "in
/// use"), and unlinks the file on drop.
pub struct ShmStore {
    region: Arc<Region>,
    path: PathBuf,
    /// Holds the owner lock; `None` only for in-memory test stores.
    file: Option<File>,
    replaced_stale: bool,
    /// Writing buffers by sequence id.
    open: HashMap<u64, usize>,
    /// Where the next claim starts looking, to rotate through the buffers.
    cursor: usize,
}

impl std::fmt::Debug for ShmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmStore")
            .field("path", &self.path)
            .field("spec", &self.spec())
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

impl ShmStore {
    /// Creates the segment at `path` (mode 0600). The segment is built under
    /// a temporary name in the same directory and linked into place only
    /// once initialized and locked, so nobody ever sees half of it.
    ///
    /// If `path` exists and its owner lock is held (a live store, in this or
    /// another process) this fails with [`ShmError::InUse`] carrying the
    /// owner pid from its header. Otherwise its owner died: it is atomically
    /// replaced and [`ShmStore::replaced_stale`] returns true. (Two
    /// processes racing to create the same name is a configuration error;
    /// the checks narrow that race but cannot close it.)
    pub fn create(path: &Path, spec: StoreSpec) -> Result<Self, ShmError> {
        let geo = Geometry::new(spec)?;
        let invalid = || ShmError::InvalidPath {
            path: path.to_path_buf(),
        };
        let name = path.file_name().ok_or_else(invalid)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = Self::create_via(path, &tmp, spec, geo);
        // After a link the temporary name is redundant, after a rename it is
        // gone, after a failure it is garbage: remove it in every case.
        let _ = fs::remove_file(&tmp);
        result
    }

    fn create_via(
        path: &Path,
        tmp: &Path,
        spec: StoreSpec,
        geo: Geometry,
    ) -> Result<Self, ShmError> {
        let create_err = |source| ShmError::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(create_err)?;
        // Exactly 0600 whatever the umask.
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(create_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ShmError::Lock {
                    path: path.to_path_buf(),
                    source: io::Error::from(io::ErrorKind::WouldBlock),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(ShmError::Lock {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        file.set_len(geo.total as u64).map_err(create_err)?;
        // SAFETY: a fresh file of exactly geo.total bytes that we own; it is
        // shared with other processes only through this module's protocol
        // (invariants 2-4) and never resized again (invariant 6).
        let map =
            unsafe { MmapOptions::new().len(geo.total).map_mut(&file) }.map_err(|source| {
                ShmError::Map {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let region = Region::from_rw(map, geo).ok_or_else(|| ShmError::Map {
            path: path.to_path_buf(),
            source: io::Error::other("mmap returned a null pointer"),
        })?;
        region.init(spec, std::process::id());

        for _ in 0..8 {
            match fs::hard_link(tmp, path) {
                Ok(()) => return Ok(Self::with_region(region, path, Some(file), false)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(create_err(source)),
            }
            match probe_existing(path)? {
                Existing::Gone => continue,
                Existing::Live { pid } => {
                    return Err(ShmError::InUse {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
                Existing::Stale(old) => {
                    // We hold the dead owner's lock, so no other creator can
                    // be replacing it now; rename swaps the name atomically.
                    fs::rename(tmp, path).map_err(|source| ShmError::ReplaceStale {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    drop(old);
                    return Ok(Self::with_region(region, path, Some(file), true));
                }
            }
        }
        Err(create_err(io::Error::other(
            "the name kept appearing and disappearing",
        )))
    }

    fn with_region(region: Region, path: &Path, file: Option<File>, replaced_stale: bool) -> Self {
        Self {
            region: Arc::new(region),
            path: path.to_path_buf(),
            file,
            replaced_stale,
            open: HashMap::new(),
            cursor: 0,
        }
    }

    /// A store on heap memory instead of a file (tests, Miri).
    #[cfg(test)]
    fn in_memory(spec: StoreSpec) -> Result<Self, ShmError> {
        let region = Region::heap(Geometry::new(spec)?);
        region.init(spec, std::process::id());
        Ok(Self::with_region(region, Path::new(""), None, false))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn spec(&self) -> StoreSpec {
        self.region.spec()
    }

    /// Whether `create` replaced a segment left behind by a dead owner.
    pub fn replaced_stale(&self) -> bool {
        self.replaced_stale
    }

    pub fn header(&self) -> HeaderInfo {
        self.region.header_info()
    }

    /// Current state of buffer `idx`, `None` if out of range.
    pub fn state(&self, idx: usize) -> Option<BufferState> {
        (idx < self.region.geo.buffer_count)
            .then(|| BufferState::from_word(self.region.desc(idx).state.load(Ordering::Relaxed)))
    }

    /// Index of the Writing buffer holding `seq`.
    pub fn lookup(&self, seq: u64) -> Option<usize> {
        self.open.get(&seq).copied()
    }

    /// Claims an Empty buffer for `seq`, expecting `expected` fragments, and
    /// returns its index (now Writing). `None` when no buffer is Empty
    /// (backpressure: the caller waits and retries). If `seq` already has a
    /// Writing buffer, that one is returned unchanged.
    pub fn claim(&mut self, seq: u64, expected: u32) -> Option<usize> {
        if let Some(&idx) = self.open.get(&seq) {
            return Some(idx);
        }
        let count = self.region.geo.buffer_count;
        for k in 0..count {
            let idx = (self.cursor + k) % count;
            let d = self.region.desc(idx);
            // Acquire: pairs with the reader's Release CAS to Empty, so its
            // reads of the old data happen-before our stores below.
            if d.state
                .compare_exchange(ST_EMPTY, ST_WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // Only the writer stores `generation`. Odd = content changing.
            let g = d.generation.load(Ordering::Relaxed);
            d.generation.store(g | 1, Ordering::Relaxed);
            // Orders the odd generation before every field and data store
            // below, for monitors (seqlock writer side).
            fence(Ordering::Release);
            d.sequence_id.store(seq, Ordering::Relaxed);
            d.expected_count.store(expected, Ordering::Relaxed);
            d.fragment_count.store(0, Ordering::Relaxed);
            d.data_len.store(0, Ordering::Relaxed);
            d.flags.store(0, Ordering::Relaxed);
            d.publish_seq.store(0, Ordering::Relaxed);
            d.last_touch_ns.store(now_ns(), Ordering::Relaxed);
            self.open.insert(seq, idx);
            self.cursor = (idx + 1) % count;
            return Some(idx);
        }
        None
    }

    fn writing_desc(region: &Region, idx: usize) -> Result<&Descriptor, ShmError> {
        let count = region.geo.buffer_count;
        if idx >= count {
            return Err(ShmError::NoSuchBuffer { idx, count });
        }
        let d = region.desc(idx);
        let word = d.state.load(Ordering::Relaxed);
        if word != ST_WRITING {
            return Err(ShmError::NotWriting {
                idx,
                state: BufferState::from_word(word),
            });
        }
        Ok(d)
    }

    /// Appends `data` to Writing buffer `idx` and returns its fragment count
    /// now. Fails with [`ShmError::TooLarge`], writing nothing, if the data
    /// would not fit.
    pub fn append(&mut self, idx: usize, data: &[u8]) -> Result<u32, ShmError> {
        let region = &*self.region;
        let d = Self::writing_desc(region, idx)?;
        let capacity = region.geo.buffer_bytes;
        let used = usize::try_from(d.data_len.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        if used > capacity || data.len() > capacity - used {
            return Err(ShmError::TooLarge {
                idx,
                len: data.len(),
                used,
                capacity,
            });
        }
        write_bytes(region.words(idx), used, data);
        d.data_len
            .store((used + data.len()) as u64, Ordering::Relaxed);
        let count = d.fragment_count.load(Ordering::Relaxed).saturating_add(1);
        d.fragment_count.store(count, Ordering::Relaxed);
        d.last_touch_ns.store(now_ns(), Ordering::Relaxed);
        Ok(count)
    }

    /// Publishes Writing buffer `idx`: Writing -> Full, with the complete
    /// flag, the next publish order number, and out of the lookup map.
    pub fn publish(&mut self, idx: usize, complete: bool) -> Result<(), ShmError> {
        let region = &*self.region;
        let d = Self::writing_desc(region, idx)?;
        let h = region.header();
        // Only the writer stores published_total.
        let n = h.published_total.load(Ordering::Relaxed) + 1;
        d.flags
            .store(if complete { FLAG_COMPLETE } else { 0 }, Ordering::Relaxed);
        d.publish_seq.store(n, Ordering::Relaxed);
        d.last_touch_ns.store(now_ns(), Ordering::Relaxed);
        let g = d.generation.load(Ordering::Relaxed);
        // Release: data and fields above are visible to a monitor that
        // Acquire-loads this even generation.
        d.generation
            .store((g | 1).wrapping_add(1), Ordering::Release);
        // Release: ... and to the reader whose CAS Acquires Full.
        d.state.store(ST_FULL, Ordering::Release);
        // Release: a monitor that sees n also sees the buffer Full.
        h.published_total.store(n, Ordering::Release);
        let seq = d.sequence_id.load(Ordering::Relaxed);
        if self.open.get(&seq) == Some(&idx) {
            self.open.remove(&seq);
        } else {
            self.open.retain(|_, &mut i| i != idx);
        }
        Ok(())
    }

    /// Writing buffers last touched at least `age` ago, oldest first, as
    /// `(index, sequence id)`. The caller publishes them as incomplete.
    pub fn stale_writing(&self, age: Duration) -> Vec<(usize, u64)> {
        let now = now_ns();
        let age = duration_ns(age);
        let mut stale: Vec<(u64, usize, u64)> = self
            .open
            .iter()
            .filter_map(|(&seq, &idx)| {
                let touched = self.region.desc(idx).last_touch_ns.load(Ordering::Relaxed);
                (now.saturating_sub(touched) >= age).then_some((touched, idx, seq))
            })
            .collect();
        stale.sort_unstable();
        stale.into_iter().map(|(_, idx, seq)| (idx, seq)).collect()
    }

    /// Buffers per state.
    pub fn counts(&self) -> StateCounts {
        self.region.counts()
    }

    /// A destructive reader on this mapping, for another thread or task.
    pub fn reader(&self) -> ShmReader {
        ShmReader {
            region: Arc::clone(&self.region),
            pid: std::process::id(),
        }
    }

    /// A non-destructive monitor on this mapping (in-process monitoring).
    pub fn monitor(&self) -> ShmMonitor {
        ShmMonitor::with_region(Arc::clone(&self.region))
    }
}

impl Drop for ShmStore {
    fn drop(&mut self) {
        self.region.header().closed.store(1, Ordering::Release);
        if let Some(file) = &self.file {
            // Only remove the name if it is still ours.
            if same_file(file, &self.path) {
                let _ = fs::remove_file(&self.path);
            }
        }
        // `file` drops after this, releasing the owner lock.
    }
}

/// Destructive reader for the next stage: takes Full buffers in publication
/// order. Cheap to clone; every clone keeps the mapping alive, so it may
/// outlive the [`ShmStore`] it came from (the file name is gone then, the
/// memory is not).
#[derive(Clone)]
pub struct ShmReader {
    region: Arc<Region>,
    pid: u32,
}

impl std::fmt::Debug for ShmReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmReader")
            .field("spec", &self.region.spec())
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl ShmReader {
    /// Attaches a destructive reader to an existing segment from another
    /// process (maps it read-write; only state words and touch times are
    /// ever stored).
    pub fn attach(path: &Path) -> Result<Self, ShmError> {
        Ok(Self {
            region: Arc::new(Region::attach(path, true)?),
            pid: std::process::id(),
        })
    }

    /// Takes the oldest published Full buffer (CAS Full -> Reading). The
    /// guard gives its data; dropping it (or [`ReadGuard::release`]) makes
    /// the buffer Empty. `None` when nothing is Full.
    pub fn take(&self) -> Option<ReadGuard<'_>> {
        let region = &*self.region;
        loop {
            // Acquire: the Full state of every publication up to `total` is
            // visible to the scan, so the oldest untaken one among them is
            // really the oldest (later ones wait for the next round).
            let total = region.header().published_total.load(Ordering::Acquire);
            let mut best: Option<(u64, usize)> = None;
            let mut newer = false;
            for idx in 0..region.geo.buffer_count {
                let d = region.desc(idx);
                // Acquire: makes the publish_seq stored before Full visible.
                if d.state.load(Ordering::Acquire) == ST_FULL {
                    let p = d.publish_seq.load(Ordering::Relaxed);
                    if p > total {
                        newer = true;
                    } else if best.is_none_or(|(bp, _)| p < bp) {
                        best = Some((p, idx));
                    }
                }
            }
            let Some((_, idx)) = best else {
                if newer {
                    continue; // published after we read `total`
                }
                return None;
            };
            let d = region.desc(idx);
            let lease = lease_word(self.pid);
            // Acquire: reads the writer's Release store of Full, or a value
            // from its release sequence (recovery CAS), so the data and the
            // fields written before publish are visible.
            if d.state
                .compare_exchange(ST_FULL, lease, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue; // another reader was faster; look again
            }
            d.last_touch_ns.store(now_ns(), Ordering::Relaxed);
            let len = usize::try_from(d.data_len.load(Ordering::Relaxed))
                .unwrap_or(usize::MAX)
                .min(region.geo.buffer_bytes);
            return Some(ReadGuard {
                region,
                idx,
                lease,
                sequence_id: d.sequence_id.load(Ordering::Relaxed),
                fragment_count: d.fragment_count.load(Ordering::Relaxed),
                expected: d.expected_count.load(Ordering::Relaxed),
                complete: d.flags.load(Ordering::Relaxed) & FLAG_COMPLETE != 0,
                publish_seq: d.publish_seq.load(Ordering::Relaxed),
                len,
                done: false,
            });
        }
    }

    /// Returns to Full every Reading buffer whose reading process is dead
    /// and which was taken at least `age` ago, so a dead reader loses
    /// nothing. Leases of live processes (including this one) are never
    /// revoked: their guards may still be reading. Returns how many.
    pub fn recover_stale_reading(&self, age: Duration) -> usize {
        let region = &*self.region;
        let now = now_ns();
        let age = duration_ns(age);
        let mut recovered = 0;
        for idx in 0..region.geo.buffer_count {
            let d = region.desc(idx);
            let word = d.state.load(Ordering::Acquire);
            if word & STATE_MASK != ST_READING {
                continue;
            }
            let pid = word >> PID_SHIFT;
            if pid == 0 || pid == self.pid || pid_alive(pid) {
                continue;
            }
            if now.saturating_sub(d.last_touch_ns.load(Ordering::Relaxed)) < age {
                continue;
            }
            // An RMW: continues the release sequence of the writer's store
            // of Full, so the next taker still synchronizes with the writer.
            if d.state
                .compare_exchange(word, ST_FULL, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                recovered += 1;
            }
        }
        recovered
    }

    /// Buffers per state.
    pub fn counts(&self) -> StateCounts {
        self.region.counts()
    }

    pub fn header(&self) -> HeaderInfo {
        self.region.header_info()
    }

    pub fn spec(&self) -> StoreSpec {
        self.region.spec()
    }

    /// Test hook: leases Full buffer `idx` to `pid` (a reader that then dies).
    #[cfg(test)]
    fn lease_to(&self, idx: usize, pid: u32) -> bool {
        let d = self.region.desc(idx);
        let ok = d
            .state
            .compare_exchange(
                ST_FULL,
                lease_word(pid),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok();
        d.last_touch_ns.store(now_ns(), Ordering::Relaxed);
        ok
    }
}

/// A taken buffer. Its data stays valid and unchanged while the guard
/// lives. Dropping it releases the buffer to Empty, except while the thread
/// is panicking: then it goes back to Full so the event is not lost.
pub struct ReadGuard<'a> {
    region: &'a Region,
    idx: usize,
    lease: u32,
    sequence_id: u64,
    fragment_count: u32,
    expected: u32,
    complete: bool,
    publish_seq: u64,
    len: usize,
    done: bool,
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("idx", &self.idx)
            .field("sequence_id", &self.sequence_id)
            .field("fragment_count", &self.fragment_count)
            .field("expected", &self.expected)
            .field("complete", &self.complete)
            .field("publish_seq", &self.publish_seq)
            .field("len", &self.len)
            .finish()
    }
}

impl ReadGuard<'_> {
    /// The event bytes (all appended fragments, back to back).
    pub fn data(&self) -> &[u8] {
        // SAFETY: len <= buffer_bytes, so the bytes are inside buffer idx of
        // the mapping, which outlives `self.region`'s borrow. Our lease is in
        // the state word until `finish`, which needs `&mut self` and so
        // cannot run while this borrow lives; under the lease nobody stores
        // into the buffer (invariant 3), and the writer's stores
        // happen-before our Acquire CAS in `take`.
        unsafe { std::slice::from_raw_parts(self.region.data_ptr(self.idx), self.len) }
    }
    pub fn sequence_id(&self) -> u64 {
        self.sequence_id
    }
    pub fn fragment_count(&self) -> u32 {
        self.fragment_count
    }
    pub fn expected(&self) -> u32 {
        self.expected
    }
    pub fn complete(&self) -> bool {
        self.complete
    }
    /// Publication order number (1-based).
    pub fn publish_seq(&self) -> u64 {
        self.publish_seq
    }
    /// Buffer index.
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Releases the buffer to Empty now. False if the lease had been
    /// revoked meanwhile (only possible if this process was thought dead).
    pub fn release(mut self) -> bool {
        self.finish(ST_EMPTY)
    }

    fn finish(&mut self, to: u32) -> bool {
        if self.done {
            return false;
        }
        self.done = true;
        // Release: our reads of the data happen-before the claim (Acquire)
        // that lets the writer overwrite it.
        self.region
            .desc(self.idx)
            .state
            .compare_exchange(self.lease, to, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let to = if std::thread::panicking() {
            ST_FULL
        } else {
            ST_EMPTY
        };
        self.finish(to);
    }
}

/// Outcome of one seqlock snapshot.
enum Snapshot {
    Event(MonitoredEvent),
    /// Recycled while we copied: discarded.
    Torn,
    /// Nothing new in this buffer.
    Skip,
}

/// Non-destructive, read-only view of a segment for online monitoring. It
/// never stores into the segment, so it cannot disturb the writer or the
/// readers; an event recycled while being copied is discarded and counted.
pub struct ShmMonitor {
    region: Arc<Region>,
    attached_at: u64,
    last: u64,
    seen: u64,
    missed: u64,
    torn: u64,
}

impl std::fmt::Debug for ShmMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmMonitor")
            .field("attached_at", &self.attached_at)
            .field("last", &self.last)
            .field("seen", &self.seen)
            .field("missed", &self.missed)
            .field("torn", &self.torn)
            .finish_non_exhaustive()
    }
}

impl ShmMonitor {
    /// Maps the segment read-only and checks magic, version, readiness and
    /// size. Events published before this call are not reported.
    pub fn open(path: &Path) -> Result<Self, ShmError> {
        Ok(Self::with_region(Arc::new(Region::attach(path, false)?)))
    }

    fn with_region(region: Arc<Region>) -> Self {
        let at = region.header().published_total.load(Ordering::Acquire);
        Self {
            region,
            attached_at: at,
            last: at,
            seen: 0,
            missed: 0,
            torn: 0,
        }
    }

    /// Events published since the last poll (or since open), in publication
    /// order, each copied out and verified untorn. Publications no longer in
    /// the store, or recycled while being copied, are counted in
    /// [`ShmMonitor::missed`].
    pub fn poll(&mut self) -> Vec<MonitoredEvent> {
        self.poll_with(|_| {})
    }

    /// `poll`, calling `between(idx)` after each copy and before its
    /// validation (a test hook to force torn reads; a no-op otherwise).
    fn poll_with(&mut self, mut between: impl FnMut(usize)) -> Vec<MonitoredEvent> {
        // Acquire: every publication up to `total` has stored its Full state
        // and even generation before this.
        let total = self.region.header().published_total.load(Ordering::Acquire);
        if total <= self.last {
            return Vec::new();
        }
        let mut out = Vec::new();
        for idx in 0..self.region.geo.buffer_count {
            match self.snapshot(idx, total, &mut between) {
                Snapshot::Event(ev) => out.push(ev),
                Snapshot::Torn => self.torn += 1,
                Snapshot::Skip => {}
            }
        }
        out.sort_unstable_by_key(|e| e.publish_seq);
        let new = total - self.last;
        self.seen += out.len() as u64;
        self.missed += new.saturating_sub(out.len() as u64);
        self.last = total;
        out
    }

    fn snapshot(&self, idx: usize, total: u64, between: &mut impl FnMut(usize)) -> Snapshot {
        let region = &*self.region;
        let d = region.desc(idx);
        let g1 = d.generation.load(Ordering::Acquire);
        if g1 & 1 == 1 {
            return Snapshot::Skip; // being rewritten; its old event is gone
        }
        let publish_seq = d.publish_seq.load(Ordering::Relaxed);
        if publish_seq <= self.last || publish_seq > total {
            return Snapshot::Skip;
        }
        let sequence_id = d.sequence_id.load(Ordering::Relaxed);
        let fragment_count = d.fragment_count.load(Ordering::Relaxed);
        let expected = d.expected_count.load(Ordering::Relaxed);
        let flags = d.flags.load(Ordering::Relaxed);
        let len = d.data_len.load(Ordering::Relaxed);
        let data = match usize::try_from(len) {
            Ok(len) if len <= region.geo.buffer_bytes => read_bytes(region.words(idx), len),
            _ => Vec::new(), // a length from a recycle in progress: fails below
        };
        between(idx);
        // Acquire fence: if anything above read a store made after a later
        // claim's Release fence, the odd generation is visible below.
        fence(Ordering::Acquire);
        let g2 = d.generation.load(Ordering::Relaxed);
        if g2 != g1 || data.len() as u64 != len {
            return Snapshot::Torn;
        }
        Snapshot::Event(MonitoredEvent {
            sequence_id,
            fragment_count,
            expected,
            complete: flags & FLAG_COMPLETE != 0,
            publish_seq,
            data,
        })
    }

    /// Publications since attaching that were not returned (recycled before
    /// a poll saw them, or torn while being copied).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Events returned so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Copies discarded because the buffer was recycled during the copy
    /// (each is also counted in `missed`).
    pub fn torn(&self) -> u64 {
        self.torn
    }

    /// `published_total` when this monitor attached.
    pub fn attached_at(&self) -> u64 {
        self.attached_at
    }

    pub fn header(&self) -> HeaderInfo {
        self.region.header_info()
    }

    pub fn counts(&self) -> StateCounts {
        self.region.counts()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    // The tests run on the production allocator, as every binary does.
    use daq_alloc as _;
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader, Read};
    use std::ops::Range;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::Instant;

    const ROLE_ENV: &str = "DAQ_SHM_TEST_ROLE";
    const PATH_ENV: &str = "DAQ_SHM_TEST_PATH";

    // ---------------------------------------------------------------- helpers

    /// A private directory under /dev/shm (or the temp dir), removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let base = if Path::new(DEFAULT_SHM_DIR).is_dir() {
                PathBuf::from(DEFAULT_SHM_DIR)
            } else {
                std::env::temp_dir()
            };
            let dir = base.join(format!(
                "daq-shm-test-{}-{tag}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A store on a file (natively) or on the heap (under Miri).
    struct Fixture {
        store: ShmStore,
        _dir: Option<TestDir>,
    }

    fn fixture(spec: StoreSpec) -> Fixture {
        if cfg!(miri) {
            Fixture {
                store: ShmStore::in_memory(spec).unwrap(),
                _dir: None,
            }
        } else {
            let dir = TestDir::new("unit");
            let store = ShmStore::create(&dir.path("daq-p0-unit-events"), spec).unwrap();
            Fixture {
                store,
                _dir: Some(dir),
            }
        }
    }

    fn spec(buffer_count: u32, buffer_bytes: u64) -> StoreSpec {
        StoreSpec {
            buffer_count,
            buffer_bytes,
        }
    }

    fn publish_one(store: &mut ShmStore, seq: u64, data: &[u8]) -> usize {
        let idx = store.claim(seq, 1).unwrap();
        store.append(idx, data).unwrap();
        store.publish(idx, true).unwrap();
        idx
    }

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        if cfg!(miri) {
            return std::process::id() + 1; // pid_alive treats it as dead
        }
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "no::such::test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    fn generation(store: &ShmStore, idx: usize) -> u64 {
        store.region.desc(idx).generation.load(Ordering::Relaxed)
    }

    // ------------------------------------------------ deterministic events

    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }
    fn expected_frags(seq: u64) -> u32 {
        1 + (seq % 3) as u32
    }
    /// Every 997th event times out after its first fragment.
    fn is_incomplete(seq: u64) -> bool {
        seq % 997 == 5
    }
    fn written_frags(seq: u64) -> u32 {
        if is_incomplete(seq) {
            1
        } else {
            expected_frags(seq)
        }
    }
    /// Fragment `j` of event `seq`: 1..=max bytes of seq-derived noise.
    fn frag_bytes(seq: u64, j: u32, max: usize) -> Vec<u8> {
        let key = seq.wrapping_mul(0x0100_0000_01B3) ^ (u64::from(j) << 56);
        let len = 1 + (mix(key) % max as u64) as usize;
        let mut v = Vec::with_capacity(len + 8);
        let mut k = 0u64;
        while v.len() < len {
            v.extend_from_slice(&mix(key ^ k.wrapping_mul(0x5851_F42D)).to_le_bytes());
            k += 1;
        }
        v.truncate(len);
        v
    }
    fn event_bytes(seq: u64, max: usize) -> Vec<u8> {
        (0..written_frags(seq))
            .flat_map(|j| frag_bytes(seq, j, max))
            .collect()
    }
    fn check_event(seq: u64, frags: u32, expected: u32, complete: bool, data: &[u8], max: usize) {
        assert_eq!(frags, written_frags(seq), "fragment count of {seq}");
        assert_eq!(expected, expected_frags(seq), "expected count of {seq}");
        assert_eq!(complete, !is_incomplete(seq), "complete flag of {seq}");
        assert!(data == event_bytes(seq, max).as_slice(), "content of {seq}");
    }

    /// Writes events `seqs` like an eventbuilder: `group` events open at a
    /// time, fragments interleaved, waiting for buffers when none is Empty.
    /// Returns how often it had to wait.
    fn write_events(
        store: &mut ShmStore,
        seqs: Range<u64>,
        max: usize,
        group: u64,
        deadline: Instant,
    ) -> u64 {
        let mut waits = 0;
        let mut base = seqs.start;
        while base < seqs.end {
            let members: Vec<u64> = (base..(base + group).min(seqs.end)).collect();
            for &s in &members {
                while store.claim(s, expected_frags(s)).is_none() {
                    waits += 1;
                    assert!(Instant::now() < deadline, "writer: no buffer freed in time");
                    std::thread::yield_now();
                }
            }
            for j in 0..3 {
                for &s in &members {
                    if j < written_frags(s) {
                        let idx = store.lookup(s).unwrap();
                        let count = store.append(idx, &frag_bytes(s, j, max)).unwrap();
                        assert_eq!(count, j + 1);
                        if count == written_frags(s) {
                            store.publish(idx, !is_incomplete(s)).unwrap();
                            assert_eq!(store.lookup(s), None);
                        }
                    }
                }
            }
            base += members.len() as u64;
        }
        waits
    }

    /// Takes events until `taken` reaches `n`; checks each. With `ordered`
    /// (a single reader) publication order must be strictly increasing.
    fn drain(
        reader: &ShmReader,
        n: u64,
        taken: &AtomicU64,
        max: usize,
        ordered: bool,
        deadline: Instant,
    ) -> Vec<u64> {
        let mut mine = Vec::new();
        let mut last = 0;
        while taken.load(Ordering::Relaxed) < n {
            match reader.take() {
                Some(g) => {
                    let seq = g.sequence_id();
                    check_event(
                        seq,
                        g.fragment_count(),
                        g.expected(),
                        g.complete(),
                        g.data(),
                        max,
                    );
                    if ordered {
                        assert!(g.publish_seq() > last, "publication order");
                    }
                    last = g.publish_seq();
                    assert!(g.release());
                    mine.push(seq);
                    taken.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    assert!(Instant::now() < deadline, "reader: events missing");
                    std::thread::yield_now();
                }
            }
        }
        mine
    }

    /// Polls until all `n` publications are accounted for; checks each event.
    fn watch(mon: &mut ShmMonitor, n: u64, max: usize, deadline: Instant) {
        let mut publish_seqs = HashSet::new();
        loop {
            let done = mon.header().published_total >= n;
            for ev in mon.poll() {
                check_event(
                    ev.sequence_id,
                    ev.fragment_count,
                    ev.expected,
                    ev.complete,
                    &ev.data,
                    max,
                );
                assert!(
                    publish_seqs.insert(ev.publish_seq),
                    "publication seen twice"
                );
            }
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "monitor: publications missing");
            std::thread::yield_now();
        }
        assert_eq!(mon.seen(), publish_seqs.len() as u64);
        assert_eq!(mon.seen() + mon.missed(), n - mon.attached_at());
        assert!(mon.torn() <= mon.missed());
        // The last publication is never recycled (nothing is written after
        // it), so a monitor attached before the end sees at least that one.
        assert!(mon.attached_at() >= n || mon.seen() >= 1);
    }

    // ------------------------------------------------ child processes

    fn test_name(f: &str) -> String {
        let mp = module_path!();
        let rest = mp.split_once("::").map_or(mp, |(_, r)| r);
        format!("{rest}::{f}")
    }

    /// The role this process plays, when it is a child of a test.
    fn role() -> Option<(String, PathBuf)> {
        Some((
            std::env::var(ROLE_ENV).ok()?,
            PathBuf::from(std::env::var_os(PATH_ENV)?),
        ))
    }

    /// This test binary, re-run for exactly `test`, playing `role`.
    fn child(test: &str, role: &str, path: &Path) -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            test_name(test).as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(PATH_ENV, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    }

    /// A running child; lines it prints starting with `@@` are forwarded.
    struct Proc {
        name: &'static str,
        child: Child,
        marks: mpsc::Receiver<String>,
        out: Option<JoinHandle<String>>,
        err: Option<JoinHandle<String>>,
        exited: bool,
    }

    impl Proc {
        fn spawn(mut cmd: Command, name: &'static str) -> Self {
            let mut child = cmd.spawn().unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut stderr = child.stderr.take().unwrap();
            let (tx, marks) = mpsc::channel();
            let out = std::thread::spawn(move || {
                let mut all = String::new();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // libtest may print "test name ... " on the same line.
                    if let Some(at) = line.find("@@") {
                        let _ = tx.send(line[at + 2..].to_string());
                    }
                    all.push_str(&line);
                    all.push('\n');
                }
                all
            });
            let err = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s);
                s
            });
            Self {
                name,
                child,
                marks,
                out: Some(out),
                err: Some(err),
                exited: false,
            }
        }

        fn mark(&self, deadline: Instant) -> String {
            let left = deadline.saturating_duration_since(Instant::now());
            self.marks
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{}: no mark in time: {e}", self.name))
        }

        fn running(&mut self) -> bool {
            self.child.try_wait().unwrap().is_none()
        }

        /// Waits for exit (killing it at the deadline); status and output.
        fn finish(&mut self, deadline: Instant) -> (ExitStatus, String) {
            let status = loop {
                if let Some(st) = self.child.try_wait().unwrap() {
                    break st;
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break self.child.wait().unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            self.exited = true;
            let out = self
                .out
                .take()
                .map(|h| h.join().unwrap())
                .unwrap_or_default();
            let err = self
                .err
                .take()
                .map(|h| h.join().unwrap())
                .unwrap_or_default();
            let log = format!(
                "--- {} stdout:\n{out}--- {} stderr:\n{err}",
                self.name, self.name
            );
            (status, log)
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            if !self.exited {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    // ---------------------------------------------------------------- unit

    #[test]
    fn claim_append_publish_take_release_round_trip() {
        let mut fx = fixture(spec(4, 256));
        let s = &mut fx.store;
        let a: Vec<u8> = (0..10u8).collect();
        let b: Vec<u8> = (100..113u8).collect();
        let idx = s.claim(7, 2).unwrap();
        assert_eq!(s.lookup(7), Some(idx));
        assert_eq!(s.state(idx), Some(BufferState::Writing));
        assert_eq!(s.append(idx, &a).unwrap(), 1);
        assert_eq!(s.append(idx, &b).unwrap(), 2);
        assert_eq!(
            s.counts(),
            StateCounts {
                empty: 3,
                writing: 1,
                full: 0,
                reading: 0
            }
        );
        s.publish(idx, true).unwrap();
        assert_eq!(s.lookup(7), None);
        assert_eq!(s.state(idx), Some(BufferState::Full));
        assert_eq!(s.header().published_total, 1);

        let r = s.reader();
        let g = r.take().unwrap();
        assert_eq!(g.sequence_id(), 7);
        assert_eq!(g.fragment_count(), 2);
        assert_eq!(g.expected(), 2);
        assert!(g.complete());
        assert_eq!(g.publish_seq(), 1);
        assert_eq!(g.index(), idx);
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(g.data(), want.as_slice());
        assert_eq!(r.counts().reading, 1);
        assert!(r.take().is_none(), "nothing else is Full");
        drop(g);
        assert_eq!(s.counts().empty, 4);
        assert!(r.take().is_none());
    }

    #[test]
    fn content_across_word_boundaries() {
        let mut fx = fixture(spec(1, 200));
        let s = &mut fx.store;
        let r = s.reader();
        for shift in 0..9usize {
            let idx = s.claim(shift as u64, 3).unwrap();
            let parts: Vec<Vec<u8>> = [shift + 1, 3, 17]
                .iter()
                .enumerate()
                .map(|(p, &n)| (0..n).map(|k| (k * 7 + p * 31 + shift) as u8).collect())
                .collect();
            for p in &parts {
                s.append(idx, p).unwrap();
            }
            s.publish(idx, true).unwrap();
            let g = r.take().unwrap();
            assert_eq!(g.data(), parts.concat().as_slice());
            assert!(g.release());
        }
    }

    #[test]
    fn too_large_is_rejected_and_writes_nothing() {
        let mut fx = fixture(spec(2, 64));
        let s = &mut fx.store;
        let idx = s.claim(1, 2).unwrap();
        assert_eq!(s.append(idx, &[0xAA; 60]).unwrap(), 1);
        match s.append(idx, &[0xBB; 5]) {
            Err(ShmError::TooLarge {
                idx: i,
                len: 5,
                used: 60,
                capacity: 64,
            }) => assert_eq!(i, idx),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(s.append(idx, &[0xCC; 4]).unwrap(), 2, "exactly full fits");
        s.publish(idx, false).unwrap();
        let idx2 = s.claim(2, 1).unwrap();
        assert!(matches!(
            s.append(idx2, &[1; 65]),
            Err(ShmError::TooLarge { used: 0, .. })
        ));
        s.publish(idx2, false).unwrap();

        let r = s.reader();
        let g = r.take().unwrap();
        let mut want = vec![0xAA; 60];
        want.extend_from_slice(&[0xCC; 4]);
        assert_eq!(g.data(), want.as_slice());
        assert_eq!(g.fragment_count(), 2);
        assert!(!g.complete());
        drop(g);
        let g = r.take().unwrap();
        assert_eq!(g.sequence_id(), 2);
        assert!(g.data().is_empty());
        assert_eq!(g.fragment_count(), 0);
    }

    #[test]
    fn wrong_buffer_or_state_is_an_error() {
        let mut fx = fixture(spec(2, 64));
        let s = &mut fx.store;
        assert!(matches!(
            s.append(2, b"x"),
            Err(ShmError::NoSuchBuffer { idx: 2, count: 2 })
        ));
        assert!(matches!(
            s.append(0, b"x"),
            Err(ShmError::NotWriting {
                idx: 0,
                state: BufferState::Empty
            })
        ));
        let idx = s.claim(5, 1).unwrap();
        assert_eq!(
            s.claim(5, 1),
            Some(idx),
            "claiming an open seq returns its buffer"
        );
        s.publish(idx, true).unwrap();
        assert!(matches!(
            s.publish(idx, true),
            Err(ShmError::NotWriting {
                state: BufferState::Full,
                ..
            })
        ));
        let e = ShmError::TooLarge {
            idx: 1,
            len: 2,
            used: 3,
            capacity: 4,
        };
        assert_eq!(
            e.to_string(),
            "2 bytes do not fit buffer 1: 3 of 4 bytes used"
        );
    }

    #[test]
    fn invalid_specs_are_rejected() {
        for bad in [spec(0, 64), spec(1, 0), spec(1 << 17, 64), spec(1, 1 << 41)] {
            assert!(
                matches!(Geometry::new(bad), Err(ShmError::InvalidSpec(_))),
                "{bad:?}"
            );
        }
        let g = Geometry::new(spec(3, 100)).unwrap();
        assert_eq!(g.stride, 128);
        assert_eq!(g.data_offset, 128 + 3 * 64);
        assert_eq!(g.total, 128 + 3 * 64 + 3 * 128);
    }

    #[test]
    fn backpressure_claim_none_until_a_release() {
        let mut fx = fixture(spec(3, 32));
        let s = &mut fx.store;
        let idxs: Vec<usize> = (0..3).map(|q| s.claim(q, 1).unwrap()).collect();
        assert_eq!(idxs.iter().collect::<HashSet<_>>().len(), 3);
        assert_eq!(s.claim(3, 1), None, "all buffers Writing");
        s.append(idxs[1], b"one").unwrap();
        s.publish(idxs[1], true).unwrap();
        assert_eq!(s.claim(3, 1), None, "a Full buffer is not available");
        let r = s.reader();
        let g = r.take().unwrap();
        assert_eq!(s.claim(3, 1), None, "a Reading buffer is not available");
        assert_eq!(s.counts().available(), 0);
        assert!(g.release());
        assert_eq!(s.counts().available(), 1);
        assert_eq!(
            s.claim(3, 1),
            Some(idxs[1]),
            "the released buffer is reused"
        );
        assert_eq!(s.counts().pending(), 3);
    }

    #[test]
    fn stale_writing_returns_exactly_the_old_ones_oldest_first() {
        let mut fx = fixture(spec(5, 32));
        let s = &mut fx.store;
        let i13 = s.claim(13, 2).unwrap();
        test_clock::advance(Duration::from_secs(10));
        let i11 = s.claim(11, 2).unwrap();
        test_clock::advance(Duration::from_secs(10));
        s.claim(10, 2).unwrap();
        s.claim(12, 2).unwrap();
        // Ages now: 13 -> 20 s, 11 -> 10 s, 10 and 12 -> 0 s.
        assert_eq!(
            s.stale_writing(Duration::from_secs(5)),
            vec![(i13, 13), (i11, 11)]
        );
        assert_eq!(s.stale_writing(Duration::from_secs(15)), vec![(i13, 13)]);
        assert_eq!(s.stale_writing(Duration::from_secs(25)), vec![]);
        assert_eq!(s.stale_writing(Duration::ZERO).len(), 4);
        // An append touches the buffer: no longer stale.
        s.append(i13, b"late fragment").unwrap();
        assert_eq!(s.stale_writing(Duration::from_secs(5)), vec![(i11, 11)]);
        // The writer releases it as incomplete.
        s.publish(i11, false).unwrap();
        assert!(s.stale_writing(Duration::from_secs(5)).is_empty());
        let r = s.reader();
        let g = r.take().unwrap();
        assert_eq!(
            (
                g.sequence_id(),
                g.complete(),
                g.fragment_count(),
                g.expected()
            ),
            (11, false, 0, 2)
        );
    }

    #[test]
    fn recover_stale_reading_only_revokes_dead_readers() {
        let mut fx = fixture(spec(4, 32));
        let s = &mut fx.store;
        let a = publish_one(s, 1, b"alive");
        let b = publish_one(s, 2, b"dead");
        let c = publish_one(s, 3, b"unknown");
        let r = s.reader();

        // A live guard in this process is never revoked, however old.
        let g = r.take().unwrap();
        assert_eq!(g.index(), a);
        // Leases of a dead process and of an unknown pid.
        assert!(r.lease_to(b, dead_pid()));
        assert!(r.lease_to(c, 0));
        assert_eq!(s.counts().reading, 3);
        assert_eq!(
            r.recover_stale_reading(Duration::from_secs(60)),
            0,
            "too young"
        );
        test_clock::advance(Duration::from_secs(120));
        assert_eq!(r.recover_stale_reading(Duration::from_secs(60)), 1);
        assert_eq!(
            s.state(a),
            Some(BufferState::Reading),
            "our own lease stays"
        );
        assert_eq!(s.state(b), Some(BufferState::Full), "the dead one is back");
        assert_eq!(
            s.state(c),
            Some(BufferState::Reading),
            "pid 0 is never revoked"
        );
        assert_eq!(r.recover_stale_reading(Duration::ZERO), 0);

        let g2 = r.take().unwrap();
        assert_eq!((g2.sequence_id(), g2.data()), (2, &b"dead"[..]));
        assert!(g2.release());
        assert!(g.release());
        assert_eq!(
            s.counts(),
            StateCounts {
                empty: 3,
                writing: 0,
                full: 0,
                reading: 1
            }
        );
    }

    #[test]
    fn panicking_reader_puts_the_event_back() {
        let mut fx = fixture(spec(2, 32));
        let s = &mut fx.store;
        publish_one(s, 9, b"precious");
        let r = s.reader();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let g = r.take().unwrap();
            assert_eq!(g.data(), b"precious");
            panic!("reader dies mid-event");
        }));
        assert!(res.is_err());
        assert_eq!(s.counts().full, 1);
        let g = r.take().unwrap();
        assert_eq!((g.sequence_id(), g.data()), (9, &b"precious"[..]));
    }

    #[test]
    fn take_follows_publication_order() {
        let mut fx = fixture(spec(4, 32));
        let s = &mut fx.store;
        let i5 = s.claim(5, 1).unwrap();
        let i6 = s.claim(6, 1).unwrap();
        let i7 = s.claim(7, 1).unwrap();
        s.publish(i7, true).unwrap();
        s.publish(i5, true).unwrap();
        s.publish(i6, true).unwrap();
        let r = s.reader();
        let order: Vec<(u64, u64)> = std::iter::from_fn(|| {
            let g = r.take()?;
            let v = (g.sequence_id(), g.publish_seq());
            assert!(g.release());
            Some(v)
        })
        .collect();
        assert_eq!(order, vec![(7, 1), (5, 2), (6, 3)]);
    }

    #[test]
    fn generation_is_odd_while_writing_and_even_when_published() {
        let mut fx = fixture(spec(1, 32));
        let s = &mut fx.store;
        assert_eq!(generation(s, 0), 0);
        let idx = s.claim(1, 1).unwrap();
        assert_eq!(generation(s, idx), 1);
        s.append(idx, b"x").unwrap();
        s.publish(idx, true).unwrap();
        assert_eq!(generation(s, idx), 2);
        let r = s.reader();
        let g = r.take().unwrap();
        assert_eq!(generation(s, idx), 2, "taking does not change the content");
        drop(g);
        assert_eq!(generation(s, idx), 2, "nor does releasing");
        s.claim(2, 1).unwrap();
        assert_eq!(generation(s, idx), 3);
    }

    #[test]
    fn monitor_sees_new_events_and_counts_missed() {
        let mut fx = fixture(spec(2, 64));
        let s = &mut fx.store;
        publish_one(s, 100, b"before attach");
        let mut m = s.monitor();
        assert_eq!(m.attached_at(), 1);
        assert!(m.poll().is_empty());

        publish_one(s, 101, b"one-o-one");
        let evs = m.poll();
        assert_eq!(evs.len(), 1);
        assert_eq!(
            evs[0],
            MonitoredEvent {
                sequence_id: 101,
                fragment_count: 1,
                expected: 1,
                complete: true,
                publish_seq: 2,
                data: b"one-o-one".to_vec()
            }
        );
        assert!(m.poll().is_empty(), "nothing new");

        // Both buffers recycled before the monitor looks: 102, 103 missed,
        // 104, 105 seen. Taking does not disturb what a monitor can see.
        let r = s.reader();
        while let Some(g) = r.take() {
            drop(g);
        }
        publish_one(s, 102, b"a");
        publish_one(s, 103, b"b");
        while let Some(g) = r.take() {
            drop(g);
        }
        publish_one(s, 104, b"c");
        publish_one(s, 105, b"d");
        let _g = r.take().unwrap();
        let seqs: Vec<u64> = m.poll().iter().map(|e| e.sequence_id).collect();
        assert_eq!(seqs, vec![104, 105]);
        assert_eq!((m.seen(), m.missed(), m.torn()), (3, 2, 0));
        let h = m.header();
        assert_eq!(
            (h.buffer_count, h.buffer_bytes, h.published_total),
            (2, 64, 6)
        );
        assert_eq!(h.owner_pid, std::process::id());
        assert!(!h.closed);
    }

    #[test]
    fn monitor_discards_an_event_recycled_during_the_copy() {
        let mut fx = fixture(spec(1, 64));
        let s = &mut fx.store;
        let r = s.reader();
        let mut m = s.monitor();
        publish_one(s, 1, b"original content");
        drop(r.take().unwrap()); // released: the writer may reuse it
        let evs = m.poll_with(|idx| {
            // The writer recycles the buffer while the monitor copies it.
            let i = s.claim(2, 1).unwrap();
            assert_eq!(i, idx);
            s.append(i, b"OVERWRITTEN").unwrap();
        });
        assert!(evs.is_empty(), "a torn copy is never returned");
        assert_eq!((m.seen(), m.missed(), m.torn()), (0, 1, 1));
        s.publish(0, true).unwrap();
        let evs = m.poll();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, b"OVERWRITTEN");
        assert_eq!((m.seen(), m.missed(), m.torn()), (1, 1, 1));
    }

    #[test]
    fn reader_outlives_store() {
        let mut fx = fixture(spec(2, 32));
        publish_one(&mut fx.store, 1, b"kept");
        let r = fx.store.reader();
        let mut m = fx.store.monitor();
        let Fixture { store, _dir } = fx;
        drop(store);
        assert!(m.header().closed);
        let g = r.take().unwrap();
        assert_eq!(g.data(), b"kept");
        assert!(m.poll().is_empty(), "published before the monitor attached");
    }

    #[test]
    fn segment_paths() {
        assert_eq!(
            segment_path_in(Path::new("/dev/shm"), 3, "eventbuilder01"),
            PathBuf::from("/dev/shm/daq-p3-eventbuilder01-events")
        );
        assert_eq!(
            segment_path_in(Path::new("/tmp/x"), 0, "a/b"),
            PathBuf::from("/tmp/x/daq-p0-a_b-events")
        );
        let dir = std::env::var_os(SHM_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
        assert_eq!(segment_path(1, "agg"), dir.join("daq-p1-agg-events"));
    }

    /// Writer, two destructive readers and a monitor on threads of one
    /// process (small enough to run under Miri).
    #[test]
    fn threads_writer_two_readers_and_a_monitor() {
        let (n, max, count, bytes, group) = if cfg!(miri) {
            (24u64, 20usize, 3u32, 60u64, 2u64)
        } else {
            (4000, 700, 6, 2100, 4)
        };
        let mut fx = fixture(spec(count, bytes));
        let reader = fx.store.reader();
        let mut monitor = fx.store.monitor();
        let taken = AtomicU64::new(0);
        let deadline = Instant::now() + Duration::from_secs(if cfg!(miri) { 3600 } else { 60 });
        let store = &mut fx.store;
        let (got_a, got_b) = std::thread::scope(|sc| {
            let w = sc.spawn(|| write_events(store, 0..n, max, group, deadline));
            let a = sc.spawn(|| drain(&reader, n, &taken, max, false, deadline));
            let b = sc.spawn(|| {
                let r2 = reader.clone();
                drain(&r2, n, &taken, max, false, deadline)
            });
            let m = sc.spawn(|| watch(&mut monitor, n, max, deadline));
            w.join().unwrap();
            m.join().unwrap();
            (a.join().unwrap(), b.join().unwrap())
        });
        let mut all: Vec<u64> = got_a.iter().chain(&got_b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "every event exactly once");
        assert_eq!(fx.store.counts().empty, count);
        assert_eq!(monitor.seen() + monitor.missed(), n);
    }

    // ------------------------------------------------ files and processes

    #[test]
    #[cfg_attr(miri, ignore = "files and mmap")]
    fn create_is_0600_and_drop_removes_the_file() {
        let dir = TestDir::new("mode");
        let path = dir.path("daq-p0-mode-events");
        let store = ShmStore::create(&path, spec(3, 100)).unwrap();
        assert!(!store.replaced_stale());
        assert_eq!(store.path(), path.as_path());
        assert_eq!(store.spec(), spec(3, 100));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            meta.len(),
            Geometry::new(spec(3, 100)).unwrap().total as u64
        );
        assert_eq!(
            dir.entries(),
            vec!["daq-p0-mode-events".to_string()],
            "no temp files left"
        );
        let m = ShmMonitor::open(&path).unwrap();
        assert_eq!(m.header().owner_pid, std::process::id());
        drop(store);
        assert!(!path.exists());
        assert!(m.header().closed);
        assert!(dir.entries().is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "files and mmap")]
    fn create_over_a_live_owner_is_in_use() {
        let dir = TestDir::new("inuse");
        let path = dir.path("daq-p0-inuse-events");
        let mut a = ShmStore::create(&path, spec(2, 64)).unwrap();
        match ShmStore::create(&path, spec(2, 64)) {
            Err(ShmError::InUse { path: p, pid }) => {
                assert_eq!(p, path);
                assert_eq!(pid, std::process::id());
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        // The failed attempt left the live segment alone.
        assert_eq!(dir.entries(), vec!["daq-p0-inuse-events".to_string()]);
        publish_one(&mut a, 1, b"still mine");
        let r = ShmReader::attach(&path).unwrap();
        assert_eq!(r.take().unwrap().data(), b"still mine");
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    #[cfg_attr(miri, ignore = "files and mmap")]
    fn create_replaces_a_hand_written_stale_segment() {
        let dir = TestDir::new("stale");
        let path = dir.path("daq-p0-stale-events");
        let dead = dead_pid();
        let mut hdr = vec![0u8; 128];
        hdr[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        hdr[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        hdr[24..28].copy_from_slice(&dead.to_le_bytes());
        fs::write(&path, &hdr).unwrap();
        let store = ShmStore::create(&path, spec(2, 64)).unwrap();
        assert!(store.replaced_stale());
        let h = ShmMonitor::open(&path).unwrap().header();
        assert_eq!(h.owner_pid, std::process::id());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(dir.entries().len(), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore = "files, mmap and processes")]
    fn create_replaces_the_segment_of_a_crashed_owner() {
        if let Some((role, path)) = role() {
            assert_eq!(role, "crash-owner");
            let mut s = ShmStore::create(&path, spec(2, 64)).unwrap();
            publish_one(&mut s, 1, b"left behind");
            std::mem::forget(s); // crash: no Drop, no unlink
            std::process::exit(0);
        }
        let dir = TestDir::new("crash");
        let path = dir.path("daq-p0-crash-events");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut p = Proc::spawn(
            child(
                "create_replaces_the_segment_of_a_crashed_owner",
                "crash-owner",
                &path,
            ),
            "owner",
        );
        let owner = p.child.id();
        let (st, log) = p.finish(deadline);
        assert!(st.success(), "{log}");
        assert!(path.exists(), "the crashed owner left its segment");

        let mut old = ShmMonitor::open(&path).unwrap();
        let h = old.header();
        assert_eq!(
            (h.owner_pid, h.published_total, h.closed),
            (owner, 1, false)
        );

        let store = ShmStore::create(&path, spec(3, 128)).unwrap();
        assert!(store.replaced_stale());
        let h = ShmMonitor::open(&path).unwrap().header();
        assert_eq!(
            (h.owner_pid, h.published_total, h.buffer_count),
            (std::process::id(), 0, 3)
        );
        // A monitor of the old segment keeps its (now nameless) mapping.
        assert_eq!(old.header().owner_pid, owner);
        assert!(old.poll().is_empty());
        assert_eq!(dir.entries().len(), 1);
        drop(store);
        assert!(dir.entries().is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "files, mmap and processes")]
    fn a_dead_reader_process_loses_nothing() {
        if let Some((role, path)) = role() {
            assert_eq!(role, "take-and-die");
            let r = ShmReader::attach(&path).unwrap();
            let g = r.take().unwrap();
            assert_eq!((g.sequence_id(), g.data()), (10, &b"first"[..]));
            std::mem::forget(g); // die while holding it
            std::process::exit(0);
        }
        let dir = TestDir::new("deadreader");
        let path = dir.path("daq-p0-deadreader-events");
        let mut s = ShmStore::create(&path, spec(3, 64)).unwrap();
        publish_one(&mut s, 10, b"first");
        publish_one(&mut s, 11, b"second");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut p = Proc::spawn(
            child("a_dead_reader_process_loses_nothing", "take-and-die", &path),
            "reader",
        );
        let (st, log) = p.finish(deadline);
        assert!(st.success(), "{log}");
        assert_eq!((s.counts().reading, s.counts().full), (1, 1));

        let r = s.reader();
        assert_eq!(
            r.recover_stale_reading(Duration::from_secs(3600)),
            0,
            "too young"
        );
        assert_eq!(r.recover_stale_reading(Duration::ZERO), 1);
        assert_eq!(s.counts().full, 2);
        let g = r.take().unwrap();
        assert_eq!((g.sequence_id(), g.data()), (10, &b"first"[..]));
        assert!(g.release());
        let g = r.take().unwrap();
        assert_eq!((g.sequence_id(), g.data()), (11, &b"second"[..]));
    }

    #[test]
    #[cfg_attr(miri, ignore = "files and mmap")]
    fn attach_validates_the_segment() {
        let dir = TestDir::new("attach");
        let good = dir.path("daq-p0-good-events");
        let store = ShmStore::create(&good, spec(2, 64)).unwrap();
        let bytes = fs::read(&good).unwrap();
        let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
            let p = dir.path(name);
            let mut b = bytes.clone();
            f(&mut b);
            fs::write(&p, &b).unwrap();
            p
        };
        assert!(matches!(
            ShmMonitor::open(&dir.path("missing")),
            Err(ShmError::Open { .. })
        ));
        let empty = variant("empty", &|b| b.clear());
        assert!(matches!(
            ShmMonitor::open(&empty),
            Err(ShmError::NotReady { .. })
        ));
        let magic = variant("magic", &|b| b[0] ^= 0xFF);
        assert!(matches!(
            ShmMonitor::open(&magic),
            Err(ShmError::BadMagic { .. })
        ));
        let version = variant("version", &|b| b[8] = 9);
        assert!(matches!(
            ShmMonitor::open(&version),
            Err(ShmError::VersionMismatch {
                found: 9,
                expected: 1,
                ..
            })
        ));
        let unready = variant("unready", &|b| b[28] = 0);
        assert!(matches!(
            ShmReader::attach(&unready),
            Err(ShmError::NotReady { .. })
        ));
        let longer = variant("longer", &|b| b.extend_from_slice(&[0; 64]));
        assert!(matches!(
            ShmMonitor::open(&longer),
            Err(ShmError::SizeMismatch { .. })
        ));
        let count = variant("count", &|b| b[12] = 0);
        assert!(matches!(
            ShmMonitor::open(&count),
            Err(ShmError::BadGeometry { .. })
        ));
        let m = ShmMonitor::open(&good).unwrap();
        assert_eq!(m.header().buffer_count, 2);
        assert_eq!(m.counts().empty, 2);
        drop(store);
    }

    /// Three processes on one segment: a writer publishing N events with
    /// backpressure, a destructive reader taking all of them, a monitor
    /// reading alongside. Synchronization: the parent waits for the segment
    /// to open (ready), for the monitor's "attached" line, for children to
    /// exit, and tells the writer to finish by closing its stdin.
    #[test]
    #[cfg_attr(miri, ignore = "files, mmap and processes")]
    fn multi_process_stress() {
        const N: u64 = 20_000;
        const MAX: usize = 3000;
        const SPEC: StoreSpec = StoreSpec {
            buffer_count: 8,
            buffer_bytes: 3 * MAX as u64 + 1,
        };
        const TEST: &str = "multi_process_stress";
        let deadline = Instant::now() + Duration::from_secs(300);
        if let Some((role, path)) = role() {
            match role.as_str() {
                "writer" => {
                    let mut store = ShmStore::create(&path, SPEC).unwrap();
                    let waits = write_events(&mut store, 0..N, MAX, 4, deadline);
                    println!("@@published {N} events, waited {waits} times for a buffer");
                    // Stay alive (keeping the segment) until the parent closes stdin.
                    let _ = std::io::stdin().read_to_end(&mut Vec::new());
                    drop(store);
                }
                "reader" => {
                    let r = ShmReader::attach(&path).unwrap();
                    let taken = AtomicU64::new(0);
                    let mut got = drain(&r, N, &taken, MAX, true, deadline);
                    assert!(r.take().is_none(), "no event beyond N");
                    got.sort_unstable();
                    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every seq exactly once");
                    println!("@@took {} events", got.len());
                }
                "monitor" => {
                    let mut m = ShmMonitor::open(&path).unwrap();
                    println!("@@attached at {}", m.attached_at());
                    watch(&mut m, N, MAX, deadline);
                    println!(
                        "@@monitor attached at {}, seen {}, missed {} (torn {})",
                        m.attached_at(),
                        m.seen(),
                        m.missed(),
                        m.torn()
                    );
                }
                other => panic!("unknown role {other}"),
            }
            return;
        }

        let started = Instant::now();
        let dir = TestDir::new("stress");
        let path = dir.path("daq-p0-stress-events");
        let mut wcmd = child(TEST, "writer", &path);
        wcmd.stdin(Stdio::piped());
        let mut writer = Proc::spawn(wcmd, "writer");

        // Ready: the segment only appears once initialized.
        let parent_mon = loop {
            match ShmMonitor::open(&path) {
                Ok(m) => break m,
                Err(ShmError::Open { .. } | ShmError::NotReady { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            if !writer.running() || Instant::now() > deadline {
                let (_, log) = writer.finish(deadline);
                panic!("writer never made the segment ready\n{log}");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // A live owner in another process.
        match ShmStore::create(&path, SPEC) {
            Err(ShmError::InUse { pid, .. }) => assert_eq!(pid, writer.child.id()),
            other => panic!("expected InUse, got {other:?}"),
        }

        let mut monitor = Proc::spawn(child(TEST, "monitor", &path), "monitor");
        let attached = monitor.mark(deadline);
        let mut reader = Proc::spawn(child(TEST, "reader", &path), "reader");
        let (rst, rlog) = reader.finish(deadline);
        let (mst, mlog) = monitor.finish(deadline);
        drop(writer.child.stdin.take()); // let the writer finish
        let (wst, wlog) = writer.finish(deadline);
        assert!(rst.success(), "reader failed\n{rlog}\n{mlog}\n{wlog}");
        assert!(mst.success(), "monitor failed\n{mlog}\n{rlog}\n{wlog}");
        assert!(wst.success(), "writer failed\n{wlog}\n{rlog}\n{mlog}");
        assert!(rlog.contains(&format!("@@took {N} events")), "{rlog}");

        let h = parent_mon.header();
        assert_eq!(h.published_total, N);
        assert!(h.closed);
        assert!(!path.exists(), "the writer removed its segment");
        assert!(parent_mon.counts().empty == SPEC.buffer_count);
        for log in [&wlog, &rlog, &mlog] {
            for line in log.lines().filter_map(|l| l.find("@@").map(|at| &l[at..])) {
                println!("{line}");
            }
        }
        println!("monitor {attached}; total {:?}", started.elapsed());
    }
}
