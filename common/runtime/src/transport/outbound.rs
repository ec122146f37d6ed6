//! The sending side of a hop: one gRPC client stream per destination,
//! routing by sequence id, batching by count, bytes and delay, the
//! end-of-data count at the end, and the check of every destination's
//! summary against what was sent.
//!
//! Flow control, the same on both hops: a batch goes out once it holds
//! `transfer.batch_max_items` items or `batch_max_bytes` bytes, or once it
//! is `batch_max_delay_ms` old; each destination queues at most
//! `queue_batches` batches (about `queue_batches` x `batch_max_bytes`
//! bytes). When a queue is full the sender waits: it blocks, never drops,
//! and HTTP/2 flow control carries the receiver's stall back to it. A
//! destination whose stream breaks (the receiver died or rejected the
//! stream) is lost: its items from then on are counted as dropped and named
//! at the end, the other destinations go on, and nothing waits for it at
//! stop.

use super::hop::Hop;
use super::links::{self, Mechanism};
use super::shm;
use crate::counters::LiveCounters;
use crate::net::ConnectError;
use bytes::Bytes;
use daq_format::config::{SystemConfig, TransferConfig, TransferMode};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// When a batch is closed and how many wait per destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub max_items: usize,
    pub max_bytes: usize,
    pub max_delay: Duration,
    pub queue_batches: usize,
}

impl From<&TransferConfig> for Batching {
    fn from(t: &TransferConfig) -> Self {
        Self {
            max_items: t.batch_max_items.max(1),
            max_bytes: t.batch_max_bytes,
            max_delay: Duration::from_millis(t.batch_max_delay_ms),
            queue_batches: t.queue_batches.max(1),
        }
    }
}

/// Who sends, in which run, and how items are routed and batched.
#[derive(Clone, Copy, Debug)]
pub struct OutboundConfig {
    /// This sender's rank, carried by every batch as its source.
    pub source: u32,
    pub run: u32,
    /// Sequence id `s` goes to destination `(s / stride) % destinations`.
    pub stride: u64,
    pub batching: Batching,
    pub connect_timeout: Duration,
    /// gRPC streams, shared-memory links, or either by host.
    pub mode: TransferMode,
    /// Ring bytes of a shared-memory link.
    pub link_capacity: usize,
    /// Names the link segments.
    pub partition: u32,
}

impl OutboundConfig {
    pub fn new(source: u32, run: u32, stride: u64, config: &SystemConfig) -> Self {
        let transfer = &config.transfer;
        Self {
            source,
            run,
            stride: stride.max(1),
            batching: Batching::from(transfer),
            connect_timeout: Duration::from_millis(transfer.connect_timeout_ms),
            mode: transfer.mode,
            link_capacity: transfer.link_capacity(),
            partition: config.partition,
        }
    }
}

/// Where the outbound side's counts go: the process's own counters.
/// Called once per batch, never per item; `sent` is the place to observe
/// batch sizes.
pub trait SendCounts: Send + Sync + 'static {
    /// A batch of `items` items and `bytes` bytes went onto a stream.
    fn sent(&self, items: u64, bytes: u64);
    /// `items` items for a lost destination were dropped.
    fn dropped(&self, items: u64);
}

/// The usual [`SendCounts`]: a hop's batches counted into the process's
/// [`LiveCounters`] (the fields [`Hop::count_sent`] names; losses to a lost
/// destination in `undelivered` and `dropped`).
pub struct CountSent<H>(Arc<LiveCounters>, PhantomData<H>);

impl<H> CountSent<H> {
    pub fn new(counters: Arc<LiveCounters>) -> Arc<Self> {
        Arc::new(Self(counters, PhantomData))
    }
}

impl<H: Hop> SendCounts for CountSent<H> {
    fn sent(&self, items: u64, bytes: u64) {
        self.0.update(|c| H::count_sent(c, items, bytes));
    }

    fn dropped(&self, items: u64) {
        self.0.update(|c| {
            c.dropped += items;
            c.undelivered += items;
        });
    }
}

