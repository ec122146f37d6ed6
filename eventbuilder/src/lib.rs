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
use daq_runtime::control::{AppError, InitArgs, StopArgs};
use daq_runtime::net::Router;
use daq_runtime::stage::Stage;
use std::path::PathBuf;
use std::sync::Arc;

/// The eventbuilder's data path behind the process skeleton.
pub struct EventBuilder {
    shared: Arc<run::Shared>,
}

#[tonic::async_trait]
impl Stage for EventBuilder {
    const KIND: Kind = Kind::EventBuilder;
    const ABOUT: &'static str = "DAQ eventbuilder: fragment receiver and event builder";
    type Run = run::Run;

    fn new(id: ProcessId) -> Self {
        Self {
            shared: run::Shared::new(id.to_string()),
        }
    }

    fn services(&self, router: Router) -> Router {
        router.add_service(
            proto::fragment_sink_server::FragmentSinkServer::new(receive::FragmentSink {
                shared: self.shared.clone(),
            })
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES),
        )
    }

    async fn start(
        &self,
        id: ProcessId,
        run: u32,
        init: &InitArgs,
        _data_dir: PathBuf,
    ) -> Result<run::Run, AppError> {
        run::Run::start(&self.shared, id.rank, run, &init.config, &init.destinations)
            .await
            .map_err(AppError::new)
    }

    async fn stop(&self, run: run::Run, args: StopArgs) -> Vec<String> {
        run.stop(&self.shared, args).await
    }

    fn events_handled(&self) -> u64 {
        (self.shared.counters).read(|c| c.events_built + c.events_incomplete)
    }

    fn counters(&self) -> proto::Counters {
        self.shared.counters.snapshot()
    }
}
