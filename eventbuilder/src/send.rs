//! The sender task of an eventbuilder run: takes published events out of
//! shared memory, serializes them (NetMonOutput) and streams each to
//! aggregator `(sequence_id / n_eventbuilders) % n_aggregators`.

use crate::build::Signals;
use crate::receive::Shared;
use daq_format::fragment::{Fragment, FragmentRef};
use daq_format::netmon::{self, EventAux, History};
use daq_runtime::transport::{Events, Item, Outbound};
use daq_shm::{ReadGuard, ShmReader};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// The sender task: published events out of shared memory, serialized, to
/// the aggregators.
pub(crate) struct Sender {
    pub(crate) shared: Arc<Shared>,
    pub(crate) reader: ShmReader,
    pub(crate) signals: Arc<Signals>,
    pub(crate) process: String,
    pub(crate) run: u32,
    pub(crate) serializer: Serializer,
    /// The streams to the aggregators.
    pub(crate) out: Outbound<Events, Outgoing>,
    /// Events that may hold their buffer until a link's thread has
    /// gathered them (`Signals::in_store`); past it, events are serialized
    /// at once.
    pub(crate) max_in_store: usize,
    /// Events dropped before sending (unreadable or not serializable), and
    /// why (the first few).
    pub(crate) dropped: u64,
    pub(crate) problems: Vec<String>,
}

/// NetMonOutput of the events of one run, straight from shared memory.
pub(crate) struct Serializer {
    /// This process's history entry (its time set per event).
    pub(crate) history: History,
    pub(crate) run: u32,
    /// Fragments of a complete event (ids `0..expected`).
    pub(crate) expected: u16,
    /// Per event, reused: where each fragment lies in its buffer
    /// (fragment id, timestamp, start, end) and the missing ids.
    pub(crate) index: Vec<(u16, u64, usize, usize)>,
    pub(crate) missing: Vec<u16>,
}

/// An event on its way out: serialized already (for a gRPC stream), or
/// still in its shared-memory buffer, which the link's thread gathers
/// straight into the aggregator's ring. The buffer is released once the
/// event is there (when the item drops), so an event is copied once in
/// this process, from the store to the next one's memory.
pub(crate) enum Outgoing {
    Encoded(bytes::Bytes),
    InStore(InStore),
}

/// A serialized event but for its fragments, which are still in the store.
pub(crate) struct InStore {
    /// The taken buffer; `None` once released.
    guard: Option<ReadGuard<'static>>,
    /// The NetMonOutput bytes before the fragments.
    head: bytes::Bytes,
    /// Each fragment's place in the buffer, in fragment-id order.
    fragments: Vec<Range<usize>>,
    len: usize,
    /// Told when the buffer is released (the builder may wait for one).
    signals: Arc<Signals>,
}

impl InStore {
    /// Writes the serialized event into `dst` (`self.len` bytes): the head,
    /// then each fragment straight from the buffer.
    fn gather(&self, dst: &mut [u8]) {
        /// Copies what fits of `src` to the front of `dst` and moves past it.
        fn put(dst: &mut &mut [u8], src: &[u8]) {
            let n = src.len().min(dst.len());
            let (to, after) = std::mem::take(dst).split_at_mut(n);
            if let Some(src) = src.get(..n) {
                to.copy_from_slice(src);
            }
            *dst = after;
        }
        let data = self.guard.as_ref().map(ReadGuard::data).unwrap_or_default();
        let mut rest = dst;
        put(&mut rest, &self.head);
        for r in &self.fragments {
            // The ranges were read from this buffer (`Serializer::plan`).
            put(&mut rest, data.get(r.clone()).unwrap_or_default());
        }
        rest.fill(0);
    }
}

impl Drop for InStore {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            drop(guard);
            self.signals.in_store.fetch_sub(1, Ordering::Relaxed);
            self.signals.freed.notify_one();
        }
    }
}

impl Item for Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Encoded(b) => b.len(),
            Outgoing::InStore(e) => e.len,
        }
    }

    fn write_to(&self, dst: &mut [u8]) {
        match self {
            Outgoing::Encoded(b) => dst.copy_from_slice(b),
            Outgoing::InStore(e) => e.gather(dst),
        }
    }

    fn into_bytes(self) -> bytes::Bytes {
        match self {
            Outgoing::Encoded(b) => b,
            Outgoing::InStore(e) => {
                let mut buf = vec![0; e.len];
                e.gather(&mut buf);
                buf.into()
            }
        }
    }
}

impl Serializer {
    /// `data` (one event's buffer) serialized: NetMonOutput, fragments in
    /// fragment-id order.
    pub(crate) fn serialize(
        &mut self,
        seq: u64,
        complete: bool,
        data: &[u8],
    ) -> Result<bytes::Bytes, String> {
        let mut b = self.plan(seq, complete, data, data.len())?;
        for &(_, _, start, end) in &self.index {
            b.extend_from_slice(data.get(start..end).unwrap_or_default());
        }
        Ok(b.freeze())
    }

