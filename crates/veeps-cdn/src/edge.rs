//! The request path of the edge: a distribution by `Host`, a behaviour by path, then the
//! cache: a fresh object is served from it (ranges, `304`s and compression made from the
//! stored whole); a stale one is revalidated with a conditional request (or served while
//! that happens, within `stale-while-revalidate`; or served when the origin fails, within
//! `stale-if-error`); a miss asks the origin once for every client asking the same key at
//! the same time.

use crate::cache::{Cache, Meta, Object};
use crate::model::{Behavior, Distribution, Origin, PlaneConfig};
use crate::policy::{self, Coding, Range};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;

/// The largest object the edge keeps (larger ones are refused with 502).
pub const MAX_OBJECT: usize = 256 << 20;
/// The largest request body passed on to an origin.
pub const MAX_REQUEST_BODY: usize = 16 << 20;
/// CloudFront's bounds on what it compresses.
const COMPRESS_MIN: usize = 1000;
const COMPRESS_MAX: usize = 10 << 20;
/// How long the origin has to answer (CloudFront's origin read timeout).
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the edge.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Requests that asked the origin.
    pub misses: AtomicU64,
    /// Stale objects served (origin failing, or revalidating in the background).
    pub stale: AtomicU64,
    /// Requests sent to origins.
    pub origin_requests: AtomicU64,
    /// Their total latency, in microseconds.
    pub origin_micros: AtomicU64,
    /// Body bytes sent from the cache.
    pub bytes_from_cache: AtomicU64,
    /// Body bytes fetched from origins.
    pub bytes_from_origin: AtomicU64,
    /// Origin failures (unreachable, timed out, 5xx).
    pub origin_errors: AtomicU64,
}

impl Stats {
    /// By metric name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("cdn_hits_total", c(&self.hits)),
            ("cdn_misses_total", c(&self.misses)),
            ("cdn_stale_total", c(&self.stale)),
            ("cdn_origin_requests_total", c(&self.origin_requests)),
            ("cdn_origin_latency_micros_total", c(&self.origin_micros)),
            ("cdn_bytes_from_cache_total", c(&self.bytes_from_cache)),
            ("cdn_bytes_from_origin_total", c(&self.bytes_from_origin)),
            ("cdn_origin_errors_total", c(&self.origin_errors)),
        ]
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client for origins over HTTP and HTTPS, trusting the system's roots and `ca` (PEM).
fn client(ca: Option<&str>) -> Result<Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(pem) = ca {
        for c in rustls_pemfile::certs(&mut pem.as_bytes()).flatten() {
            let _ = roots.add(c);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS to origins: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https),
    )
}

/// What one origin request gave, shared by every client that waited for it.
#[derive(Clone)]
enum Fetched {
    /// An object (stored when cacheable); true when the stored one was revalidated.
    Object(Arc<Object>, bool),
    /// The origin could not be asked, or failed.
    Failed(String),
}

