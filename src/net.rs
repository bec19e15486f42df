//! Opening TCP and TLS connections, shared by the POP3 and IMAP sides.
//!
//! Why a module of its own: both protocols need the same three things (a TCP
//! connect with a deadline, an implicit or STARTTLS handshake that verifies
//! the certificate, and a stream type that is either plain or TLS), and TLS
//! policy must live in exactly one place so that it cannot be weakened by
//! accident on one side. This module knows no mail protocol.
//!
//! Certificates are always verified: against the platform's trust store, plus
//! the server's `ca_file` when one is configured, and a certificate in
//! `ca_file` or named by `tls_fingerprint` is accepted exactly (pinned; see
//! `verify.rs` for what is and is not checked then). There is no switch to
//! turn verification off. A refused certificate's fingerprint and subject
//! are part of the error, so that a person can decide to pin it.

mod subject;
mod verify;

pub use verify::{CertFingerprint, FingerprintError, PresentedCertificate};

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::deadline;

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (POP3S on 995, IMAPS on 993).
    Implicit,
    /// Plain connection upgraded with STLS (POP3) or STARTTLS (IMAP);
    /// refusing to upgrade is an error, never a silent downgrade.
    Starttls,
    /// No TLS at all.
    None,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::Starttls => "STARTTLS",
            TlsMode::None => "no TLS",
        })
    }
}

/// Where and how to connect: everything but the credentials.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Extra trust root (PEM, one or more certificates) for this server;
    /// each of its certificates is also accepted when presented as is.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of a certificate to accept exactly (pinned).
    pub tls_fingerprint: Option<CertFingerprint>,
    /// Deadline for connecting and for every single read and write.
    pub timeout: Duration,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {timeout:?} while {what} ({endpoint})")]
    Timeout {
        endpoint: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error(
        "TLS handshake with {endpoint} failed: {source} (check the host name, or set ca_file to the CA that signed the server's certificate)"
    )]
    Tls {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    /// The server's certificate was refused; `presented` is what to pin if
    /// it is the right one.
    #[error(
        "TLS handshake with {endpoint} failed: the server's certificate is not trusted: {source}; it presented {presented}{}. If that is your server's certificate, pin it with {} for this server, or set ca_file to the CA that signed it",
        pin_mismatch(pinned),
        presented.fingerprint.config_line()
    )]
    Certificate {
        endpoint: String,
        /// Boxed, as `pinned`: a fingerprint is 32 bytes, and every
        /// error of the protocols carries a `NetError`.
        presented: Box<PresentedCertificate>,
        /// The configured `tls_fingerprint`, which it does not match.
        pinned: Option<Box<CertFingerprint>>,
        #[source]
        source: io::Error,
    },
    #[error("cannot use CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

fn pin_mismatch(pinned: &Option<Box<CertFingerprint>>) -> String {
    match pinned {
        Some(fp) => format!(" (not the one tls_fingerprint names, {fp})"),
        None => String::new(),
    }
}

impl NetError {
    /// The certificate the server presented, when it was refused.
    pub fn presented_certificate(&self) -> Option<&PresentedCertificate> {
        match self {
            NetError::Certificate { presented, .. } => Some(presented),
            _ => None,
        }
    }

    /// A timeout or a refused/reset connection may go away by itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, NetError::Connect { .. } | NetError::Timeout { .. })
    }
}

/// A connection that is either plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl MaybeTls {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Opens the TCP connection (with `TCP_NODELAY`) and, for
/// [`TlsMode::Implicit`], performs the TLS handshake. For
/// [`TlsMode::Starttls`] the caller negotiates the upgrade and then calls
/// [`start_tls`].
pub async fn connect(ep: &Endpoint) -> Result<MaybeTls, NetError> {
    let tcp = connect_tcp(ep).await?;
    match ep.tls {
        TlsMode::Implicit => start_tls(tcp, ep).await,
        TlsMode::Starttls | TlsMode::None => Ok(MaybeTls::Plain(tcp)),
    }
}

/// Opens a TCP connection within the endpoint's timeout.
pub async fn connect_tcp(ep: &Endpoint) -> Result<TcpStream, NetError> {
    let addr = (ep.host.as_str(), ep.port);
    let connect = async {
        TcpStream::connect(addr)
            .await
            .map_err(|source| NetError::Connect {
                endpoint: ep.to_string(),
                source,
            })
    };
    let tcp = deadline::within(ep.timeout, connect, || timed_out(ep, "connecting")).await?;
    // Small commands followed by waits for a reply: Nagle only adds latency.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Performs a verified TLS handshake on an open TCP connection.
pub async fn start_tls(tcp: TcpStream, ep: &Endpoint) -> Result<MaybeTls, NetError> {
    let (config, verifier) = client_config(ep)?;
    let name =
        ServerName::try_from(ep.host.clone()).map_err(|_| NetError::ServerName(ep.host.clone()))?;
    let connector = TlsConnector::from(Arc::new(config));
    let handshake = async {
        match connector.connect(name, tcp).await {
            Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
            Err(source) => Err(match verifier.refused() {
                Some(presented) => NetError::Certificate {
                    endpoint: ep.to_string(),
                    presented: Box::new(presented),
                    pinned: ep.tls_fingerprint.map(Box::new),
                    source,
                },
                None => NetError::Tls {
                    endpoint: ep.to_string(),
                    source,
                },
            }),
        }
    };
    deadline::within(ep.timeout, handshake, || timed_out(ep, "negotiating TLS")).await
}

fn timed_out(ep: &Endpoint, what: &'static str) -> NetError {
    NetError::Timeout {
        endpoint: ep.to_string(),
        what,
        timeout: ep.timeout,
    }
}

/// Builds the rustls configuration: platform roots, plus the CA file if
/// any, plus the pins; the verifier is returned too, to ask it afterwards
/// which certificate it refused.
fn client_config(
    ep: &Endpoint,
) -> Result<(rustls::ClientConfig, Arc<verify::PinningVerifier>), NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match &ep.ca_file {
        Some(path) => load_ca_file(path)?,
        None => Vec::new(),
    };
    let platform = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra.clone(), provider.clone())
    }
    .map_err(|e| NetError::Setup(e.to_string()))?;
    let verifier = Arc::new(verify::PinningVerifier::new(
        Arc::new(platform),
        extra,
        ep.tls_fingerprint,
    ));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Setup(e.to_string()))?
        .dangerous() // Only to plug in our verifier, which verifies fully (see verify.rs).
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((config, verifier))
}

fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let err = |reason: String| NetError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}
