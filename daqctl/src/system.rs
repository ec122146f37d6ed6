//! Boots and drives a local DAQ system: spawns the process binaries, learns
//! their addresses from the readiness line, and sends run-control commands
//! in DAQInterface order (downstream first for init/start/resume, upstream
//! first for pause/stop/shutdown).

use anyhow::{Context, Result, anyhow, bail};
use daq_format::config::SystemConfig;
use daq_runtime::net::parse_ready_line;
use futures::future::join_all;
use proto::run_control_client::RunControlClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// How long a process may take from spawn to its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a command may take before daqctl gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    BoardReader,
    EventBuilder,
    Aggregator,
}

impl Kind {
    pub fn binary(self) -> &'static str {
        match self {
            Kind::BoardReader => "boardreader",
            Kind::EventBuilder => "eventbuilder",
            Kind::Aggregator => "aggregator",
        }
    }
}

/// One spawned process.
pub struct Proc {
    pub name: String,
    pub kind: Kind,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub pid: u32,
    alive: bool,
    child: Child,
    client: RunControlClient<Channel>,
}

/// Directory holding the process binaries: `DAQ_BIN_DIR`, else daqctl's own.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("DAQ_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("cannot locate the daqctl executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("daqctl executable has no parent directory"))
}

async fn spawn(
    bin_dir: &Path,
    kind: Kind,
    rank: u16,
    host: &str,
    logs: &Path,
    env: &[(String, String)],
) -> Result<Proc> {
    let name = format!("{}-{rank}", kind.binary());
    let bin = bin_dir.join(kind.binary());
    if !bin.exists() {
        bail!(
            "{} not found (build it with `cargo build --release`, or set DAQ_BIN_DIR)",
            bin.display()
        );
    }
    let log = logs.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log)
        .with_context(|| format!("cannot create log {}", log.display()))?;
    let mut child = Command::new(&bin)
        .arg("--rank")
        .arg(rank.to_string())
        .arg("--listen")
        .arg(format!("{host}:0"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        // Their own process group: a Ctrl-C at the terminal reaches daqctl
        // only, which then stops the run in order instead of every process
        // shutting down at once.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{name}: no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(r) = parse_ready_line(&line) {
                return Ok::<_, std::io::Error>(Some(r));
            }
        }
        Ok(None)
    })
    .await;
    let ready = match ready {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => bail!("{name} exited before it was ready; see {}", log.display()),
        Ok(Err(e)) => bail!("{name}: reading its stdout failed: {e}"),
        Err(_) => bail!(
            "{name} was not ready within {} s; see {}",
            READY_TIMEOUT.as_secs(),
            log.display()
        ),
    };
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let channel = daq_runtime::net::connect(&ready.addr.to_string(), Duration::from_secs(10))
        .await
        .with_context(|| format!("{name}: cannot connect to run control"))?;
    Ok(Proc {
        name,
        kind,
        addr: ready.addr,
        pid: ready.pid,
        alive: true,
        log,
        child,
        client: RunControlClient::new(channel),
    })
}

/// A whole local system.
pub struct System {
    /// Ordered upstream first: boardreaders, eventbuilders, aggregators.
    pub procs: Vec<Proc>,
}

/// A command's reply, by process.
pub struct Reply {
    pub process: String,
    pub reply: proto::CommandReply,
}

fn status_error(name: &str, command: &str, s: tonic::Status) -> anyhow::Error {
    anyhow!("{name}: {command} failed ({:?}): {}", s.code(), s.message())
}