/// Where the edge's access log lines go: a thread appends each distribution's to a spool
/// of its own (`DIR/ID`), which the control plane reads into the log store when it runs.
pub struct AccessLog {
    tx: std::sync::mpsc::SyncSender<(String, i64, String)>,
    /// Lines dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

/// Bytes kept per distribution's spool.
pub const SPOOL_LIMIT: u64 = 32 << 20;

/// Appends a line to its distribution's spool (opened on its first line), to be written by
/// the spool's next flush.
fn spool_line(
    spools: &mut HashMap<String, veeps_obs::spool::SpoolWriter>,
    dir: &std::path::Path,
    dist: String,
    ts: i64,
    line: &str,
) {
    if !spools.contains_key(&dist) {
        let d = dir.join(&dist);
        let w = std::fs::create_dir_all(&d)
            .and_then(|_| veeps_obs::spool::SpoolWriter::open(&d, SPOOL_LIMIT));
        match w {
            Ok(w) => {
                spools.insert(dist.clone(), w);
            }
            Err(e) => {
                tracing::warn!(%dist, error = %e, "CDN access log");
                return;
            }
        }
    }
    if let Some(w) = spools.get_mut(&dist) {
        let _ = w.append(ts, "edge/access", line);
    }
}

impl AccessLog {
    /// Spools under `dir`.
    pub fn open(dir: &std::path::Path) -> std::io::Result<Arc<AccessLog>> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, i64, String)>(64 * 1024);
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("cdn-access-log".into())
            .spawn(move || {
                let mut spools: HashMap<String, veeps_obs::spool::SpoolWriter> = HashMap::new();
                while let Ok((dist, ts, line)) = rx.recv() {
                    spool_line(&mut spools, &dir, dist, ts, &line);
                    // Lines that come meanwhile join this one's write: a busy edge wakes
                    // this thread a few times a second, not once a request.
                    std::thread::sleep(veeps_obs::spool::GATHER);
                    while let Ok((dist, ts, line)) = rx.try_recv() {
                        spool_line(&mut spools, &dir, dist, ts, &line);
                    }
                    for w in spools.values_mut() {
                        let _ = w.flush();
                    }
                }
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    fn log(&self, dist: &str, line: String) {
        let ts = now_ms() as i64;
        if self.tx.try_send((dist.to_string(), ts, line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The edge: the distributions served, the cache and the origin requests in flight.
pub struct Edge {
    dists: arc_swap::ArcSwap<Vec<Arc<Distribution>>>,
    /// The cache.
    pub cache: Arc<Cache>,
    inflight: Mutex<HashMap<String, Arc<OnceCell<Fetched>>>>,
    /// The origin client, with the extra CA it trusts.
    client: arc_swap::ArcSwap<(Option<String>, Option<Client>)>,
    /// Counters.
    pub stats: Stats,
    access: std::sync::OnceLock<Arc<AccessLog>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert("x-cache", HeaderValue::from_static("Error from veeps"));
    r
}

/// Headers that belong to one connection, never stored or passed on (RFC 9110 7.6.1).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

fn http_date(s: Option<&str>) -> Option<SystemTime> {
    httpdate::parse_http_date(s?.trim()).ok()
}

impl Edge {
    /// An edge over `cache`, serving nothing yet.
    pub fn new(cache: Cache) -> Arc<Edge> {
        let client = arc_swap::ArcSwap::from_pointee((None, client(None).ok()));
        Arc::new(Edge {
            dists: arc_swap::ArcSwap::from_pointee(vec![]),
            cache: Arc::new(cache),
            inflight: Mutex::new(HashMap::new()),
            client,
            stats: Stats::default(),
            access: std::sync::OnceLock::new(),
        })
    }

    /// Serves `config`'s distributions from now on; objects of distributions no longer
    /// served are dropped.
    pub fn load(&self, config: &PlaneConfig) {
        let dists: Vec<Arc<Distribution>> =
            config.distributions.iter().cloned().map(Arc::new).collect();
        let ids: Vec<String> = dists.iter().map(|d| d.id.clone()).collect();
        self.dists.store(Arc::new(dists));
        self.cache.retain_dists(&ids);
        if let Some(b) = config.bounds {
            self.cache.set_bounds(b);
        }
        if self.client.load().0 != config.origin_ca {
            match client(config.origin_ca.as_deref()) {
                Ok(c) => self
                    .client
                    .store(Arc::new((config.origin_ca.clone(), Some(c)))),
                Err(e) => tracing::warn!(error = %e, "CDN origins"),
            }
        }
    }

    /// The distribution answering to `host` (port ignored, case-insensitive).
    pub fn distribution(&self, host: &str) -> Option<Arc<Distribution>> {
        let name = match host.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        let name = name.trim_end_matches('.');
        self.dists
            .load()
            .iter()
            .find(|d| {
                d.domain.eq_ignore_ascii_case(name)
                    || d.aliases.iter().any(|a| alias_matches(a, name))
            })
            .cloned()
    }

    /// Writes an access log line per request from now on.
    pub fn log_to(&self, access: Arc<AccessLog>) {
        let _ = self.access.set(access);
    }

    /// Answers one request from `peer` (`tls`: it came over HTTPS), and logs it: client,
    /// method, host, path and query, status, body bytes, how the cache answered,
    /// milliseconds taken, scheme, user agent (tab-separated, as CloudFront's fields).
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        tls: bool,
        peer: std::net::SocketAddr,
    ) -> Response<Full<Bytes>> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let dist = self.distribution(&host);
        let Some(access) = self.access.get() else {
            return self.answer_request(req, tls, &host, dist).await;
        };
        let started = std::time::Instant::now();
        let logged = dist.as_ref().map(|d| d.id.clone());
        let method = req.method().to_string();
        let uri = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let resp = self.answer_request(req, tls, &host, dist).await;
        if let Some(dist) = logged {
            use hyper::body::Body;
            let bytes = resp.body().size_hint().exact().unwrap_or(0);
            let how = resp
                .headers()
                .get("x-cache")
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.split(' ').next())
                .unwrap_or("-")
                .to_string();
            access.log(
                &dist,
                format!(
                    "{}\t{method}\t{host}\t{uri}\t{}\t{bytes}\t{how}\t{:.3}\t{}\t{agent}",
                    peer.ip(),
                    resp.status().as_u16(),
                    started.elapsed().as_secs_f64() * 1000.0,
                    if tls { "https" } else { "http" },
                ),
            );
        }
        resp
    }

    async fn answer_request(
        self: &Arc<Self>,
        req: Request<Incoming>,
        tls: bool,
        host: &str,
        dist: Option<Arc<Distribution>>,
    ) -> Response<Full<Bytes>> {
        let Some(dist) = dist.filter(|d| d.enabled) else {
            return text(
                StatusCode::FORBIDDEN,
                "no distribution answers to this name",
            );
        };
        if dist.redirect_to_https && !tls {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut r = text(StatusCode::MOVED_PERMANENTLY, "moved to https");
            if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{pq}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        let mut path = req.uri().path().to_string();
        if path == "/" {
            if let Some(root) = &dist.default_root_object {
                path = format!("/{}", root.trim_start_matches('/'));
            }
        }
        let Some(behavior) = dist
            .behaviors
            .iter()
            .find(|b| policy::path_matches(&b.pattern, &path))
            .or(dist.behaviors.last())
        else {
            return text(StatusCode::BAD_GATEWAY, "the distribution has no behaviour");
        };
        let method = req.method().clone();
        if !behavior
            .allowed_methods
            .iter()
            .any(|m| m == method.as_str())
        {
            return text(
                StatusCode::FORBIDDEN,
                "method not allowed by this distribution",
            );
        }
        let Some(origin) = dist.origins.iter().find(|o| o.id == behavior.origin) else {
            return text(StatusCode::BAD_GATEWAY, "the behaviour's origin is unknown");
        };
        let query = req.uri().query().map(str::to_string);
        let (parts, body) = req.into_parts();
        let cached = behavior.cached_methods.iter().any(|m| m == method.as_str())
            && (method == Method::GET || method == Method::HEAD);
        if !cached {
            let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            };
            return self
                .pass(&parts, origin, behavior, &path, query.as_deref(), body)
                .await;
        }
        drop(body);
        let key = cache_key(&dist, behavior, &path, query.as_deref(), &parts.headers);
        let ask = Ask {
            dist: &dist,
            behavior,
            origin,
            path: &path,
            query: query.as_deref(),
            headers: &parts.headers,
            key: &key,
        };
        let (object, how) = match self.lookup(&ask).await {
            Ok(x) => x,
            Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("origin failed: {e}")),
        };
        let object = match self.custom_error(&ask, object).await {
            Some(o) => o,
            None => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "the error page could not be fetched",
                )
            }
        };
        self.answer(&object, &parts, behavior, how, method == Method::HEAD)
            .await
    }

