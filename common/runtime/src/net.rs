//! gRPC transport settings shared by every endpoint, the access control
//! (token layer, TLS) every server and channel is built with, and the
//! readiness line a process prints once it has bound its address.
//!
//! Tuning (measured, see shared/reference/dependencies.md): 16 MiB HTTP/2
//! stream and connection windows and a 1 MiB max frame on *both* ends double
//! loopback throughput over tonic's defaults.
//!
//! Liveness: every connection, both ends, pings its peer over HTTP/2 every
//! [`KEEPALIVE_INTERVAL`] and closes the connection when a ping is not
//! answered within [`KEEPALIVE_TIMEOUT`]. A peer that is slow but alive
//! answers pings whatever its streams are doing (hyper answers them on the
//! connection task), so backpressure is never cut; a peer that is hung
//! (SIGSTOP) or cut off (link down, packets dropped) is detected within
//! their sum: its data streams break (the sender counts the destination as
//! lost, the receiver records the source's stream as ended in error) and a
//! run-control command to it fails naming it, instead of waiting forever.

use crate::auth::{self, Credentials, RequireToken, SendToken};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Server};
use tower_layer::{Identity, Stack};

/// How often each end of a connection pings the other, until a
/// configuration says otherwise (`transfer.keepalive_interval_ms`).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is closed, until
/// a configuration says otherwise (`transfer.keepalive_timeout_ms`).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(4);

/// The keep-alive in force: (interval, timeout).
static KEEPALIVE: std::sync::RwLock<(Duration, Duration)> =
    std::sync::RwLock::new((KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT));

/// Sets the keep-alive of the channels and shared-memory links made from
/// now on (every `init` does, from `[transfer]`). The gRPC server's own
/// pings keep the built-in values: it is built before any configuration
/// arrives, and the senders' pings and the links' heartbeats are what find
/// a hung or cut-off peer of a data stream.
pub fn set_keepalive(interval: Duration, timeout: Duration) {
    *KEEPALIVE.write().unwrap_or_else(|p| p.into_inner()) = (interval, timeout.max(interval));
}

/// The keep-alive in force: (interval, timeout).
pub fn keepalive() -> (Duration, Duration) {
    *KEEPALIVE.read().unwrap_or_else(|p| p.into_inner())
}

/// A channel to a DAQ process: tuned, TLS when configured, and sending the
/// token (if any) on every request.
pub type Channel = InterceptedService<tonic::transport::Channel, SendToken>;
/// A server with the access layer in front of every service.
pub type DaqServer = Server<Stack<RequireToken, Identity>>;
/// The router `DaqServer::add_service` returns.
pub type Router = tonic::transport::server::Router<Stack<RequireToken, Identity>>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bad server tls configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// A tonic server with the data-path tuning and the installed credentials
/// (`auth::install`): every RPC must carry the token, if one is configured.
pub fn server() -> Result<DaqServer, ServerError> {
    server_with(auth::installed())
}

/// `server` with explicit credentials.
pub fn server_with(credentials: &Credentials) -> Result<DaqServer, ServerError> {
    let mut builder = Server::builder()
        .initial_stream_window_size(proto::WINDOW_BYTES)
        .initial_connection_window_size(proto::WINDOW_BYTES)
        .max_frame_size(proto::MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(tls) = credentials.server_tls() {
        builder = builder.tls_config(tls.clone()).map_err(ServerError::Tls)?;
    }
    Ok(builder.layer(RequireToken::new(credentials.token.clone())))
}

fn endpoint(addr: &str, credentials: &Credentials) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = if credentials.client_tls().is_some() {
        "https"
    } else {
        "http"
    };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .initial_stream_window_size(proto::WINDOW_BYTES)
        .initial_connection_window_size(proto::WINDOW_BYTES)
        .max_frame_size(proto::MAX_FRAME_BYTES)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive().0)
        .keep_alive_timeout(keepalive().1)
        .connect_timeout(Duration::from_secs(2));
    if let Some(tls) = credentials.client_tls() {
        ep = ep.tls_config(tls.clone())?;
    }
    Ok(ep)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad address {addr}: {source}")]
    BadAddress {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach {addr} within {timeout_ms} ms: {source}")]
    Unreachable {
        addr: String,
        timeout_ms: u64,
        source: tonic::transport::Error,
    },
}

/// Connects to `addr` (host:port) with the installed credentials
/// (`auth::install`), retrying until `timeout` has passed.
pub async fn connect(addr: &str, timeout: Duration) -> Result<Channel, ConnectError> {
    connect_with(addr, timeout, auth::installed()).await
}

/// `connect` with explicit credentials.
pub async fn connect_with(
    addr: &str,
    timeout: Duration,
    credentials: &Credentials,
) -> Result<Channel, ConnectError> {
    let ep = endpoint(addr, credentials).map_err(|source| ConnectError::BadAddress {
        addr: addr.to_string(),
        source,
    })?;
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(10);
    loop {
        match ep.connect().await {
            Ok(ch) => {
                return Ok(InterceptedService::new(
                    ch,
                    SendToken::new(credentials.token.as_ref()),
                ));
            }
            Err(source) if Instant::now() >= deadline => {
                return Err(ConnectError::Unreachable {
                    addr: addr.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                    source,
                });
            }
            Err(_) => {
                // Retry back-off while the peer comes up; not synchronization.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// Prefix of the one line a process prints on stdout when it is ready.
pub const READY_PREFIX: &str = "DAQ-READY";

/// The readiness line: `DAQ-READY <process> <addr> <pid> [metrics=<url>]`.
/// Fields after the pid are `key=value`; parsers ignore keys they do not know.
pub fn ready_line(process: &str, addr: SocketAddr, metrics: Option<SocketAddr>) -> String {
    let mut line = format!("{READY_PREFIX} {process} {addr} {}", std::process::id());
    if let Some(m) = metrics {
        line.push_str(&format!(" metrics={}", crate::metrics::url(m)));
    }
    line
}

/// A parsed readiness line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub process: String,
    pub addr: SocketAddr,
    pub pid: u32,
    /// `http://<addr>/metrics`, when the process serves metrics.
    pub metrics_url: Option<String>,
}

/// Parses a readiness line; `None` for any other line.
pub fn parse_ready_line(line: &str) -> Option<Ready> {
    let mut it = line.split_whitespace();
    if it.next()? != READY_PREFIX {
        return None;
    }
    let process = it.next()?.to_string();
    let addr = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    let metrics_url = it.find_map(|f| f.strip_prefix("metrics=").map(str::to_string));
    Some(Ready {
        process,
        addr,
        pid,
        metrics_url,
    })
}

/// Initializes tracing to stderr (`RUST_LOG` overrides `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_round_trips() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().expect("addr");
        let metrics: SocketAddr = "127.0.0.1:4322".parse().expect("addr");
        let line = ready_line("eventbuilder-1", addr, Some(metrics));
        let r = parse_ready_line(&line).expect("parses");
        assert_eq!(
            r.metrics_url.as_deref(),
            Some("http://127.0.0.1:4322/metrics")
        );
        let old = parse_ready_line(&ready_line("eventbuilder-1", addr, None)).expect("parses");
        assert_eq!(old.metrics_url, None);
        assert_eq!(r.process, "eventbuilder-1");
        assert_eq!(r.addr, addr);
        assert_eq!(r.pid, std::process::id());
        assert_eq!(parse_ready_line("INFO something else"), None);
        assert_eq!(parse_ready_line("DAQ-READY x notanaddr 1"), None);
    }
}
