//! Run control: the `RunControl` gRPC service every process serves, wrapped
//! around the process's work (artdaq's App around its Core).
//!
//! The service owns the state machine: it checks each command against
//! [`State::next`], rejects a command while another one runs (busy), and moves
//! to [`State::Error`] when a command fails. The process implements [`App`]
//! and never sees the state machine.

use crate::sampler::Sampler;
use daq_alloc::{self as heap, HeapSnapshot};
use daq_format::config::SystemConfig;
use daq_format::state::{Command, State};
use proto::run_control_server::RunControl;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// What `init` gives a process.
#[derive(Clone, Debug)]
pub struct InitArgs {
    pub config: SystemConfig,
    /// Data addresses of the downstream processes, in rank order.
    pub destinations: Vec<String>,
}

/// What `stop` asks of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopArgs {
    /// Boardreaders: generate up to this sequence id before end-of-data.
    pub end_sequence_id: Option<u64>,
}

/// A command that failed inside the process.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppError(pub String);

impl AppError {
    pub fn new(msg: impl std::fmt::Display) -> Self {
        Self(msg.to_string())
    }
}

/// The work of a process, driven by run control. Each method runs only when
/// the state machine allows it, and never concurrently with another.
#[tonic::async_trait]
pub trait App: Send + Sync + 'static {
    async fn init(&self, args: InitArgs) -> Result<(), AppError>;
    async fn start(&self, run: u32, data_dir: PathBuf) -> Result<(), AppError>;
    /// Processes with nothing to pause (receivers) keep the default.
    async fn pause(&self) -> Result<(), AppError> {
        Ok(())
    }
    async fn resume(&self) -> Result<(), AppError> {
        Ok(())
    }
    /// Ends the run; returns the problems found (a handshake shortfall),
    /// which are reported but do not fail the command.
    async fn stop(&self, args: StopArgs) -> Result<Vec<String>, AppError>;
    async fn shutdown(&self) -> Result<(), AppError> {
        Ok(())
    }
    /// Counters of the current or last run.
    fn counters(&self) -> proto::Counters;
    /// Events handled in the current or last run (fragments sent by a
    /// boardreader, events built by an eventbuilder, events received by an
    /// aggregator): the x axis of the heap-growth analysis.
    fn events_handled(&self) -> u64;
}

/// Heap instrumentation state kept by run control.
#[derive(Default)]
struct HeapState {
    /// Snapshot (with the events handled), by boundary label (`before_start`, ...).
    boundaries: BTreeMap<String, HeapSnapshot>,
    /// The run record directory of the current run.
    record_dir: Option<PathBuf>,
    sample_interval: Duration,
    sampler: Option<Sampler>,
    profiles: Vec<String>,
}

/// The `RunControl` service around an [`App`]. Every command runs in a task
/// of its own: a client that gives up (a timeout, a dropped connection)
/// cannot cancel a command half-way.
pub struct Control<A: App>(Arc<Inner<A>>);

struct Inner<A: App> {
    process: String,
    app: Arc<A>,
    state: Mutex<State>,
    busy: tokio::sync::Mutex<()>,
    run: Mutex<u32>,
    exit: watch::Sender<bool>,
    heap: Mutex<HeapState>,
}

impl<A: App> Control<A> {
    /// Returns the service and a receiver that turns true after `shutdown`.
    pub fn new(process: impl Into<String>, app: Arc<A>) -> (Self, watch::Receiver<bool>) {
        let (exit, rx) = watch::channel(false);
        (
            Self(Arc::new(Inner {
                process: process.into(),
                app,
                state: Mutex::new(State::Booted),
                busy: tokio::sync::Mutex::new(()),
                run: Mutex::new(0),
                exit,
                heap: Mutex::new(HeapState::default()),
            })),
            rx,
        )
    }
}

