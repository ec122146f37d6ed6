//! Aggregator: the disk writer. Receives serialized events from every
//! eventbuilder through NetMonInput and writes them to data files, HDF5 or
//! artdaq-binary. Run control (this file) is kept apart from the data path
//! (`core`) and the choice of format (`output`); the file formats are
//! the `daq-datafile` crate's.

pub mod core;
pub mod output;

use daq_runtime::control::{App, AppError, Control, InitArgs, StopArgs};
use daq_runtime::process::Listeners;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

pub struct Aggregator {
    rank: u16,
    shared: Arc<core::Shared>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    init: Option<InitArgs>,
    run: Option<core::Run>,
}

impl Aggregator {
    pub fn new(rank: u16, shared: Arc<core::Shared>) -> Self {
        Self {
            rank,
            shared,
            inner: Mutex::default(),
        }
    }
}

#[tonic::async_trait]
impl App for Aggregator {
    async fn init(&self, args: InitArgs) -> Result<(), AppError> {
        let t = args.config.topology;
        if self.rank >= t.aggregators {
            return Err(AppError::new(format!(
                "rank {} is outside the topology's {} aggregators",
                self.rank, t.aggregators
            )));
        }
        self.inner.lock().await.init = Some(args);
        Ok(())
    }

    async fn start(&self, run: u32, data_dir: PathBuf) -> Result<(), AppError> {
        let mut inner = self.inner.lock().await;
        let init = inner
            .init
            .as_ref()
            .ok_or_else(|| AppError::new("not initialized"))?;
        let r = core::Run::start(&self.shared, run, &init.config, &core::data_dir(data_dir))
            .map_err(AppError::new)?;
        inner.run = Some(r);
        Ok(())
    }

    async fn stop(&self, args: StopArgs) -> Result<Vec<String>, AppError> {
        let run = self.inner.lock().await.run.take();
        Ok(match run {
            Some(r) => r.stop(&self.shared, args).await,
            None => vec![],
        })
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

/// Runs an aggregator on `listeners` until shutdown.
pub async fn run(rank: u16, listeners: Listeners) -> std::io::Result<()> {
    let name = daq_format::process::ProcessId::new(daq_format::process::Kind::Aggregator, rank)
        .to_string();
    let shared = core::Shared::new(name.clone());
    let app = Arc::new(Aggregator::new(rank, shared.clone()));
    let (control, exit) = Control::new(name.clone(), app);
    let observed = control.observed();
    let terminate = control.terminator();
    let router = daq_runtime::net::server()
        .map_err(std::io::Error::other)?
        .add_service(proto::run_control_server::RunControlServer::new(control))
        .add_service(
            proto::event_sink_server::EventSinkServer::new(core::EventSink { shared })
                .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(proto::MAX_MESSAGE_BYTES),
        );
    daq_runtime::process::serve(&name, listeners, router, observed, terminate, exit).await
}