    /// The serialized event up to its fragments, with room for `room`
    /// bytes more; the fragments' places in `data` are left in
    /// `self.index`, in the order they follow.
    fn plan(
        &mut self,
        seq: u64,
        complete: bool,
        data: &[u8],
        room: usize,
    ) -> Result<bytes::BytesMut, String> {
        // Where each fragment lies in the buffer: (fragment id, start, end).
        let index = &mut self.index;
        index.clear();
        let mut at = 0;
        while at < data.len() {
            let corrupt = || format!("event {seq}: corrupt buffer in shared memory");
            let rest = data.get(at..).ok_or_else(corrupt)?;
            let len = Fragment::peek_len(rest).unwrap_or(0);
            let bytes = rest
                .get(..len)
                .filter(|b| !b.is_empty())
                .ok_or_else(corrupt)?;
            let f = FragmentRef::parse(bytes).map_err(|e| format!("event {seq}: {e}"))?;
            index.push((f.header.fragment_id, f.header.timestamp, at, at + len));
            at += len;
        }
        index.sort_by_key(|&(id, ..)| id);
        self.missing.clear();
        let mut have = index.iter().map(|&(id, ..)| id).peekable();
        for id in 0..self.expected {
            while have.next_if(|&h| h < id).is_some() {}
            if have.peek() != Some(&id) {
                self.missing.push(id);
            }
        }
        let timestamp = index.first().map(|&(_, ts, ..)| ts).unwrap_or(0);
        let aux = EventAux {
            run: self.run,
            subrun: 1,
            event: seq,
            sequence_id: seq,
            timestamp,
            complete,
        };
        if let Some(h) = self.history.entries.first_mut() {
            h.time_ns = now_ns();
        }
        netmon::encode_head(&aux, &self.history, &self.missing, index.len(), room)
            .map_err(|e| e.to_string())
    }
}

/// A 128-bit digest of the configuration text, as 32 hex digits
/// (FNV-1a, two lanes; identifies a configuration, not a security hash).
pub(crate) fn parameter_set_id(config: &str) -> String {
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64];
    for b in config.bytes() {
        for l in &mut lanes {
            *l = (*l ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    format!("{:016x}{:016x}", lanes[0], lanes[1])
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Sender {
    pub(crate) async fn run(mut self, mut finish: oneshot::Receiver<()>) -> Vec<String> {
        let mut finishing = false;
        loop {
            self.drain().await;
            if finishing {
                return self.finish().await;
            }
            // Asleep until an event is published, the run ends or a pending
            // batch falls due: no tick while there is nothing to send (at
            // the demo's 10 Hz a 20 ms tick was 50 wake-ups a second).
            let due = self.out.next_due();
            let flush = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.signals.published.notified() => {}
                r = &mut finish, if !finishing => {
                    // The builder has published everything: one more drain, then end.
                    let _ = r;
                    finishing = true;
                }
                _ = flush => self.out.flush_due().await,
            }
        }
    }

    /// Takes every published event out of shared memory and queues it.
    /// Never stops at a bad event: each one that cannot go on is counted
    /// (`dropped`) and named in the stop reply.
    async fn drain(&mut self) {
        while let Some(event) = self.take_one() {
            match event {
                Ok(Some((seq, bytes))) => self.out.push(seq, bytes).await,
                Ok(None) => {}
                Err(e) => self.lost(e),
            }
        }
    }

    /// An event that could not be sent: counted, and the first few named.
    fn lost(&mut self, why: String) {
        self.shared.counters.update(|c| c.events_unsendable += 1);
        self.dropped += 1;
        if self.problems.len() < 10 {
            warn!(process = %self.process, error = %why, "event dropped");
            self.problems.push(why);
        }
    }

    /// One published event out of shared memory. For an aggregator
    /// behind a shared-memory link it stays in its buffer (the link's
    /// thread serializes it from there into the ring, then releases the
    /// buffer) while fewer than `max_in_store` do; for one behind a gRPC
    /// stream, or past that bound, it is serialized
    /// (NetMonOutput) at once, each fragment copied once from the mapping,
    /// in fragment-id order, and the buffer released before the event is
    /// sent on. `None` when nothing is published; `Some(Ok(None))` when
    /// there is no aggregator (the event is discarded).
    fn take_one(&mut self) -> Option<Result<Option<(u64, Outgoing)>, String>> {
        let guard = self.reader.take_owned()?;
        let seq = guard.sequence_id();
        let complete = guard.complete();
        let room = self.signals.in_store.load(Ordering::Relaxed) < self.max_in_store;
        if room && !self.out.is_empty() && self.out.writes_in_place(seq) {
            let head = match self.serializer.plan(seq, complete, guard.data(), 0) {
                Ok(head) => head,
                Err(e) => {
                    self.release(guard);
                    return Some(Err(e));
                }
            };
            let fragments: Vec<Range<usize>> = self
                .serializer
                .index
                .iter()
                .map(|&(_, _, s, e)| s..e)
                .collect();
            let len = head.len() + fragments.iter().map(Range::len).sum::<usize>();
            self.signals.in_store.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(Some((
                seq,
                Outgoing::InStore(InStore {
                    guard: Some(guard),
                    head: head.freeze(),
                    fragments,
                    len,
                    signals: self.signals.clone(),
                }),
            ))));
        }
        let outgoing = if self.out.is_empty() {
            Ok(None) // No aggregators: built events are discarded.
        } else {
            self.serializer
                .serialize(seq, complete, guard.data())
                .map(|b| Some((seq, Outgoing::Encoded(b))))
        };
        self.release(guard);
        Some(outgoing)
    }

    /// Releases a buffer here and tells the builder.
    fn release(&self, guard: ReadGuard<'_>) {
        drop(guard);
        self.signals.freed.notify_one();
    }

    /// End of run: flush, send end-of-data with the count to every
    /// aggregator, check the replies.
    pub(crate) async fn finish(mut self) -> Vec<String> {
        let mut problems = std::mem::take(&mut self.problems);
        if self.dropped > 0 {
            problems.push(format!(
                "{} events dropped before sending: unreadable in shared memory or not serializable",
                self.dropped
            ));
        }
        let finished = self.out.finish(0).await;
        problems.extend(finished.problems);
        self.shared
            .counters
            .update(|c| c.undelivered_ranges = finished.undelivered);
        info!(process = %self.process, run = self.run, sent = ?finished.sent, "sender finished");
        problems
    }
}
