//! The one skeleton of every process binary. A process kind owns only its
//! data path, a [`Stage`]: what starts and stops a run, the services it
//! serves beside run control, and its counters. The rest is written here
//! once: parsing the command line, binding, the checks every `init` makes
//! (rank inside the topology, one destination per downstream process),
//! keeping the run between start and stop, and serving until shutdown.
//!
//! A binary is then one line: `daq_runtime::stage::main::<MyStage>()`.

use crate::control::{App, AppError, Control, InitArgs, StopArgs};
use crate::net::Router;
use crate::process::{Listeners, ProcessArgs, ProcessError};
use clap::{CommandFactory, FromArgMatches};
use daq_format::process::{Kind, ProcessId};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The data path of one kind of process.
#[tonic::async_trait]
pub trait Stage: Send + Sync + Sized + 'static {
    /// Which processes this stage is; ranks are checked against its count.
    const KIND: Kind;
    /// The one-line description of `--help`.
    const ABOUT: &'static str;
    /// What a started run holds until it is stopped.
    type Run: Send + Sync;

    /// The stage of process `id`, before any run.
    fn new(id: ProcessId) -> Self;
    /// Adds the data services this process serves beside run control.
    fn services(&self, router: Router) -> Router {
        router
    }
    /// Starts a run (its `init` already checked).
    async fn start(&self, start: Start<'_>) -> Result<Self::Run, AppError>;
    /// Pauses the run (stages with nothing to pause keep the default).
    async fn pause(&self, _run: &mut Self::Run) -> Result<(), AppError> {
        Ok(())
    }
    fn resume(&self, _run: &Self::Run) {}
    /// Ends the run; returns the problems found (reported, not failures).
    async fn stop(&self, run: Self::Run, args: StopArgs) -> Vec<String>;
    /// Events handled in the current or last run (see [`App::events_handled`]).
    fn events_handled(&self) -> u64;
    /// Counters of the current or last run.
    fn counters(&self) -> proto::Counters;
    /// A failure the run cannot recover from (see [`App::failure`]).
    fn failure(&self) -> Option<String> {
        None
    }
    /// Files for the run record (see [`App::record_files`]).
    fn record_files(&self) -> Vec<proto::RecordFile> {
        Vec::new()
    }
    /// HTTP routes served beside `/metrics` on the metrics port (a
    /// monitor's live page); `None`: only `/metrics`.
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }
}

/// What [`Stage::start`] is given.
pub struct Start<'a> {
    /// This process.
    pub id: ProcessId,
    /// The run number.
    pub run: u32,
    /// The configuration and destinations of the last `init`.
    pub init: &'a InitArgs,
    /// Where the run's data files go (empty: the working directory).
    pub data_dir: PathBuf,
}

/// A data sink service of a receiving stage: `$server::new($sink)` with
/// the message-size limits every data stream uses, e.g.
/// `data_sink!(proto::event_sink_server::EventSinkServer<_>, sink)`.
#[macro_export]
macro_rules! data_sink {
    ($server:ty, $sink:expr) => {
        <$server>::new($sink)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
    };
}

/// A [`Stage`] behind run control: the [`App`] of every process.
struct Process<S: Stage> {
    id: ProcessId,
    stage: Arc<S>,
    inner: Mutex<Inner<S::Run>>,
}

struct Inner<R> {
    init: Option<InitArgs>,
    run: Option<R>,
}

/// The checks every process makes of `init`, whatever its kind.
fn check_init(id: ProcessId, args: &InitArgs) -> Result<(), AppError> {
    let t = &args.config.topology;
    if let Some(down) = id.kind.downstream() {
        let n = t.count(down);
        if args.destinations.len() != usize::from(n) {
            return Err(AppError::new(format!(
                "init names {} {down} addresses, the topology has {n}",
                args.destinations.len()
            )));
        }
    }
    let n = t.count(id.kind);
    if id.rank >= n {
        return Err(AppError::new(format!(
            "rank {} is outside the topology's {n} {}s",
            id.rank, id.kind
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl<S: Stage> App for Process<S> {
    async fn init(&self, args: InitArgs) -> Result<(), AppError> {
        check_init(self.id, &args)?;
        self.inner.lock().await.init = Some(args);
        Ok(())
    }

    async fn start(&self, run: u32, data_dir: PathBuf) -> Result<(), AppError> {
        let mut inner = self.inner.lock().await;
        let init = inner
            .init
            .as_ref()
            .ok_or_else(|| AppError::new("not initialized"))?;
        let start = Start {
            id: self.id,
            run,
            init,
            data_dir,
        };
        crate::transport::links::clear();
        let r = self.stage.start(start).await?;
        inner.run = Some(r);
        Ok(())
    }

    async fn pause(&self) -> Result<(), AppError> {
        match &mut self.inner.lock().await.run {
            Some(r) => self.stage.pause(r).await,
            None => Ok(()),
        }
    }

    async fn resume(&self) -> Result<(), AppError> {
        if let Some(r) = &self.inner.lock().await.run {
            self.stage.resume(r);
        }
        Ok(())
    }

    async fn stop(&self, args: StopArgs) -> Result<Vec<String>, AppError> {
        let run = self.inner.lock().await.run.take();
        Ok(match run {
            Some(r) => self.stage.stop(r, args).await,
            None => vec![],
        })
    }

    fn counters(&self) -> proto::Counters {
        self.stage.counters()
    }

    fn failure(&self) -> Option<String> {
        self.stage.failure()
    }

    fn events_handled(&self) -> u64 {
        self.stage.events_handled()
    }

    fn record_files(&self) -> Vec<proto::RecordFile> {
        self.stage.record_files()
    }
}

/// Why a process binary ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs stage `S` as process `rank` on `listeners` until shutdown.
pub async fn run<S: Stage>(rank: u16, listeners: Listeners) -> std::io::Result<()> {
    let id = ProcessId::new(S::KIND, rank);
    let name = id.to_string();
    let stage = Arc::new(S::new(id));
    let app = Arc::new(Process {
        id,
        stage: stage.clone(),
        inner: Mutex::new(Inner {
            init: None,
            run: None,
        }),
    });
    let (control, exit) = Control::new(name.clone(), app);
    let observed = control.observed();
    let terminate = control.terminator();
    let router = crate::net::server()
        .map_err(std::io::Error::other)?
        .add_service(proto::run_control_server::RunControlServer::new(control));
    let router = stage.services(router);
    let http = stage.http_routes();
    crate::process::serve(&name, listeners, router, http, observed, terminate, exit).await
}

/// The command line every process binary takes.
#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    process: ProcessArgs,
}

/// The `main` of a process binary: parses its arguments, binds, serves
/// stage `S` and leaves within seconds of the end of the run, even with a
/// thread stuck ([`crate::process::block_on`]).
pub fn main<S: Stage>() -> Result<(), MainError> {
    crate::net::init_tracing();
    let matches = Cli::command()
        .name(S::KIND.as_str())
        .about(S::ABOUT)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let args = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    crate::process::block_on(async move {
        let listeners = args.process.bind().await?;
        run::<S>(args.process.rank, listeners).await?;
        Ok(())
    })?
}