    /// The object for `ask`: from the cache when fresh, revalidated or fetched otherwise.
    async fn lookup(
        self: &Arc<Self>,
        ask: &Ask<'_>,
    ) -> Result<(Arc<Object>, &'static str), String> {
        let now = now_ms();
        // From memory at once; from disk on a blocking thread (a big object takes a while).
        let stored = match self.cache.get_memory(ask.key) {
            Some(o) => Some(o),
            None => {
                let (cache, key) = (self.cache.clone(), ask.key.to_string());
                tokio::task::spawn_blocking(move || cache.get(&key))
                    .await
                    .ok()
                    .flatten()
            }
        };
        if let Some(o) = &stored {
            if o.meta.fresh(now) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((o.clone(), "Hit from veeps"));
            }
            // Stale within stale-while-revalidate: served now, refreshed behind.
            let late = o.meta.stale_by_ms(now);
            if !o.meta.must_revalidate
                && late <= o.meta.stale_while_revalidate * 1000
                && o.meta.stale_while_revalidate > 0
            {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                let me = self.clone();
                let owned = OwnedAsk::from(ask);
                let old = o.clone();
                tokio::spawn(async move {
                    let ask = owned.borrow();
                    me.fetch(&ask, Some(old)).await;
                });
                return Ok((o.clone(), "RefreshHit from veeps"));
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        match self.fetch(ask, stored.clone()).await {
            Fetched::Object(o, revalidated) => Ok((
                o,
                if revalidated {
                    "RefreshHit from veeps"
                } else {
                    "Miss from veeps"
                },
            )),
            Fetched::Failed(e) => {
                // The origin failed: a stale object is better than an error, unless the
                // origin forbade it.
                if let Some(o) = stored {
                    let late = o.meta.stale_by_ms(now_ms());
                    let window = if o.meta.stale_if_error > 0 {
                        o.meta.stale_if_error * 1000
                    } else {
                        u64::MAX
                    };
                    if !o.meta.must_revalidate && late <= window {
                        self.stats.stale.fetch_add(1, Ordering::Relaxed);
                        return Ok((o, "Stale from veeps"));
                    }
                }
                Err(e)
            }
        }
    }

    /// Asks the origin for `ask` once, however many clients ask at the same time
    /// (`stale`: the stored object, whose validators make the request conditional).
    async fn fetch(&self, ask: &Ask<'_>, stale: Option<Arc<Object>>) -> Fetched {
        let cell = {
            let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(ask.key.to_string())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let got = cell
            .get_or_init(|| async { self.ask_origin(ask, stale.as_deref()).await })
            .await
            .clone();
        let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(ask.key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            m.remove(ask.key);
        }
        got
    }

    async fn ask_origin(&self, ask: &Ask<'_>, stale: Option<&Object>) -> Fetched {
        let mut pass = HeaderMap::new();
        forward_headers(ask.behavior, ask.headers, &mut pass);
        if let Some(s) = stale {
            if let Some(v) = s
                .meta
                .header("etag")
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                pass.insert(header::IF_NONE_MATCH, v);
            }
            if let Some(v) = s
                .meta
                .header("last-modified")
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                pass.insert(header::IF_MODIFIED_SINCE, v);
            }
        }
        let query = if ask.behavior.query_string {
            ask.query
        } else {
            None
        };
        let started = std::time::Instant::now();
        let resp = self
            .origin_request(ask.origin, Method::GET, ask.path, query, pass, Bytes::new())
            .await;
        self.stats.origin_requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .origin_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let (status, headers, body) = match resp {
            Ok(r) => r,
            Err(e) => {
                self.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
                return Fetched::Failed(e);
            }
        };
        if status.is_server_error() {
            self.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
            if stale.is_some() {
                return Fetched::Failed(format!("origin answered {status}"));
            }
        }
        let now = now_ms();
        if status == StatusCode::NOT_MODIFIED {
            if let Some(s) = stale {
                // Revalidated: the same body, the new headers' freshness.
                let mut merged = s.meta.headers.clone();
                for (k, v) in &headers {
                    merged.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
                    merged.push((k.clone(), v.clone()));
                }
                let mut meta = s.meta.clone();
                meta.headers = merged;
                meta.stored_ms = now;
                set_freshness(&mut meta, ask.behavior, now);
                let o = Arc::new(Object {
                    meta,
                    body: s.body.clone(),
                    coded: Mutex::new(HashMap::new()),
                });
                self.store(o.clone()).await;
                return Fetched::Object(o, true);
            }
        }
        self.stats
            .bytes_from_origin
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let mut meta = Meta {
            key: ask.key.to_string(),
            dist: ask.dist.id.clone(),
            path: ask.path.to_string(),
            status: status.as_u16(),
            headers,
            stored_ms: now,
            fresh_for: 0,
            must_revalidate: false,
            stale_while_revalidate: 0,
            stale_if_error: 0,
        };
        let storable = set_freshness(&mut meta, ask.behavior, now);
        let error_ttl = ask
            .dist
            .custom_errors
            .iter()
            .find(|c| c.error_code == meta.status)
            .map(|c| c.error_caching_min_ttl);
        let cacheable_status = matches!(
            meta.status,
            200 | 203 | 204 | 206 | 300 | 301 | 404 | 405 | 410 | 414 | 501
        ) || error_ttl.is_some();
        if let (Some(ttl), true) = (error_ttl, meta.status >= 400) {
            meta.fresh_for = ttl;
        }
        let o = Object::new(meta, body);
        if storable && cacheable_status && o.meta.status != 206 {
            self.store(o.clone()).await;
        }
        Fetched::Object(o, false)
    }

