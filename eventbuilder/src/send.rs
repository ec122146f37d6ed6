//! The sender task of an eventbuilder run: takes published events out of
//! shared memory, serializes them (NetMonOutput) and streams each to
//! aggregator `(sequence_id / n_eventbuilders) % n_aggregators`.

use crate::build::Signals;
use crate::receive::Shared;
use daq_format::fragment::{Fragment, FragmentRef};
use daq_format::netmon::{self, EventAux, History};
use daq_runtime::transport::{Events, Outbound};
use daq_shm::ShmReader;
use std::sync::Arc;
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
    pub(crate) out: Outbound<Events>,
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

impl Serializer {
    pub(crate) fn serialize(
        &mut self,
        seq: u64,
        complete: bool,
        data: &[u8],
    ) -> Result<bytes::Bytes, String> {
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
        netmon::encode_gathered(
            &aux,
            &self.history,
            &self.missing,
            index
                .iter()
                .map(|&(_, _, start, end)| data.get(start..end).unwrap_or_default()),
        )
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
            self.signals.freed.notify_one();
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

    /// One published event, serialized (NetMonOutput) straight out of
    /// shared memory: the header, then each fragment copied once from the
    /// mapping into the serialized buffer, in fragment-id order. The buffer
    /// is released before the event is sent on. `None` when nothing is
    /// published; `Some(Ok(None))` when there is no aggregator (the event
    /// is discarded).
    fn take_one(&mut self) -> Option<Result<Option<(u64, bytes::Bytes)>, String>> {
        let guard = self.reader.take()?;
        if self.out.is_empty() {
            return Some(Ok(None)); // No aggregators: built events are discarded.
        }
        let seq = guard.sequence_id();
        let complete = guard.complete();
        Some(
            self.serializer
                .serialize(seq, complete, guard.data())
                .map(|b| Some((seq, b))),
        )
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
