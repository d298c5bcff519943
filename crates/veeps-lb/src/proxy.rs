//! The data plane: listeners (HTTP, or HTTPS with SNI over rustls; HTTP/1.1 and HTTP/2),
//! rule evaluation, forwarding over pooled keep-alive connections (HTTPS to targets
//! verified against veeps' CA), WebSocket upgrades, redirects and fixed responses, access
//! logs and metrics. Configuration is a snapshot swapped atomically: a change never
//! restarts a listener or drops a request.

use crate::matching::{matches, RequestView};
use crate::model::{Action, Condition, Protocol};
use crate::targets::{Target, TgState};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bodies both ways.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new().map_err(|n| match n {}).boxed()
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
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

/// An action ready to run.
#[derive(Clone)]
pub enum Compiled {
    /// Forward by weight.
    Forward {
        /// Groups and weights.
        groups: Vec<(String, Arc<TgState>, u32)>,
        /// Stickiness seconds.
        sticky: u64,
    },
    /// As declared.
    Other(Action),
}

/// A listener's rules, compiled.
pub struct Snapshot {
    /// Rules in priority order.
    pub rules: Vec<(String, Vec<Condition>, Compiled)>,
    /// The default action.
    pub default: Compiled,
}

/// Counters of one balancer.
#[derive(Default)]
pub struct Stats {
    /// Requests.
    pub requests: AtomicU64,
    /// By class.
    pub status: [AtomicU64; 6],
    /// Bytes in and out.
    pub bytes_in: AtomicU64,
    /// Bytes out.
    pub bytes_out: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// Target response times since the last collection, as a histogram.
    pub latency: Histogram,
}

/// A lock-free latency histogram: buckets a quarter of a power of two wide, from 1 us.
pub struct Histogram {
    buckets: [AtomicU64; 128],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    fn bucket(us: f64) -> usize {
        if us <= 1.0 {
            return 0;
        }
        ((us.log2() * 4.0) as usize).min(127)
    }
    /// Records a duration.
    pub fn record(&self, d: Duration) {
        let i = Self::bucket(d.as_secs_f64() * 1e6);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    /// The p50, p90 and p99 (seconds, each bucket's upper bound) since the last call;
    /// starts over.
    pub fn take(&self) -> HashMap<&'static str, f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut out = HashMap::new();
        if total == 0 {
            return out;
        }
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let want = (((total as f64) * q).ceil() as u64).max(1);
            let mut acc = 0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= want {
                    out.insert(name, 2f64.powf((i + 1) as f64 / 4.0) / 1e6);
                    break;
                }
            }
        }
        out
    }
}

/// What serving needs.
pub struct Ctx {
    /// The environment.
    pub env: String,
    /// The balancer's name.
    pub lb_name: String,
    /// Rules.
    pub snap: Arc<ArcSwap<Snapshot>>,
    /// HTTP or HTTPS.
    pub protocol: Protocol,
    /// The listener's port (X-Forwarded-Port).
    pub port: u16,
    /// Targets.
    pub client: Client,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Where access logs go (`None`: off).
    pub logs: Option<Arc<veeps_obs::Obs>>,
    /// Time a target has to answer.
    pub timeout: Duration,
}

/// Serves one accepted connection.
pub async fn serve_conn<S>(ctx: Arc<Ctx>, io: S, client: SocketAddr, idle: Duration, h2: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    let svc = {
        let ctx = ctx.clone();
        hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, client).await) }
        })
    };
    // The protocol is known (ALPN, or HTTP/1.1 on plain listeners): no sniffing.
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(Some(idle))
            .max_concurrent_streams(256);
        let _ = b.serve_connection(TokioIo::new(io), svc).await;
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(idle)
            .max_buf_size(64 * 1024)
            .keep_alive(true);
        let _ = b
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades()
            .await;
    }
    ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
}

const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn status_class(s: u16) -> usize {
    ((s / 100) as usize).min(5)
}

fn fixed(status: u16, ctype: &str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error(status: StatusCode) -> Response<ProxyBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    fixed(status.as_u16(), "text/plain; charset=utf-8", text)
}

fn sticky_from(req: &Request<Incoming>) -> Option<SocketAddr> {
    for v in req.headers().get_all(hyper::header::COOKIE) {
        for c in v.to_str().ok()?.split(';') {
            if let Some(x) = c.trim().strip_prefix("VEEPSLB=") {
                return x.parse().ok();
            }
        }
    }
    None
}