    /// Keeps `o` in the cache, its file written on a blocking thread.
    async fn store(&self, o: Arc<Object>) {
        let cache = self.cache.clone();
        let _ = tokio::task::spawn_blocking(move || cache.put(o)).await;
    }

    /// One request to an origin, its answer read whole (within [`MAX_OBJECT`]).
    async fn origin_request(
        &self,
        origin: &Origin,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Vec<(String, String)>, Bytes), String> {
        let prefix = origin.path.trim_end_matches('/');
        let pq = match query {
            Some(q) => format!("{prefix}{path}?{q}"),
            None => format!("{prefix}{path}"),
        };
        let url = if origin.https {
            format!("https://{}{}", origin.host, pq)
        } else {
            format!("http://{}{}", origin.addr, pq)
        };
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad origin URL: {e}"))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        if !origin.https {
            if let Ok(h) = HeaderValue::from_str(&origin.host) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        let Some(client) = self.client.load_full().1.clone() else {
            return Err("no client for origins (TLS could not be set up)".into());
        };
        req.headers_mut()
            .insert(header::VIA, HeaderValue::from_static("1.1 veeps-cdn"));
        let work = async {
            let resp = client.request(req).await.map_err(|e| {
                use std::error::Error;
                match e.source() {
                    Some(s) => format!("{e}: {s}"),
                    None => e.to_string(),
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_OBJECT)
                .collect()
                .await
                .map_err(|e| format!("reading the origin's answer: {e}"))?
                .to_bytes();
            let headers = parts
                .headers
                .iter()
                .filter(|(k, _)| !hop_by_hop(k.as_str()) && *k != header::CONTENT_LENGTH)
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            Ok((parts.status, headers, body))
        };
        tokio::time::timeout(ORIGIN_TIMEOUT, work)
            .await
            .map_err(|_| "the origin did not answer in time".to_string())?
    }

    /// A request that is not cached (POST, PUT, ...): passed on, answered as the origin
    /// answers.
    async fn pass(
        &self,
        parts: &hyper::http::request::Parts,
        origin: &Origin,
        behavior: &Behavior,
        path: &str,
        query: Option<&str>,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let mut pass = HeaderMap::new();
        for (k, v) in &parts.headers {
            if !hop_by_hop(k.as_str()) && *k != header::HOST && *k != header::CONTENT_LENGTH {
                pass.append(k.clone(), v.clone());
            }
        }
        let query = if behavior.query_string { query } else { None };
        self.stats.origin_requests.fetch_add(1, Ordering::Relaxed);
        match self
            .origin_request(origin, parts.method.clone(), path, query, pass, body)
            .await
        {
            Ok((status, headers, body)) => {
                let mut r = Response::new(Full::new(body));
                *r.status_mut() = status;
                for (k, v) in headers {
                    if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                        r.headers_mut().append(k, v);
                    }
                }
                r.headers_mut()
                    .insert("x-cache", HeaderValue::from_static("Miss from veeps"));
                r
            }
            Err(e) => {
                self.stats.origin_errors.fetch_add(1, Ordering::Relaxed);
                text(StatusCode::BAD_GATEWAY, &format!("origin failed: {e}"))
            }
        }
    }

    /// The distribution's page for the origin's error, when it has one for this status.
    async fn custom_error(
        self: &Arc<Self>,
        ask: &Ask<'_>,
        object: Arc<Object>,
    ) -> Option<Arc<Object>> {
        let Some(ce) = ask
            .dist
            .custom_errors
            .iter()
            .find(|c| c.error_code == object.meta.status)
        else {
            return Some(object);
        };
        let mut page = match &ce.response_page_path {
            Some(p) if p != ask.path => {
                let behavior = ask
                    .dist
                    .behaviors
                    .iter()
                    .find(|b| policy::path_matches(&b.pattern, p))
                    .or(ask.dist.behaviors.last())?;
                let origin = ask.dist.origins.iter().find(|o| o.id == behavior.origin)?;
                let empty = HeaderMap::new();
                let key = cache_key(ask.dist, behavior, p, None, &empty);
                let page_ask = Ask {
                    dist: ask.dist,
                    behavior,
                    origin,
                    path: p,
                    query: None,
                    headers: &empty,
                    key: &key,
                };
                let (o, _) = Box::pin(self.lookup(&page_ask)).await.ok()?;
                (o.meta.clone(), o.body.clone())
            }
            _ => (object.meta.clone(), object.body.clone()),
        };
        page.0.status = ce.response_code.unwrap_or(object.meta.status);
        Some(Object::new(page.0, page.1))
    }

    /// The answer to a client from a stored object: `304` when its validators match, a
    /// `206` for one range, compressed when it accepts a coding.
    async fn answer(
        &self,
        o: &Arc<Object>,
        req: &hyper::http::request::Parts,
        behavior: &Behavior,
        how: &'static str,
        head: bool,
    ) -> Response<Full<Bytes>> {
        let now = now_ms();
        let mut r = Response::new(Full::new(Bytes::new()));
        let status = StatusCode::from_u16(o.meta.status).unwrap_or(StatusCode::BAD_GATEWAY);
        *r.status_mut() = status;
        let h = r.headers_mut();
        for (k, v) in &o.meta.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                h.append(k, v);
            }
        }
        let age = now.saturating_sub(o.meta.stored_ms) / 1000;
        h.insert(header::AGE, HeaderValue::from(age));
        h.insert("x-cache", HeaderValue::from_static(how));
        h.insert(header::VIA, HeaderValue::from_static("1.1 veeps-cdn"));
        if status != StatusCode::OK {
            if !head {
                self.stats
                    .bytes_from_cache
                    .fetch_add(o.body.len() as u64, Ordering::Relaxed);
                *r.body_mut() = Full::new(o.body.clone());
            }
            return r;
        }
        let req_h = |n: HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
        if policy::not_modified(
            req_h(header::IF_NONE_MATCH),
            http_date(req_h(header::IF_MODIFIED_SINCE)),
            o.meta.header("etag"),
            http_date(o.meta.header("last-modified")),
        ) {
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            let h = r.headers_mut();
            h.remove(header::CONTENT_TYPE);
            h.remove(header::CONTENT_ENCODING);
            return r;
        }
        r.headers_mut()
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let len = o.body.len() as u64;
        let range_header = req_h(header::RANGE);
        let encoded = o.meta.header("content-encoding").is_some();
        match policy::range(range_header, len) {
            Range::Part(a, b) if !encoded => {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                let part = o.body.slice(a as usize..=b as usize);
                self.sent(&mut r, part, head);
                return r;
            }
            Range::Unsatisfiable if !encoded => {
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            _ => {}
        }
        let coding = if behavior.compress
            && !encoded
            && range_header.is_none()
            && (COMPRESS_MIN..=COMPRESS_MAX).contains(&o.body.len())
            && policy::compressible(o.meta.header("content-type"))
        {
            policy::negotiate(req_h(header::ACCEPT_ENCODING))
        } else {
            None
        };
        if behavior.compress && policy::compressible(o.meta.header("content-type")) {
            r.headers_mut()
                .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let body = match coding {
            Some(c) => {
                let done = o
                    .coded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&c)
                    .cloned();
                let coded = match done {
                    Some(b) => b,
                    None => {
                        let src = o.body.clone();
                        let made = tokio::task::spawn_blocking(move || compress(c, &src))
                            .await
                            .unwrap_or_default();
                        o.coded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(c, made.clone());
                        made
                    }
                };
                r.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(c.token()),
                );
                coded
            }
            None => o.body.clone(),
        };
        self.sent(&mut r, body, head);
        r
    }

    fn sent(&self, r: &mut Response<Full<Bytes>>, body: Bytes, head: bool) {
        if head {
            if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
                r.headers_mut().insert(header::CONTENT_LENGTH, v);
            }
            return;
        }
        self.stats
            .bytes_from_cache
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        *r.body_mut() = Full::new(body);
    }
}

