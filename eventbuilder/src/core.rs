//! The data path of an eventbuilder run: the `FragmentSink` service takes
//! fragment streams from every boardreader, the builder task assembles
//! events in the [`EventStore`](crate::store::EventStore), serializes each
//! built event (NetMonOutput) and streams it to aggregator
//! `(sequence_id / n_eventbuilders) % n_aggregators`, which spreads each
//! eventbuilder's consecutive events over all aggregators.
//!
//! Backpressure: fragment streams feed the builder through a bounded queue;
//! event batches leave through one bounded queue per aggregator. A full
//! queue blocks the stage before it (nothing is dropped), down to the
//! boardreaders' gRPC streams.

use crate::store::{Assembled, EventStore, Insert, MemoryStore};
use common::config::SystemConfig;
use common::fragment::{Fragment, FragmentType};
use common::netmon::{self, Event, EventAux, History, HistoryEntry};
use common::sources::Sources;
use proto::event_sink_client::EventSinkClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// Counters of the current run, updated once per batch.
#[derive(Debug, Default)]
pub struct Counters {
    pub fragments_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub fragments_rejected: AtomicU64,
    pub streams_rejected: AtomicU64,
    pub events_built: AtomicU64,
    pub events_incomplete: AtomicU64,
    pub events_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub dropped: AtomicU64,
}