/// What the outbound side carries: an item's bytes, made already or made
/// where they go. Over a gRPC stream every item travels as its bytes
/// ([`Item::into_bytes`]); over a shared-memory link an item writes itself
/// straight into the receiver's ring ([`Item::write_to`]), so one that is
/// made there (a generated fragment, an event gathered from a store) is
/// never copied into a buffer of its own first.
pub trait Item: Send + 'static {
    /// Bytes of the item.
    fn len(&self) -> usize;
    /// True for an item of no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the item into `dst`, exactly [`Item::len`] bytes, all of
    /// which it must fill.
    fn write_to(&self, dst: &mut [u8]);
    /// The item as bytes of its own.
    fn into_bytes(self) -> Bytes;
}

impl Item for Bytes {
    fn len(&self) -> usize {
        Bytes::len(self)
    }

    fn write_to(&self, dst: &mut [u8]) {
        dst.copy_from_slice(self);
    }

    fn into_bytes(self) -> Bytes {
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("init gave {got} destinations for {expected} {kind}s")]
    Destinations {
        kind: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("cannot connect to {kind} {rank} at {addr}: {source}")]
    Connect {
        kind: &'static str,
        rank: usize,
        addr: String,
        source: ConnectError,
    },
    #[error("transfer mode shm: {kind} {rank} at {addr} cannot use shared memory: {why}")]
    Shm {
        kind: &'static str,
        rank: usize,
        addr: String,
        why: String,
    },
}

type Reply = JoinHandle<Result<proto::TransferSummary, tonic::Status>>;

/// A destination's queue: batches for its gRPC stream, or items for its
/// link's thread, which writes them into the ring.
enum Tx<H: Hop, I> {
    Grpc(mpsc::Sender<H::Batch>),
    Shm(mpsc::Sender<shm::Queued<H, I>>),
}

struct Destination<H: Hop, I> {
    /// `None` once the destination is lost (or its stream ended).
    tx: Option<Tx<H, I>>,
    lost: bool,
    reply: Reply,
    pending: Vec<I>,
    /// The sequence ids of `pending`, in order.
    pending_ids: Vec<u64>,
    pending_bytes: usize,
    /// When the oldest pending item was added.
    since: Instant,
    sent: u64,
    dropped: u64,
    /// The sequence ids dropped for this destination once it was lost.
    undelivered: Vec<daq_format::seqranges::SequenceRange>,
}

/// What the end of the streams found.
#[derive(Debug, Default)]
pub struct Finished {
    /// Items sent to each destination (its end-of-data count).
    pub sent: Vec<u64>,
    /// One line per destination that is not accounted for.
    pub problems: Vec<String>,
    /// Per lost destination (`aggregator-1`), the sequence ids routed to it
    /// after its stream broke, which never left this process. Batches it
    /// had queued when the stream broke are not among them (they were
    /// sent, and are in the destination's shortfall).
    pub undelivered: Vec<proto::SourceRanges>,
}

/// The sending side of one run on hop `H`, carrying items of type `I`.
pub struct Outbound<H: Hop, I: Item = Bytes> {
    config: OutboundConfig,
    /// A shared-memory destination's batch is sent at this many items.
    in_place_max_items: usize,
    destinations: Vec<Destination<H, I>>,
    counts: Arc<dyn SendCounts>,
}