/// One request, start to end.
async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>, client: SocketAddr) -> Response<ProxyBody> {
    let started = Instant::now();
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let host_hdr = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = host_hdr
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map(|(h, _)| h.to_string())
        .unwrap_or(host_hdr.clone());
    let action = {
        let snap = ctx.snap.load();
        let headers = req.headers();
        let hdr = |n: &str| -> Vec<String> {
            headers
                .get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok().map(String::from))
                .collect()
        };
        let view = RequestView {
            host: &host,
            path: &path,
            method: &method,
            query: &query,
            client: client.ip(),
            header: &hdr,
        };
        snap.rules
            .iter()
            .find(|(_, conds, _)| conds.iter().all(|c| matches(c, &view)))
            .map(|(_, _, a)| a.clone())
            .unwrap_or_else(|| snap.default.clone())
    };
    let version = req.version();
    let (resp, target) = match action {
        Compiled::Other(Action::Fixed {
            status,
            content_type,
            body,
        }) => (fixed(status, &content_type, body), None),
        Compiled::Other(Action::Redirect {
            protocol,
            host: h,
            port,
            path: p,
            query: q,
            status,
        }) => {
            let proto_now = match ctx.protocol {
                Protocol::Http => "http",
                Protocol::Https => "https",
            };
            let sub = |s: &str| {
                s.replace("#{host}", &host)
                    .replace("#{port}", &ctx.port.to_string())
                    .replace("#{path}", path.trim_start_matches('/'))
                    .replace("#{query}", &query)
                    .replace("#{protocol}", proto_now)
            };
            let scheme = sub(&protocol).to_lowercase();
            let port = sub(&port);
            let default_port =
                (scheme == "https" && port == "443") || (scheme == "http" && port == "80");
            let mut loc = format!("{scheme}://{}", sub(&h));
            if !default_port {
                loc.push(':');
                loc.push_str(&port);
            }
            loc.push('/');
            loc.push_str(sub(&p).trim_start_matches('/'));
            let q = sub(&q);
            if !q.is_empty() {
                loc.push('?');
                loc.push_str(&q);
            }
            let mut r =
                error(StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY));
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(hyper::header::LOCATION, v);
            }
            (r, None)
        }
        Compiled::Other(Action::Forward { .. }) => (error(StatusCode::SERVICE_UNAVAILABLE), None),
        Compiled::Forward { groups, sticky } => {
            let total: u32 = groups.iter().map(|g| g.2).sum();
            let tg = if groups.len() == 1 || total == 0 {
                groups.first().map(|g| g.1.clone())
            } else {
                let mut x = rand::random::<u32>() % total;
                groups
                    .iter()
                    .find(|g| {
                        if x < g.2 {
                            true
                        } else {
                            x -= g.2;
                            false
                        }
                    })
                    .map(|g| g.1.clone())
            };
            let pick = tg
                .as_ref()
                .and_then(|tg| tg.pick(if sticky > 0 { sticky_from(&req) } else { None }));
            match (tg, pick) {
                (Some(tg), Some(t)) => {
                    let r = forward(&ctx, &tg, &t, req, client).await;
                    let mut r = r;
                    if sticky > 0 {
                        let c = format!("VEEPSLB={}; Max-Age={sticky}; Path=/; HttpOnly", t.addr);
                        if let Ok(v) = HeaderValue::from_str(&c) {
                            r.headers_mut().append(hyper::header::SET_COOKIE, v);
                        }
                    }
                    (r, Some(t))
                }
                _ => (error(StatusCode::SERVICE_UNAVAILABLE), None),
            }
        }
    };
    let status = resp.status().as_u16();
    ctx.stats.status[status_class(status)].fetch_add(1, Ordering::Relaxed);
    // The access log line and the in-flight count end with the body, not the headers.
    let (parts, body) = resp.into_parts();
    let stats = ctx.stats.clone();
    let log = ctx.logs.clone().map(|obs| {
        let target_s = target
            .as_ref()
            .map(|t| t.addr.to_string())
            .unwrap_or_else(|| "-".into());
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let head = format!("{client} \"{method} {path}{q} {version:?}\" {status}");
        let target_ms = started.elapsed().as_secs_f64() * 1000.0;
        let group = format!("lb-{}", ctx.lb_name);
        (
            obs,
            ctx.env.clone(),
            group,
            ctx.port,
            head,
            target_s,
            target_ms,
        )
    });
    let done = move |bytes: u64| {
        if let Some(t) = &target {
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        if let Some((obs, env, group, listener, head, target_s, target_ms)) = log {
            let total_ms = started.elapsed().as_secs_f64() * 1000.0;
            obs.log(veeps_obs::logs::LogLine {
                ts: veeps_obs_now(),
                env,
                group,
                source: format!("listener-{listener}"),
                stream: "access".into(),
                text: format!(
                    "{head} {bytes} target={target_s} target_ms={target_ms:.1} total_ms={total_ms:.1}"
                ),
            });
        }
    };
    Response::from_parts(
        parts,
        Counted {
            inner: body,
            bytes: 0,
            done: Some(Box::new(done)),
        }
        .boxed(),
    )
}

