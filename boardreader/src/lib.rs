//! Boardreader: polls a fragment generator and sends its fragments to the
//! eventbuilders. Run control (this file) is kept apart from the data path
//! (`core`) and the ToySimulator (`daq_format::generator`).

pub mod core;

use daq_runtime::control::{App, AppError, Control, InitArgs, StopArgs};
use daq_runtime::process::Listeners;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The boardreader's state behind run control.
pub struct BoardReader {
    rank: u16,
    counters: Arc<core::SendCounters>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    init: Option<InitArgs>,
    run: Option<core::Run>,
}

impl BoardReader {
    pub fn new(rank: u16) -> Self {
        Self {
            rank,
            counters: Arc::default(),
            inner: Mutex::default(),
        }
    }
}

#[tonic::async_trait]
impl App for BoardReader {
    async fn init(&self, args: InitArgs) -> Result<(), AppError> {
        let n = usize::from(args.config.topology.eventbuilders);
        if args.destinations.len() != n {
            return Err(AppError::new(format!(
                "init names {} eventbuilder addresses, the topology has {n}",
                args.destinations.len()
            )));
        }
        if self.rank >= args.config.topology.boardreaders {
            return Err(AppError::new(format!(
                "rank {} is outside the topology's {} boardreaders",
                self.rank, args.config.topology.boardreaders
            )));
        }
        self.inner.lock().await.init = Some(args);
        Ok(())
    }

    async fn start(&self, run: u32, _data_dir: PathBuf) -> Result<(), AppError> {
        let mut inner = self.inner.lock().await;
        let init = inner
            .init
            .as_ref()
            .ok_or_else(|| AppError::new("not initialized"))?;
        let r = core::Run::start(
            self.rank,
            run,
            &init.config,
            &init.destinations,
            self.counters.clone(),
        )
        .await
        .map_err(AppError::new)?;
        inner.run = Some(r);
        Ok(())
    }

    async fn pause(&self) -> Result<(), AppError> {
        match &mut self.inner.lock().await.run {
            Some(r) => r.pause().await.map_err(AppError::new),
            None => Ok(()),
        }
    }

    async fn resume(&self) -> Result<(), AppError> {
        if let Some(r) = &self.inner.lock().await.run {
            r.resume();
        }
        Ok(())
    }

    async fn stop(&self, args: StopArgs) -> Result<Vec<String>, AppError> {
        let run = self.inner.lock().await.run.take();
        Ok(match run {
            Some(r) => r.stop(args.end_sequence_id).await,
            None => vec![],
        })
    }

    fn events_handled(&self) -> u64 {
        self.counters.counters.read(|c| c.fragments_sent)
    }

    fn counters(&self) -> proto::Counters {
        self.counters.snapshot()
    }
}

/// Runs a boardreader on `listeners` until shutdown.
pub async fn run(rank: u16, listeners: Listeners) -> std::io::Result<()> {
    let name = daq_format::process::ProcessId::new(daq_format::process::Kind::BoardReader, rank)
        .to_string();
    let (control, exit) = Control::new(name.clone(), Arc::new(BoardReader::new(rank)));
    let observed = control.observed();
    let terminate = control.terminator();
    let router = daq_runtime::net::server()
        .map_err(std::io::Error::other)?
        .add_service(proto::run_control_server::RunControlServer::new(control));
    daq_runtime::process::serve(&name, listeners, router, observed, terminate, exit).await
}