impl<H: Hop, I: Item> Outbound<H, I> {
    /// Connects to every destination (`addrs[rank]`; `expected` of them)
    /// and opens one stream to each.
    pub async fn connect(
        addrs: &[String],
        expected: usize,
        config: OutboundConfig,
        counts: Arc<dyn SendCounts>,
    ) -> Result<Self, OutboundError> {
        if addrs.len() != expected {
            return Err(OutboundError::Destinations {
                kind: H::RECEIVER,
                got: addrs.len(),
                expected,
            });
        }
        let mut destinations = Vec::with_capacity(addrs.len());
        for (rank, addr) in addrs.iter().enumerate() {
            let channel = crate::net::connect(addr, config.connect_timeout)
                .await
                .map_err(|source| OutboundError::Connect {
                    kind: H::RECEIVER,
                    rank,
                    addr: addr.clone(),
                    source,
                })?;
            let queue = config.batching.queue_batches;
            let receiver = format!("{}-{rank}", H::RECEIVER);
            let link = match config.mode {
                TransferMode::Grpc => Err(String::new()),
                TransferMode::Auto | TransferMode::Shm => {
                    let offer = shm::Offer {
                        partition: config.partition,
                        sender: &format!("{}-{}", H::SENDER, config.source),
                        receiver: &receiver,
                        source: config.source,
                        run: config.run,
                        capacity: config.link_capacity,
                    };
                    shm::offer::<H>(&channel, offer).await
                }
            };
            let (tx, reply, mechanism) = match link {
                Ok(offered) => {
                    let (tx, rx) = mpsc::channel(queue);
                    let reply = shm::spawn_sender::<H, I>(offered, rx, config.run, config.source);
                    (Tx::Shm(tx), reply, Mechanism::Shm)
                }
                Err(why) if config.mode == TransferMode::Shm => {
                    return Err(OutboundError::Shm {
                        kind: H::RECEIVER,
                        rank,
                        addr: addr.clone(),
                        why,
                    });
                }
                Err(why) => {
                    if config.mode == TransferMode::Auto {
                        if why.contains("another host") {
                            info!(destination = %receiver, reason = %why, "{} go over gRPC", H::ITEMS);
                        } else {
                            warn!(
                                destination = %receiver,
                                reason = %why,
                                "shared memory is not possible; {} go over gRPC",
                                H::ITEMS
                            );
                        }
                    }
                    let (tx, rx) = mpsc::channel(queue);
                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                    let reply = tokio::spawn(H::open(channel, stream));
                    (Tx::Grpc(tx), reply, Mechanism::Grpc)
                }
            };
            links::set(&receiver, mechanism);
            destinations.push(Destination {
                tx: Some(tx),
                lost: false,
                reply,
                pending: Vec::with_capacity(config.batching.max_items),
                pending_ids: Vec::with_capacity(config.batching.max_items),
                pending_bytes: 0,
                since: Instant::now(),
                sent: 0,
                dropped: 0,
                undelivered: Vec::new(),
            });
        }
        Ok(Self {
            config,
            in_place_max_items: config.batching.max_items,
            destinations,
            counts,
        })
    }

    /// True when there is no destination (items pushed are discarded).
    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// The destination of sequence id `sequence_id`.
    pub fn route(&self, sequence_id: u64) -> usize {
        ((sequence_id / self.config.stride) % self.destinations.len().max(1) as u64) as usize
    }

    /// Whether the item of `sequence_id` goes into a shared-memory ring,
    /// where an [`Item`] that writes itself is made in place: a sender
    /// pushes such an item for it, and bytes made at once for a gRPC
    /// stream (which would only copy it out again).
    pub fn writes_in_place(&self, sequence_id: u64) -> bool {
        self.destinations
            .get(self.route(sequence_id))
            .is_some_and(|d| matches!(d.tx, Some(Tx::Shm(_))))
    }

    /// Sends a shared-memory destination's batch once it holds `max_items`
    /// items (if that is fewer than the batching's): for items that hold
    /// something until they are written, such as an event's store buffer,
    /// so that partial batches never hold the whole store while the
    /// process that fills it waits for a free buffer.
    pub fn limit_in_place_batches(&mut self, max_items: usize) {
        self.in_place_max_items = max_items.clamp(1, self.config.batching.max_items);
    }

    /// Adds an item to its destination's batch; returns the destination if
    /// that batch is now full and must be flushed.
    fn add(&mut self, sequence_id: u64, item: I) -> Option<usize> {
        if self.destinations.is_empty() {
            return None;
        }
        let d = self.route(sequence_id);
        let b = &self.config.batching;
        let dest = self.destinations.get_mut(d)?;
        let max_items = match dest.tx {
            Some(Tx::Shm(_)) => self.in_place_max_items,
            _ => b.max_items,
        };
        if dest.pending.is_empty() {
            dest.since = Instant::now();
        }
        dest.pending_bytes += item.len();
        dest.pending.push(item);
        dest.pending_ids.push(sequence_id);
        (dest.pending.len() >= max_items || dest.pending_bytes >= b.max_bytes).then_some(d)
    }

