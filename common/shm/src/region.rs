//! Owns a mapped segment ([`Region`]) and every raw-pointer access to it:
//! mapping, the header, descriptor and buffer views, initializing and
//! validating a header, and the atomic word copies of buffer data.
//!
//! # Unsafe invariants
//!
//! 1. The mapping (a `memmap2` map or, in tests, a heap block) lives in a
//!    `Region` behind an `Arc`; every handle ([`ShmStore`], [`ShmReader`],
//!    [`ShmMonitor`], [`ReadGuard`], each holding the `Arc`) keeps it alive, so a
//!    reader may outlive the store: the file name is unlinked when the store
//!    drops, the memory when the last handle drops.
//! 2. Header, descriptors and data words are only accessed through
//!    `AtomicU32`/`AtomicU64` references. Any bit pattern is a valid atomic
//!    and the base is 64-byte aligned (page-aligned mmap), offsets are
//!    multiples of 8 and checked against the mapping length, so the
//!    references are valid for the life of the region. Concurrent atomic
//!    accesses, from any thread or process, are never a data race.
//! 3. The only non-atomic access is the `&[u8]` a [`ReadGuard`] hands out
//!    (`reader`).
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
//!    hand a reader torn data. Nothing in this crate ever resizes the file
//!    after it is linked into place. All attached processes must share a pid
//!    namespace (leases and owners are pids).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::ShmError;
#[cfg(test)]
use crate::layout::SECTION_ALIGN;
use crate::layout::{
    BufferState, DESCRIPTOR_BYTES, Descriptor, Geometry, HEADER_BYTES, Header, HeaderInfo,
    LAYOUT_VERSION, MAGIC, StateCounts, StoreSpec,
};
use crate::sys::unix_ns;
#[cfg(doc)]
use crate::{ReadGuard, ShmMonitor, ShmReader, ShmStore};

/// What keeps the memory of a [`Region`] alive (held, never read).
#[allow(dead_code)]
pub(crate) enum Backing {
    ReadWrite(MmapMut),
    ReadOnly(Mmap),
    #[cfg(test)]
    Heap(HeapBlock),
}

