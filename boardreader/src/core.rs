//! The data path of a boardreader run: a generator thread polls the
//! generator into per-destination batches (artdaq's two threads: the
//! generator here, the gRPC streams on the runtime), routes sequence id `s`
//! to eventbuilder `s % n`, and ends every stream with an EndOfData fragment
//! carrying the count sent to that destination.
//!
//! Backpressure: each destination has a bounded queue of
//! `transfer.queue_batches` batches; when it is full the generator blocks
//! (nothing is dropped), which is how a slow eventbuilder throttles it.

use bytes::Bytes;
use daq_format::config::SystemConfig;
use daq_format::fragment::Fragment;
use proto::fragment_sink_client::FragmentSinkClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::generator::{Generator, ToySimulator};

/// What run control asks of the generator thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunCommand {
    Run,
    Pause,
    /// Generate up to this sequence id (or stop now if `None`), then end.
    Stop(Option<u64>),
}

/// Counters of the current run, updated once per batch.
#[derive(Debug, Default)]
pub struct SendCounters {
    pub fragments_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub last_sequence_id: AtomicU64,
    /// Fragments for an eventbuilder whose stream closed, not sent.
    pub dropped: AtomicU64,
}

impl SendCounters {
    pub fn reset(&self) {
        self.fragments_sent.store(0, Ordering::Relaxed);
        self.bytes_sent.store(0, Ordering::Relaxed);
        self.last_sequence_id.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to eventbuilder {rank} at {addr}: {source}")]
    Connect {
        rank: usize,
        addr: String,
        source: daq_runtime::net::ConnectError,
    },
    #[error("init gave {got} destinations for {expected} eventbuilders")]
    Destinations { got: usize, expected: usize },
}

/// A running boardreader run.
pub struct Run {
    command: watch::Sender<(u64, RunCommand)>,
    /// Number of the last command the generator has acted on while idle.
    idle_ack: watch::Receiver<u64>,
    generator: JoinHandle<GeneratorOutcome>,
    streams: Vec<JoinHandle<Result<proto::TransferSummary, tonic::Status>>>,
}

struct GeneratorOutcome {
    sent_per_destination: Vec<u64>,
    problems: Vec<String>,
}

impl Run {
    /// Connects to every eventbuilder, opens one stream each and starts the
    /// generator thread.
    pub async fn start(
        rank: u16,
        run: u32,
        config: &SystemConfig,
        destinations: &[String],
        counters: Arc<SendCounters>,
    ) -> Result<Self, SendError> {
        let n = usize::from(config.topology.eventbuilders);
        if destinations.len() != n {
            return Err(SendError::Destinations {
                got: destinations.len(),
                expected: n,
            });
        }
        let timeout = Duration::from_millis(config.transfer.connect_timeout_ms);
        let mut queues = Vec::with_capacity(n);
        let mut streams = Vec::with_capacity(n);
        for (i, addr) in destinations.iter().enumerate() {
            let channel = daq_runtime::net::connect(addr, timeout)
                .await
                .map_err(|source| SendError::Connect {
                    rank: i,
                    addr: addr.clone(),
                    source,
                })?;
            let mut client = FragmentSinkClient::new(channel)
                .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
            let (tx, rx) = mpsc::channel::<proto::FragmentBatch>(config.transfer.queue_batches);
            queues.push(tx);
            streams.push(tokio::spawn(async move {
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                client.send(stream).await.map(tonic::Response::into_inner)
            }));
        }
        counters.reset();
        let (command, rx) = watch::channel((0, RunCommand::Run));
        let (ack_tx, idle_ack) = watch::channel(0);
        let generator = ToySimulator::new(rank, &config.generator);
        let loop_cfg = LoopConfig {
            rank,
            run,
            initial_sequence_id: config.generator.initial_sequence_id,
            max_events: config.generator.max_events,
            throttle: Duration::from_micros(config.generator.throttle_us),
            batch_max_items: config.transfer.batch_max_items,
            batch_max_bytes: config.transfer.batch_max_bytes,
            batch_max_delay: Duration::from_millis(config.transfer.batch_max_delay_ms),
        };
        let handle = tokio::runtime::Handle::current();
        let generator = tokio::task::spawn_blocking(move || {
            generate(loop_cfg, generator, rx, ack_tx, queues, counters, handle)
        });
        info!(rank, run, destinations = n, "run started");
        Ok(Self {
            command,
            idle_ack,
            generator,
            streams,
        })
    }

