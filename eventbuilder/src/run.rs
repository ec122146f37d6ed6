//! An eventbuilder run: what run control starts and stops, and the state
//! the run shares with the `FragmentSink` service. The jobs are the
//! modules `receive`, `build` and `send`.
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

use crate::assembly::Assembly;
use crate::build::{Builder, Lost, Signals};
use crate::receive::{BuilderInput, Ingress, Shared};
use crate::send::{Sender, Serializer, parameter_set_id};
use daq_format::config::SystemConfig;
use daq_format::netmon::{History, HistoryEntry};
use daq_format::process::Kind;
use daq_runtime::control::StopArgs;

use daq_runtime::transport::outbound::OutboundError;
use daq_runtime::transport::{CountSent, Events, Fragments, Intake, Outbound, OutboundConfig};
use daq_shm::{ShmStore, StoreSpec, segment_path};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A running eventbuilder run.
pub struct Run {
    pub(crate) builder: JoinHandle<()>,
    pub(crate) finish_timeout: Duration,
    pub(crate) ingress: Arc<Ingress>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connect(#[from] OutboundError),
    #[error("shared-memory event store: {0}")]
    Store(#[from] daq_shm::ShmError),
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
        let mut out = Outbound::<Events, crate::send::Outgoing>::connect(
            destinations,
            n_ag,
            OutboundConfig::new(u32::from(rank), run, n_eb, config),
            CountSent::<Events>::new(shared.counters.clone()),
        )
        .await?;
        let e = &config.eventbuilder;
        // Events for a shared-memory link keep their store buffer until the
        // link's thread has written them: the partial batches together
        // hold at most a quarter of the store.
        out.limit_in_place_batches(e.buffer_count as usize / (4 * n_ag.max(1)));
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
            intake: Intake::new::<Fragments>(run, n_br, shared.counters.clone()),
            permits: (0..n_br).map(|_| Arc::new(Semaphore::new(q))).collect(),
            tx,
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
            // At most half the store waits for a link's thread: the rest
            // is serialized at once and released, so the store stays the
            // builder's and a slow aggregator cannot pin all of it.
            max_in_store: (e.buffer_count as usize / 2).max(1),
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
            ingress: ingress.clone(),
            queue_batches: q,
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
        let (mut problems, built) = daq_runtime::transport::inbound::end_run(
            &shared.ingress,
            &*self.ingress,
            args.source_wait(self.finish_timeout),
            &self.ingress.tx,
            BuilderInput::Finish,
            "builder task",
        )
        .await;
        problems.extend(built.into_iter().flatten());
        if let Err(e) = self.builder.await {
            problems.push(format!("builder task failed: {e}"));
        }
        problems
    }
}