/// A mapped segment: base pointer, geometry and the owner of the memory.
/// Shared behind an `Arc` by every handle onto the same mapping.
pub(crate) struct Region {
    pub(crate) base: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) geo: Geometry,
    pub(crate) _backing: Backing,
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
    pub(crate) fn from_rw(mut map: MmapMut, geo: Geometry) -> Option<Self> {
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

    /// Maps `file`, which the caller just created with exactly `geo.total`
    /// bytes and owns, read-write.
    pub(crate) fn map_new(file: &File, geo: Geometry) -> io::Result<Self> {
        // SAFETY: a fresh file of exactly geo.total bytes that we own; it is
        // shared with other processes only through this crate's protocol
        // (invariants 2-4) and never resized again (invariant 6).
        let map = unsafe { MmapOptions::new().len(geo.total).map_mut(file) }?;
        Self::from_rw(map, geo).ok_or_else(|| io::Error::other("mmap returned a null pointer"))
    }

    /// As `from_rw`. Never written through: a read-only region is only used
    /// by monitors, which only load.
    pub(crate) fn from_ro(map: Mmap, geo: Geometry) -> Option<Self> {
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

    pub(crate) fn header(&self) -> &Header {
        assert!(self.len >= HEADER_BYTES, "region smaller than its header");
        // SAFETY: base is page aligned (mmap) or 64-byte aligned (heap), the
        // first HEADER_BYTES are mapped (checked above), Header consists only
        // of atomics (valid for every bit pattern, interior mutability), and
        // the memory lives as long as `self` (invariants 1, 2).
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    pub(crate) fn desc(&self, idx: usize) -> &Descriptor {
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

    pub(crate) fn buffer_offset(&self, idx: usize) -> usize {
        assert!(idx < self.geo.buffer_count, "buffer index out of range");
        self.geo.data_offset + idx * self.geo.stride
    }

    /// Buffer `idx` as 8-byte atomic words (its whole stride).
    pub(crate) fn words(&self, idx: usize) -> &[AtomicU64] {
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

    pub(crate) fn data_ptr(&self, idx: usize) -> *const u8 {
        let off = self.buffer_offset(idx);
        assert!(
            off + self.geo.stride <= self.len,
            "buffer outside the mapping"
        );
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.base.add(off).as_ptr().cast_const() }
    }

    /// Writes the header of a fresh, zero-filled segment; `ready` last.
    pub(crate) fn init(&self, spec: StoreSpec, owner_pid: u32) {
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
    pub(crate) fn attach(path: &Path, writable: bool) -> Result<Self, ShmError> {
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
        // An empty file is one a foreign tool is still creating; a short
        // one was cut (this crate links a segment into place only whole).
        if file_len == 0 {
            return Err(ShmError::NotReady {
                path: path.to_path_buf(),
            });
        }
        if file_len < HEADER_BYTES as u64 {
            return Err(ShmError::Truncated {
                path: path.to_path_buf(),
                len: file_len,
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
            // crate resizes it (invariant 6).
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
        region.validate_descriptors(path)?;
        Ok(region)
    }

    /// Checks magic, version, readiness and geometry against the mapping.
    pub(crate) fn validate(&self, path: &Path) -> Result<Geometry, ShmError> {
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

    /// Checks what the writer keeps true of every descriptor at every
    /// instant, so the table of a live segment always passes: `data_len`
    /// never exceeds the buffer, and no `publish_seq` is ahead of
    /// `published_total` by more than the one publication in progress.
    /// `published_total` is read after the table, so a publication that
    /// completes while the table is scanned cannot make it fail.
    /// Runs after [`Region::validate`] set the geometry.
    pub(crate) fn validate_descriptors(&self, path: &Path) -> Result<(), ShmError> {
        let geo = self.geo;
        let mut max_publish_seq = 0;
        for idx in 0..geo.buffer_count {
            let d = self.desc(idx);
            let data_len = d.data_len.load(Ordering::Relaxed);
            if data_len > geo.buffer_bytes as u64 {
                return Err(ShmError::BadDescriptor {
                    path: path.to_path_buf(),
                    idx,
                    reason: format!(
                        "data_len {data_len} exceeds the buffer's {} bytes",
                        geo.buffer_bytes
                    ),
                });
            }
            max_publish_seq = max_publish_seq.max(d.publish_seq.load(Ordering::Relaxed));
        }
        // Acquire: every publish_seq read above was stored before a
        // published_total at most one smaller than it.
        let total = self.header().published_total.load(Ordering::Acquire);
        if max_publish_seq > total.saturating_add(1) {
            let idx = (0..geo.buffer_count)
                .find(|&i| self.desc(i).publish_seq.load(Ordering::Relaxed) == max_publish_seq)
                .unwrap_or(0);
            return Err(ShmError::BadDescriptor {
                path: path.to_path_buf(),
                idx,
                reason: format!(
                    "publish_seq {max_publish_seq} is ahead of published_total {total}"
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn counts(&self) -> StateCounts {
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

    pub(crate) fn header_info(&self) -> HeaderInfo {
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

    pub(crate) fn spec(&self) -> StoreSpec {
        StoreSpec {
            buffer_count: self.geo.buffer_count as u32,
            buffer_bytes: self.geo.buffer_bytes as u64,
        }
    }
}

/// Heap memory standing in for a mapping, so the state machine and the
/// atomics can be exercised under Miri (which cannot map files).
#[cfg(test)]
pub(crate) struct HeapBlock {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

#[cfg(test)]
impl Region {
    pub(crate) fn heap(geo: Geometry) -> Self {
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

/// Stores `src` at byte `off` of a buffer with 8-byte atomic stores. The
/// caller owns the buffer (Writing) and checked `off + src.len()` against
/// its capacity. Partial words are read, merged and written back.
#[allow(
    clippy::indexing_slicing,
    reason = "the caller checked off + src.len() against the buffer; an index past it is a bug in the store, not bad input"
)]
pub(crate) fn write_bytes(words: &[AtomicU64], off: usize, src: &[u8]) {
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

/// Copies the first `len` bytes of a buffer with 8-byte atomic loads
/// (at most the buffer's bytes).
pub(crate) fn read_bytes(words: &[AtomicU64], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    for w in words.iter().take(len.div_ceil(8)) {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    out.truncate(len);
    out
}
