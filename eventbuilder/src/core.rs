//! The data path of an eventbuilder run.
//!
//! ```text
//! FragmentSink streams (one per boardreader)
//!   -> builder task: each fragment written into the shared-memory buffer of
//!      its sequence id (crate::assembly); complete events published,
//!      stale ones released incomplete
//!   -> sender task: takes published events out of shared memory,
//!      serializes them (NetMonOutput) and streams each to aggregator
//!      (sequence_id / n_eventbuilders) % n_aggregators
//! ```
//!
//! Backpressure, per boardreader: each source may have `queue_batches`
//! batches in the builder at once (a semaphore permit per batch). When no
//! buffer is free for a new event, the builder parks that source's batch and
//! goes on with the others, whose fragments complete the open events; the
//! parked source's stream stalls until the sender frees a buffer. Nothing
//! is dropped; the time spent waiting is counted (`backpressure_wait_ms`).

use crate::assembly::{Assembly, Placed, Released, Unpublished};
use daq_format::config::SystemConfig;
use daq_format::fragment::{Fragment, FragmentRef, FragmentType};
use daq_format::netmon::{self, EventAux, History, HistoryEntry};
use daq_format::process::Kind;
use daq_runtime::control::StopArgs;
use daq_runtime::counters::LiveCounters;
use daq_runtime::sources::{RunSlot, Sources};
use daq_runtime::transport::outbound::OutboundError;
use daq_runtime::transport::{
    CountSent, Decoded, Events, Fragments, Hop, Outbound, OutboundConfig, Receiver, RunEnded,
};
use daq_shm::{ShmReader, ShmStore, StoreSpec, segment_path};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use tracing::{error, info, warn};

/// What the builder task takes from the receivers and from stop.
enum BuilderInput {
    Fragments {
        source: usize,
        fragments: Vec<Fragment>,
        /// Held until the batch is in shared memory: bounds each source's
        /// batches in the builder.
        permit: OwnedSemaphorePermit,
    },
    /// Release what is left, end the aggregator streams, report problems.
    Finish(oneshot::Sender<Vec<String>>),
}

/// The receiving side of one run, shared with the gRPC service.
struct Ingress {
    run: u32,
    sources: Sources,
    permits: Vec<Arc<Semaphore>>,
    tx: mpsc::Sender<BuilderInput>,
    counters: Arc<LiveCounters>,
}

/// The receiving end of a run's fragment streams (the loop is the
/// transport's).
impl Receiver for Ingress {
    type Hop = Fragments;
    type Item = Fragment;

    fn run(&self) -> u32 {
        self.run
    }

    fn sources(&self) -> &Sources {
        &self.sources
    }

    fn counters(&self) -> &LiveCounters {
        &self.counters
    }

    /// A fragment of boardreader `source`, or its end-of-data. A rejected
    /// one is counted by the receive loop (`fragments_rejected`).
    fn decode(&self, source: usize, raw: bytes::Bytes) -> Result<Decoded<Fragment>, String> {
        match Fragment::parse(raw) {
            Ok(f) if f.kind() == FragmentType::EndOfData => f
                .end_of_data_count()
                .map(Decoded::EndOfData)
                .map_err(|e| format!("bad end-of-data: {e}")),
            Ok(f) if usize::from(f.fragment_id()) == source => Ok(Decoded::Item(f)),
            Ok(f) => Err(format!(
                "fragment id {} on the stream of boardreader-{source}",
                f.fragment_id()
            )),
            Err(e) => Err(format!("malformed fragment from boardreader-{source}: {e}")),
        }
    }

    /// One permit per batch in the builder: a source whose events cannot
    /// be placed stalls here, the others go on.
    async fn deliver(&self, source: usize, fragments: Vec<Fragment>) -> Result<(), RunEnded> {
        let permits = self.permits.get(source).ok_or(RunEnded)?;
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RunEnded)?;
        let input = BuilderInput::Fragments {
            source,
            fragments,
            permit,
        };
        self.tx.send(input).await.map_err(|_| RunEnded)
    }

    fn received(&self, fragments: u64, bytes: u64) {
        self.counters.update(|c| {
            c.fragments_received += fragments;
            c.bytes_received += bytes;
        });
    }
}