/// Sets `meta`'s freshness from its headers and the behaviour; false when it must not be
/// stored.
fn set_freshness(meta: &mut Meta, behavior: &Behavior, now: u64) -> bool {
    let d = policy::directives(
        meta.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
            .map(|(_, v)| v.as_str()),
    );
    let date = http_date(meta.header("date"))
        .unwrap_or_else(|| SystemTime::UNIX_EPOCH + Duration::from_millis(now));
    let expires = meta.header("expires").map(|e| {
        // An unreadable Expires means already expired (RFC 9111 5.3).
        http_date(Some(e)).unwrap_or(SystemTime::UNIX_EPOCH)
    });
    meta.must_revalidate = d.must_revalidate;
    meta.stale_while_revalidate = d.stale_while_revalidate.unwrap_or(0);
    meta.stale_if_error = d.stale_if_error.unwrap_or(0);
    match policy::freshness(&d, expires, date, &behavior.ttls) {
        Some(t) => {
            meta.fresh_for = t;
            true
        }
        None => false,
    }
}

fn compress(c: Coding, body: &[u8]) -> Bytes {
    use std::io::Write;
    match c {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            let _ = e.write_all(body);
            Bytes::from(e.finish().unwrap_or_default())
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                let _ = w.write_all(body);
            }
            Bytes::from(out)
        }
    }
}

