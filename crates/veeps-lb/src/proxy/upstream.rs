//! The upstream side: a pooled HTTP/1.1 client to targets over TCP or TLS (verified
//! against veeps' CA).

use super::h1::{self, Raw, RawBody};
use super::{BoxError, ProxyBody};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
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

/// (TLS, target).
type Key = (bool, SocketAddr);

/// Connections kept by target: hyper's (idle and busy), for requests with a body or an
/// upgrade; and idle ones of the direct path ([`h1`]), for the rest.
#[derive(Default)]
struct Pool {
    hyper: HashMap<Key, Vec<Pooled>>,
    direct: HashMap<Key, Vec<(Raw, Instant)>>,
}

/// Idle connections of the direct path kept per target.
const DIRECT_IDLE: usize = 256;

struct Pooled {
    send: hyper::client::conn::http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// A failed request: why, and the request itself when it can be sent again unchanged (it
/// had no body).
pub type Failed = (ClientError, Option<Request<ProxyBody>>);

/// Why a request to a target failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting (or the TLS handshake) failed.
    Connect(std::io::Error),
    /// The exchange failed.
    Http(hyper::Error),
    /// The exchange failed (direct path).
    Exchange(h1::H1Error),
    /// The URI is not `scheme://ip:port/...`.
    Uri,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Http(e) => write!(f, "{e}"),
            ClientError::Exchange(e) => write!(f, "{e}"),
            ClientError::Uri => f.write_str("a target is addressed as scheme://ip:port"),
        }
    }
}