/// State shared by run control and the `FragmentSink` service.
pub struct Shared {
    process: String,
    pub counters: Arc<LiveCounters>,
    ingress: RunSlot<Ingress>,
}

impl Shared {
    pub fn new(process: String) -> Arc<Self> {
        Arc::new(Self {
            process,
            counters: Arc::default(),
            ingress: RunSlot::default(),
        })
    }
}

/// A running eventbuilder run.
pub struct Run {
    builder: JoinHandle<()>,
    finish_timeout: Duration,
    ingress: Arc<Ingress>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] OutboundError),
    #[error("shared-memory event store: {0}")]
    Store(#[from] daq_shm::ShmError),
}

/// Wakes between the two tasks: the builder published, the sender freed.
#[derive(Default)]
struct Signals {
    published: Notify,
    freed: Notify,
}

impl Run {
    pub async fn start(
        shared: &Arc<Shared>,
        rank: u16,
        run: u32,
        config: &SystemConfig,
        destinations: &[String],
    ) -> Result<Self, RunError> {
        let n_ag = usize::from(config.topology.aggregators);
        let n_eb = u64::from(config.topology.eventbuilders);
        let out = Outbound::<Events>::connect(
            destinations,
            n_ag,
            OutboundConfig::new(u32::from(rank), run, n_eb, &config.transfer),
            CountSent::<Events>::new(shared.counters.clone()),
        )
        .await?;
        let e = &config.eventbuilder;
        let store = ShmStore::create(
            &segment_path(config.partition, &shared.process),
            StoreSpec {
                buffer_count: e.buffer_count,
                buffer_bytes: e.buffer_bytes,
            },
        )?;
        if store.replaced_stale() {
            warn!(process = %shared.process, path = %store.path().display(), "replaced a stale shared-memory segment left by a crashed process");
        }
        let reader = store.reader();
        daq_runtime::metrics::data_path().set_buffers(Some(store.monitor()));
        shared.counters.reset();
        let n_br = usize::from(config.topology.boardreaders);
        let q = config.transfer.queue_batches;
        let (tx, rx) = mpsc::channel(q * n_br.max(1) + 1);
        let ingress = Arc::new(Ingress {
            run,
            sources: Sources::new(Fragments::SENDER, n_br),
            permits: (0..n_br).map(|_| Arc::new(Semaphore::new(q))).collect(),
            tx,
            counters: shared.counters.clone(),
        });
        daq_runtime::metrics::data_path().set_queue_sender("builder_batches", &ingress.tx);
        let signals = Arc::new(Signals::default());
        let (finish_tx, finish_rx) = oneshot::channel();
        let sender = Sender {
            shared: shared.clone(),
            reader,
            signals: signals.clone(),
            process: shared.process.clone(),
            run,
            serializer: Serializer {
                history: History {
                    entries: vec![HistoryEntry {
                        process: shared.process.clone(),
                        release: concat!("daq ", env!("CARGO_PKG_VERSION")).to_string(),
                        parameter_set_id: parameter_set_id(&config.to_toml()),
                        time_ns: 0,
                    }],
                },
                run,
                expected: n_br as u16,
                index: Vec::with_capacity(n_br),
                missing: Vec::new(),
            },
            out,
            batch_max_delay: Duration::from_millis(config.transfer.batch_max_delay_ms),
            dropped: 0,
            problems: Vec::new(),
        };
        let sender = tokio::spawn(sender.run(finish_rx));
        let builder = Builder {
            shared: shared.clone(),
            assembly: Assembly::new(store, n_br as u32, config.max_fragment_bytes()),
            signals,
            parked: (0..n_br).map(|_| VecDeque::new()).collect(),
            stale_timeout: Duration::from_millis(e.stale_timeout_ms),
            sender: Some((sender, finish_tx)),
            leak_bytes_per_event: config.leak.bytes_per_event_in(Kind::EventBuilder),
            lost: Lost::default(),
        };
        let builder = tokio::spawn(builder.run(rx));
        shared.ingress.set(Some(ingress.clone()));
        info!(
            rank,
            run,
            aggregators = n_ag,
            buffers = e.buffer_count,
            buffer_bytes = e.buffer_bytes,
            "run started"
        );
        Ok(Self {
            builder,
            finish_timeout: Duration::from_millis(config.transfer.end_of_data_timeout_ms),
            ingress,
        })
    }