/// The headers a behaviour passes on: those in its cache key, and cookies it names.
fn forward_headers(behavior: &Behavior, from: &HeaderMap, to: &mut HeaderMap) {
    for name in &behavior.headers {
        if let Ok(n) = HeaderName::try_from(name.to_ascii_lowercase()) {
            for v in from.get_all(&n) {
                to.append(n.clone(), v.clone());
            }
        }
    }
    let cookies = kept_cookies(behavior, from);
    if !cookies.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cookies) {
            to.insert(header::COOKIE, v);
        }
    }
}

fn kept_cookies(behavior: &Behavior, from: &HeaderMap) -> String {
    if behavior.cookies.is_empty() {
        return String::new();
    }
    let mut kept: Vec<&str> = from
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or("");
            behavior.cookies.iter().any(|k| k == "*" || k == name)
        })
        .collect();
    kept.sort_unstable();
    kept.join("; ")
}

/// The cache key: the distribution, the path, and what the behaviour puts in it (the
/// query string, named headers, named cookies).
fn cache_key(
    dist: &Distribution,
    behavior: &Behavior,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> String {
    let mut k = format!("{}\n{path}", dist.id);
    if behavior.query_string {
        k.push('?');
        k.push_str(query.unwrap_or(""));
    }
    for name in &behavior.headers {
        k.push('\n');
        k.push_str(&name.to_ascii_lowercase());
        k.push(':');
        for v in headers.get_all(name.as_str()) {
            k.push_str(v.to_str().unwrap_or(""));
            k.push(',');
        }
    }
    let cookies = kept_cookies(behavior, headers);
    if !cookies.is_empty() {
        k.push_str("\ncookie:");
        k.push_str(&cookies);
    }
    k
}

/// Whether a distribution's alias answers `name` (`*.example.com` covers one label).
fn alias_matches(alias: &str, name: &str) -> bool {
    match alias.strip_prefix("*.") {
        Some(rest) => name
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail.eq_ignore_ascii_case(rest)),
        None => alias.eq_ignore_ascii_case(name),
    }
}

