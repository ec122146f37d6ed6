//! A DAQ system as daqctl drives it: the processes, spawned locally or
//! attached to where someone else started them, and run-control commands
//! sent in DAQInterface order (downstream first for init/start/resume,
//! upstream first for pause/stop/shutdown). One process, spawned or
//! attached: `process`.

mod process;

pub use process::{Lifetime, Proc};

use anyhow::{Context, Result, anyhow, bail};
use daq_format::config::SystemConfig;
use daq_format::process::{Kind, ProcessId};
use daq_runtime::net::Channel;
use futures::future::join_all;
use process::{attach, refused, spawn};
use proto::run_control_client::RunControlClient;
use std::path::Path;
use std::time::Duration;

/// How long a command may take before daqctl gives up on it. A process
/// that is hung or cut off is found much sooner, by its connection's
/// keep-alive (`daq_runtime::net::KEEPALIVE_TIMEOUT`); this bounds a
/// process that answers pings but never finishes the command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a query (status, heap, run record) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long daqctl waits before asking a busy process again at shutdown.
const BUSY_RETRY: Duration = Duration::from_millis(100);
/// How long a process may take to exit after shutdown.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole system.
pub struct System {
    /// Ordered upstream first: boardreaders, eventbuilders, aggregators,
    /// monitors.
    pub procs: Vec<Proc>,
    /// Processes of the address book found dead when attaching (their
    /// port refused the connection): reported like dead children.
    pub gone: Vec<ProcessId>,
}

/// A command's reply, by process.
pub struct Reply {
    pub process: String,
    pub reply: proto::CommandReply,
}

fn status_error(name: &str, command: &str, s: tonic::Status) -> anyhow::Error {
    anyhow!("{name}: {command} failed ({:?}): {}", s.code(), s.message())
}