    /// Waits for every boardreader's end-of-data (or the idle timeout),
    /// releases what is left, ends the aggregator streams and checks their
    /// counts. Returns the problems found.
    pub async fn stop(self, shared: &Shared, args: StopArgs) -> Vec<String> {
        // The store goes away with the run: stop reporting its buffers.
        daq_runtime::metrics::data_path().set_buffers(None);
        let mut problems = self
            .ingress
            .sources
            .wait_all(args.source_wait(self.finish_timeout))
            .await;
        // New streams for this run are refused from here on.
        shared.ingress.set(None);
        let (ack, done) = oneshot::channel();
        if self
            .ingress
            .tx
            .send(BuilderInput::Finish(ack))
            .await
            .is_err()
        {
            problems.push("builder task ended before stop".into());
        } else {
            match done.await {
                Ok(p) => problems.extend(p),
                Err(_) => problems.push("builder task ended during stop".into()),
            }
        }
        if let Err(e) = self.builder.await {
            problems.push(format!("builder task failed: {e}"));
        }
        problems
    }
}

/// A batch of one source waiting for room in shared memory.
struct Parked {
    fragments: Vec<Fragment>,
    next: usize,
    _permit: OwnedSemaphorePermit,
}

/// Per-batch tallies, added to the counters once per batch.
#[derive(Default)]
struct Tally {
    built: u64,
    duplicate: u64,
    late: u64,
    oversize: u64,
}

/// Events lost in shared memory during the run (their buffer could not be
/// published), for the stop reply.
#[derive(Default)]
struct Lost {
    events: u64,
    fragments: u64,
    /// The first few, named.
    first: Vec<Unpublished>,
}

struct Builder {
    shared: Arc<Shared>,
    assembly: Assembly,
    signals: Arc<Signals>,
    parked: Vec<VecDeque<Parked>>,
    stale_timeout: Duration,
    sender: Option<(JoinHandle<Vec<String>>, oneshot::Sender<()>)>,
    /// Bytes orphaned per event released, complete or not (the injected leak; 0 = none).
    leak_bytes_per_event: u64,
    lost: Lost,
}