impl<A: App> Inner<A> {
    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn heap_state(&self) -> std::sync::MutexGuard<'_, HeapState> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heap snapshot now, with the events the process has handled.
    fn snapshot(&self) -> HeapSnapshot {
        HeapSnapshot {
            events: self.app.events_handled(),
            ..heap::snapshot()
        }
    }

    /// Records a heap snapshot at a run-state boundary, and dumps a heap
    /// profile there when profiling is on and a run record is known.
    fn boundary(&self, label: &str) {
        let snap = self.snapshot();
        let events = snap.events;
        let mut h = self.heap_state();
        h.boundaries.insert(label.to_string(), snap);
        let profiled = matches!(label, "before_start" | "before_stop" | "after_stop");
        if let (true, Some(dir)) = (profiled && heap::profiling_enabled(), &h.record_dir) {
            let path = dir
                .join("heap")
                .join(format!("{}.{label}.heap", self.process));
            let _ = std::fs::create_dir_all(dir.join("heap"));
            match heap::dump_profile(&path) {
                Ok(()) => h.profiles.push(path.display().to_string()),
                Err(e) => warn!(process = %self.process, error = %e, "heap profile not written"),
            }
        }
        info!(process = %self.process, label, allocated = snap.allocated, rss_anon = snap.rss_anon, events, "heap");
    }

    /// Starts the periodic sampler for a run (if configured).
    fn start_sampler(&self) {
        let mut h = self.heap_state();
        let (Some(dir), false) = (h.record_dir.clone(), h.sample_interval.is_zero()) else {
            return;
        };
        let app = self.app.clone();
        let path = dir.join("heap").join(format!("{}.csv", self.process));
        match Sampler::start(
            path,
            h.sample_interval,
            Arc::new(move || app.events_handled()),
        ) {
            Ok(s) => h.sampler = Some(s),
            Err(e) => warn!(process = %self.process, error = %e, "heap sampler not started"),
        }
    }

    async fn stop_sampler(&self) {
        let s = self.heap_state().sampler.take();
        if let Some(s) = s {
            s.stop().await;
        }
    }

    fn set_state(&self, s: State) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    async fn exec<F>(&self, command: Command, f: F) -> Result<Response<proto::CommandReply>, Status>
    where
        F: Future<Output = Result<Vec<String>, AppError>>,
    {
        self.exec_prepared(command, || {}, f).await
    }

    /// Like `exec`, with `prepare` run once the command is known to be legal,
    /// before the `before_<command>` heap boundary.
    async fn exec_prepared<F>(
        &self,
        command: Command,
        prepare: impl FnOnce(),
        f: F,
    ) -> Result<Response<proto::CommandReply>, Status>
    where
        F: Future<Output = Result<Vec<String>, AppError>>,
    {
        let Ok(_guard) = self.busy.try_lock() else {
            return Err(Status::unavailable(format!(
                "{} is busy with another command; {command} rejected",
                self.process
            )));
        };
        let from = self.state();
        let next = from
            .next(command)
            .map_err(|e| Status::failed_precondition(format!("{}: {e}", self.process)))?;
        info!(process = %self.process, %command, %from, "command");
        prepare();
        self.boundary(&format!("before_{command}"));
        match f.await {
            Ok(problems) => {
                self.boundary(&format!("after_{command}"));
                for p in &problems {
                    warn!(process = %self.process, %command, problem = %p, "command finished with a problem");
                }
                self.set_state(next);
                info!(process = %self.process, %command, state = %next, "command done");
                Ok(Response::new(proto::CommandReply {
                    state: next.to_string(),
                    counters: Some(self.app.counters()),
                    problems,
                }))
            }
            Err(e) => {
                // A failed init leaves the process as it was; anything else
                // is an internal failure that only stop or shutdown clears.
                let after = if command == Command::Init {
                    from
                } else {
                    State::Error
                };
                self.set_state(after);
                warn!(process = %self.process, %command, error = %e, state = %after, "command failed");
                Err(Status::internal(format!(
                    "{}: {command} failed: {e}",
                    self.process
                )))
            }
        }
    }
}

