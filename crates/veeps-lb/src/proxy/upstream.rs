//! The upstream side: a pooled HTTP/1.1 client to targets over TCP or TLS (verified
//! against veeps' CA).

use super::ProxyBody;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The pooled client to targets: HTTP/1.1 connections kept per target, on one worker
/// (no locks are contended: a worker is one thread).
#[derive(Clone)]
pub struct Client {
    connector: Connector,
    pool: Arc<std::sync::Mutex<Pool>>,
    idle: Duration,
}

/// Idle and busy connections by (TLS, target).
type Pool = HashMap<(bool, SocketAddr), Vec<Pooled>>;

struct Pooled {
    send: hyper::client::conn::http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// Why a request to a target failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting (or the TLS handshake) failed.
    Connect(std::io::Error),
    /// The exchange failed.
    Http(hyper::Error),
    /// The URI is not `scheme://ip:port/...`.
    Uri,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Http(e) => write!(f, "{e}"),
            ClientError::Uri => f.write_str("a target is addressed as scheme://ip:port"),
        }
    }
}

impl Client {
    /// Sends a request whose URI names the target (`http(s)://ip:port/path`).
    pub async fn request(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        let uri = req.uri().clone();
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(|c| c == '[' || c == ']');
        let ip: IpAddr = host.parse().map_err(|_| ClientError::Uri)?;
        let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(if https { 443 } else { 80 }));
        // Origin form on the wire.
        if let Some(pq) = uri.path_and_query() {
            if let Ok(u) = pq.as_str().parse() {
                *req.uri_mut() = u;
            }
        }
        self.send(https, addr, req).await
    }

    /// Sends a request in origin form (`/path?query`) to the target at `addr`, over TLS
    /// when `https`.
    pub async fn send(
        &self,
        https: bool,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        if !req.headers().contains_key(hyper::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
                req.headers_mut().insert(hyper::header::HOST, v);
            }
        }
        let key = (https, addr);
        let pooled = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(key).or_default();
            // Closed and long-idle connections go; busy ones (a response still being
            // read) stay for later.
            list.retain(|p| !p.send.is_closed() && p.since.elapsed() <= self.idle);
            list.iter()
                .rposition(|p| p.send.is_ready())
                .map(|i| list.swap_remove(i).send)
        };
        let mut send = match pooled {
            Some(s) => s,
            None => self.connect(https, addr).await?,
        };
        let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
        let resp = send.send_request(req).await.map_err(ClientError::Http)?;
        // Back to the pool; it is taken again once its response has been read.
        if !upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.entry(key).or_default();
            if list.len() < 256 {
                list.push(Pooled {
                    send,
                    since: Instant::now(),
                });
            }
        }
        Ok(resp)
    }

    async fn connect(
        &self,
        https: bool,
        addr: SocketAddr,
    ) -> Result<hyper::client::conn::http1::SendRequest<ProxyBody>, ClientError> {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        let _ = s.set_nodelay(true);
        let io = if https {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let t = self
                .connector
                .tls
                .connect(name, s)
                .await
                .map_err(ClientError::Connect)?;
            Conn::Tls(Box::new(t))
        } else {
            Conn::Plain(s)
        };
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(send)
    }
}

/// A TCP or TLS connection to a target.
pub enum Conn {
    /// Plain.
    Plain(tokio::net::TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connects to targets: TCP (no Nagle), and TLS verified against veeps' CA for `https`.
/// Targets are addressed by IP, so the chain is checked and the name is not.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
}

#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end: &rustls::pki_types::CertificateDer<'_>,
        inter: &[rustls::pki_types::CertificateDer<'_>],
        name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end, inter, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl Connector {
    /// A connector trusting `ca_pem`.
    pub fn new(ca_pem: &str) -> Connector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()).flatten() {
            let _ = roots.add(c);
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("a root store with the CA");
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
            .with_no_client_auth();
        Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        }
    }
}

/// A client for targets.
pub fn client(ca_pem: &str, idle: Duration) -> Client {
    Client {
        connector: Connector::new(ca_pem),
        pool: Arc::default(),
        idle,
    }
}
