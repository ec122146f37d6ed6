//! The life of a process binary: load its credentials and bind (refusing a
//! non-loopback address without a token), serve the gRPC router on the
//! listener, print the readiness line, and drain on `shutdown` or on
//! SIGTERM/SIGINT.

use crate::auth::{self, AccessArgs, AuthError, Credentials};
use crate::net::Router;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

/// Arguments every process binary takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ProcessArgs {
    /// Rank of this process among its kind (boardreader 0, 1, ...).
    #[arg(long, default_value_t = 0)]
    pub rank: u16,
    /// Address to bind; port 0 lets the OS choose (reported on the readiness line).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
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
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
    /// Loads the credentials, refuses a non-loopback address without a
    /// token, installs them for every server and channel of this process,
    /// and binds `--listen`.
    pub async fn bind(&self) -> Result<TcpListener, ProcessError> {
        let credentials = self.access.load()?;
        check_access(self.listen, &credentials)?;
        auth::install(credentials)?;
        TcpListener::bind(self.listen)
            .await
            .map_err(|source| ProcessError::Bind {
                addr: self.listen,
                source,
            })
    }
}

/// Serves `router` on `listener` until `exit` turns true (the shutdown
/// command) or the process gets SIGTERM or SIGINT. Prints the readiness line
/// on stdout once serving.
pub async fn serve(
    process: &str,
    listener: TcpListener,
    router: Router,
    mut exit: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let signal = async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = exit.wait_for(|v| *v) => info!("shutdown command"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT"),
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => info!("SIGTERM"),
        }
    };
    info!(process, %addr, "serving");
    println!("{}", crate::net::ready_line(process, addr));
    router
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
        .map_err(std::io::Error::other)?;
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