    /// Adds an item for the destination of `sequence_id`, sending the
    /// batch when it is full (waiting while that destination's queue is).
    pub async fn push(&mut self, sequence_id: u64, item: I) {
        if let Some(d) = self.add(sequence_id, item) {
            self.flush(d).await;
        }
    }

    fn due(&self, d: usize, now: Instant) -> bool {
        self.destinations.get(d).is_some_and(|dest| {
            !dest.pending.is_empty()
                && now.saturating_duration_since(dest.since) >= self.config.batching.max_delay
        })
    }

    /// Whether some batch is due. Reads the clock once, and only when some
    /// batch is pending (this is asked once per item).
    fn any_due(&self) -> bool {
        if !self.any_pending() {
            return false;
        }
        let now = Instant::now();
        (0..self.destinations.len()).any(|d| self.due(d, now))
    }

    fn any_pending(&self) -> bool {
        self.destinations.iter().any(|d| !d.pending.is_empty())
    }

    /// When the oldest pending batch falls due (`None`: nothing pending),
    /// so that a sender sleeps until then instead of ticking.
    pub fn next_due(&self) -> Option<Instant> {
        self.destinations
            .iter()
            .filter(|d| !d.pending.is_empty())
            .map(|d| d.since + self.config.batching.max_delay)
            .min()
    }

    /// Sends every batch older than the batch delay.
    pub async fn flush_due(&mut self) {
        let now = Instant::now();
        for d in 0..self.destinations.len() {
            if self.due(d, now) {
                self.flush(d).await;
            }
        }
    }

    /// Sends every pending batch.
    pub async fn flush_all(&mut self) {
        for d in 0..self.destinations.len() {
            self.flush(d).await;
        }
    }

    /// Sends destination `d`'s batch, waiting while its queue is full. A
    /// closed stream marks the destination lost; the batch is dropped and
    /// counted.
    async fn flush(&mut self, d: usize) {
        let max_items = self.config.batching.max_items;
        let Some(dest) = self.destinations.get_mut(d) else {
            return;
        };
        if dest.pending.is_empty() {
            return;
        }
        let items = std::mem::replace(&mut dest.pending, Vec::with_capacity(max_items));
        let ids = std::mem::replace(&mut dest.pending_ids, Vec::with_capacity(max_items));
        let n = items.len() as u64;
        let bytes = std::mem::take(&mut dest.pending_bytes) as u64;
        if let Some(tx) = &dest.tx {
            let queued = match tx {
                Tx::Grpc(tx) => {
                    let items = items.into_iter().map(Item::into_bytes).collect();
                    let batch = H::batch(self.config.source, self.config.run, items);
                    tx.send(batch).await.is_ok()
                }
                Tx::Shm(tx) => tx.send(shm::Queued::Items(items)).await.is_ok(),
            };
            if queued {
                dest.sent += n;
                // Once per batch: counters, and the place for batch metrics.
                self.counts.sent(n, bytes);
                return;
            }
            dest.tx = None;
            dest.lost = true;
            error!(
                destination = format!("{}-{d}", H::RECEIVER),
                "stream closed during the run; its {} from here on are dropped",
                H::ITEMS
            );
        }
        dest.dropped += n;
        // One residue per destination: the step is the routing's period.
        let step = self.config.stride * self.destinations.len() as u64;
        if let Some(dest) = self.destinations.get_mut(d) {
            for id in ids {
                daq_format::seqranges::insert(&mut dest.undelivered, id, step);
            }
        }
        self.counts.dropped(n);
    }

