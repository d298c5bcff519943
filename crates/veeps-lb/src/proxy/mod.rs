//! The data plane: listeners (HTTP, or HTTPS with SNI over rustls; HTTP/1.1 and HTTP/2),
//! rule evaluation, forwarding over pooled keep-alive connections (HTTPS to targets
//! verified against veeps' CA), WebSocket upgrades, redirects and fixed responses, access
//! logs and metrics. Configuration is a snapshot swapped atomically: a change never
//! restarts a listener or drops a request.

use crate::auth::{Gate, Guard, Verdict};
use crate::model::{Action, Condition, Protocol};
use crate::targets::{Target, TgState};

mod h1;
mod inbound;
mod lambda;
mod phases;
mod tls;
mod upstream;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
pub use tls::{acceptor, certified_key, SniCerts};
use tokio::io::{AsyncRead, AsyncWrite};
pub use upstream::{client, Client, ClientError, Conn, Connector};

/// Bodies both ways.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Errors of bodies: the client's connection, or a target's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as hyper's server reads it, boxed as every other.
fn boxed_incoming(b: Incoming) -> ProxyBody {
    b.map_err(box_hyper_error).boxed()
}

fn box_hyper_error(e: hyper::Error) -> BoxError {
    Box::new(e)
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new().map_err(|n| match n {}).boxed()
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
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

/// A rule, compiled: its id, conditions, action, and the credentials it asks for first.
pub type CompiledRule = (String, Vec<Condition>, Arc<Compiled>, Option<Arc<Guard>>);

/// A listener's rules, compiled.
pub struct Snapshot {
    /// Rules in priority order.
    pub rules: Vec<CompiledRule>,
    /// The default action.
    pub default: Arc<Compiled>,
    /// The credentials the default action asks for first.
    pub default_guard: Option<Arc<Guard>>,
    /// ACME HTTP-01 answers (token to key authorization), served before any rule.
    pub challenges: std::collections::BTreeMap<String, String>,
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
    /// Connections accepted and not yet closed, TLS handshakes included (what a process
    /// handing over waits for before it exits).
    pub accepted_open: AtomicU64,
    /// Requests sent again to another target after one refused or reset them.
    pub retries: AtomicU64,
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
    pub logs: Option<Arc<crate::plane::AccessSink>>,
    /// Time a target has to answer.
    pub timeout: Duration,
    /// Becomes true when this process hands its listeners over: connections then finish
    /// their request in progress and close (HTTP/1 with `Connection: close`, HTTP/2 with
    /// GOAWAY), and clients reconnect to the new process.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// The same, read on every request (a plain load, no lock).
    pub draining_now: Arc<std::sync::atomic::AtomicBool>,
    /// veeps' local invoke socket, for `lambda` target groups.
    pub functions: Option<std::path::PathBuf>,
    /// Failed authentications seen, and addresses refused.
    pub gate: Arc<Gate>,
}

/// How long an HTTP/1 connection may stay idle once its process hands over, before it is
/// closed (its next answer closes it sooner).
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Resolves once `draining` turns true (never if its sender is gone).
async fn drained(mut draining: tokio::sync::watch::Receiver<bool>) {
    if draining.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await
    }
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
            async move {
                let req = req.map(boxed_incoming);
                Ok::<_, std::convert::Infallible>(handle(ctx, req, client).await)
            }
        })
    };
    // The protocol is known (ALPN, or HTTP/1.1 on plain listeners): no sniffing.
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(Some(idle))
            .max_concurrent_streams(256);
        let conn = b.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = drained(ctx.draining.clone()) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    } else {
        // The common request on the connection's own path; the rest (bodies, upgrades,
        // errors) through hyper from the first such request on.
        let Some(io) = inbound::serve(&ctx, io, client, idle).await else {
            ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(idle)
            .max_buf_size(64 * 1024)
            .keep_alive(true);
        let conn = b.serve_connection(TokioIo::new(io), svc).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = async {
                // A connection just opened gets its request served (its answer says
                // `Connection: close`); one that stays idle a while is closed.
                drained(ctx.draining.clone()).await;
                tokio::time::sleep(DRAIN_IDLE).await;
            } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
    ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Hop-by-hop headers, which are not forwarded either way.
const HOP: [hyper::header::HeaderName; 8] = [
    hyper::header::CONNECTION,
    hyper::header::HeaderName::from_static("keep-alive"),
    hyper::header::HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::TRANSFER_ENCODING,
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

/// One request, start to end: route, then respond, redirect, or choose a target group and
/// forward; the access log line and the in-flight count end with the body, not the headers.
async fn handle(ctx: Arc<Ctx>, req: Request<ProxyBody>, client: SocketAddr) -> Response<ProxyBody> {
    let started = Instant::now();
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    let cx = phases::RequestCx::of(&req, client);
    let (action, guard) = phases::route(&ctx.snap.load(), &cx, req.headers());
    let version = req.version();
    let mut req = req;
    // Only the balancer says who authenticated.
    req.headers_mut().remove(phases::AUTH_USER);
    if let Some(g) = guard {
        // Boxed, as the other rare paths: the request's future stays small to move.
        let refused = match Box::pin(g.check(req.headers())).await {
            Verdict::Allowed(user) => {
                // The target learns who, never the password.
                let h = req.headers_mut();
                h.remove(hyper::header::AUTHORIZATION);
                if let Ok(v) = HeaderValue::from_str(&user) {
                    h.insert(phases::AUTH_USER, v);
                }
                None
            }
            Verdict::Missing => Some(StatusCode::UNAUTHORIZED),
            Verdict::Denied => {
                ctx.gate.failed(client.ip());
                Some(StatusCode::UNAUTHORIZED)
            }
            Verdict::Busy => Some(StatusCode::SERVICE_UNAVAILABLE),
        };
        if let Some(status) = refused {
            let mut r = error(status);
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(hyper::header::WWW_AUTHENTICATE, g.challenge.clone());
            }
            return finish(&ctx, started, &cx, client, version, r, None);
        }
    }
    let (resp, target) = match &*action {
        Compiled::Other(Action::Fixed {
            status,
            content_type,
            body,
        }) => (fixed(*status, content_type, body.clone()), None),
        Compiled::Other(Action::Redirect {
            protocol,
            host,
            port,
            path,
            query,
            status,
        }) => {
            let to = phases::Redirect {
                protocol,
                host,
                port,
                path,
                query,
            };
            let loc = phases::redirect_location(&to, &cx, ctx.protocol, ctx.port);
            let mut r =
                error(StatusCode::from_u16(*status).unwrap_or(StatusCode::MOVED_PERMANENTLY));
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(hyper::header::LOCATION, v);
            }
            (r, None)
        }
        Compiled::Other(Action::Forward { .. }) => (error(StatusCode::SERVICE_UNAVAILABLE), None),
        Compiled::Forward { groups, sticky } => {
            let sticky = *sticky;
            let group = phases::choose_group(groups, rand::random());
            let function = group.as_ref().and_then(|tg| {
                let s = tg.spec.load();
                s.function
                    .clone()
                    .map(|f| (f, s.id.clone(), s.multi_value_headers))
            });
            if let Some((f, tg_arn, multi)) = function {
                let r = Box::pin(lambda::invoke(
                    ctx.functions.as_deref(),
                    &f,
                    &tg_arn,
                    multi,
                    req,
                    ctx.timeout,
                ))
                .await;
                return finish(&ctx, started, &cx, client, version, r.map(full), None);
            }
            let sticky_to = (sticky > 0)
                .then(|| phases::sticky_target(req.headers()))
                .flatten();
            let chosen = group.and_then(|tg| tg.pick(sticky_to).map(|t| (tg, t)));
            match chosen {
                Some((tg, t)) => {
                    let (mut r, t) = forward(&ctx, &tg, t, req, client).await;
                    if sticky > 0 {
                        let c = phases::sticky_cookie(t.addr, sticky);
                        if let Ok(v) = HeaderValue::from_str(&c) {
                            r.headers_mut().append(hyper::header::SET_COOKIE, v);
                        }
                    }
                    (r, Some(t))
                }
                None => (error(StatusCode::SERVICE_UNAVAILABLE), None),
            }
        }
    };
    finish(&ctx, started, &cx, client, version, resp, target)
}

/// Counts and logs an answer; the access log line and the in-flight count end with the
/// body.
fn finish(
    ctx: &Arc<Ctx>,
    started: Instant,
    cx: &phases::RequestCx,
    client: SocketAddr,
    version: Version,
    resp: Response<ProxyBody>,
    target: Option<Arc<Target>>,
) -> Response<ProxyBody> {
    let status = resp.status().as_u16();
    ctx.stats.status[status_class(status)].fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = resp.into_parts();
    // Handing over to a new process: this answer ends the connection (HTTP/1), so the
    // client's next request opens one to the new process instead of racing a close.
    if ctx.draining_now.load(Ordering::Relaxed) && version < hyper::Version::HTTP_2 && status != 101
    {
        parts.headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    let stats = ctx.stats.clone();
    let log = ctx.logs.clone().map(|sink| {
        let line = phases::AccessLog {
            client,
            method: cx.method.to_string(),
            target_uri: match cx.uri.path_and_query() {
                Some(pq) => pq.as_str().to_string(),
                None => "/".to_string(),
            },
            version,
            status,
            target: target.as_ref().map(|t| t.addr),
            target_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        (sink, ctx.port, line)
    });
    let done = move |bytes: u64| {
        if let Some(t) = &target {
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        if let Some((sink, listener, line)) = log {
            let total_ms = started.elapsed().as_secs_f64() * 1000.0;
            sink.log(&format!("listener-{listener}"), line.line(bytes, total_ms));
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

/// Forwards to `first`, streaming both ways (a tunnel after 101). A target that refuses the
/// connection is taken out of service at once (passive health; its health check brings it
/// back), and a request that can be replayed ([`phases::replayable`]) goes to another
/// target of the group when the chosen one refused it or reset before answering, so that
/// a dead target fails at most the requests that were in flight on it. Returns the answer
/// and the target that gave it (its in-flight count is held until the body ends).
async fn forward(
    ctx: &Ctx,
    tg: &TgState,
    first: Arc<Target>,
    mut req: Request<ProxyBody>,
    client: SocketAddr,
) -> (Response<ProxyBody>, Arc<Target>) {
    tg.requests_total.fetch_add(1, Ordering::Relaxed);
    let https = tg.spec.load().protocol == Protocol::Https;
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let in_version = req.version();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    let (mut parts, body) = req.into_parts();
    // Origin form to the target (an absolute URI from a client, as proxies get, too).
    let origin: hyper::Uri = match parts.uri.path_and_query() {
        Some(_) if parts.uri.scheme().is_none() => parts.uri.clone(),
        Some(pq) => match pq.as_str().parse() {
            Ok(u) => u,
            Err(_) => return (error(StatusCode::BAD_REQUEST), first),
        },
        None => hyper::Uri::from_static("/"),
    };
    parts.uri = origin;
    parts.version = Version::HTTP_11;
    phases::upstream_headers(
        &mut parts.headers,
        client.ip(),
        authority.as_deref(),
        upgrade.as_deref(),
        ctx.protocol,
        ctx.port,
    );
    // A request that may be sent again comes back from a failed attempt.
    let replay = phases::replayable(&parts.method, &parts.headers, body.is_end_stream());
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
    let mut out = Request::from_parts(parts, body);
    let mut t = first;
    let mut tried: Vec<SocketAddr> = vec![];
    let resp = loop {
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        t.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        match tokio::time::timeout(ctx.timeout, ctx.client.send(https, t.addr, out)).await {
            Err(_) => return (error(StatusCode::GATEWAY_TIMEOUT), t),
            Ok(Ok(r)) => {
                ctx.stats.latency.record(sent.elapsed());
                break r;
            }
            Ok(Err((e, back))) => {
                tracing::debug!(target = %t.addr, error = %e, "target failed");
                if matches!(e, ClientError::Connect(_)) {
                    t.mark_down();
                }
                tried.push(t.addr);
                let next = back
                    .filter(|_| replay)
                    .and_then(|b| tg.pick_other(&tried).map(|n| (b, n)));
                let Some((back, next)) = next else {
                    return (error(StatusCode::BAD_GATEWAY), t);
                };
                ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
                t.in_flight.fetch_sub(1, Ordering::Relaxed);
                t = next;
                out = back;
            }
        }
    };
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
            return (Response::from_parts(parts, empty()), t);
        }
    }
    let (mut parts, body) = resp.into_parts();
    phases::downstream_headers(&mut parts.headers);
    // The client's protocol, whatever the target spoke.
    parts.version = in_version;
    (Response::from_parts(parts, body), t)
}

/// A body that counts what passes and reports once, when done or dropped.
struct Counted {
    inner: ProxyBody,
    bytes: u64,
    done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
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

/// A listener's workers and the connections each holds. Each worker accepts on a socket of
/// its own, which the kernel fills by a hash of addresses: a few long-lived connections can
/// land unevenly, and the busier worker then sets everyone's latency. So a worker holding
/// more than one connection above the least loaded one hands a new connection to it (as
/// HAProxy's threads do at accept); otherwise it keeps it, with no cross-thread wakeup.
pub struct Spread {
    workers: Vec<(tokio::runtime::Handle, Arc<ListenerRt>)>,
    open: Vec<AtomicUsize>,
}

/// A connection counted against its worker until dropped.
struct Held(Arc<Spread>, usize);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.open[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// The workers' runtimes and their per-listener state, in worker order.
    pub fn new(workers: Vec<(tokio::runtime::Handle, Arc<ListenerRt>)>) -> Arc<Spread> {
        let open = workers.iter().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(Spread { workers, open })
    }

    /// Connections open on each worker.
    pub fn open(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Worker `me`'s state.
    pub fn rt(&self, me: usize) -> &Arc<ListenerRt> {
        &self.workers[me % self.workers.len()].1
    }

    /// Which worker serves a connection accepted by `me` (None: any), counted against it.
    fn assign(self: &Arc<Self>, me: Option<usize>) -> Held {
        let least = (0..self.open.len())
            .min_by_key(|&j| self.open[j].load(Ordering::Relaxed))
            .unwrap_or(0);
        let to = match me {
            Some(me)
                if self.open[me].load(Ordering::Relaxed)
                    <= self.open[least].load(Ordering::Relaxed) + 1 =>
            {
                me
            }
            _ => least,
        };
        self.open[to].fetch_add(1, Ordering::Relaxed);
        Held(self.clone(), to)
    }

    /// Serves a connection accepted anywhere (the host's port) on the least loaded worker.
    pub fn hand(
        self: &Arc<Self>,
        s: std::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let held = self.assign(None);
        self.hand_to(held, s, peer, permit);
    }

    fn hand_to(
        &self,
        held: Held,
        s: std::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let (handle, rt) = &self.workers[held.1];
        let rt = rt.clone();
        handle.spawn(async move {
            let _permit = permit;
            let _held = held;
            if let Ok(s) = tokio::net::TcpStream::from_std(s) {
                let _ = s.set_nodelay(true);
                serve_stream(s, peer, rt).await;
            }
        });
    }
}

/// Accepts forever on `l`, worker `me`'s socket of the listener.
pub async fn accept_loop(l: tokio::net::TcpListener, spread: Arc<Spread>, me: usize) {
    let me = me % spread.workers.len();
    let rt = spread.rt(me).clone();
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
        let held = spread.assign(Some(me));
        if held.1 != me {
            if let Ok(s) = s.into_std() {
                spread.hand_to(held, s, peer, permit);
            }
            continue;
        }
        let _ = s.set_nodelay(true);
        let rt = rt.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _held = held;
            serve_stream(s, peer, rt).await
        });
    }
}

/// Counts a connection from its accept to its close.
struct Open(Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.accepted_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one TCP connection (TLS first for HTTPS).
pub async fn serve_stream(s: tokio::net::TcpStream, peer: SocketAddr, rt: Arc<ListenerRt>) {
    // A banned address is closed on at once (the kernel drops it first where it can).
    if rt.ctx.gate.banned(peer.ip()) {
        return;
    }
    rt.ctx.stats.accepted_open.fetch_add(1, Ordering::Relaxed);
    let _open = Open(rt.ctx.stats.clone());
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
