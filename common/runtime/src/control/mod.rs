//! Run control: the `RunControl` gRPC service every process serves, wrapped
//! around the process's work (artdaq's App around its Core).
//!
//! The service owns the state machine: it checks each command against
//! [`State::next`], rejects a command while another one runs (busy), and moves
//! to [`State::Error`] when a command fails. The process implements [`App`]
//! and never sees the state machine.

use crate::sampler::{Sampler, StatsFailures, TimedProfiles};
use daq_alloc as heap;
use daq_format::config::SystemConfig;
use daq_format::state::{Command, State};
use proto::HeapSnapshot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Response, Status};
use tracing::{error, info, warn};

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
    /// Receivers: wait at most this long in all for the sources'
    /// end-of-data, even while they are still sending (set by a stop on a
    /// signal, whose whole stop must fit in a second).
    pub source_wait_limit: Option<Duration>,
}

impl StopArgs {
    /// How long a receiver waits for its sources' end-of-data: until they
    /// are idle for `configured` (`transfer.end_of_data_timeout_ms`), and
    /// at most the limit in all when this stop has one.
    pub fn source_wait(&self, configured: Duration) -> crate::sources::Wait {
        crate::sources::Wait {
            idle: configured,
            within: self.source_wait_limit,
        }
    }
}

/// Ends a process's work when it is told to go without a command (SIGTERM,
/// SIGINT, its parent gone): a run in progress is stopped in order, as far
/// as `within` allows, then the app shuts down.
#[tonic::async_trait]
pub trait Terminate: Send + Sync + 'static {
    async fn terminate(&self, within: Duration);
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
    /// A failure during the run that the process cannot recover from (its
    /// data files failed): run control moves to Error with this message,
    /// which stop clears. `None` while all is well.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Events handled in the current or last run (fragments sent by a
    /// boardreader, events built by an eventbuilder, events received by an
    /// aggregator, events read by a monitor): the x axis of the heap-growth
    /// analysis.
    fn events_handled(&self) -> u64;
    /// Files this process adds to the run record of the current or last run
    /// (path relative to the record's root, bytes); most add none.
    fn record_files(&self) -> Vec<proto::RecordFile> {
        Vec::new()
    }
}

/// Heap instrumentation state kept by run control. Samples and profiles of
/// the current or last run live on this process's host (an unnamed
/// temporary file, files in the temporary directory) until daqctl fetches
/// them with `RunRecord`: they never grow this process's heap, and the run
/// record is complete whatever host the process runs on.
#[derive(Default)]
struct HeapState {
    /// Snapshot (with the events handled), by boundary label (`before_start`, ...).
    boundaries: BTreeMap<String, HeapSnapshot>,
    sample_interval: Duration,
    sampler: Option<Sampler>,
    /// The sampler's rows of the current or last run.
    samples: Option<std::fs::File>,
    /// Profiles of the current or last run: (label, file).
    profiles: Vec<(String, PathBuf)>,
    /// Profiles the sampler dumped on its timer in the current or last run.
    timed: Option<Arc<TimedProfiles>>,
}

impl HeapState {
    /// Forgets the last run's profiles, removing their files.
    fn clear_profiles(&mut self) {
        for (_, path) in self.profiles.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        if let Some(t) = &self.timed {
            t.clear();
        }
    }
}

impl Drop for HeapState {
    fn drop(&mut self) {
        self.clear_profiles();
    }
}

/// What the process remembers of the current or last run, for `Status`.
#[derive(Default)]
struct RunInfo {
    run: u32,
    record_dir: String,
    started_unix_ms: u64,
    /// The configuration in force (TOML), empty before init.
    config_toml: String,
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
    run: Mutex<RunInfo>,
    exit: watch::Sender<bool>,
    heap: Mutex<HeapState>,
    /// Heap-statistics reads of the current or last run that failed.
    stats_failures: Arc<StatsFailures>,
    /// Why the process is in the error state (empty otherwise).
    error: Mutex<String>,
    metrics_url: std::sync::OnceLock<String>,
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
                run: Mutex::new(RunInfo::default()),
                exit,
                heap: Mutex::new(HeapState::default()),
                stats_failures: Arc::default(),
                error: Mutex::new(String::new()),
                metrics_url: std::sync::OnceLock::new(),
            })),
            rx,
        )
    }
}

impl<A: App> Control<A> {
    /// What the metrics endpoint reads at every scrape.
    pub fn observed(&self) -> Arc<dyn crate::metrics::Observed> {
        self.0.clone()
    }

    /// What the process runs when it is told to go without a command.
    pub fn terminator(&self) -> Arc<dyn Terminate> {
        self.0.clone()
    }
}

/// How long a stop on a signal waits in all for the sources' end-of-data;
/// the streams still open then are cut (a source that goes on sending is
/// alive and counts what it could not deliver). Sources stopped before
/// this process (SIGTERM in data order) have ended already.
const TERMINATE_SOURCE_WAIT: Duration = Duration::from_millis(250);

#[tonic::async_trait]
impl<A: App> Terminate for Inner<A> {
    async fn terminate(&self, within: Duration) {
        let work = async {
            // A command in progress (perhaps a stop) finishes first.
            let _guard = self.busy.lock().await;
            let state = self.state();
            if matches!(state, State::Running | State::Paused | State::Error) {
                info!(process = %self.process, %state, "terminating: stopping the run");
                let args = StopArgs {
                    end_sequence_id: None,
                    source_wait_limit: Some(TERMINATE_SOURCE_WAIT),
                };
                match self.app.stop(args).await {
                    Ok(problems) => {
                        for p in &problems {
                            warn!(process = %self.process, problem = %p, "stop on termination found a problem");
                        }
                        self.set_state(State::Ready);
                    }
                    Err(e) => {
                        warn!(process = %self.process, error = %e, "stop on termination failed");
                        self.set_state(State::Error);
                    }
                }
                self.stop_sampler().await;
            }
            if let Err(e) = self.app.shutdown().await {
                warn!(process = %self.process, error = %e, "shutdown on termination failed");
            }
        };
        if tokio::time::timeout(within, work).await.is_err() {
            warn!(
                process = %self.process,
                within_ms = within.as_millis() as u64,
                "the run did not end in time; exiting anyway"
            );
        }
    }
}

