//! Eventbuilder: receives the fragments of every boardreader, assembles
//! events and ships them, serialized, to the aggregators. Run control (this
//! file) is kept apart from the run (`run`), its three jobs (`receive`,
//! `build`, `send`) and the shared-memory assembly (`assembly`).

pub mod assembly;
mod build;
mod receive;
pub mod run;
mod send;

use daq_format::process::{Kind, ProcessId};
use daq_runtime::control::{AppError, StopArgs};
use daq_runtime::data_sink;
use daq_runtime::net::Router;
use daq_runtime::stage::{Stage, Start};
use proto::fragment_sink_server::FragmentSinkServer;
use std::sync::Arc;

/// The eventbuilder's data path behind the process skeleton.
pub struct EventBuilder(Arc<receive::Shared>);

#[tonic::async_trait]
impl Stage for EventBuilder {
    const KIND: Kind = Kind::EventBuilder;
    const ABOUT: &'static str = "DAQ eventbuilder: fragment receiver and event builder";
    type Run = run::Run;

    fn new(id: ProcessId) -> Self {
        Self(receive::Shared::new(id.to_string()))
    }

    fn services(&self, router: Router) -> Router {
        let sink = receive::FragmentSink(self.0.clone());
        router.add_service(data_sink!(FragmentSinkServer<_>, sink))
    }

    async fn start(&self, s: Start<'_>) -> Result<run::Run, AppError> {
        let (config, to) = (&s.init.config, &s.init.destinations);
        (run::Run::start(&self.0, s.id.rank, s.run, config, to).await).map_err(AppError::new)
    }

    async fn stop(&self, run: run::Run, args: StopArgs) -> Vec<String> {
        run.stop(&self.0, args).await
    }

    fn events_handled(&self) -> u64 {
        (self.0.counters).read(|c| c.events_built + c.events_incomplete)
    }

    fn counters(&self) -> proto::Counters {
        self.0.counters.snapshot()
    }
}
