//! Access control: the shared token (read from a file, never from the
//! command line), the server layer that demands it on every RPC, the client
//! interceptor that sends it, the optional TLS material, and the
//! process-wide credentials that `net` builds every server and channel with.
//!
//! Loopback needs nothing: with no token configured the layer lets every
//! request through. With a token, every RPC (run control and data alike)
//! must carry `authorization: Bearer <token>`; the comparison is constant
//! time (`subtle`); a request without it or with a wrong one gets
//! `UNAUTHENTICATED` before any service sees it (so nothing changes), and
//! the attempt is logged with the peer address.

use std::ffi::OsString;
use std::future::Ready;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::future::Either;
use subtle::ConstantTimeEq;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tower_layer::Layer;
use tower_service::Service;
use tracing::warn;

/// Environment variable naming the token file when `--token-file` is absent.
pub const TOKEN_FILE_ENV: &str = "DAQ_TOKEN_FILE";
/// The shortest token accepted, in bytes (after trimming whitespace).
pub const MIN_TOKEN_BYTES: usize = 16;
/// The metadata key the token travels in.
const AUTHORIZATION: &str = "authorization";
const BEARER: &[u8] = b"Bearer ";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read token file {path}: {source}")]
    ReadToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path} holds {len} bytes; a token needs at least {MIN_TOKEN_BYTES}")]
    TokenTooShort { path: PathBuf, len: usize },
    #[error(
        "token file {path} holds a character other than visible ascii (a token travels in a header)"
    )]
    TokenNotVisibleAscii { path: PathBuf },
    #[error("cannot read tls file {path}: {source}")]
    ReadTls {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tls-cert and --tls-key go together; only {given} was given")]
    TlsHalfPair { given: &'static str },
    #[error("credentials were already installed in this process")]
    AlreadyInstalled,
}

/// The shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token {
    secret: Arc<[u8]>,
    header: AsciiMetadataValue,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads the token from `path`: surrounding whitespace (a trailing
    /// newline) is ignored; at least `MIN_TOKEN_BYTES` of visible ascii.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read(path).map_err(|source| AuthError::ReadToken {
            path: path.to_path_buf(),
            source,
        })?;
        let secret = text.trim_ascii();
        if !secret.iter().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::TokenNotVisibleAscii {
                path: path.to_path_buf(),
            });
        }
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(AuthError::TokenTooShort {
                path: path.to_path_buf(),
                len: secret.len(),
            });
        }
        let mut value = BEARER.to_vec();
        value.extend_from_slice(secret);
        let mut header = AsciiMetadataValue::try_from(value.as_slice()).map_err(|_| {
            AuthError::TokenNotVisibleAscii {
                path: path.to_path_buf(),
            }
        })?;
        header.set_sensitive(true);
        Ok(Self {
            secret: secret.into(),
            header,
        })
    }

    /// Whether `presented` is this token, in time independent of where
    /// they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        self.secret.as_ref().ct_eq(presented).into()
    }
}

/// Why a request was refused.
fn check(headers: &http::HeaderMap, token: &Token) -> Result<(), &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err("no token");
    };
    let Some(presented) = value.as_bytes().strip_prefix(BEARER) else {
        return Err("not a bearer token");
    };
    if token.matches(presented) {
        Ok(())
    } else {
        Err("wrong token")
    }
}

fn peer<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// The server layer: with a token, refuses every request that does not
/// carry it; without one, lets everything through.
#[derive(Clone, Debug, Default)]
pub struct RequireToken {
    token: Option<Token>,
}

impl RequireToken {
    pub fn new(token: Option<Token>) -> Self {
        Self { token }
    }
}

impl<S> Layer<S> for RequireToken {
    type Service = RequireTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireTokenService {
            inner,
            token: self.token.clone(),
        }
    }
}

/// `RequireToken` around one service.
#[derive(Clone, Debug)]
pub struct RequireTokenService<S> {
    inner: S,
    token: Option<Token>,
}

impl<S, B> Service<http::Request<B>> for RequireTokenService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(token) = &self.token else {
            return Either::Left(self.inner.call(req));
        };
        match check(req.headers(), token) {
            Ok(()) => Either::Left(self.inner.call(req)),
            Err(reason) => {
                let peer = peer(&req).map_or_else(|| "unknown".to_string(), |a| a.to_string());
                warn!(%peer, rpc = req.uri().path(), reason, "rpc refused: unauthenticated");
                let status = tonic::Status::unauthenticated(format!(
                    "{reason}: this process requires the shared token (authorization: Bearer)"
                ));
                Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The client interceptor: puts the token, if any, on every request.
#[derive(Clone, Debug, Default)]
pub struct SendToken {
    header: Option<AsciiMetadataValue>,
}

impl SendToken {
    pub fn new(token: Option<&Token>) -> Self {
        Self {
            header: token.map(|t| t.header.clone()),
        }
    }
}

impl tonic::service::Interceptor for SendToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert(AUTHORIZATION, h.clone());
        }
        Ok(req)
    }
}

/// Access options every process binary and daqctl take. Files only: the
/// token itself never appears on a command line.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AccessArgs {
    /// File holding the shared token that every RPC must carry (required to
    /// listen on a non-loopback address).
    #[arg(long, env = TOKEN_FILE_ENV, global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate to serve TLS with (with --tls-key).
    #[arg(long, env = "DAQ_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DAQ_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that signed the peers' certificates: outgoing
    /// connections use TLS and trust only it.
    #[arg(long, env = "DAQ_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify the peers' certificates against instead of the host
    /// of the address (for certificates issued to one shared name).
    #[arg(long, env = "DAQ_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,
}

