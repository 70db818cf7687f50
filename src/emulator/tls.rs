//! Optional HTTPS listener with a self-signed certificate generated at start, for device
//! clients that insist on TLS. It serves the same router as the plain listener, on the same
//! accept loop with the same limits (the TLS handshake counts against the header timeout) and
//! the same connection rules (a [`CloseConnection`] marker closes the connection without a
//! response).
//!
//! The certificate names `localhost`, `127.0.0.1`, `*.m2.localhost` and whatever extra names
//! the caller gives; clients trust it by adding [`TlsListener::certificate_der`] (or
//! [`TlsListener::certificate_pem`]) as a root.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use base64::Engine;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::model::DEFAULT_CONTENT_MAX_BYTES;
use super::server::{ListenerOptions, limits_for_uploads};
use crate::net::server::{Handshake, Setup};

/// The listener name (`listener` label) of the HTTPS listener.
pub const HTTPS_LISTENER: &str = "https";

/// The TLS handshake of each accepted connection.
#[derive(Clone)]
struct Tls(TlsAcceptor);

impl Handshake for Tls {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    async fn handshake(&self, stream: TcpStream) -> std::io::Result<Self::Io> {
        self.0.accept(stream).await
    }
}

/// Names every generated certificate carries.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "*.m2.localhost"];

/// Why the HTTPS listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("cannot generate the self-signed certificate: {0}")]
    Certificate(String),
    /// The TLS configuration was refused.
    #[error("cannot configure TLS: {0}")]
    Config(String),
    /// The address cannot be bound.
    #[error("cannot listen for HTTPS on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A self-signed certificate and its private key.
pub struct SelfSigned {
    /// The certificate, DER.
    pub certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned").finish_non_exhaustive()
    }
}

/// Generates a certificate for [`DEFAULT_NAMES`] plus `extra_names` (host names or IPs).
pub fn self_signed(extra_names: &[String]) -> Result<SelfSigned, TlsError> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(extra_names.iter().cloned());
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok(SelfSigned {
        certificate: generated.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()),
    })
}

impl SelfSigned {
    /// A TLS server configuration with this certificate, offering the `alpn` protocols (none:
    /// no ALPN negotiation, any client offer is accepted).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.certificate.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        pem(self.certificate.as_ref())
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// A running HTTPS listener.
#[derive(Debug)]
pub struct TlsListener {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// `https://<local_addr>`.
    pub base_url: String,
    certificate: CertificateDer<'static>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TlsListener {
    /// Binds `addr` (port 0 picks a free port) and serves `app` over TLS with a fresh
    /// self-signed certificate (see [`self_signed`]), with the emulator's default limits.
    pub async fn start(
        addr: SocketAddr,
        app: Router,
        extra_names: &[String],
    ) -> Result<TlsListener, TlsError> {
        let options = ListenerOptions::with_limits(limits_for_uploads(DEFAULT_CONTENT_MAX_BYTES));
        Self::start_with(addr, app, extra_names, options).await
    }

    /// Like [`TlsListener::start`], with the listener's limits and metrics.
    pub async fn start_with(
        addr: SocketAddr,
        app: Router,
        extra_names: &[String],
        options: ListenerOptions,
    ) -> Result<TlsListener, TlsError> {
        let cert = self_signed(extra_names)?;
        Self::start_with_certificate(addr, app, &cert, options).await
    }

    /// Like [`TlsListener::start_with`], with a certificate the caller made (shared with the
    /// TLS MQTT listener).
    pub async fn start_with_certificate(
        addr: SocketAddr,
        app: Router,
        cert: &SelfSigned,
        options: ListenerOptions,
    ) -> Result<TlsListener, TlsError> {
        let config = cert.server_config(&[b"http/1.1"])?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TlsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TlsError::Bind { addr, source })?;
        let (stop, mut stopped) = watch::channel(false);
        let handshake = Tls(TlsAcceptor::from(Arc::new(config)));
        let setup = Setup {
            name: HTTPS_LISTENER,
            limits: options.limits,
            metrics: options.metrics,
        };
        let shutdown = async move {
            // An error means the sender is gone: stop as well.
            let _ = stopped.wait_for(|v| *v).await;
        };
        let task = tokio::spawn(super::server::serve(
            listener, setup, handshake, app, shutdown,
        ));
        Ok(TlsListener {
            local_addr,
            base_url: format!("https://{local_addr}"),
            certificate: cert.certificate.clone(),
            stop,
            task,
        })
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        self.certificate.as_ref()
    }

    /// The certificate, PEM (for `curl --cacert`, Python's `ssl`, …).
    pub fn certificate_pem(&self) -> String {
        pem(self.certificate.as_ref())
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_generated_with_pem_form() {
        let c = self_signed(&["abc.m2.example.test".into()]).unwrap();
        assert!(c.certificate.len() > 100);
        assert!(format!("{c:?}").starts_with("SelfSigned"));
    }
}
