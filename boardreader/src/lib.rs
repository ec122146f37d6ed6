//! Boardreader: polls a fragment generator and sends its fragments to the
//! eventbuilders. Run control (this file) is kept apart from the data path
//! (`run`) and the ToySimulator (`daq_format::generator`).

pub mod run;

use daq_format::process::{Kind, ProcessId};
use daq_runtime::control::{AppError, StopArgs};
use daq_runtime::stage::{Stage, Start};
use std::sync::Arc;

/// The boardreader's data path behind the process skeleton.
pub struct BoardReader {
    counters: Arc<run::SendCounters>,
}

#[tonic::async_trait]
impl Stage for BoardReader {
    const KIND: Kind = Kind::BoardReader;
    const ABOUT: &'static str = "DAQ boardreader: ToySimulator fragment generator";
    type Run = run::Run;

    fn new(_id: ProcessId) -> Self {
        Self {
            counters: Arc::default(),
        }
    }

    async fn start(&self, s: Start<'_>) -> Result<run::Run, AppError> {
        let (config, to) = (&s.init.config, &s.init.destinations);
        let counters = self.counters.clone();
        (run::Run::start(s.id.rank, s.run, config, to, counters).await).map_err(AppError::new)
    }

    async fn pause(&self, run: &mut run::Run) -> Result<(), AppError> {
        run.pause().await.map_err(AppError::new)
    }

    fn resume(&self, run: &run::Run) {
        run.resume();
    }

    async fn stop(&self, run: run::Run, args: StopArgs) -> Vec<String> {
        run.stop(args.end_sequence_id).await
    }

    fn events_handled(&self) -> u64 {
        self.counters.counters.read(|c| c.fragments_sent)
    }

    fn counters(&self) -> proto::Counters {
        self.counters.snapshot()
    }
}