/// The command handlers, run by [`Control`] in tasks of their own.
impl<A: App> Inner<A> {
    async fn init(
        &self,
        request: Request<proto::InitRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let req = request.into_inner();
        let config = SystemConfig::from_toml(&req.config_toml, "init request")
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", self.process)))?;
        let interval = Duration::from_millis(config.heap.sample_interval_ms);
        let args = InitArgs {
            config,
            destinations: req.destinations,
        };
        self.exec_prepared(
            Command::Init,
            || self.heap_state().sample_interval = interval,
            async { self.app.init(args).await.map(|_| vec![]) },
        )
        .await
    }

    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let req = request.into_inner();
        let run = req.run;
        let record_dir = (!req.record_dir.is_empty()).then(|| PathBuf::from(&req.record_dir));
        let reply = self
            .exec_prepared(
                Command::Start,
                || self.heap_state().record_dir = record_dir,
                async {
                    self.app.start(run, PathBuf::from(req.data_dir)).await?;
                    *self.run.lock().unwrap_or_else(|p| p.into_inner()) = run;
                    Ok(vec![])
                },
            )
            .await?;
        self.start_sampler();
        Ok(reply)
    }

    async fn pause(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        self.exec(Command::Pause, async {
            self.app.pause().await.map(|_| vec![])
        })
        .await
    }

    async fn resume(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        self.exec(Command::Resume, async {
            self.app.resume().await.map(|_| vec![])
        })
        .await
    }

    async fn stop(
        &self,
        request: Request<proto::StopRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let args = StopArgs {
            end_sequence_id: request.into_inner().end_sequence_id,
        };
        let reply = self.exec(Command::Stop, self.app.stop(args)).await?;
        self.stop_sampler().await;
        Ok(reply)
    }

    async fn shutdown(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        let reply = self
            .exec(Command::Shutdown, async {
                self.app.shutdown().await.map(|_| vec![])
            })
            .await?;
        let _ = self.exit.send(true);
        Ok(reply)
    }

    async fn status(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let state = self.state();
        Ok(Response::new(proto::StatusReply {
            process: self.process.clone(),
            state: state.to_string(),
            legal_commands: state
                .legal_commands()
                .iter()
                .map(|c| c.to_string())
                .collect(),
            counters: Some(self.app.counters()),
            run: *self.run.lock().unwrap_or_else(|p| p.into_inner()),
        }))
    }

    async fn heap(&self, _: Request<proto::Empty>) -> Result<Response<proto::HeapReply>, Status> {
        let current = self.snapshot();
        let h = self.heap_state();
        Ok(Response::new(proto::HeapReply {
            boundaries: h
                .boundaries
                .iter()
                .map(|(label, s)| proto::LabeledSnapshot {
                    label: label.clone(),
                    snapshot: Some(*s),
                })
                .collect(),
            current: Some(current),
            profiling: heap::profiling_enabled(),
            profiles: h.profiles.clone(),
        }))
    }
}

macro_rules! spawned {
    ($self:ident, $method:ident, $request:ident) => {{
        let inner = $self.0.clone();
        tokio::spawn(async move { inner.$method($request).await })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("command task failed: {e}"))))
    }};
}

#[tonic::async_trait]
impl<A: App> RunControl for Control<A> {
    async fn init(
        &self,
        request: Request<proto::InitRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, init, request)
    }

    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, start, request)
    }

    async fn pause(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, pause, request)
    }

    async fn resume(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, resume, request)
    }

    async fn stop(
        &self,
        request: Request<proto::StopRequest>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, stop, request)
    }

    async fn shutdown(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::CommandReply>, Status> {
        spawned!(self, shutdown, request)
    }

    async fn status(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        self.0.status(request).await
    }

    async fn heap(
        &self,
        request: Request<proto::Empty>,
    ) -> Result<Response<proto::HeapReply>, Status> {
        self.0.heap(request).await
    }
}