/// Whether a failed call means the process gave no answer at all (the
/// connection failed: refused, keep-alive timed out, reset) rather than an
/// answer that refused the command. Replies from a process carry no
/// source; transport failures do.
fn is_no_answer(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Whether a process answered that it is busy with another command.
fn is_busy(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable && !is_no_answer(s) && s.message().contains("is busy")
}

/// How one call to one process ended.
enum Outcome<T> {
    Reply(T),
    /// The process answered with an error.
    Refused(String),
    /// No answer: the call timed out or the connection failed.
    NoAnswer(String),
}

/// Runs one call to `name` with a time limit, telling an answer, a
/// refusal and no answer apart. No answer is printed at once (naming the
/// process), so an operator sees which process hangs while daqctl goes on.
async fn call<T>(
    name: &str,
    command: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, tonic::Status>>,
) -> Outcome<T> {
    let out = match tokio::time::timeout(limit, fut).await {
        Ok(Ok(r)) => return Outcome::Reply(r),
        Ok(Err(s)) if is_no_answer(&s) => Outcome::NoAnswer(format!(
            "{name} does not answer: {command} got no reply ({}; the process is hung, dead or cut off)",
            s.message()
        )),
        Ok(Err(s)) => return Outcome::Refused(format!("{:#}", status_error(name, command, s))),
        Err(_) => Outcome::NoAnswer(format!(
            "{name} does not answer: {command} got no reply within {} s",
            limit.as_secs()
        )),
    };
    if let Outcome::NoAnswer(e) = &out {
        eprintln!("daqctl: {e}");
    }
    out
}

impl System {
    /// Spawns every process of `config`'s topology on `config.host`,
    /// concurrently, with `env` added to their environment.
    pub async fn spawn(
        config: &SystemConfig,
        logs: &Path,
        env: &[(String, String)],
        lifetime: Lifetime,
    ) -> Result<Self> {
        let dir = crate::bins::bin_dir()?;
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let spawned = join_all(
            config
                .topology
                .processes()
                .into_iter()
                .map(|id| spawn(&dir, id, &config.host, logs, env, lifetime)),
        )
        .await;
        Self::all_or_nothing(spawned, "boot")
    }

    /// Connects to every process of an address book (upstream first),
    /// concurrently, checking each one's identity.
    pub async fn attach(book: &[(ProcessId, String)]) -> Result<Self> {
        let attached = join_all(book.iter().map(|(id, addr)| attach(*id, addr))).await;
        Self::all_or_nothing(attached, "attach")
    }

    /// Like `attach`, keeping the processes that answer; the others are
    /// returned with why not (for `daqctl status`), and the ones among them
    /// whose port refused the connection are also listed in `gone`.
    pub async fn attach_answering(
        book: &[(ProcessId, String)],
    ) -> (Self, Vec<(ProcessId, String, String)>) {
        let attached = join_all(book.iter().map(|(id, addr)| attach(*id, addr))).await;
        let mut procs = Vec::new();
        let mut gone = Vec::new();
        let mut silent = Vec::new();
        for ((id, addr), p) in book.iter().zip(attached) {
            match p {
                Ok(p) => procs.push(p),
                Err(e) => {
                    if refused(&e) {
                        gone.push(*id);
                    }
                    silent.push((*id, addr.clone(), format!("{e:#}")));
                }
            }
        }
        (Self { procs, gone }, silent)
    }

    fn all_or_nothing(results: Vec<Result<Proc>>, what: &str) -> Result<Self> {
        let mut procs = Vec::new();
        let mut errors = Vec::new();
        for p in results {
            match p {
                Ok(p) => procs.push(p),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            bail!("{what} failed: {}", errors.join("; "));
        }
        procs.sort_by_key(|p| p.id);
        Ok(Self {
            procs,
            gone: Vec::new(),
        })
    }

    pub fn addrs(&self, kind: Kind) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.id.kind == kind)
            .map(|p| p.addr.clone())
            .collect()
    }

    /// Live processes of one kind that answer, in rank order (a process
    /// that gave no answer is not asked again until shutdown).
    fn tier(&mut self, kind: Kind) -> impl Iterator<Item = &mut Proc> {
        self.procs
            .iter_mut()
            .filter(move |p| p.id.kind == kind && p.alive && p.answering)
    }

    /// Sends a command to every live process of `kind` at once. Returns the
    /// replies and one error per process that failed; never stops early.
    async fn on_tier<F, Fut>(
        &mut self,
        kind: Kind,
        command: &str,
        f: F,
    ) -> (Vec<Reply>, Vec<String>)
    where
        F: Fn(RunControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<proto::CommandReply>, tonic::Status>>,
    {
        let calls = self.tier(kind).map(|p| {
            let name = p.name();
            let fut = f(p.client.clone());
            async move {
                let out = call(&name, command, COMMAND_TIMEOUT, fut).await;
                (name, out)
            }
        });
        let outcomes = join_all(calls.collect::<Vec<_>>()).await;
        let mut replies = Vec::new();
        let mut errors = Vec::new();
        for (name, out) in outcomes {
            match out {
                Outcome::Reply(r) => replies.push(Reply {
                    process: name,
                    reply: r.into_inner(),
                }),
                Outcome::Refused(e) => errors.push(e),
                Outcome::NoAnswer(e) => {
                    self.mark_silent(&name);
                    errors.push(e);
                }
            }
        }
        (replies, errors)
    }

    /// Marks a process as not answering.
    fn mark_silent(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.name() == name) {
            p.answering = false;
        }
    }

    /// Live processes that gave no answer to a command; one error each,
    /// saying what the run record lacks.
    pub fn silent(&self) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.alive && !p.answering)
            .map(|p| {
                format!(
                    "{} never answered: its counters, heap and samples are missing from the record",
                    p.id
                )
            })
            .collect()
    }

    /// Live processes that answer, for queries.
    fn answering(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.alive && p.answering)
    }

    /// Like `on_tier`, failing on the first error (for init and start).
    async fn on_tier_all<F, Fut>(&mut self, kind: Kind, command: &str, f: F) -> Result<Vec<Reply>>
    where
        F: Fn(RunControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<proto::CommandReply>, tonic::Status>>,
    {
        let (replies, errors) = self.on_tier(kind, command, f).await;
        if errors.is_empty() {
            Ok(replies)
        } else {
            bail!("{}", errors.join("; "))
        }
    }

    /// Init, downstream first; each process learns its destinations.
    pub async fn init(&mut self, config: &SystemConfig) -> Result<()> {
        let toml = config.to_toml();
        let ag = self.addrs(Kind::Aggregator);
        let eb = self.addrs(Kind::EventBuilder);
        for (kind, dest) in [
            (Kind::Aggregator, vec![]),
            (Kind::Monitor, vec![]),
            (Kind::EventBuilder, ag),
            (Kind::BoardReader, eb),
        ] {
            let toml = toml.clone();
            self.on_tier_all(kind, "init", move |mut c| {
                let req = proto::InitRequest {
                    config_toml: toml.clone(),
                    destinations: dest.clone(),
                };
                async move { c.init(req).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Start, downstream first; a monitor after the aggregators (whose
    /// stores it attaches to) and before any event is sent.
    pub async fn start(&mut self, run: u32, data_dir: &Path, record_dir: &Path) -> Result<()> {
        let data_dir = data_dir.display().to_string();
        let record_dir = record_dir.display().to_string();
        for kind in [
            Kind::Aggregator,
            Kind::Monitor,
            Kind::EventBuilder,
            Kind::BoardReader,
        ] {
            let data_dir = data_dir.clone();
            let record_dir = record_dir.clone();
            self.on_tier_all(kind, "start", move |mut c| {
                let req = proto::StartRequest {
                    run,
                    data_dir: data_dir.clone(),
                    record_dir: record_dir.clone(),
                };
                async move { c.start(req).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Stop, upstream first, with a synchronized end of run: the
    /// boardreaders pause, then all generate up to the highest sequence id
    /// any of them reached, so every event is complete. A process that fails
    /// does not keep the others from stopping. Returns every reply (with the
    /// problems each process found) and the failures.
    pub async fn stop(&mut self) -> (Vec<Reply>, Vec<String>) {
        let (paused, mut errors) = self
            .on_tier(Kind::BoardReader, "pause", |mut c| async move {
                c.pause(proto::Empty {}).await
            })
            .await;
        let end = paused
            .iter()
            .filter_map(|r| r.reply.counters.as_ref().map(|c| c.last_sequence_id))
            .max()
            .filter(|&s| s > 0);
        let (mut replies, e) = self
            .on_tier(Kind::BoardReader, "stop", move |mut c| async move {
                c.stop(proto::StopRequest {
                    end_sequence_id: end,
                })
                .await
            })
            .await;
        errors.extend(e);
        // The monitors last: their final read sees every event the
        // aggregators published.
        for kind in [Kind::EventBuilder, Kind::Aggregator, Kind::Monitor] {
            let (r, e) = self
                .on_tier(kind, "stop", |mut c| async move {
                    c.stop(proto::StopRequest::default()).await
                })
                .await;
            replies.extend(r);
            errors.extend(e);
        }
        (replies, errors)
    }

    /// Status of every live process, in order, and the failures.
    pub async fn status(&mut self) -> (Vec<proto::StatusReply>, Vec<String>) {
        let calls = self.answering().map(|p| {
            let mut c = p.client.clone();
            let name = p.name();
            async move {
                query(&name, "status", c.status(proto::Empty {}))
                    .await
                    .map(tonic::Response::into_inner)
            }
        });
        split(join_all(calls.collect::<Vec<_>>()).await)
    }

    /// Heap snapshots of every live process, in order, and the failures.
    pub async fn heap(&mut self) -> (Vec<(String, proto::HeapReply)>, Vec<String>) {
        let calls = self.answering().map(|p| {
            let mut c = p.client.clone();
            let name = p.name();
            async move {
                query(&name, "heap", c.heap(proto::Empty {}))
                    .await
                    .map(|r| (name.clone(), r.into_inner()))
            }
        });
        split(join_all(calls.collect::<Vec<_>>()).await)
    }

    /// What every live process recorded for the current or last run (heap
    /// samples and profiles), in order, and the failures.
    pub async fn run_records(&mut self) -> (Vec<(String, proto::RunRecordReply)>, Vec<String>) {
        let calls = self.answering().map(|p| {
            let mut c = p.client.clone();
            let name = p.name();
            async move {
                query(&name, "run record", c.run_record(proto::Empty {}))
                    .await
                    .map(|r| (name.clone(), r.into_inner()))
            }
        });
        split(join_all(calls.collect::<Vec<_>>()).await)
    }

    /// Marks processes that exited on their own; one error for each.
    pub fn reap(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for p in self.procs.iter_mut().filter(|p| p.alive) {
            let Some(child) = p.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                p.alive = false;
                let log = p.log.as_ref().map(|l| l.display().to_string());
                errors.push(format!(
                    "{} exited unexpectedly ({status}); see {}",
                    p.id,
                    log.unwrap_or_default()
                ));
            }
        }
        errors
    }

    /// Leaves `id` out of every later command and query of this system, as
    /// if it were gone (its old segment is removed, `lost` names it): a
    /// process restarted mid-run by its supervisor holds nothing of the run.
    pub fn set_aside(&mut self, id: ProcessId) {
        self.procs.retain(|p| p.id != id);
        if !self.gone.contains(&id) {
            self.gone.push(id);
        }
    }

    /// Processes this daqctl spawned that have died (their shared-memory
    /// segments, on this host, may be left behind).
    pub fn dead_children(&self) -> Vec<ProcessId> {
        self.procs
            .iter()
            .filter(|p| !p.alive && p.child.is_some())
            .map(|p| p.id)
            .chain(self.gone.iter().copied())
            .collect()
    }

    /// Whether every process of `kind` is gone.
    pub fn all_dead(&self, kind: Kind) -> bool {
        self.procs
            .iter()
            .filter(|p| p.id.kind == kind)
            .all(|p| !p.alive)
    }

    /// Shutdown, upstream first, then waits for every process to exit. A
    /// process still running (its stop failed) is stopped first; one that
    /// will not exit gets SIGTERM (so it removes its shared memory), then
    /// SIGKILL.
    pub async fn shutdown(mut self) -> Vec<String> {
        let mut errors = self.reap();
        // Every process is asked again, also one that gave no answer
        // before: it may have come back (SIGCONT, a link restored).
        for p in &mut self.procs {
            p.answering = true;
        }
        for kind in Kind::ALL {
            let (_, e) = self
                .on_tier(kind, "shutdown", |mut c| async move {
                    // A process that was hung may, once it runs again, be
                    // busy finishing a command it received before: wait
                    // for it (bounded by the command timeout).
                    let mut stopped = false;
                    loop {
                        match c.shutdown(proto::Empty {}).await {
                            Err(s) if s.code() == tonic::Code::FailedPrecondition && !stopped => {
                                match c.stop(proto::StopRequest::default()).await {
                                    Err(s) if is_busy(&s) => {}
                                    Err(s) => return Err(s),
                                    Ok(_) => stopped = true,
                                }
                            }
                            Err(s) if is_busy(&s) => {}
                            r => return r,
                        }
                        tokio::time::sleep(BUSY_RETRY).await;
                    }
                })
                .await;
            errors.extend(e);
        }
        let waits = self
            .procs
            .iter_mut()
            .filter(|p| p.alive)
            .map(|p| async move {
                let name = p.id.to_string();
                let Some(child) = p.child.as_mut() else {
                    // Not our child: gone once it no longer answers.
                    return gone(&mut p.client, &name).await;
                };
                match tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await {
                    Ok(Ok(s)) if s.success() => None,
                    Ok(Ok(s)) => Some(format!("{name} exited with {s}")),
                    Ok(Err(e)) => Some(format!("{name}: wait failed: {e}")),
                    Err(_) => {
                        if let Some(pid) = child.id() {
                            let _ = std::process::Command::new("kill")
                                .arg(pid.to_string())
                                .status();
                        }
                        if tokio::time::timeout(Duration::from_secs(5), child.wait())
                            .await
                            .is_err()
                        {
                            let _ = child.kill().await;
                        }
                        Some(format!("{name} did not exit after shutdown; terminated"))
                    }
                }
            });
        errors.extend(join_all(waits).await.into_iter().flatten());
        errors
    }
}

/// One query to one process, bounded by [`QUERY_TIMEOUT`], quietly (a
/// query's failure is the caller's to report).
async fn query<T>(
    name: &str,
    what: &str,
    fut: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(s)) if is_no_answer(&s) => Err(format!(
            "{name} does not answer: {what} got no reply ({})",
            s.message()
        )),
        Ok(Err(s)) => Err(format!("{:#}", status_error(name, what, s))),
        Err(_) => Err(format!(
            "{name} does not answer: {what} got no reply within {} s",
            QUERY_TIMEOUT.as_secs()
        )),
    }
}

/// Waits until a process that is not daqctl's child stops answering after
/// shutdown; an error if it still answers after [`EXIT_TIMEOUT`].
async fn gone(client: &mut RunControlClient<Channel>, name: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(1), client.status(proto::Empty {}));
        match answer.await {
            Ok(Ok(_)) if tokio::time::Instant::now() < deadline => {
                // Still draining its last connections: ask again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Ok(_)) => {
                return Some(format!(
                    "{name} still answers {} s after shutdown",
                    EXIT_TIMEOUT.as_secs()
                ));
            }
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

fn split<T>(results: Vec<Result<T, String>>) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}