    fn send(&self, cmd: RunCommand) -> u64 {
        let mut id = 0;
        self.command.send_modify(|(n, c)| {
            *n += 1;
            *c = cmd;
            id = *n;
        });
        id
    }

    /// Pauses generation and returns once the generator is idle, so the
    /// last sequence id it reports is final until resume or stop.
    pub async fn pause(&mut self) -> Result<(), String> {
        let id = self.send(RunCommand::Pause);
        self.idle_ack
            .wait_for(|&acked| acked >= id)
            .await
            .map(|_| ())
            .map_err(|_| "generator ended before it paused".to_string())
    }

    pub fn resume(&self) {
        self.send(RunCommand::Run);
    }

    /// Ends the run: the generator finishes (up to `end_sequence_id`), sends
    /// end-of-data on every stream, and each eventbuilder's reply is checked
    /// against what was sent. Returns the problems found.
    pub async fn stop(self, end_sequence_id: Option<u64>) -> Vec<String> {
        self.send(RunCommand::Stop(end_sequence_id));
        let mut problems = Vec::new();
        let outcome = match self.generator.await {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("generator thread failed: {e}"));
                return problems;
            }
        };
        problems.extend(outcome.problems);
        for (i, stream) in self.streams.into_iter().enumerate() {
            let sent = outcome.sent_per_destination.get(i).copied().unwrap_or(0);
            match stream.await {
                Ok(Ok(summary)) => {
                    if summary.received != sent || summary.announced != Some(sent) {
                        problems.push(format!(
                            "eventbuilder-{i}: sent {sent}, it received {} (announced {:?})",
                            summary.received, summary.announced
                        ));
                    }
                }
                Ok(Err(status)) => problems.push(format!(
                    "eventbuilder-{i}: stream failed after {sent} fragments: {}",
                    status.message()
                )),
                Err(e) => problems.push(format!("eventbuilder-{i}: stream task failed: {e}")),
            }
        }
        problems
    }
}

struct LoopConfig {
    rank: u16,
    run: u32,
    initial_sequence_id: u64,
    max_events: u64,
    throttle: Duration,
    batch_max_items: usize,
    batch_max_bytes: usize,
    batch_max_delay: Duration,
}

/// Per-destination batches being filled, and what was sent so far. A
/// destination whose stream closed is marked lost: its fragments are
/// counted as dropped and the others go on.
struct Batcher {
    lost: Vec<bool>,
    problems: Vec<String>,
    rank: u16,
    run: u32,
    max_items: usize,
    max_bytes: usize,
    max_delay: Duration,
    queues: Vec<mpsc::Sender<proto::FragmentBatch>>,
    pending: Vec<Vec<Bytes>>,
    pending_bytes: Vec<usize>,
    since: Vec<Instant>,
    sent: Vec<u64>,
    counters: Arc<SendCounters>,
}

