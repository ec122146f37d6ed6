//! Owns the layout of a segment: the header and descriptor structs, the state
//! word, the sizes and offsets derived from a [`StoreSpec`], and segment names.
//! Changing anything here changes the file format: bump [`LAYOUT_VERSION`].
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
//!  32  last_touch_ns    u64  CLOCK_MONOTONIC_COARSE ns (system wide, so comparable between processes; 1-4 ms steps)
//!  40  generation       u64  seqlock: odd while the writer owns the buffer
//!  48  publish_seq      u64  publication order, 1-based; 0 while being written
//!  56  reserved
//! offset data_offset   buffer i at data_offset + i * buffer_stride
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::ShmError;

#[cfg(not(target_endian = "little"))]
compile_error!("the shared-memory layout is little endian and accessed through native atomics");

/// `"DAQSHM01"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DAQSHM01");
/// Layout version written into (and required from) the header.
pub const LAYOUT_VERSION: u32 = 1;
/// Environment variable that replaces `/dev/shm` in [`segment_path`].
pub const SHM_DIR_ENV: &str = "DAQ_SHM_DIR";

pub(crate) const DEFAULT_SHM_DIR: &str = "/dev/shm";
pub(crate) const HEADER_BYTES: usize = 128;
pub(crate) const DESCRIPTOR_BYTES: usize = 64;
pub(crate) const SECTION_ALIGN: usize = 64;
pub(crate) const MAX_BUFFER_COUNT: u32 = 1 << 16;
pub(crate) const MAX_BUFFER_BYTES: u64 = 1 << 40;

pub(crate) const ST_EMPTY: u32 = 0;
pub(crate) const ST_WRITING: u32 = 1;
pub(crate) const ST_FULL: u32 = 2;
pub(crate) const ST_READING: u32 = 3;
pub(crate) const STATE_MASK: u32 = 3;
pub(crate) const PID_SHIFT: u32 = 2;
pub(crate) const FLAG_COMPLETE: u32 = 1;

/// Header at offset 0 (see the module docs for the field table).
#[repr(C)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) buffer_count: AtomicU32,
    pub(crate) buffer_bytes: AtomicU64,
    pub(crate) owner_pid: AtomicU32,
    pub(crate) ready: AtomicU32,
    pub(crate) created_unix_ns: AtomicU64,
    pub(crate) published_total: AtomicU64,
    pub(crate) closed: AtomicU32,
    pub(crate) descriptor_bytes: AtomicU32,
    pub(crate) buffer_stride: AtomicU64,
    pub(crate) data_offset: AtomicU64,
    pub(crate) total_bytes: AtomicU64,
    pub(crate) _reserved: [AtomicU64; 6],
}

/// One descriptor per buffer, in the table at offset [`HEADER_BYTES`].
#[repr(C)]
pub(crate) struct Descriptor {
    pub(crate) state: AtomicU32,
    pub(crate) flags: AtomicU32,
    pub(crate) sequence_id: AtomicU64,
    pub(crate) fragment_count: AtomicU32,
    pub(crate) expected_count: AtomicU32,
    pub(crate) data_len: AtomicU64,
    pub(crate) last_touch_ns: AtomicU64,
    pub(crate) generation: AtomicU64,
    pub(crate) publish_seq: AtomicU64,
    pub(crate) _reserved: AtomicU64,
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
    pub(crate) fn from_word(word: u32) -> Self {
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

/// `/dev/shm/daq-p<partition>-<process>-events`, or the same name in the
/// directory named by `DAQ_SHM_DIR` when that is set and not empty.
pub fn segment_path(partition: u32, process: &str) -> PathBuf {
    segment_path_in(&shm_dir(), partition, process)
}

/// Where segments live: `DAQ_SHM_DIR` when set and not empty, else
/// `/dev/shm`.
pub fn shm_dir() -> PathBuf {
    std::env::var_os(SHM_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SHM_DIR), PathBuf::from)
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
pub(crate) struct Geometry {
    pub(crate) buffer_count: usize,
    pub(crate) buffer_bytes: usize,
    pub(crate) stride: usize,
    pub(crate) data_offset: usize,
    pub(crate) total: usize,
}

impl Geometry {
    /// A geometry with no buffers, used while a header is being validated.
    pub(crate) const HEADER_ONLY: Self = Self {
        buffer_count: 0,
        buffer_bytes: 0,
        stride: 0,
        data_offset: HEADER_BYTES,
        total: HEADER_BYTES,
    };

    pub(crate) fn new(spec: StoreSpec) -> Result<Self, ShmError> {
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

/// The state word of a buffer leased to `pid` (pid 0 = unknown, never
/// recovered; pids that do not fit 30 bits are stored as unknown).
pub(crate) fn lease_word(pid: u32) -> u32 {
    if pid < (1 << (32 - PID_SHIFT)) {
        ST_READING | (pid << PID_SHIFT)
    } else {
        ST_READING
    }
}
