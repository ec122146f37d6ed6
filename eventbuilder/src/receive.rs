//! The receiving side of an eventbuilder run: the `FragmentSink` service
//! and the transport's [`Receiver`] for it (fragments validated once, at
//! this edge, into [`Fragment`]s), handing each source's batches to the
//! builder under a per-source permit (backpressure).

use daq_format::fragment::{Fragment, FragmentType};
use daq_runtime::counters::LiveCounters;
use daq_runtime::sources::RunSlot;
use daq_runtime::transport::Intake;

use daq_runtime::transport::{Decoded, Fragments, Receiver, RunEnded};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

/// What the builder task takes from the receivers and from stop.
pub(crate) enum BuilderInput {
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
pub(crate) struct Ingress {
    pub(crate) intake: Intake,
    pub(crate) permits: Vec<Arc<Semaphore>>,
    pub(crate) tx: mpsc::Sender<BuilderInput>,
}

/// The receiving end of a run's fragment streams (the loop is the
/// transport's).
impl Receiver for Ingress {
    type Hop = Fragments;
    type Item = Fragment;

    fn intake(&self) -> &Intake {
        &self.intake
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
}

/// The `FragmentSink` gRPC service: one client stream per boardreader per run.
pub struct FragmentSink(pub Arc<Shared>);

#[tonic::async_trait]
impl proto::fragment_sink_server::FragmentSink for FragmentSink {
    async fn send(
        &self,
        request: Request<Streaming<proto::FragmentBatch>>,
    ) -> Result<Response<proto::TransferSummary>, Status> {
        let s = &self.0;
        daq_runtime::transport::inbound::serve(&s.process, &s.ingress, request).await
    }

    async fn attach(
        &self,
        request: Request<proto::LinkOffer>,
    ) -> Result<Response<proto::LinkAccept>, Status> {
        let s = &self.0;
        daq_runtime::transport::shm::accept(&s.process, &s.ingress, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// State shared by run control and the `FragmentSink` service.
pub struct Shared {
    pub(crate) process: String,
    pub counters: Arc<LiveCounters>,
    pub(crate) ingress: RunSlot<Ingress>,
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
