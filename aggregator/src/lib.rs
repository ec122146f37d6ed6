//! Aggregator: the disk writer. Receives serialized events from every
//! eventbuilder through NetMonInput and writes them to data files, HDF5 or
//! artdaq-binary. Run control (this file) is kept apart from the data path
//! (`run`) and the choice of format (`output`); the file formats are
//! the `daq-datafile` crate's.

pub mod output;
pub mod run;

use daq_format::process::{Kind, ProcessId};
use daq_runtime::control::{AppError, StopArgs};
use daq_runtime::data_sink;
use daq_runtime::net::Router;
use daq_runtime::stage::{Stage, Start};
use proto::event_sink_server::EventSinkServer;
use std::sync::Arc;

/// The aggregator's data path behind the process skeleton.
pub struct Aggregator(Arc<run::Shared>);

#[tonic::async_trait]
impl Stage for Aggregator {
    const KIND: Kind = Kind::Aggregator;
    const ABOUT: &'static str = "DAQ aggregator: NetMonInput receiver and HDF5 disk writer";
    type Run = run::Run;

    fn new(id: ProcessId) -> Self {
        Self(run::Shared::new(id.to_string()))
    }

    fn services(&self, router: Router) -> Router {
        let sink = run::EventSink(self.0.clone());
        router.add_service(data_sink!(EventSinkServer<_>, sink))
    }

    async fn start(&self, s: Start<'_>) -> Result<run::Run, AppError> {
        let dir = run::data_dir(s.data_dir);
        run::Run::start(&self.0, s.run, &s.init.config, &dir).map_err(AppError::new)
    }

    async fn stop(&self, run: run::Run, args: StopArgs) -> Vec<String> {
        run.stop(&self.0, args).await
    }

    fn events_handled(&self) -> u64 {
        self.0.counters.read(|c| c.events_received)
    }

    fn counters(&self) -> proto::Counters {
        self.0.counters.snapshot()
    }

    fn failure(&self) -> Option<String> {
        self.0.failure()
    }
}
