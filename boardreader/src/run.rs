//! The data path of a boardreader run: a generator thread polls the
//! generator and hands each fragment to the transport's outbound side
//! (artdaq's two threads: the generator here, the gRPC streams on the
//! runtime), which routes sequence id `s` to eventbuilder `s % n`, batches,
//! and ends every stream with an EndOfData fragment carrying the count sent
//! to that destination.
//!
//! Backpressure: each destination has a bounded queue of
//! `transfer.queue_batches` batches; when it is full the generator blocks
//! (nothing is dropped), which is how a slow eventbuilder throttles it.

use daq_format::config::SystemConfig;
use daq_format::process::Kind;
use daq_format::record::Counters;
use daq_runtime::counters::LiveCounters;
use daq_runtime::transport::outbound::OutboundError;
use daq_runtime::transport::{
    BlockingOutbound, CountSent, Fragments, Item, Outbound, OutboundConfig,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use daq_format::generator::{ARENA_BYTES, ToySimulator};

/// What run control asks of the generator thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunCommand {
    Run,
    Pause,
    /// Generate up to this sequence id (or stop now if `None`), then end.
    Stop(Option<u64>),
}

/// Counters of the current run: the shared record, updated once per batch
/// by the outbound side, and the last sequence id generated, a progress
/// mark the generator sets per fragment (an atomic, so that no lock is
/// taken per fragment).
#[derive(Debug, Default)]
pub struct SendCounters {
    pub counters: Arc<LiveCounters>,
    pub last_sequence_id: AtomicU64,
}

impl SendCounters {
    pub fn reset(&self) {
        self.counters.reset();
        self.last_sequence_id.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counters {
        Counters {
            last_sequence_id: self.last_sequence_id.load(Ordering::Relaxed),
            ..self.counters.snapshot()
        }
    }
}

/// A running boardreader run.
pub struct Run {
    command: watch::Sender<(u64, RunCommand)>,
    /// Number of the last command the generator has acted on while idle.
    idle_ack: watch::Receiver<u64>,
    /// The generator thread; its result is the problems of the run.
    generator: JoinHandle<Vec<String>>,
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
    ) -> Result<Self, OutboundError> {
        let n = usize::from(config.topology.eventbuilders);
        let out = Outbound::<Fragments, Outgoing>::connect(
            destinations,
            n,
            OutboundConfig::new(u32::from(rank), run, 1, config),
            CountSent::<Fragments>::new(counters.counters.clone()),
        )
        .await?;
        counters.reset();
        let (command, rx) = watch::channel((0, RunCommand::Run));
        let (ack_tx, idle_ack) = watch::channel(0);
        let generator = Arc::new(ToySimulator::new(rank, &config.generator));
        let loop_cfg = LoopConfig {
            rank,
            run,
            initial_sequence_id: config.generator.initial_sequence_id,
            max_events: config.generator.max_events,
            throttle: Duration::from_micros(config.generator.throttle_us),
            batch_max_delay: Duration::from_millis(config.transfer.batch_max_delay_ms),
            leak_bytes_per_event: config.leak.bytes_per_event_in(Kind::BoardReader),
        };
        let handle = tokio::runtime::Handle::current();
        let out = out.into_blocking(handle.clone());
        let generator = tokio::task::spawn_blocking(move || {
            generate(loop_cfg, generator, rx, ack_tx, out, counters, handle)
        });
        info!(rank, run, destinations = n, "run started");
        Ok(Self {
            command,
            idle_ack,
            generator,
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
        match self.generator.await {
            Ok(problems) => problems,
            Err(e) => vec![format!("generator thread failed: {e}")],
        }
    }
}

/// A fragment on its way out: made already (for a gRPC stream, carved out
/// of the generator's arena), or to be made by the shared-memory link's
/// thread straight into the eventbuilder's ring, where it is generated
/// once and never copied in this process.
pub enum Outgoing {
    Made(bytes::Bytes),
    InPlace {
        generator: Arc<ToySimulator>,
        sequence_id: u64,
    },
}

impl Item for Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Made(b) => b.len(),
            Outgoing::InPlace { generator, .. } => generator.fragment_bytes(),
        }
    }

    /// Stamped when it is written: that is when it is made.
    fn write_to(&self, dst: &mut [u8]) {
        match self {
            Outgoing::Made(b) => dst.copy_from_slice(b),
            Outgoing::InPlace {
                generator,
                sequence_id,
            } => {
                // The sequence id was checked when the item was made (the
                // generator loop) and the length is the generator's own, so
                // this cannot fail; if it did, the slice is zeroed and the
                // eventbuilder rejects the fragment and counts it.
                if generator
                    .write_fragment_into(*sequence_id, dst, Some(SystemTime::now()))
                    .is_err()
                {
                    dst.fill(0);
                }
            }
        }
    }

    fn into_bytes(self) -> bytes::Bytes {
        match self {
            Outgoing::Made(b) => b,
            unmade @ Outgoing::InPlace { .. } => {
                let mut buf = bytes::BytesMut::zeroed(unmade.len());
                unmade.write_to(&mut buf);
                buf.freeze()
            }
        }
    }
}