fn veeps_obs_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sends the request to a target; streams both ways; upgrades to a tunnel on 101.
async fn forward(
    ctx: &Ctx,
    tg: &TgState,
    t: &Arc<Target>,
    mut req: Request<Incoming>,
    client: SocketAddr,
) -> Response<ProxyBody> {
    t.in_flight.fetch_add(1, Ordering::Relaxed);
    t.requests.fetch_add(1, Ordering::Relaxed);
    tg.requests_total.fetch_add(1, Ordering::Relaxed);
    let spec = tg.spec.load();
    let scheme = match spec.protocol {
        Protocol::Http => "http",
        Protocol::Https => "https",
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: hyper::Uri = match format!("{scheme}://{}{pq}", t.addr).parse() {
        Ok(u) => u,
        Err(_) => return error(StatusCode::BAD_REQUEST),
    };
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let in_version = req.version();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // The request is rewritten in place: target URI, HTTP/1.1, hop-by-hop headers out,
    // X-Forwarded-* in.
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    for h in HOP {
        headers.remove(h);
    }
    headers.remove(hyper::header::UPGRADE);
    if !headers.contains_key(hyper::header::HOST) {
        if let Some(v) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(hyper::header::HOST, v);
        }
    }
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", client.ip()),
        None => client.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(match ctx.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(ctx.port),
    );
    if let Some(u) = &upgrade {
        if let Ok(v) = HeaderValue::from_str(u) {
            headers.insert(hyper::header::UPGRADE, v);
            headers.insert(
                hyper::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
        }
    }
    let in_bytes = ctx.stats.clone();
    let body = body
        .map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                in_bytes
                    .bytes_in
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            f
        })
        .boxed();
    let out = Request::from_parts(parts, body);
    let sent = Instant::now();
    let resp = match tokio::time::timeout(ctx.timeout, ctx.client.request(out)).await {
        Err(_) => return error(StatusCode::GATEWAY_TIMEOUT),
        Ok(Err(e)) => {
            tracing::debug!(target = %t.addr, error = %e, "target failed");
            return error(StatusCode::BAD_GATEWAY);
        }
        Ok(Ok(r)) => r,
    };
    ctx.stats.latency.record(sent.elapsed());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(cu) = client_upgrade {
            let mut resp = resp;
            let target_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = (cu.await, target_upgrade.await) {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
            let (mut parts, _) = resp.into_parts();
            parts.headers.remove(hyper::header::TRANSFER_ENCODING);
            return Response::from_parts(parts, empty());
        }
    }
    let (mut parts, body) = resp.into_parts();
    for h in HOP {
        parts.headers.remove(h);
    }
    // The client's protocol, whatever the target spoke.
    parts.version = in_version;
    Response::from_parts(parts, body.boxed())
}

/// A body that counts what passes and reports once, when done or dropped.
struct Counted {
    inner: ProxyBody,
    bytes: u64,
    done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.bytes += d.len() as u64;
            }
        }
        if let Poll::Ready(None) = &r {
            if let Some(d) = self.done.take() {
                d(self.bytes);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(d) = self.done.take() {
            d(self.bytes);
        }
    }
}

/// Certificates by name for SNI, swapped without restarting the listener.
#[derive(Debug, Default)]
pub struct SniCerts {
    /// `(name pattern, key)`; the first is the default.
    pub certs: ArcSwap<Vec<(Vec<String>, Arc<rustls::sign::CertifiedKey>)>>,
}

impl rustls::server::ResolvesServerCert for SniCerts {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(sni) = hello.server_name() {
            for (names, key) in certs.iter() {
                if names.iter().any(|n| {
                    crate::matching::wildcard(n, sni, true)
                        && (!n.starts_with("*.")
                            || sni.matches('.').count() == n.matches('.').count())
                }) {
                    return Some(key.clone());
                }
            }
        }
        certs.first().map(|c| c.1.clone())
    }
}

/// A rustls key from PEM.
pub fn certified_key(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("no private key")?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
}

/// A TLS acceptor resolving certificates through `sni` (HTTP/2 and HTTP/1.1 by ALPN).
pub fn acceptor(sni: Arc<SniCerts>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(sni);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Per-listener state the accept loop reads.
pub struct ListenerRt {
    /// Shared serving context.
    pub ctx: Arc<Ctx>,
    /// TLS, for HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Certificates.
    pub sni: Arc<SniCerts>,
    /// Idle timeout.
    pub idle: Duration,
    /// Connections the listener may hold; more wait to be accepted.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// Accepts forever on `l`.
pub async fn accept_loop(l: tokio::net::TcpListener, rt: Arc<ListenerRt>) {
    loop {
        let Ok(permit) = rt.slots.clone().acquire_owned().await else {
            return;
        };
        let (s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        let rt = rt.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_stream(s, peer, rt).await
        });
    }
}

/// Serves one TCP connection (TLS first for HTTPS).
pub async fn serve_stream(s: tokio::net::TcpStream, peer: SocketAddr, rt: Arc<ListenerRt>) {
    match &rt.tls {
        None => serve_conn(rt.ctx.clone(), s, peer, rt.idle, false).await,
        Some(acc) => {
            if let Ok(Ok(t)) = tokio::time::timeout(rt.idle, acc.accept(s)).await {
                let h2 = t.get_ref().1.alpn_protocol() == Some(b"h2");
                serve_conn(rt.ctx.clone(), t, peer, rt.idle, h2).await
            }
        }
    }
}