impl Builder {
    /// Places parked fragments in order, per source; returns true when some
    /// source is blocked for want of a free buffer.
    fn place_parked(&mut self) -> bool {
        let mut tally = Tally::default();
        let mut blocked = false;
        for queue in &mut self.parked {
            'source: while let Some(batch) = queue.front_mut() {
                while let Some(fragment) = batch.fragments.get(batch.next) {
                    match self.assembly.place(fragment) {
                        Placed::NoBuffer => {
                            blocked = true;
                            break 'source;
                        }
                        Placed::Pending => {}
                        Placed::Complete => tally.built += 1,
                        Placed::Duplicate => tally.duplicate += 1,
                        Placed::Late => tally.late += 1,
                        Placed::Oversize => tally.oversize += 1,
                        // Counted with its event's other fragments below.
                        Placed::Unpublished => {}
                    }
                    batch.next += 1;
                }
                queue.pop_front();
            }
        }
        self.assembly.observe_build_latencies();
        self.count_unpublished();
        daq_runtime::leak::inject_leak(self.leak_bytes_per_event, tally.built);
        self.shared.counters.update(|c| {
            c.events_built += tally.built;
            c.dropped += tally.duplicate;
            c.late_fragments += tally.late;
            c.oversize_fragments += tally.oversize;
        });
        if tally.built > 0 {
            self.signals.published.notify_one();
        }
        let process = &self.shared.process;
        if tally.duplicate > 0 {
            warn!(%process, fragments = tally.duplicate, "duplicate fragments dropped");
        }
        if tally.late > 0 {
            error!(%process, fragments = tally.late, "late fragments for released events dropped");
        }
        if tally.oversize > 0 {
            error!(%process, fragments = tally.oversize, "over-size fragments rejected");
        }
        blocked
    }

    /// Counts the events the store could not publish since the last call
    /// (`fragments_unpublished`), naming them in the log and at stop.
    fn count_unpublished(&mut self) {
        let lost = self.assembly.take_unpublished();
        if lost.is_empty() {
            return;
        }
        let fragments: u64 = lost.iter().map(|u| u64::from(u.fragments)).sum();
        self.shared
            .counters
            .update(|c| c.fragments_unpublished += fragments);
        for u in &lost {
            error!(process = %self.shared.process, seq = u.sequence_id, fragments = u.fragments, error = %u.error, "event lost: its shared-memory buffer could not be published");
        }
        self.lost.events += lost.len() as u64;
        self.lost.fragments += fragments;
        let room = 10usize.saturating_sub(self.lost.first.len());
        self.lost.first.extend(lost.into_iter().take(room));
    }

    fn released_incomplete(&mut self, released: Vec<Released>, why: &str) {
        self.count_unpublished();
        if released.is_empty() {
            return;
        }
        let n = released.len() as u64;
        daq_runtime::leak::inject_leak(self.leak_bytes_per_event, n);
        self.shared.counters.update(|c| c.events_incomplete += n);
        for r in released.iter().take(10) {
            warn!(process = %self.shared.process, seq = r.sequence_id, missing = ?r.missing, why, "event released incomplete");
        }
        if n > 10 {
            warn!(process = %self.shared.process, events = n, why, "events released incomplete");
        }
        self.signals.published.notify_one();
    }

    async fn run(mut self, mut rx: mpsc::Receiver<BuilderInput>) {
        let mut tick = tokio::time::interval(
            (self.stale_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut blocked_since: Option<Instant> = None;
        loop {
            let blocked = self.place_parked();
            match (blocked, blocked_since) {
                (true, None) => blocked_since = Some(Instant::now()),
                (false, Some(t)) => {
                    self.add_wait(t);
                    blocked_since = None;
                }
                _ => {}
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(BuilderInput::Fragments { source, fragments, permit }) => {
                        if let Some(q) = self.parked.get_mut(source) {
                            q.push_back(Parked { fragments, next: 0, _permit: permit });
                        }
                    }
                    Some(BuilderInput::Finish(ack)) => {
                        if let Some(t) = blocked_since {
                            self.add_wait(t);
                        }
                        // A stream still open after the stop timeout may have
                        // queued batches behind the finish: take them, refuse more.
                        rx.close();
                        while let Ok(BuilderInput::Fragments { source, fragments, permit }) = rx.try_recv() {
                            if let Some(q) = self.parked.get_mut(source) {
                                q.push_back(Parked { fragments, next: 0, _permit: permit });
                            }
                        }
                        let problems = self.finish().await;
                        let _ = ack.send(problems);
                        return;
                    }
                    None => return,
                },
                _ = self.signals.freed.notified(), if blocked => {}
                _ = tick.tick() => {
                    let stale = self.assembly.release_stale(self.stale_timeout);
                    self.released_incomplete(stale, "stale");
                }
            }
        }
    }

    fn add_wait(&self, since: Instant) {
        let ms = since.elapsed().as_millis() as u64;
        self.shared
            .counters
            .update(|c| c.backpressure_wait_ms += ms);
    }

    /// End of run: place what is parked (making room by releasing the oldest
    /// open events if nothing frees), release every open event incomplete,
    /// then let the sender drain and end its streams.
    async fn finish(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while self.place_parked() {
            let freed =
                tokio::time::timeout(Duration::from_millis(200), self.signals.freed.notified())
                    .await;
            if freed.is_ok() {
                continue;
            }
            let counts = self.assembly.store().counts();
            let sender_alive = self.sender.as_ref().is_some_and(|(h, _)| !h.is_finished());
            if counts.occupied() > 0 && sender_alive {
                // Published events wait for the sender, which waits for the
                // aggregators (backpressure): it will free buffers.
                continue;
            }
            if counts.occupied() == 0
                && let Some(r) = self.assembly.release_oldest()
            {
                // Every buffer holds an open event that waits for a fragment
                // parked behind a new event: make room, oldest first.
                self.released_incomplete(vec![r], "stop: every buffer waits for a parked fragment");
                continue;
            }
            // Nobody will free a buffer (the sender is gone): what is
            // parked cannot be placed. Counted and reported, never silent.
            let n: usize = self
                .parked
                .iter()
                .flatten()
                .map(|b| b.fragments.len() - b.next)
                .sum();
            self.shared.counters.update(|c| c.dropped += n as u64);
            problems.push(format!(
                "{n} fragments could not be placed: the sender stage is gone"
            ));
            self.parked.iter_mut().for_each(VecDeque::clear);
            break;
        }
        let left = self.assembly.release_all();
        if !left.is_empty() {
            problems.push(format!("{} incomplete events released at stop", left.len()));
        }
        self.released_incomplete(left, "stop");
        if self.lost.events > 0 {
            let named: Vec<String> = self
                .lost
                .first
                .iter()
                .map(|u| format!("{} ({})", u.sequence_id, u.error))
                .collect();
            problems.push(format!(
                "{} events ({} fragments) lost: their shared-memory buffer could not be published; sequence ids {}{}",
                self.lost.events,
                self.lost.fragments,
                named.join(", "),
                if self.lost.events > named.len() as u64 { ", ..." } else { "" }
            ));
        }
        if let Some((sender, finish)) = self.sender.take() {
            let _ = finish.send(());
            self.signals.published.notify_one();
            match sender.await {
                Ok(p) => problems.extend(p),
                Err(e) => problems.push(format!("sender task failed: {e}")),
            }
        }
        problems
    }
}

