//! Owns the read-only online monitor ([`ShmMonitor`]): polling for new
//! publications and copying each event out with the seqlock protocol, so a
//! copy torn by a recycled buffer is discarded, never returned.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use crate::ShmError;
use crate::layout::{FLAG_COMPLETE, HeaderInfo, StateCounts};
use crate::region::{Region, read_bytes};

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

    pub(crate) fn with_region(region: Arc<Region>) -> Self {
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
    pub(crate) fn poll_with(&mut self, mut between: impl FnMut(usize)) -> Vec<MonitoredEvent> {
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