impl Batcher {
    /// Adds a fragment for destination `d`, sending the batch when full.
    fn push(&mut self, d: usize, fragment: Bytes) {
        if self.lost[d] {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.pending[d].is_empty() {
            self.since[d] = Instant::now();
        }
        self.pending_bytes[d] += fragment.len();
        self.pending[d].push(fragment);
        if self.pending[d].len() >= self.max_items || self.pending_bytes[d] >= self.max_bytes {
            self.flush(d);
        }
    }

    /// Sends destination `d`'s batch; blocks while its queue is full.
    fn flush(&mut self, d: usize) {
        if self.pending[d].is_empty() {
            return;
        }
        let fragments = std::mem::replace(&mut self.pending[d], Vec::with_capacity(self.max_items));
        let count = fragments.len() as u64;
        let bytes = std::mem::take(&mut self.pending_bytes[d]);
        let batch = proto::FragmentBatch {
            source: u32::from(self.rank),
            run: self.run,
            fragments,
        };
        if self.queues[d].blocking_send(batch).is_err() {
            self.lost[d] = true;
            self.counters.dropped.fetch_add(count, Ordering::Relaxed);
            let msg = format!(
                "eventbuilder-{d}: stream closed during the run; its fragments from here on are dropped"
            );
            error!(destination = d, "{msg}");
            self.problems.push(msg);
            return;
        }
        self.sent[d] += count;
        self.counters
            .fragments_sent
            .fetch_add(count, Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Sends every batch older than the batch delay (all of them if `all`).
    fn flush_due(&mut self, all: bool) {
        for d in 0..self.pending.len() {
            if all || self.since[d].elapsed() >= self.max_delay {
                self.flush(d);
            }
        }
    }
}

/// The generator thread: poll, batch, route, and at the end flush and send
/// end-of-data.
fn generate(
    cfg: LoopConfig,
    mut generator: ToySimulator,
    mut command: watch::Receiver<(u64, RunCommand)>,
    idle_ack: watch::Sender<u64>,
    queues: Vec<mpsc::Sender<proto::FragmentBatch>>,
    counters: Arc<SendCounters>,
    rt: tokio::runtime::Handle,
) -> GeneratorOutcome {
    let n = queues.len();
    let mut out = Batcher {
        lost: vec![false; n],
        problems: Vec::new(),
        rank: cfg.rank,
        run: cfg.run,
        max_items: cfg.batch_max_items,
        max_bytes: cfg.batch_max_bytes,
        max_delay: cfg.batch_max_delay,
        pending_bytes: vec![0; n],
        pending: (0..n)
            .map(|_| Vec::with_capacity(cfg.batch_max_items))
            .collect(),
        since: vec![Instant::now(); n],
        sent: vec![0; n],
        queues,
        counters,
    };
    let last_allowed = if cfg.max_events > 0 {
        cfg.initial_sequence_id + cfg.max_events - 1
    } else {
        u64::MAX
    };
    let mut seq = cfg.initial_sequence_id;
    let mut next_due = Instant::now();
    let result: Result<(), String> = (|| {
        loop {
            let (id, cmd) = *command.borrow_and_update();
            let end = match cmd {
                RunCommand::Stop(None) => return Ok(()),
                RunCommand::Stop(Some(end)) => end.min(last_allowed),
                RunCommand::Run if seq <= last_allowed => u64::MAX,
                RunCommand::Run | RunCommand::Pause => {
                    // Paused, or the event limit is reached: send what is
                    // pending, then wait for the next command.
                    out.flush_due(true);
                    idle_ack.send_replace(id);
                    if rt.block_on(command.changed()).is_err() {
                        return Ok(());
                    }
                    next_due = Instant::now();
                    continue;
                }
            };
            if seq > end {
                return Ok(());
            }
            // Throttle only while running freely; the catch-up to a stop's
            // end sequence id runs at full speed.
            if cmd == RunCommand::Run && !cfg.throttle.is_zero() {
                let now = Instant::now();
                if next_due > now {
                    let wait = next_due - now;
                    // A long wait sends pending batches first, so that
                    // events are not held back by the throttle.
                    out.flush_due(wait >= cfg.batch_max_delay);
                    // Wait for the next event or a command, whichever is first.
                    if let Ok(Ok(())) = rt.block_on(tokio::time::timeout(wait, command.changed())) {
                        continue;
                    }
                }
                next_due = next_due.max(now) + cfg.throttle;
            }
            let fragment = generator
                .fragment(seq)
                .map_err(|e| format!("generator failed at sequence id {seq}: {e}"))?;
            out.push((seq % n as u64) as usize, fragment.into_bytes());
            out.counters.last_sequence_id.store(seq, Ordering::Relaxed);
            seq += 1;
            out.flush_due(false);
        }
    })();
    // End of run: flush, then end-of-data with the count, on every stream.
    out.flush_due(true);
    let mut problems = std::mem::take(&mut out.problems);
    problems.extend(result.err());
    let sent = out.sent.clone();
    let queues = &out.queues;
    for (d, q) in queues.iter().enumerate() {
        match Fragment::end_of_data(
            cfg.rank,
            seq.min(daq_format::fragment::MAX_SEQUENCE_ID - 1),
            sent[d],
        ) {
            Ok(eod) => {
                if q.blocking_send(proto::FragmentBatch {
                    source: u32::from(cfg.rank),
                    run: cfg.run,
                    fragments: vec![eod.into_bytes()],
                })
                .is_err()
                {
                    warn!(destination = d, "stream closed before end-of-data");
                }
            }
            Err(e) => error!(destination = d, error = %e, "cannot build end-of-data"),
        }
    }
    info!(rank = cfg.rank, run = cfg.run, last_sequence_id = seq.saturating_sub(1), sent = ?sent, "generator finished");
    GeneratorOutcome {
        sent_per_destination: sent,
        problems,
    }
}