/// The sender task: published events out of shared memory, serialized, to
/// the aggregators.
struct Sender {
    shared: Arc<Shared>,
    reader: ShmReader,
    signals: Arc<Signals>,
    process: String,
    run: u32,
    serializer: Serializer,
    /// The streams to the aggregators.
    out: Outbound<Events>,
    batch_max_delay: Duration,
    /// Events dropped before sending (unreadable or not serializable), and
    /// why (the first few).
    dropped: u64,
    problems: Vec<String>,
}

/// NetMonOutput of the events of one run, straight from shared memory.
struct Serializer {
    /// This process's history entry (its time set per event).
    history: History,
    run: u32,
    /// Fragments of a complete event (ids `0..expected`).
    expected: u16,
    /// Per event, reused: where each fragment lies in its buffer
    /// (fragment id, timestamp, start, end) and the missing ids.
    index: Vec<(u16, u64, usize, usize)>,
    missing: Vec<u16>,
}

impl Serializer {
    fn serialize(&mut self, seq: u64, complete: bool, data: &[u8]) -> Result<bytes::Bytes, String> {
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
fn parameter_set_id(config: &str) -> String {
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64];
    for b in config.bytes() {
        for l in &mut lanes {
            *l = (*l ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    format!("{:016x}{:016x}", lanes[0], lanes[1])
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Sender {
    async fn run(mut self, mut finish: oneshot::Receiver<()>) -> Vec<String> {
        let mut tick = tokio::time::interval(self.batch_max_delay.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finishing = false;
        loop {
            self.drain().await;
            if finishing {
                return self.finish().await;
            }
            tokio::select! {
                _ = self.signals.published.notified() => {}
                r = &mut finish, if !finishing => {
                    // The builder has published everything: one more drain, then end.
                    let _ = r;
                    finishing = true;
                }
                _ = tick.tick() => self.out.flush_due().await,
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
        self.shared.counters.update(|c| c.dropped += 1);
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
    async fn finish(mut self) -> Vec<String> {
        let mut problems = std::mem::take(&mut self.problems);
        if self.dropped > 0 {
            problems.push(format!(
                "{} events dropped before sending: unreadable in shared memory or not serializable",
                self.dropped
            ));
        }
        let finished = self.out.finish(0).await;
        problems.extend(finished.problems);
        info!(process = %self.process, run = self.run, sent = ?finished.sent, "sender finished");
        problems
    }
}

/// The `FragmentSink` gRPC service: one client stream per boardreader per run.
pub struct FragmentSink {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl proto::fragment_sink_server::FragmentSink for FragmentSink {
    async fn send(
        &self,
        request: Request<Streaming<proto::FragmentBatch>>,
    ) -> Result<Response<proto::TransferSummary>, Status> {
        let s = &self.shared;
        daq_runtime::transport::inbound::serve(&s.process, &s.ingress, request).await
    }
}
