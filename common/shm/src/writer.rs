//! Owns the single writer of a segment ([`ShmStore`]): creating the segment
//! under a temporary name and linking it into place, replacing a dead
//! owner's segment, and the writer's side of the buffer state machine (claim,
//! append, publish, stale buffers).

use std::collections::HashMap;
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

use crate::layout::{
    BufferState, Descriptor, FLAG_COMPLETE, Geometry, HeaderInfo, MAGIC, ST_EMPTY, ST_FULL,
    ST_WRITING, StateCounts, StoreSpec,
};
use crate::region::{Region, write_bytes};
use crate::sys::{duration_ns, now_ns};
use crate::{ShmError, ShmMonitor, ShmReader};

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

/// Removes the segment at `path` if its owner is dead (nobody holds its
/// lock): what a crashed process left behind. Returns whether it removed
/// one; a live store, or no file, is left alone.
pub fn remove_abandoned(path: &Path) -> Result<bool, ShmError> {
    match probe_existing(path)? {
        Existing::Stale(file) => {
            // We hold the dead owner's lock: nobody can take the name now.
            let removed = same_file(&file, path) && fs::remove_file(path).is_ok();
            drop(file);
            Ok(removed)
        }
        Existing::Gone | Existing::Live { .. } => Ok(false),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The single writer of a segment. Holds an exclusive `flock` on the file
/// for its lifetime (that lock, not the pid, is what makes a segment "in
/// use"), and unlinks the file on drop.
pub struct ShmStore {
    pub(crate) region: Arc<Region>,
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
        let file = crate::sys::create_private(tmp).map_err(create_err)?;
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
        let region = Region::map_new(&file, geo).map_err(|source| ShmError::Map {
            path: path.to_path_buf(),
            source,
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
    pub(crate) fn in_memory(spec: StoreSpec) -> Result<Self, ShmError> {
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
        let mut stale: Vec<(u64, u64, usize)> = self
            .open
            .iter()
            .filter_map(|(&seq, &idx)| {
                let touched = self.region.desc(idx).last_touch_ns.load(Ordering::Relaxed);
                (now.saturating_sub(touched) >= age).then_some((touched, seq, idx))
            })
            .collect();
        // Oldest first; on the coarse clock many share a tick, and those go
        // in sequence order.
        stale.sort_unstable();
        stale.into_iter().map(|(_, seq, idx)| (idx, seq)).collect()
    }

    /// Buffers per state.
    pub fn counts(&self) -> StateCounts {
        self.region.counts()
    }

    /// A destructive reader on this mapping, for another thread or task.
    pub fn reader(&self) -> ShmReader {
        ShmReader::new(Arc::clone(&self.region))
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