impl Client {
    /// Sends a request whose URI names the target (`http(s)://ip:port/path`).
    pub async fn request(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ClientError> {
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
        self.send(https, addr, req).await.map_err(|(e, _)| e)
    }

    /// Sends a request in origin form (`/path?query`) to the target at `addr`, over TLS
    /// when `https`. A request without a body or an upgrade comes back with the error, to
    /// be sent elsewhere if its method allows.
    pub async fn send(
        &self,
        https: bool,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Failed> {
        if !req.headers().contains_key(hyper::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
                req.headers_mut().insert(hyper::header::HOST, v);
            }
        }
        let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
        if req.body().is_end_stream() && !upgrade && req.method() != Method::CONNECT {
            return self.send_direct(https, addr, req).await;
        }
        // Boxed: the rarer path keeps the request's future small.
        Box::pin(self.send_hyper(https, addr, req, upgrade)).await
    }

    /// A request with a body or an upgrade, through hyper's client.
    async fn send_hyper(
        &self,
        https: bool,
        addr: SocketAddr,
        req: Request<ProxyBody>,
        upgrade: bool,
    ) -> Result<Response<ProxyBody>, Failed> {
        let key = (https, addr);
        let pooled = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.hyper.entry(key).or_default();
            // Closed and long-idle connections go; busy ones (a response still being
            // read) stay for later.
            let now = Instant::now();
            list.retain(|p| !p.send.is_closed() && now.duration_since(p.since) <= self.idle);
            list.iter()
                .rposition(|p| p.send.is_ready())
                .map(|i| list.swap_remove(i).send)
        };
        let mut send = match pooled {
            Some(s) => s,
            None => self.connect(https, addr).await.map_err(|e| (e, None))?,
        };
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| (ClientError::Http(e), None))?;
        // Back to the pool; it is taken again once its response has been read.
        if !upgrade && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let list = pool.hyper.entry(key).or_default();
            if list.len() < 256 {
                list.push(Pooled {
                    send,
                    since: Instant::now(),
                });
            }
        }
        Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
    }

    /// A request without a body or an upgrade, on a connection of the direct path: written
    /// and answered by this task alone. A kept connection the target had closed before the
    /// request reached it is replaced by a fresh one for idempotent methods.
    async fn send_direct(
        &self,
        https: bool,
        addr: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Failed> {
        let (parts, body) = req.into_parts();
        let mut head = Vec::with_capacity(256 + parts.headers.len() * 32);
        h1::encode_head(&parts, &mut head);
        let head_request = parts.method == Method::HEAD;
        let idempotent = super::phases::idempotent(&parts.method);
        let key = (https, addr);
        let mut kept = self.take_direct(key);
        loop {
            let reused = kept.is_some();
            let mut raw = match kept.take() {
                Some(r) => r,
                None => match Box::pin(self.open(https, addr)).await {
                    Ok(io) => Raw::new(io),
                    Err(e) => return Err((e, Some(Request::from_parts(parts, body)))),
                },
            };
            let answer = match raw.send_head(&head).await {
                Ok(()) => raw.read_head(head_request).await,
                Err(e) => Err(e.into()),
            };
            match answer {
                Ok((resp, framing)) => {
                    let pool = self.pool.clone();
                    let home: h1::Home = Box::new(move |raw| {
                        let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
                        let list = pool.direct.entry(key).or_default();
                        if list.len() < DIRECT_IDLE {
                            list.push((raw, Instant::now()));
                        }
                    });
                    let body = RawBody::new(raw, framing, home);
                    return Ok(resp.map(|()| body.map_err(BoxError::from).boxed()));
                }
                Err(e) if reused && idempotent && e.nothing_came_back() => continue,
                Err(e) => {
                    return Err((
                        ClientError::Exchange(e),
                        Some(Request::from_parts(parts, body)),
                    ))
                }
            }
        }
    }

    /// The most recently used idle connection of the direct path to `key` that may carry
    /// a request; closed and long-idle ones are dropped on the way.
    fn take_direct(&self, key: Key) -> Option<Raw> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let list = pool.direct.get_mut(&key)?;
        let now = Instant::now();
        while let Some((raw, since)) = list.pop() {
            if now.duration_since(since) <= self.idle && raw.reusable() {
                return Some(raw);
            }
        }
        None
    }

    async fn connect(
        &self,
        https: bool,
        addr: SocketAddr,
    ) -> Result<hyper::client::conn::http1::SendRequest<ProxyBody>, ClientError> {
        let io = self.open(https, addr).await?;
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(send)
    }

    /// A new connection to a target: TCP without Nagle, then TLS for `https`.
    async fn open(&self, https: bool, addr: SocketAddr) -> Result<Conn, ClientError> {
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
        Ok(io)
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

/// Checks a target's chain against the CA, not its name; with no usable CA (an empty or
/// damaged one in the configuration) every target's certificate is refused.
#[derive(Debug)]
struct ChainOnly(
    Option<Arc<rustls::client::WebPkiServerVerifier>>,
    Vec<rustls::SignatureScheme>,
);

/// What a target's certificate gets when there is no CA to check it against.
fn no_ca() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
}

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end: &rustls::pki_types::CertificateDer<'_>,
        inter: &[rustls::pki_types::CertificateDer<'_>],
        name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(v) = &self.0 else {
            return Err(no_ca());
        };
        match v.verify_server_cert(end, inter, name, ocsp, now) {
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
        match &self.0 {
            Some(v) => v.verify_tls12_signature(m, c, d),
            None => Err(no_ca()),
        }
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        match &self.0 {
            Some(v) => v.verify_tls13_signature(m, c, d),
            None => Err(no_ca()),
        }
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.clone()
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
        .inspect_err(|e| tracing::warn!(error = %e, "no CA for targets' certificates"))
        .ok();
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier, schemes)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A target that answers `per_conn` requests on each connection, then closes it without
    /// a word (as a target whose keep-alive ran out does); counts connections.
    async fn target(per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let n = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut b = [0u8; 1024];
                    for _ in 0..per_conn {
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got.extend_from_slice(&b[..k]),
                            }
                        }
                        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                        got.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    /// Many requests at once through one client, over its kept connections: each gets its
    /// own answer (the target echoes the path), never another request's.
    #[test]
    fn a_missing_or_damaged_ca_refuses_every_target_and_panics_nothing() {
        use rustls::client::danger::ServerCertVerifier;
        for ca in [
            "",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let _ = client(ca, Duration::from_secs(1));
        }
        let v = ChainOnly(None, vec![]);
        let cert = rustls::pki_types::CertificateDer::from(vec![0u8; 16]);
        let name = rustls::pki_types::ServerName::try_from("10.0.0.1").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        assert!(v.verify_server_cert(&cert, &[], &name, &[], now).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_each_get_their_own_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut b = [0u8; 4096];
                    loop {
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got.extend_from_slice(&b[..k]),
                            }
                        }
                        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                        let head = String::from_utf8_lossy(&got[..end]).to_string();
                        got.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                            path.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ca = veeps_pki::Ca::open(dir.path(), "t").unwrap();
        let c = client(&ca.cert_pem, Duration::from_secs(30));
        let mut tasks = vec![];
        for t in 0..32 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    let path = format!("/{t}/{i}");
                    let req = Request::get(&path).body(super::super::empty()).unwrap();
                    let resp = c.send(false, addr, req).await.map_err(|(e, _)| e).unwrap();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(&body[..], path.as_bytes());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn kept_connections_are_reused_and_one_the_target_closed_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ca = veeps_pki::Ca::open(dir.path(), "t").unwrap();
        let c = client(&ca.cert_pem, Duration::from_secs(30));
        let (addr, conns) = target(2).await;
        for _ in 0..6 {
            let req = Request::get("/").body(super::super::empty()).unwrap();
            let resp = c.send(false, addr, req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        // Two answers a connection: every kept connection carried its second request, and
        // each the target closed was replaced without failing a request.
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }
}
