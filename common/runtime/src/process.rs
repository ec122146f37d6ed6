//! The life of a process binary: serve the gRPC router on a listener the
//! caller bound, print the readiness line, and drain on `shutdown` or on
//! SIGTERM/SIGINT.

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
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
