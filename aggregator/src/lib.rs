//! Aggregator: the disk writer. Receives serialized events from every
//! eventbuilder through NetMonInput and writes them to data files, HDF5 or
//! artdaq-binary. Run control (this file) is kept apart from the data path
//! (`run`) and the choice of format (`output`); the file formats are
//! the `daq-datafile` crate's.

pub mod output;
pub mod run;

use daq_format::process::{Kind, ProcessId};
use daq_runtime::control::{AppError, InitArgs, StopArgs};
use daq_runtime::net::Router;
use daq_runtime::stage::Stage;
use std::path::PathBuf;
use std::sync::Arc;

/// The aggregator's data path behind the process skeleton.
pub struct Aggregator {
    shared: Arc<run::Shared>,
}

#[tonic::async_trait]
impl Stage for Aggregator {
    const KIND: Kind = Kind::Aggregator;
    const ABOUT: &'static str = "DAQ aggregator: NetMonInput receiver and HDF5 disk writer";
    type Run = run::Run;

    fn new(id: ProcessId) -> Self {
        Self {
            shared: run::Shared::new(id.to_string()),
        }
    }

    fn services(&self, router: Router) -> Router {
        router.add_service(
            proto::event_sink_server::EventSinkServer::new(run::EventSink {
                shared: self.shared.clone(),
            })
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES),
        )
    }

    async fn start(
        &self,
        _id: ProcessId,
        run: u32,
        init: &InitArgs,
        data_dir: PathBuf,
    ) -> Result<run::Run, AppError> {
        run::Run::start(&self.shared, run, &init.config, &run::data_dir(data_dir))
            .map_err(AppError::new)
    }

    async fn stop(&self, run: run::Run, args: StopArgs) -> Vec<String> {
        run.stop(&self.shared, args).await
    }

    fn events_handled(&self) -> u64 {
        self.shared.counters.read(|c| c.events_received)
    }

    fn counters(&self) -> proto::Counters {
        self.shared.counters.snapshot()
    }

    fn failure(&self) -> Option<String> {
        self.shared.failure()
    }
}