impl System {
    /// Spawns every process of `config`'s topology, concurrently, with
    /// `env` added to their environment.
    pub async fn boot(
        config: &SystemConfig,
        logs: &Path,
        env: &[(String, String)],
    ) -> Result<Self> {
        let dir = bin_dir()?;
        let t = config.topology;
        let mut wanted = Vec::new();
        for r in 0..t.boardreaders {
            wanted.push((Kind::BoardReader, r));
        }
        for r in 0..t.eventbuilders {
            wanted.push((Kind::EventBuilder, r));
        }
        for r in 0..t.aggregators {
            wanted.push((Kind::Aggregator, r));
        }
        let spawned = join_all(
            wanted
                .iter()
                .map(|&(k, r)| spawn(&dir, k, r, &config.host, logs, env)),
        )
        .await;
        let mut procs = Vec::new();
        let mut errors = Vec::new();
        for p in spawned {
            match p {
                Ok(p) => procs.push(p),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            bail!("boot failed: {}", errors.join("; "));
        }
        Ok(Self { procs })
    }

    pub fn addrs(&self, kind: Kind) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.addr.to_string())
            .collect()
    }

    /// Live processes of one kind, in rank order.
    fn tier(&mut self, kind: Kind) -> impl Iterator<Item = &mut Proc> {
        self.procs
            .iter_mut()
            .filter(move |p| p.kind == kind && p.alive)
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
            let name = p.name.clone();
            let fut = f(p.client.clone());
            async move {
                match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
                    Ok(Ok(r)) => Ok(Reply {
                        process: name,
                        reply: r.into_inner(),
                    }),
                    Ok(Err(s)) => Err(format!("{:#}", status_error(&name, command, s))),
                    Err(_) => Err(format!(
                        "{name}: {command} timed out after {} s",
                        COMMAND_TIMEOUT.as_secs()
                    )),
                }
            }
        });
        split(join_all(calls.collect::<Vec<_>>()).await)
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

    /// Start, downstream first.
    pub async fn start(&mut self, run: u32, data_dir: &Path, record_dir: &Path) -> Result<()> {
        let data_dir = data_dir.display().to_string();
        let record_dir = record_dir.display().to_string();
        for kind in [Kind::Aggregator, Kind::EventBuilder, Kind::BoardReader] {
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
        for kind in [Kind::EventBuilder, Kind::Aggregator] {
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
        let calls = self.procs.iter().filter(|p| p.alive).map(|p| {
            let mut c = p.client.clone();
            let name = p.name.clone();
            async move {
                c.status(proto::Empty {})
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| format!("{:#}", status_error(&name, "status", s)))
            }
        });
        split(join_all(calls.collect::<Vec<_>>()).await)
    }

    /// Heap snapshots of every live process, in order, and the failures.
    pub async fn heap(&mut self) -> (Vec<(String, proto::HeapReply)>, Vec<String>) {
        let calls = self.procs.iter().filter(|p| p.alive).map(|p| {
            let mut c = p.client.clone();
            let name = p.name.clone();
            async move {
                c.heap(proto::Empty {})
                    .await
                    .map(|r| (name.clone(), r.into_inner()))
                    .map_err(|s| format!("{:#}", status_error(&name, "heap", s)))
            }
        });
        split(join_all(calls.collect::<Vec<_>>()).await)
    }

    /// Marks processes that exited on their own; one error for each.
    pub fn reap(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for p in self.procs.iter_mut().filter(|p| p.alive) {
            if let Ok(Some(status)) = p.child.try_wait() {
                p.alive = false;
                errors.push(format!(
                    "{} exited unexpectedly ({status}); see {}",
                    p.name,
                    p.log.display()
                ));
            }
        }
        errors
    }

    /// Whether every process of `kind` is gone.
    pub fn all_dead(&self, kind: Kind) -> bool {
        self.procs
            .iter()
            .filter(|p| p.kind == kind)
            .all(|p| !p.alive)
    }

    /// Shutdown, upstream first, then waits for every process to exit. A
    /// process still running (its stop failed) is stopped first; one that
    /// will not exit gets SIGTERM (so it removes its shared memory), then
    /// SIGKILL.
    pub async fn shutdown(mut self) -> Vec<String> {
        let mut errors = self.reap();
        for kind in [Kind::BoardReader, Kind::EventBuilder, Kind::Aggregator] {
            let (_, e) = self
                .on_tier(kind, "shutdown", |mut c| async move {
                    match c.shutdown(proto::Empty {}).await {
                        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                            c.stop(proto::StopRequest::default()).await?;
                            c.shutdown(proto::Empty {}).await
                        }
                        r => r,
                    }
                })
                .await;
            errors.extend(e);
        }
        for p in self.procs.iter_mut().filter(|p| p.alive) {
            match tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => errors.push(format!("{} exited with {s}", p.name)),
                Ok(Err(e)) => errors.push(format!("{}: wait failed: {e}", p.name)),
                Err(_) => {
                    if let Some(pid) = p.child.id() {
                        let _ = std::process::Command::new("kill")
                            .arg(pid.to_string())
                            .status();
                    }
                    if tokio::time::timeout(Duration::from_secs(5), p.child.wait())
                        .await
                        .is_err()
                    {
                        let _ = p.child.kill().await;
                    }
                    errors.push(format!(
                        "{} did not exit after shutdown; terminated",
                        p.name
                    ));
                }
            }
        }
        errors
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
