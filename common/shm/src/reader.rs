//! Owns the destructive readers of the next stage ([`ShmReader`],
//! [`ReadGuard`]): taking Full buffers in publication order, releasing them,
//! and returning a dead reader's buffers to Full.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ShmError;
use crate::layout::{
    FLAG_COMPLETE, HeaderInfo, PID_SHIFT, ST_EMPTY, ST_FULL, ST_READING, STATE_MASK, StateCounts,
    StoreSpec, lease_word,
};
use crate::region::Region;
use crate::sys::{duration_ns, now_ns, pid_alive};

/// How long [`ShmReader::take`] waits for a publication in progress.
pub(crate) const NEWER_WAIT: Duration = Duration::from_millis(100);

/// Destructive reader for the next stage: takes Full buffers in publication
/// order. Cheap to clone; every clone keeps the mapping alive, so it may
/// outlive the [`ShmStore`](crate::ShmStore) it came from (the file name is gone then, the
/// memory is not).
pub struct ShmReader {
    pub(crate) region: Arc<Region>,
    pub(crate) pid: u32,
    /// What the last scan found Full, `(publish_seq, index)`, newest first:
    /// taken from the end, so one scan of the descriptors serves every
    /// event published before it (a drain takes many in a row).
    found: Mutex<Vec<(u64, usize)>>,
}

impl Clone for ShmReader {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.region))
    }
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
        Ok(Self::new(Arc::new(Region::attach(path, true)?)))
    }

    pub(crate) fn new(region: Arc<Region>) -> Self {
        Self {
            region,
            pid: std::process::id(),
            found: Mutex::new(Vec::new()),
        }
    }

    /// The next buffer of the last scan, taken (CAS Full -> Reading) if it
    /// still holds the publication the scan saw. `None` when the scan's
    /// list is used up, or stale (another reader took one of them: the
    /// list is dropped and the caller scans again).
    fn take_found(&self) -> Option<(usize, u32)> {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        let (p, idx) = found.pop()?;
        let d = self.region.desc(idx);
        let lease = lease_word(self.pid);
        // Acquire: as in the scan's CAS below.
        if d.state
            .compare_exchange(ST_FULL, lease, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            if d.publish_seq.load(Ordering::Relaxed) == p {
                return Some((idx, lease));
            }
            // A later publication in a reused buffer (another reader took
            // the one seen): give it back untouched, scan again.
            let _ = d
                .state
                .compare_exchange(lease, ST_FULL, Ordering::Release, Ordering::Relaxed);
        }
        found.clear();
        None
    }

    /// Takes the oldest published Full buffer (CAS Full -> Reading). One
    /// scan of the descriptors finds every Full buffer published so far;
    /// the following takes use that list, oldest first, until it is used
    /// up (a buffer returned to Full by another handle's
    /// `recover_stale_reading` meanwhile is taken after them). The
    /// guard gives its data; dropping it (or [`ReadGuard::release`]) makes
    /// the buffer Empty. `None` when nothing is Full.
    ///
    /// A Full buffer published after the scan read `published_total` (its
    /// writer is between its two stores) is waited for, but at most
    /// 100 ms: a descriptor that stays ahead of the header (a
    /// corrupt or foreign segment) makes `take` return `None`, never spin.
    pub fn take(&self) -> Option<ReadGuard<'_>> {
        self.take_owned()
    }

    /// [`take`](Self::take), with a guard that may be kept past this
    /// reader's borrow and sent to another thread (it holds the mapping):
    /// the event is then read, and its buffer released, where the guard
    /// goes, such as a link's writing thread that copies it straight into
    /// the next process's memory.
    pub fn take_owned(&self) -> Option<ReadGuard<'static>> {
        let region = &*self.region;
        if let Some((idx, lease)) = self.take_found() {
            return Some(self.guard(idx, lease));
        }
        let mut waiting_since: Option<std::time::Instant> = None;
        loop {
            // Acquire: the Full state of every publication up to `total` is
            // visible to the scan, so the oldest untaken one among them is
            // really the oldest (later ones wait for the next round).
            let total = region.header().published_total.load(Ordering::Acquire);
            let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
            found.clear();
            let mut newer = false;
            for idx in 0..region.geo.buffer_count {
                let d = region.desc(idx);
                // Acquire: makes the publish_seq stored before Full visible.
                if d.state.load(Ordering::Acquire) == ST_FULL {
                    let p = d.publish_seq.load(Ordering::Relaxed);
                    if p > total {
                        newer = true;
                    } else {
                        found.push((p, idx));
                    }
                }
            }
            // Newest first: the oldest is popped from the end.
            found.sort_unstable_by(|a, b| b.cmp(a));
            let best = found.pop();
            drop(found);
            let Some((_, idx)) = best else {
                if newer {
                    // Published after we read `total`: wait for its header
                    // store, a bounded time.
                    let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() < NEWER_WAIT {
                        std::thread::yield_now();
                        continue;
                    }
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
                self.found.lock().unwrap_or_else(|p| p.into_inner()).clear();
                continue; // another reader was faster; look again
            }
            return Some(self.guard(idx, lease));
        }
    }

    /// The guard of buffer `idx`, just leased.
    fn guard<'a>(&self, idx: usize, lease: u32) -> ReadGuard<'a> {
        let region = &*self.region;
        let d = region.desc(idx);
        {
            d.last_touch_ns.store(now_ns(), Ordering::Relaxed);
            let len = usize::try_from(d.data_len.load(Ordering::Relaxed))
                .unwrap_or(usize::MAX)
                .min(region.geo.buffer_bytes);
            ReadGuard {
                region: self.region.clone(),
                _kept: std::marker::PhantomData,
                idx,
                lease,
                sequence_id: d.sequence_id.load(Ordering::Relaxed),
                fragment_count: d.fragment_count.load(Ordering::Relaxed),
                expected: d.expected_count.load(Ordering::Relaxed),
                complete: d.flags.load(Ordering::Relaxed) & FLAG_COMPLETE != 0,
                publish_seq: d.publish_seq.load(Ordering::Relaxed),
                len,
                done: false,
            }
        }
    }

    /// Returns to Full every Reading buffer whose reading process is dead
    /// and which was taken at least `age` ago, so a dead reader loses
    /// nothing. Leases of live processes (including this one) are never
    /// revoked: their guards may still be reading. Returns how many.
    pub fn recover_stale_reading(&self, age: Duration) -> usize {
        // What this reader's last scan found is older news: scan again.
        self.found.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
    pub(crate) fn lease_to(&self, idx: usize, pid: u32) -> bool {
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
///
/// `'a` is how long the guard may be kept: the reader's borrow for
/// [`ShmReader::take`], any time for [`ShmReader::take_owned`]. Either way
/// the guard holds the mapping (an `Arc`), so its data never outlives it.
pub struct ReadGuard<'a> {
    region: Arc<Region>,
    _kept: std::marker::PhantomData<&'a Region>,
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
        // into the buffer (invariant 3, in `region`), and the writer's stores
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