    /// Ends every stream: sends what is pending, then end-of-data with the
    /// count sent (`sequence_id` is where the stream ended, for hops that
    /// carry it), and checks each destination's summary. A lost
    /// destination gets no end-of-data and is named, with what it missed.
    pub async fn finish(mut self, sequence_id: u64) -> Finished {
        self.flush_all().await;
        let mut problems = Vec::new();
        let c = self.config;
        for (d, dest) in self.destinations.iter_mut().enumerate() {
            // Taking the sender ends the stream once end-of-data is queued.
            let Some(tx) = dest.tx.take() else {
                continue;
            };
            match H::end_of_data(c.source, c.run, dest.sent, sequence_id) {
                Ok(eod) => {
                    let queued = match tx {
                        Tx::Grpc(tx) => tx.send(eod).await.is_ok(),
                        Tx::Shm(tx) => tx.send(shm::Queued::Batch(eod)).await.is_ok(),
                    };
                    if !queued {
                        problems.push(format!(
                            "{}-{d}: stream closed before end-of-data",
                            H::RECEIVER
                        ));
                    }
                }
                Err(e) => problems.push(format!("{}-{d}: {e}", H::RECEIVER)),
            }
        }
        let mut sent = Vec::with_capacity(self.destinations.len());
        let mut undelivered = Vec::new();
        for (d, mut dest) in self.destinations.into_iter().enumerate() {
            let (kind, items, n) = (H::RECEIVER, H::ITEMS, dest.sent);
            sent.push(n);
            if !dest.undelivered.is_empty() {
                undelivered.push(proto::SourceRanges {
                    source: format!("{kind}-{d}"),
                    ranges: std::mem::take(&mut dest.undelivered),
                });
            }
            if dest.lost {
                problems.push(format!(
                    "{kind}-{d}: stream closed during the run; {} {items} dropped",
                    dest.dropped
                ));
            }
            match dest.reply.await {
                Ok(Ok(s)) if s.received == n && s.announced == Some(n) => {}
                Ok(Ok(s)) => problems.push(format!(
                    "{kind}-{d}: sent {n} {items}, it received {} (announced {:?})",
                    s.received, s.announced
                )),
                Ok(Err(status)) => problems.push(format!(
                    "{kind}-{d}: stream failed after {n} {items}: {}",
                    status.message()
                )),
                Err(e) => problems.push(format!("{kind}-{d}: stream task failed: {e}")),
            }
        }
        info!(
            source = c.source,
            run = c.run,
            destinations = H::RECEIVER,
            sent = ?sent,
            "streams ended"
        );
        Finished {
            sent,
            problems,
            undelivered,
        }
    }

    /// The same side, driven from a plain thread that may block.
    pub fn into_blocking(self, rt: tokio::runtime::Handle) -> BlockingOutbound<H, I> {
        BlockingOutbound { inner: self, rt }
    }
}

/// The outbound side driven from a plain (non-async) thread, such as the
/// boardreader's generator thread: a full queue blocks the thread. The
/// runtime is entered only to send a batch, never per item.
pub struct BlockingOutbound<H: Hop, I: Item = Bytes> {
    inner: Outbound<H, I>,
    rt: tokio::runtime::Handle,
}

impl<H: Hop, I: Item> BlockingOutbound<H, I> {
    /// See [`Outbound::writes_in_place`].
    pub fn writes_in_place(&self, sequence_id: u64) -> bool {
        self.inner.writes_in_place(sequence_id)
    }

    /// See [`Outbound::push`].
    pub fn push(&mut self, sequence_id: u64, item: I) {
        if let Some(d) = self.inner.add(sequence_id, item) {
            self.rt.block_on(self.inner.flush(d));
        }
    }

    /// See [`Outbound::flush_due`].
    pub fn flush_due(&mut self) {
        if self.inner.any_due() {
            self.rt.block_on(self.inner.flush_due());
        }
    }

    /// See [`Outbound::flush_all`].
    pub fn flush_all(&mut self) {
        if self.inner.any_pending() {
            self.rt.block_on(self.inner.flush_all());
        }
    }

    /// See [`Outbound::finish`].
    pub fn finish(self, sequence_id: u64) -> Finished {
        self.rt.block_on(self.inner.finish(sequence_id))
    }
}