struct LoopConfig {
    rank: u16,
    run: u32,
    initial_sequence_id: u64,
    max_events: u64,
    throttle: Duration,
    batch_max_delay: Duration,
    /// Bytes orphaned per fragment generated (the injected leak; 0 = none).
    leak_bytes_per_event: u64,
}

/// The generator thread: poll and hand each fragment to the outbound side;
/// at the end, end the streams (end-of-data) and check their summaries.
/// Returns the problems of the run.
fn generate(
    cfg: LoopConfig,
    generator: Arc<ToySimulator>,
    mut command: watch::Receiver<(u64, RunCommand)>,
    idle_ack: watch::Sender<u64>,
    mut out: BlockingOutbound<Fragments, Outgoing>,
    counters: Arc<SendCounters>,
    rt: tokio::runtime::Handle,
) -> Vec<String> {
    let last_allowed = if cfg.max_events > 0 {
        cfg.initial_sequence_id + cfg.max_events - 1
    } else {
        u64::MAX
    };
    let mut seq = cfg.initial_sequence_id;
    let mut arena = bytes::BytesMut::new();
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
                    out.flush_all();
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
                    if wait >= cfg.batch_max_delay {
                        out.flush_all();
                    } else {
                        out.flush_due();
                    }
                    // Wait for the next event or a command, whichever is first.
                    if let Ok(Ok(())) = rt.block_on(tokio::time::timeout(wait, command.changed())) {
                        continue;
                    }
                }
                next_due = next_due.max(now) + cfg.throttle;
            }
            // Over shared memory the link's thread generates the fragment
            // into the ring. Over gRPC it is generated here, straight into
            // the bytes that are sent (no copy before the encoder's),
            // stamped with the time it was made.
            let fragment = if out.writes_in_place(seq) {
                if seq > daq_format::fragment::MAX_SEQUENCE_ID {
                    return Err(format!(
                        "generator failed at sequence id {seq}: it exceeds 48 bits"
                    ));
                }
                Outgoing::InPlace {
                    generator: generator.clone(),
                    sequence_id: seq,
                }
            } else {
                generator
                    .fragment_bytes_made_at(seq, &mut arena, ARENA_BYTES, SystemTime::now())
                    .map(Outgoing::Made)
                    .map_err(|e| format!("generator failed at sequence id {seq}: {e}"))?
            };
            out.push(seq, fragment);
            daq_runtime::leak::inject_leak(cfg.leak_bytes_per_event, 1);
            counters.last_sequence_id.store(seq, Ordering::Relaxed);
            seq += 1;
            // The clock is read every 16 fragments, not per fragment: a
            // batch waits at most 16 fragments past its delay.
            if seq.is_multiple_of(16) {
                out.flush_due();
            }
        }
    })();
    // End of run: flush, then end-of-data with the count, on every stream.
    let finished = out.finish(seq);
    let mut problems = finished.problems;
    problems.extend(result.err());
    info!(rank = cfg.rank, run = cfg.run, last_sequence_id = seq.saturating_sub(1), sent = ?finished.sent, "generator finished");
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use daq_format::config::GeneratorConfig;

    /// An unmade fragment, written in place or as bytes of its own, is the
    /// generator's fragment (all but the access time, stamped when made).
    #[test]
    fn an_unmade_fragment_is_made_the_same_in_a_ring_or_as_bytes() {
        let generator = Arc::new(ToySimulator::new(1, &GeneratorConfig::default()));
        let want = generator.fragment(42).expect("generates");
        let want = want.bytes();
        let unmade = || Outgoing::InPlace {
            generator: generator.clone(),
            sequence_id: 42,
        };
        let mut ring = vec![0xA5u8; unmade().len()];
        unmade().write_to(&mut ring);
        let own = unmade().into_bytes();
        for got in [&ring[..], &own[..]] {
            assert_eq!(got.len(), want.len());
            // Header word 3 holds the access time.
            assert_eq!(got[..24], want[..24]);
            assert_eq!(got[32..], want[32..]);
        }
    }
}