fn read_tls(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::ReadTls {
        path: path.to_path_buf(),
        source,
    })
}

impl AccessArgs {
    /// Reads the files named into credentials.
    pub fn load(&self) -> Result<Credentials, AuthError> {
        let token = self
            .token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()?;
        let server_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(read_tls(cert)?, read_tls(key)?)),
            ),
            (None, None) => None,
            (Some(_), None) => {
                return Err(AuthError::TlsHalfPair {
                    given: "--tls-cert",
                });
            }
            (None, Some(_)) => return Err(AuthError::TlsHalfPair { given: "--tls-key" }),
        };
        let client_tls = match &self.tls_ca {
            Some(ca) => {
                let mut c =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_tls(ca)?));
                if let Some(d) = &self.tls_domain {
                    c = c.domain_name(d.clone());
                }
                Some(c)
            }
            None => None,
        };
        Ok(Credentials {
            token,
            server_tls,
            client_tls,
            args: self.clone(),
        })
    }

    /// The same options as command-line arguments, for a child process.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        let mut push = |flag: &str, v: Option<OsString>| {
            if let Some(v) = v {
                out.push(OsString::from(flag));
                out.push(v);
            }
        };
        push("--token-file", self.token_file.clone().map(Into::into));
        push("--tls-cert", self.tls_cert.clone().map(Into::into));
        push("--tls-key", self.tls_key.clone().map(Into::into));
        push("--tls-ca", self.tls_ca.clone().map(Into::into));
        push("--tls-domain", self.tls_domain.clone().map(Into::into));
        out
    }
}

/// What a process serves and connects with: the token (if any) and the
/// TLS material (if any).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub token: Option<Token>,
    server_tls: Option<ServerTlsConfig>,
    client_tls: Option<ClientTlsConfig>,
    args: AccessArgs,
}

impl Credentials {
    /// TLS settings for this process's server, if it serves TLS.
    pub fn server_tls(&self) -> Option<&ServerTlsConfig> {
        self.server_tls.as_ref()
    }

    /// TLS settings for outgoing connections, if they use TLS.
    pub fn client_tls(&self) -> Option<&ClientTlsConfig> {
        self.client_tls.as_ref()
    }

    /// The options these credentials came from, as arguments for a child.
    pub fn child_args(&self) -> Vec<OsString> {
        self.args.to_args()
    }
}

static INSTALLED: OnceLock<Credentials> = OnceLock::new();

/// Makes `credentials` the ones every server and channel of this process
/// is built with (`net::server`, `net::connect`). Once per process, before
/// the first server or connection.
pub fn install(credentials: Credentials) -> Result<(), AuthError> {
    INSTALLED
        .set(credentials)
        .map_err(|_| AuthError::AlreadyInstalled)
}

/// The installed credentials; none (loopback, plaintext) when nothing was
/// installed.
pub fn installed() -> &'static Credentials {
    INSTALLED.get_or_init(Credentials::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Result<Token, AuthError> {
        let dir = tempfile::tempdir().map_err(|source| AuthError::ReadToken {
            path: PathBuf::new(),
            source,
        })?;
        let path = dir.path().join("token");
        std::fs::write(&path, text).map_err(|source| AuthError::ReadToken {
            path: path.clone(),
            source,
        })?;
        Token::from_file(&path)
    }

    fn headers(value: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = value {
            h.insert(
                AUTHORIZATION,
                http::HeaderValue::from_str(v).expect("header"),
            );
        }
        h
    }

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let t = token("0123456789abcdef0123\n").expect("valid");
        assert_eq!(
            check(&headers(Some("Bearer 0123456789abcdef0123")), &t),
            Ok(())
        );
        assert_eq!(
            check(&headers(Some("Bearer 0123456789abcdef0124")), &t),
            Err("wrong token")
        );
        assert_eq!(
            check(&headers(Some("Bearer 0123456789abcdef012")), &t),
            Err("wrong token")
        );
        assert_eq!(
            check(&headers(Some("0123456789abcdef0123")), &t),
            Err("not a bearer token")
        );
        assert_eq!(check(&headers(None), &t), Err("no token"));
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn short_or_non_ascii_tokens_are_refused() {
        let e = token("short\n").expect_err("too short");
        assert!(
            e.to_string()
                .contains("holds 5 bytes; a token needs at least 16"),
            "{e}"
        );
        let e = token("0123456789 abcdef0123").expect_err("space inside");
        assert!(e.to_string().contains("visible ascii"), "{e}");
        let e = Token::from_file(Path::new("/nonexistent/daq-token")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("cannot read token file /nonexistent/daq-token"),
            "{e}"
        );
    }

    #[test]
    fn child_args_name_files_never_the_token() {
        let a = AccessArgs {
            token_file: Some("/etc/daq/token".into()),
            tls_ca: Some("/etc/daq/ca.pem".into()),
            ..AccessArgs::default()
        };
        assert_eq!(
            a.to_args(),
            [
                "--token-file",
                "/etc/daq/token",
                "--tls-ca",
                "/etc/daq/ca.pem"
            ]
            .map(OsString::from)
            .to_vec()
        );
        let e = AccessArgs {
            tls_cert: Some("/x".into()),
            ..AccessArgs::default()
        }
        .load()
        .expect_err("half pair");
        assert_eq!(
            e.to_string(),
            "--tls-cert and --tls-key go together; only --tls-cert was given"
        );
    }
}