impl<A: App> crate::metrics::Observed for Inner<A> {
    fn state(&self) -> State {
        Inner::state(self)
    }
    fn run(&self) -> u32 {
        self.run.lock().unwrap_or_else(|p| p.into_inner()).run
    }
    fn counters(&self) -> daq_format::record::Counters {
        Inner::counters(self)
    }
    fn set_metrics_url(&self, url: String) {
        let _ = self.metrics_url.set(url);
    }
}

impl<A: App> Inner<A> {
    /// The state; a running process whose work failed moves to Error here.
    fn state(&self) -> State {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Running | State::Paused)
            && let Some(why) = self.app.failure()
        {
            *state = State::Error;
            error!(process = %self.process, error = %why, "run failed; only stop or shutdown is accepted");
            *self.error_message() = why;
        }
        *state
    }

    fn error_message(&self) -> std::sync::MutexGuard<'_, String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The App's counters, with run control's own (`heap_stats_failed`).
    fn counters(&self) -> daq_format::record::Counters {
        daq_format::record::Counters {
            heap_stats_failed: self.stats_failures.count(),
            ..self.app.counters()
        }
    }

    fn heap_state(&self) -> std::sync::MutexGuard<'_, HeapState> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_info(&self) -> std::sync::MutexGuard<'_, RunInfo> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heap snapshot now, with the events the process has handled;
    /// `None` (counted, never zeros) when the statistics cannot be read.
    fn snapshot(&self, at: &str) -> Option<HeapSnapshot> {
        match crate::sampler::heap_snapshot(self.app.events_handled()) {
            Ok(s) => Some(s),
            Err(e) => {
                self.stats_failures.record(at, &e);
                None
            }
        }
    }

    /// Records a heap snapshot at a run-state boundary, and dumps a heap
    /// profile there when profiling is on (kept on this host until
    /// `RunRecord` fetches it).
    fn boundary(&self, label: &str) {
        let snap = self.snapshot(label);
        let mut h = self.heap_state();
        let Some(snap) = snap else {
            // Missing from the record, never an older run's reading.
            h.boundaries.remove(label);
            return;
        };
        let events = snap.events;
        h.boundaries.insert(label.to_string(), snap);
        if label == "before_start" {
            h.clear_profiles();
        }
        let profiled = matches!(label, "before_start" | "before_stop" | "after_stop");
        if profiled && heap::profiling_enabled() {
            let path = std::env::temp_dir().join(format!(
                "daq-{}-{}.{label}.heap",
                std::process::id(),
                self.process
            ));
            match heap::dump_profile(&path) {
                Ok(()) => h.profiles.push((label.to_string(), path)),
                Err(e) => warn!(process = %self.process, error = %e, "heap profile not written"),
            }
        }
        info!(process = %self.process, label, allocated = snap.allocated, rss_anon = snap.rss_anon, events, "heap");
    }

    /// Starts the periodic sampler for a run (if configured), into a fresh
    /// unnamed temporary file.
    fn start_sampler(&self) {
        let mut h = self.heap_state();
        h.samples = None;
        if h.sample_interval.is_zero() {
            return;
        }
        let app = self.app.clone();
        let name = PathBuf::from(format!("heap samples of {}", self.process));
        let timed = h
            .timed
            .get_or_insert_with(|| {
                Arc::new(TimedProfiles::new(format!(
                    "daq-{}-{}",
                    std::process::id(),
                    self.process
                )))
            })
            .clone();
        timed.clear();
        let started = tempfile::tempfile().and_then(|file| {
            let reader = file.try_clone()?;
            let s = Sampler::start_in(
                file,
                name,
                h.sample_interval,
                Arc::new(move || app.events_handled()),
                self.stats_failures.clone(),
                Some(timed),
            )?;
            Ok((s, reader))
        });
        match started {
            Ok((s, reader)) => {
                h.sampler = Some(s);
                h.samples = Some(reader);
            }
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
        if command == Command::Start {
            self.stats_failures.reset();
        }
        self.boundary(&format!("before_{command}"));
        match f.await {
            Ok(mut problems) => {
                self.boundary(&format!("after_{command}"));
                if command == Command::Stop {
                    problems.extend(self.stats_failures.problem());
                }
                for p in &problems {
                    warn!(process = %self.process, %command, problem = %p, "command finished with a problem");
                }
                self.set_state(next);
                self.error_message().clear();
                info!(process = %self.process, %command, state = %next, "command done");
                Ok(Response::new(proto::CommandReply {
                    state: next.to_string(),
                    counters: Some(self.counters()),
                    problems,
                }))
            }
            Err(e) => {
                // A failed init or start leaves the process as it was (a
                // start that fails has started nothing: no run is kept), so
                // it can be retried; anything else is an internal failure
                // that only stop or shutdown clears.
                let after = if matches!(command, Command::Init | Command::Start) {
                    from
                } else {
                    State::Error
                };
                self.set_state(after);
                if after == State::Error {
                    *self.error_message() = format!("{command} failed: {e}");
                }
                warn!(process = %self.process, %command, error = %e, state = %after, "command failed");
                Err(Status::internal(format!(
                    "{}: {command} failed: {e}",
                    self.process
                )))
            }
        }
    }
}

mod commands;
