//! One process of a system as daqctl holds it ([`Proc`]): spawned locally
//! (waiting for its readiness line) or attached to where someone else
//! started it (checking it is who the address book says).

use anyhow::{Context, Result, anyhow, bail};
use daq_format::process::ProcessId;
use daq_runtime::net::Channel;
use daq_runtime::net::parse_ready_line;
use proto::run_control_client::RunControlClient;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take from spawn to its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long daqctl tries to reach a process it attaches to.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// One process of the system.
pub struct Proc {
    pub id: ProcessId,
    /// `host:port` of its run control (and data sink).
    pub addr: String,
    pub pid: u32,
    /// Its `/metrics` URL (readiness line or Status reply).
    pub metrics_url: Option<String>,
    /// Its log, when daqctl spawned it.
    pub log: Option<PathBuf>,
    pub(super) alive: bool,
    /// False once a command got no answer from it (timed out, or its
    /// connection failed): the run record's queries skip it, shutdown
    /// still tries it.
    pub(super) answering: bool,
    /// The child, when this daqctl spawned it.
    pub(super) child: Option<Child>,
    pub(super) client: RunControlClient<Channel>,
}

impl Proc {
    pub fn name(&self) -> String {
        self.id.to_string()
    }

    /// Whether it has not exited (as far as daqctl knows).
    pub fn alive_now(&self) -> bool {
        self.alive
    }
}

/// Whether spawned processes end with daqctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed if this daqctl exits without shutting them down (demo, run).
    Owned,
    /// Outlive daqctl (`daqctl boot`): found again through processes.json.
    Detached,
}

pub(super) async fn spawn(
    bin_dir: &Path,
    id: ProcessId,
    host: &str,
    logs: &Path,
    env: &[(String, String)],
    lifetime: Lifetime,
) -> Result<Proc> {
    let name = id.to_string();
    let bin = bin_dir.join(id.kind.as_str());
    if !bin.exists() {
        bail!(
            "{} not found (build it with `cargo build --release`, or set DAQ_BIN_DIR)",
            bin.display()
        );
    }
    let log = logs.join(format!("{name}.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot create log {}", log.display()))?;
    let mut child = Command::new(&bin)
        .arg("--rank")
        .arg(id.rank.to_string())
        .arg("--listen")
        .arg(format!("{host}:0"))
        .args(daq_runtime::auth::installed().child_args())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(lifetime == Lifetime::Owned)
        // Owned processes also end by themselves if this daqctl dies
        // (SIGKILL included): they watch for their parent to go.
        .envs((lifetime == Lifetime::Owned).then(|| {
            (
                daq_runtime::process::EXIT_WITH_PARENT_ENV,
                std::process::id().to_string(),
            )
        }))
        // Their own process group: a Ctrl-C at the terminal reaches daqctl
        // only, which then stops the run in order instead of every process
        // shutting down at once; detached ones outlive the terminal's
        // daqctl the same way.
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
    // Keep draining stdout so the process never blocks on a full pipe (a
    // detached process prints nothing after its readiness line).
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let channel = daq_runtime::net::connect(&ready.addr.to_string(), Duration::from_secs(10))
        .await
        .with_context(|| format!("{name}: cannot connect to run control"))?;
    Ok(Proc {
        id,
        addr: ready.addr.to_string(),
        pid: ready.pid,
        metrics_url: ready.metrics_url,
        alive: true,
        answering: true,
        log: Some(log),
        child: Some(child),
        client: run_control_client(channel),
    })
}

/// A run-control client that takes replies as large as the transport
/// allows (a soak's `RunRecord` carries its timed heap profiles, several
/// MB, over tonic's 4 MiB default).
fn run_control_client(channel: Channel) -> RunControlClient<Channel> {
    RunControlClient::new(channel).max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
}

/// Whether `e` comes from a refused TCP connection: nothing listens on the
/// port any more, so on a live host the process is gone (killed, crashed),
/// as opposed to hung or cut off (a timeout).
pub(super) fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// Connects to `id` at `addr` and checks that it is who the address book
/// says (kind and rank from its `Status`).
pub(super) async fn attach(id: ProcessId, addr: &str) -> Result<Proc> {
    let connect = async {
        let channel = daq_runtime::net::connect(addr, ATTACH_TIMEOUT).await?;
        let mut client = run_control_client(channel);
        let status = client.status(proto::Empty {}).await?.into_inner();
        Ok::<_, anyhow::Error>((client, status))
    };
    // The outer timeout also bounds a connect that hangs (no RST from an
    // unreachable host).
    let (client, status) = match tokio::time::timeout(ATTACH_TIMEOUT * 2, connect).await {
        Ok(Ok(r)) => r,
        // The cause stays in the chain (same text), so that `refused` can
        // tell a process gone from one that is hung.
        Ok(Err(e)) => return Err(e.context(format!("{id} at {addr} does not answer"))),
        Err(_) => bail!(
            "{id} at {addr} does not answer within {} s",
            (ATTACH_TIMEOUT * 2).as_secs()
        ),
    };
    match status.process.parse::<ProcessId>() {
        Ok(got) if got == id => {}
        _ => bail!(
            "{addr} is {:?}, not {id} as the address book says",
            status.process
        ),
    }
    Ok(Proc {
        id,
        addr: addr.to_string(),
        pid: status.pid,
        metrics_url: Some(status.metrics_url.clone()).filter(|u| !u.is_empty()),
        alive: true,
        answering: true,
        log: None,
        child: None,
        client,
    })
}
