//! The life of a process binary: load its credentials and bind its gRPC and
//! metrics addresses (refusing a non-loopback address without a token),
//! serve the gRPC router and `/metrics` on the listeners, print the
//! readiness line, and drain on `shutdown`, on SIGTERM/SIGINT, or (when
//! the parent asked for it) when the parent process is gone; and leave
//! within seconds whatever state the work is in.
//!
//! Termination: on a signal or a lost parent, the run in progress is
//! stopped in order ([`Terminate`], at most [`TERMINATE_WITHIN`]), the
//! servers drain (at most [`SERVER_DRAIN`]), and [`block_on`] gives the
//! runtime [`RUNTIME_GRACE`] to drop its tasks (their shared-memory stores
//! remove their segments) before the process exits, even with a thread
//! still blocked (a generator on a queue whose consumer is gone).

use crate::auth::{self, AccessArgs, AuthError, Credentials};
use crate::control::Terminate;
use crate::net::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

/// Arguments every process binary takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ProcessArgs {
    /// Rank of this process among its kind (boardreader 0, 1, ...).
    #[arg(long, default_value_t = 0)]
    pub rank: u16,
    /// Address to bind; port 0 lets the OS choose (reported on the readiness line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint; port 0 lets the OS
    /// choose (reported on the readiness line and in the Status reply).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub access: AccessArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Credentials(#[from] AuthError),
    #[error(
        "refusing to listen on {addr} without a token: a non-loopback address needs \
         --token-file FILE or {env} (loopback needs none)",
        env = auth::TOKEN_FILE_ENV
    )]
    TokenRequired { addr: SocketAddr },
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Loopback needs nothing; any other address (the unspecified 0.0.0.0
/// included) needs a token.
pub fn check_access(addr: SocketAddr, credentials: &Credentials) -> Result<(), ProcessError> {
    if addr.ip().is_loopback() || credentials.token.is_some() {
        Ok(())
    } else {
        Err(ProcessError::TokenRequired { addr })
    }
}

impl ProcessArgs {
    /// Loads the credentials, refuses a non-loopback address (gRPC or
    /// metrics) without a token, installs them for every server and channel
    /// of this process, and binds `--listen` and `--metrics-listen`.
    pub async fn bind(&self) -> Result<Listeners, ProcessError> {
        let credentials = self.access.load()?;
        check_access(self.listen, &credentials)?;
        check_access(self.metrics_listen, &credentials)?;
        auth::install(credentials)?;
        Ok(Listeners::bind(self.listen, self.metrics_listen).await?)
    }
}

/// An address a process could not bind.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind the run-control address {addr}: {source}")]
    Control {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the metrics address {addr} (--metrics-listen): {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The sockets a process serves on, bound before it serves anything.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC: run control and the data sink.
    pub grpc: TcpListener,
    /// HTTP: `/metrics`.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds both addresses; an error names the one that failed.
    pub async fn bind(grpc: SocketAddr, metrics: SocketAddr) -> Result<Self, BindError> {
        let grpc = TcpListener::bind(grpc)
            .await
            .map_err(|source| BindError::Control { addr: grpc, source })?;
        let metrics = TcpListener::bind(metrics)
            .await
            .map_err(|source| BindError::Metrics {
                addr: metrics,
                source,
            })?;
        Ok(Self { grpc, metrics })
    }
}

/// How long a scrape in progress may delay the exit of a process.
const METRICS_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a process told to go (signal, lost parent) spends stopping its
/// run in order before it exits anyway.
pub const TERMINATE_WITHIN: Duration = Duration::from_secs(3);

/// How long open connections may keep the gRPC server up after it was told to go.
pub const SERVER_DRAIN: Duration = Duration::from_secs(1);

/// How long the runtime's tasks and blocking threads get to end once the
/// process's main future returned; then the process exits regardless.
pub const RUNTIME_GRACE: Duration = Duration::from_secs(1);

/// Set by a parent (daqctl, for the processes it owns) to its own pid: the
/// process shuts down by itself, as on SIGTERM, once that parent is gone.
/// Processes started by hand or by systemd do not have it and never watch
/// their parent.
pub const EXIT_WITH_PARENT_ENV: &str = "DAQ_EXIT_WITH_PARENT";

/// How often a process whose parent asked for it checks that the parent lives.
const PARENT_CHECK: Duration = Duration::from_millis(200);

/// Resolves once the parent named by [`EXIT_WITH_PARENT_ENV`] is gone (this
/// process was re-parented); never without that variable.
async fn parent_lost() {
    let parent = std::env::var(EXIT_WITH_PARENT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(PARENT_CHECK);
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

/// Runs a process binary's main future on a multi-threaded runtime, then
/// gives the runtime at most [`RUNTIME_GRACE`] to end its tasks and
/// blocking threads: a thread blocked for good cannot keep the process
/// from exiting.
pub fn block_on<T>(main: impl Future<Output = T>) -> std::io::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(main);
    rt.shutdown_timeout(RUNTIME_GRACE);
    Ok(out)
}

/// Serves `router` on the gRPC listener and the process's metrics (read from
/// `observed`) on the metrics listener until `exit` turns true (the shutdown
/// command), the process gets SIGTERM or SIGINT, or its parent is gone
/// ([`EXIT_WITH_PARENT_ENV`]); in the last three cases `terminate` first
/// stops the run in order (at most [`TERMINATE_WITHIN`]). Prints the
/// readiness line on stdout once serving. Metrics are served until the
/// very end, so the last values of a run can be scraped after stop.
/// `http`, if any, is served beside `/metrics` (a monitor's page at `/`,
/// named `page=<url>` in the readiness line).
pub async fn serve(
    process: &str,
    listeners: Listeners,
    router: Router,
    http: Option<axum::Router>,
    observed: Arc<dyn crate::metrics::Observed>,
    terminate: Arc<dyn Terminate>,
    mut exit: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Listeners { grpc, metrics } = listeners;
    let addr = grpc.local_addr()?;
    let metrics_addr = metrics.local_addr()?;
    let (metrics_exit, metrics_exit_rx) = watch::channel(false);
    observed.set_metrics_url(crate::metrics::url(metrics_addr));
    let registry = crate::metrics::registry(process, observed);
    let page = http.is_some();
    let metrics_task = tokio::spawn(crate::metrics::serve(
        metrics,
        registry,
        http,
        metrics_exit_rx,
    ));
    let (told, told_rx) = tokio::sync::oneshot::channel::<()>();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let signal = async move {
        let why = tokio::select! {
            _ = exit.wait_for(|v| *v) => None,
            _ = tokio::signal::ctrl_c() => Some("SIGINT"),
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => Some("SIGTERM"),
            _ = parent_lost() => Some("parent process gone"),
        };
        match why {
            None => info!("shutdown command"),
            Some(why) => {
                warn!(why, "told to go: ending the run and exiting");
                terminate.terminate(TERMINATE_WITHIN).await;
            }
        }
        let _ = told.send(());
    };
    info!(process, %addr, metrics = %metrics_addr, "serving");
    let mut ready = crate::net::ready_line(process, addr, Some(metrics_addr));
    if page {
        ready.push_str(&format!(" page=http://{metrics_addr}/"));
    }
    println!("{ready}");
    let serving = router.serve_with_incoming_shutdown(TcpListenerStream::new(grpc), signal);
    // Connections still open (a peer's stream) may delay the exit by
    // SERVER_DRAIN at most.
    let drained = async {
        if told_rx.await.is_ok() {
            tokio::time::sleep(SERVER_DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        r = serving => r.map_err(std::io::Error::other),
        _ = drained => {
            warn!(process, "connections did not drain; exiting anyway");
            Ok(())
        }
    };
    let _ = metrics_exit.send(true);
    // A scraper holding its connection open must not keep the process alive.
    match tokio::time::timeout(METRICS_DRAIN, metrics_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(process, error = %e, "metrics server failed"),
        Ok(Err(e)) => warn!(process, error = %e, "metrics task failed"),
        Err(_) => warn!(process, "metrics server did not drain; exiting anyway"),
    }
    served?;
    info!(process, "exited");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token_loopback_does_not() {
        let none = Credentials::default();
        for ok in ["127.0.0.1:0", "127.0.0.5:7000", "[::1]:7000"] {
            let addr = ok.parse().expect("addr");
            assert!(check_access(addr, &none).is_ok(), "{ok}");
        }
        for refused in ["10.77.0.11:7000", "0.0.0.0:7000", "[::]:7000"] {
            let addr = refused.parse().expect("addr");
            let e = check_access(addr, &none).expect_err(refused);
            assert_eq!(
                e.to_string(),
                format!(
                    "refusing to listen on {addr} without a token: a non-loopback address \
                     needs --token-file FILE or DAQ_TOKEN_FILE (loopback needs none)"
                )
            );
        }
    }
}
