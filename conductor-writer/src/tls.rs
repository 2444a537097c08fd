//! TLS with rustls (and ring as its crypto provider): the HTTP client that fetches images, and
//! the service's own API behind `--tls-cert`/`--tls-key`.
//!
//! Clients trust the CA certificates of `--ca-cert` when given, else Mozilla's root set built
//! into the binary (no system store, no OpenSSL). The server side hands axum connections whose
//! handshake is done: handshakes run on their own tasks, bounded in time, so a client that
//! stalls in its handshake never holds up the next one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

fn tls_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The PEM items of `path`.
fn pem_items(path: &Path) -> Result<Vec<ureq::tls::PemItem<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| tls_error(path, format!("cannot read it: {e}")))?;
    ureq::tls::parse_pem(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, format!("is not valid PEM: {e}")))
}

/// The certificates in the PEM file `path` (at least one).
fn certificates(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, TlsError> {
    let certs: Vec<_> = pem_items(path)?
        .into_iter()
        .filter_map(|item| match item {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(tls_error(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The client's TLS configuration: the CA certificates of `ca_cert`, else the built-in roots.
pub fn client_config(ca_cert: Option<&Path>) -> Result<ureq::tls::TlsConfig, TlsError> {
    let roots = match ca_cert {
        Some(path) => ureq::tls::RootCerts::new_with_certs(&certificates(path)?),
        None => ureq::tls::RootCerts::WebPki,
    };
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(roots)
        .build())
}

/// An HTTP(S) client for images: connection and per-read timeouts (a stalled server fails
/// the read instead of hanging it), no limit on a whole body's time, statuses as answers.
pub fn http_agent(ca_cert: Option<&Path>, timeout: Duration) -> Result<ureq::Agent, TlsError> {
    let config = ureq::Agent::config_builder()
        .tls_config(client_config(ca_cert)?)
        .timeout_connect(Some(timeout))
        .timeout_per_read(Some(timeout))
        .http_status_as_error(false)
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// A server configuration from a PEM certificate chain and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = certificates(cert)?
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let pem = std::fs::read(key).map_err(|e| tls_error(key, format!("cannot read it: {e}")))?;
    let private = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| tls_error(key, format!("holds no usable PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| tls_error(key, format!("does not go with {}: {e}", cert.display())))?;
    Ok(Arc::new(config))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// A TCP listener whose connections come out with their TLS handshake done, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    /// Accept on `listener`; each handshake runs on its own task.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