impl Counters {
    fn reset(&self) {
        for c in [
            &self.fragments_received,
            &self.bytes_received,
            &self.fragments_rejected,
            &self.streams_rejected,
            &self.events_built,
            &self.events_incomplete,
            &self.events_sent,
            &self.bytes_sent,
            &self.dropped,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub fn to_proto(&self) -> proto::Counters {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        proto::Counters {
            fragments_received: l(&self.fragments_received),
            bytes_received: l(&self.bytes_received),
            fragments_rejected: l(&self.fragments_rejected),
            streams_rejected: l(&self.streams_rejected),
            events_built: l(&self.events_built),
            events_incomplete: l(&self.events_incomplete),
            events_sent: l(&self.events_sent),
            bytes_sent: l(&self.bytes_sent),
            dropped: l(&self.dropped),
            ..Default::default()
        }
    }
}

/// What the builder task takes from the receivers and from stop.
enum BuilderInput {
    Fragments(Vec<Fragment>),
    /// Release what is left, end the aggregator streams, report problems.
    Finish(oneshot::Sender<Vec<String>>),
}

/// The receiving side of one run, shared with the gRPC service.
struct Ingress {
    run: u32,
    sources: Sources,
    tx: mpsc::Sender<BuilderInput>,
}

/// State shared by run control and the `FragmentSink` service.
pub struct Shared {
    process: String,
    pub counters: Counters,
    ingress: RwLock<Option<Arc<Ingress>>>,
}

impl Shared {
    pub fn new(process: String) -> Arc<Self> {
        Arc::new(Self {
            process,
            counters: Counters::default(),
            ingress: RwLock::new(None),
        })
    }

    fn ingress(&self) -> Option<Arc<Ingress>> {
        self.ingress
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_ingress(&self, i: Option<Arc<Ingress>>) {
        *self.ingress.write().unwrap_or_else(|p| p.into_inner()) = i;
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
    #[error("cannot connect to aggregator {rank} at {addr}: {source}")]
    Connect {
        rank: usize,
        addr: String,
        source: common::net::ConnectError,
    },
    #[error("init gave {got} destinations for {expected} aggregators")]
    Destinations { got: usize, expected: usize },
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
        if destinations.len() != n_ag {
            return Err(RunError::Destinations {
                got: destinations.len(),
                expected: n_ag,
            });
        }
        let timeout = Duration::from_millis(config.transfer.connect_timeout_ms);
        let mut outputs = Vec::with_capacity(n_ag);
        for (i, addr) in destinations.iter().enumerate() {
            let channel = common::net::connect(addr, timeout)
                .await
                .map_err(|source| RunError::Connect {
                    rank: i,
                    addr: addr.clone(),
                    source,
                })?;
            let mut client = EventSinkClient::new(channel)
                .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
            let (tx, rx) = mpsc::channel::<proto::EventBatch>(config.transfer.queue_batches);
            let stream = tokio::spawn(async move {
                let s = tokio_stream::wrappers::ReceiverStream::new(rx);
                client.send(s).await.map(Response::into_inner)
            });
            outputs.push(Output {
                tx: Some(tx),
                stream: Some(stream),
                pending: Vec::new(),
                pending_bytes: 0,
                since: Instant::now(),
                sent: 0,
            });
        }
        shared.counters.reset();
        let n_br = usize::from(config.topology.boardreaders);
        // Room for a few batches from every boardreader before they block.
        let (tx, rx) = mpsc::channel(config.transfer.queue_batches * n_br.max(1));
        let ingress = Arc::new(Ingress {
            run,
            sources: Sources::new("boardreader", n_br),
            tx,
        });
        let builder = Builder {
            shared: shared.clone(),
            process: shared.process.clone(),
            release: concat!("daq ", env!("CARGO_PKG_VERSION")).to_string(),
            parameter_set_id: parameter_set_id(&config.to_toml()),
            rank,
            run,
            n_eb: u64::from(config.topology.eventbuilders),
            store: Box::new(MemoryStore::new(n_br)),
            outputs,
            batch_max_items: config.transfer.batch_max_items,
            batch_max_delay: Duration::from_millis(config.transfer.batch_max_delay_ms),
        };
        let builder = tokio::spawn(builder.run(rx));
        shared.set_ingress(Some(ingress.clone()));
        info!(rank, run, aggregators = n_ag, "run started");
        Ok(Self {
            builder,
            finish_timeout: Duration::from_millis(config.transfer.end_of_data_timeout_ms),
            ingress,
        })
    }

    /// Waits for every boardreader's end-of-data (or the idle timeout),
    /// releases what is left, ends the aggregator streams and checks their
    /// counts. Returns the problems found.
    pub async fn stop(self, shared: &Shared) -> Vec<String> {
        let mut problems = self.ingress.sources.wait_all(self.finish_timeout).await;
        // New streams for this run are refused from here on.
        shared.set_ingress(None);
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

struct Output {
    tx: Option<mpsc::Sender<proto::EventBatch>>,
    stream: Option<JoinHandle<Result<proto::TransferSummary, Status>>>,
    pending: Vec<bytes::Bytes>,
    pending_bytes: usize,
    since: Instant,
    sent: u64,
}

struct Builder {
    shared: Arc<Shared>,
    process: String,
    release: String,
    parameter_set_id: String,
    rank: u16,
    run: u32,
    n_eb: u64,
    store: Box<dyn EventStore>,
    outputs: Vec<Output>,
    batch_max_items: usize,
    batch_max_delay: Duration,
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

impl Builder {
    async fn run(mut self, mut rx: mpsc::Receiver<BuilderInput>) {
        let mut tick = tokio::time::interval(self.batch_max_delay.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(BuilderInput::Fragments(v)) => {
                        if let Err(e) = self.insert(v).await {
                            warn!(process = %self.process, error = %e, "event output failed");
                        }
                    }
                    Some(BuilderInput::Finish(ack)) => {
                        let problems = self.finish().await;
                        let _ = ack.send(problems);
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    for d in 0..self.outputs.len() {
                        let due = !self.outputs[d].pending.is_empty()
                            && self.outputs[d].since.elapsed() >= self.batch_max_delay;
                        if due && let Err(e) = self.flush(d).await {
                            warn!(process = %self.process, error = %e, "event output failed");
                        }
                    }
                }
            }
        }
    }

    async fn insert(&mut self, fragments: Vec<Fragment>) -> Result<(), String> {
        let mut dropped = 0;
        for f in fragments {
            match self.store.insert(f) {
                Insert::Pending => {}
                Insert::Duplicate => dropped += 1,
                Insert::Complete(a) => {
                    self.shared
                        .counters
                        .events_built
                        .fetch_add(1, Ordering::Relaxed);
                    self.emit(a).await?;
                }
            }
        }
        if dropped > 0 {
            self.shared
                .counters
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
            warn!(process = %self.process, dropped, "duplicate fragments dropped");
        }
        Ok(())
    }

    /// Serializes an event and queues it for its aggregator.
    async fn emit(&mut self, a: Assembled) -> Result<(), String> {
        if self.outputs.is_empty() {
            return Ok(()); // No aggregators: built events are discarded.
        }
        let timestamp = a.fragments.first().map(Fragment::timestamp).unwrap_or(0);
        let event = Event {
            aux: EventAux {
                run: self.run,
                subrun: 1,
                event: a.sequence_id,
                sequence_id: a.sequence_id,
                timestamp,
                complete: a.is_complete(),
            },
            history: History {
                entries: vec![HistoryEntry {
                    process: self.process.clone(),
                    release: self.release.clone(),
                    parameter_set_id: self.parameter_set_id.clone(),
                    time_ns: now_ns(),
                }],
            },
            missing: a.missing,
            fragments: a.fragments,
        };
        let bytes = netmon::encode(&event).map_err(|e| e.to_string())?;
        let d = ((a.sequence_id / self.n_eb) % self.outputs.len() as u64) as usize;
        let out = &mut self.outputs[d];
        if out.pending.is_empty() {
            out.since = Instant::now();
        }
        out.pending_bytes += bytes.len();
        out.pending.push(bytes);
        if out.pending.len() >= self.batch_max_items
            || out.pending_bytes >= proto::MAX_MESSAGE_BYTES / 4
        {
            self.flush(d).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, d: usize) -> Result<(), String> {
        let out = &mut self.outputs[d];
        if out.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut out.pending);
        let n = events.len() as u64;
        let bytes = std::mem::take(&mut out.pending_bytes) as u64;
        let Some(tx) = &out.tx else {
            return Err(format!("aggregator-{d}: stream already ended"));
        };
        tx.send(proto::EventBatch {
            source: u32::from(self.rank),
            run: self.run,
            events,
            end_of_data: None,
        })
        .await
        .map_err(|_| format!("aggregator-{d}: stream closed during the run"))?;
        out.sent += n;
        let c = &self.shared.counters;
        c.events_sent.fetch_add(n, Ordering::Relaxed);
        c.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// End of run: release partial events as incomplete, flush, send
    /// end-of-data with the count to every aggregator, check the replies.
    async fn finish(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let leftovers = self.store.drain_incomplete();
        if !leftovers.is_empty() {
            let n = leftovers.len() as u64;
            warn!(process = %self.process, events = n, "incomplete events released at stop");
            self.shared
                .counters
                .events_incomplete
                .fetch_add(n, Ordering::Relaxed);
            problems.push(format!("{n} incomplete events released at stop"));
            for a in leftovers {
                if let Err(e) = self.emit(a).await {
                    problems.push(e);
                    break;
                }
            }
        }
        for d in 0..self.outputs.len() {
            if let Err(e) = self.flush(d).await {
                problems.push(e);
            }
            let out = &mut self.outputs[d];
            if let Some(tx) = out.tx.take() {
                let eod = proto::EventBatch {
                    source: u32::from(self.rank),
                    run: self.run,
                    events: vec![],
                    end_of_data: Some(out.sent),
                };
                if tx.send(eod).await.is_err() {
                    problems.push(format!("aggregator-{d}: stream closed before end-of-data"));
                }
            }
        }
        for (d, out) in self.outputs.iter_mut().enumerate() {
            let Some(stream) = out.stream.take() else {
                continue;
            };
            match stream.await {
                Ok(Ok(s)) if s.received == out.sent && s.announced == Some(out.sent) => {}
                Ok(Ok(s)) => problems.push(format!(
                    "aggregator-{d}: sent {} events, it received {} (announced {:?})",
                    out.sent, s.received, s.announced
                )),
                Ok(Err(status)) => problems.push(format!(
                    "aggregator-{d}: stream failed: {}",
                    status.message()
                )),
                Err(e) => problems.push(format!("aggregator-{d}: stream task failed: {e}")),
            }
        }
        info!(process = %self.process, run = self.run, sent = ?self.outputs.iter().map(|o| o.sent).collect::<Vec<_>>(), "builder finished");
        problems
    }
}

/// The `FragmentSink` gRPC service: one client stream per boardreader per run.
pub struct FragmentSink {
    pub shared: Arc<Shared>,
}

impl FragmentSink {
    fn reject(&self, ingress: &Ingress, source: Option<usize>, msg: String) -> Status {
        self.shared
            .counters
            .streams_rejected
            .fetch_add(1, Ordering::Relaxed);
        warn!(process = %self.shared.process, ?source, error = %msg, "fragment stream rejected");
        if let Some(s) = source {
            ingress.sources.ended(s, Some(msg.clone()));
        }
        Status::invalid_argument(format!("{}: {msg}", self.shared.process))
    }
}

#[tonic::async_trait]
impl proto::fragment_sink_server::FragmentSink for FragmentSink {
    async fn send(
        &self,
        request: Request<Streaming<proto::FragmentBatch>>,
    ) -> Result<Response<proto::TransferSummary>, Status> {
        let Some(ingress) = self.shared.ingress() else {
            return Err(Status::failed_precondition(format!(
                "{} is not running; fragments refused",
                self.shared.process
            )));
        };
        let n_sources = ingress.sources.len();
        let mut stream = request.into_inner();
        let mut source: Option<usize> = None;
        let mut received = 0u64;
        let mut announced = None;
        loop {
            let batch = match stream.message().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(status) => {
                    if let Some(s) = source {
                        ingress.sources.ended(s, Some(status.message().to_string()));
                    }
                    return Err(status);
                }
            };
            if batch.run != ingress.run {
                return Err(self.reject(
                    &ingress,
                    source,
                    format!("batch for run {} during run {}", batch.run, ingress.run),
                ));
            }
            let src = batch.source as usize;
            if src >= n_sources || source.is_some_and(|s| s != src) {
                return Err(self.reject(
                    &ingress,
                    source,
                    format!("batch from unexpected source {src}"),
                ));
            }
            source = Some(src);
            let mut fragments = Vec::with_capacity(batch.fragments.len());
            let mut bytes = 0u64;
            for raw in batch.fragments {
                let f = match Fragment::parse(raw) {
                    Ok(f) => f,
                    Err(e) => {
                        self.shared
                            .counters
                            .fragments_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(self.reject(
                            &ingress,
                            source,
                            format!("malformed fragment from boardreader-{src}: {e}"),
                        ));
                    }
                };
                if f.kind() == FragmentType::EndOfData {
                    match f.end_of_data_count() {
                        Ok(c) => {
                            announced = Some(c);
                            ingress.sources.announced(src, c);
                        }
                        Err(e) => {
                            return Err(self.reject(
                                &ingress,
                                source,
                                format!("bad end-of-data: {e}"),
                            ));
                        }
                    }
                    continue;
                }
                if usize::from(f.fragment_id()) != src {
                    self.shared
                        .counters
                        .fragments_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(self.reject(
                        &ingress,
                        source,
                        format!(
                            "fragment id {} on the stream of boardreader-{src}",
                            f.fragment_id()
                        ),
                    ));
                }
                bytes += f.len() as u64;
                fragments.push(f);
            }
            let n = fragments.len() as u64;
            if n == 0 {
                continue;
            }
            if ingress
                .tx
                .send(BuilderInput::Fragments(fragments))
                .await
                .is_err()
            {
                return Err(self.reject(
                    &ingress,
                    source,
                    "run ended while fragments were arriving".into(),
                ));
            }
            received += n;
            ingress.sources.received(src, n);
            let c = &self.shared.counters;
            c.fragments_received.fetch_add(n, Ordering::Relaxed);
            c.bytes_received.fetch_add(bytes, Ordering::Relaxed);
        }
        if let Some(s) = source {
            ingress.sources.ended(s, None);
        }
        Ok(Response::new(proto::TransferSummary {
            received,
            announced,
        }))
    }
}