struct Ask<'a> {
    dist: &'a Arc<Distribution>,
    behavior: &'a Behavior,
    origin: &'a Origin,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    key: &'a str,
}

/// An [`Ask`] that a background refresh owns.
struct OwnedAsk {
    dist: Arc<Distribution>,
    behavior: Behavior,
    origin: Origin,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    key: String,
}

impl OwnedAsk {
    fn from(a: &Ask<'_>) -> OwnedAsk {
        OwnedAsk {
            dist: a.dist.clone(),
            behavior: a.behavior.clone(),
            origin: a.origin.clone(),
            path: a.path.to_string(),
            query: a.query.map(str::to_string),
            headers: a.headers.clone(),
            key: a.key.to_string(),
        }
    }

    fn borrow(&self) -> Ask<'_> {
        Ask {
            dist: &self.dist,
            behavior: &self.behavior,
            origin: &self.origin,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            key: &self.key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_keys() {
        assert!(alias_matches("*.example.com", "static.example.com"));
        assert!(!alias_matches("*.example.com", "a.b.example.com"));
        assert!(!alias_matches("*.example.com", "example.com"));
        assert!(alias_matches("Static.Example.com", "static.example.com"));
        let b = Behavior {
            pattern: "*".into(),
            origin: "o".into(),
            ttls: policy::Ttls {
                min: 0,
                default: 30,
                max: 60,
            },
            allowed_methods: vec!["GET".into(), "HEAD".into()],
            cached_methods: vec!["GET".into(), "HEAD".into()],
            query_string: false,
            headers: vec![],
            cookies: vec!["session".into()],
            compress: true,
        };
        let d = Distribution {
            id: "E1".into(),
            env: "e".into(),
            domain: "e1.cdn.localhost".into(),
            aliases: vec![],
            enabled: true,
            default_root_object: None,
            redirect_to_https: false,
            origins: vec![],
            behaviors: vec![b.clone()],
            custom_errors: vec![],
            tls: None,
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("tracking=1; session=abc"),
        );
        let k1 = cache_key(&d, &b, "/a", Some("x=1"), &h);
        // The query string is not in the key unless the behaviour says so; only named
        // cookies are.
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("session=abc; tracking=2"),
        );
        assert_eq!(cache_key(&d, &b, "/a", Some("x=2"), &h), k1);
        h.insert(header::COOKIE, HeaderValue::from_static("session=other"));
        assert_ne!(cache_key(&d, &b, "/a", None, &h), k1);
    }
}
