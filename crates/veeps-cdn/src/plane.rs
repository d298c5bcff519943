//! The edge as a process of its own (`veeps cdn-plane DIR`), apart from the control plane:
//! it serves the distributions of its last configuration (`DIR/config.json`) from its
//! cache (`DIR/cache`, kept across restarts) whether or not the control plane runs. The
//! control plane talks to it over `DIR/control.sock` (one JSON request, one JSON reply):
//! apply the configuration again, counters, invalidate, stop.

use crate::cache::{Bounds, Cache};
use crate::edge::Edge;
use crate::model::PlaneConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The configuration file in a plane's directory.
pub const CONFIG: &str = "config.json";

/// The bounds of a cache nobody sized: 256 MiB of memory, 4 GiB of disk.
pub const DEFAULT_BOUNDS: Bounds = Bounds {
    memory: 256 << 20,
    disk: 4 << 30,
};

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who are you.
    Hello,
    /// Read `config.json` again and serve it.
    Apply,
    /// Counters, by metric name.
    Stats,
    /// Forget a distribution's objects under these paths.
    Invalidate {
        /// The distribution.
        dist: String,
        /// Paths (`/index.html`, `/images/*`).
        paths: Vec<String>,
    },
    /// Stop serving and exit.
    Stop,
}

/// The reply to `Apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// What could not be served, and why.
    pub failures: Vec<(String, String)>,
    /// Where the HTTP listener listens.
    pub http: Option<SocketAddr>,
    /// Where the HTTPS listener listens.
    pub https: Option<SocketAddr>,
}

/// The reply to `Invalidate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Invalidated {
    /// Objects forgotten.
    pub objects: usize,
}

struct Listening {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Picks a distribution's certificate by the name a client asks for (SNI).
#[derive(Debug, Default)]
struct Certs {
    by_name: BTreeMap<String, Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for Certs {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        if let Some(c) = self.by_name.get(&name) {
            return Some(c.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.by_name.get(&format!("*.{parent}")).cloned()
    }
}

fn certified(chain: &str, key: &str) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .map_err(|e| format!("key: {e}"))?
        .ok_or("no private key")?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))
}

/// The data plane's state.
pub struct Plane {
    dir: PathBuf,
    /// What serves.
    pub edge: Arc<Edge>,
    http: Mutex<Option<Listening>>,
    https: Mutex<Option<Listening>>,
    certs: Arc<arc_swap::ArcSwap<Certs>>,
    applying: tokio::sync::Mutex<()>,
}

/// Hands the current certificates to each handshake.
#[derive(Debug)]
struct Swapped(Arc<arc_swap::ArcSwap<Certs>>);

impl rustls::server::ResolvesServerCert for Swapped {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.load().resolve(hello)
    }
}

impl Plane {
    /// A plane serving from `dir` (its cache in `dir/cache`).
    pub fn new(dir: &Path) -> std::io::Result<Arc<Plane>> {
        let cache = Cache::open(Some(&dir.join("cache")), DEFAULT_BOUNDS)?;
        let edge = Edge::new(cache);
        edge.log_to(crate::edge::AccessLog::open(&dir.join("logs"))?);
        Ok(Arc::new(Plane {
            dir: dir.to_path_buf(),
            edge,
            http: Mutex::new(None),
            https: Mutex::new(None),
            certs: Arc::new(arc_swap::ArcSwap::from_pointee(Certs::default())),
            applying: tokio::sync::Mutex::new(()),
        }))
    }

    /// Reads the configuration file and serves it.
    pub async fn reload(&self) -> Applied {
        let cfg = std::fs::read(self.dir.join(CONFIG))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<PlaneConfig>(&b).map_err(|e| e.to_string()));
        match cfg {
            Ok(cfg) => self.apply(&cfg).await,
            Err(e) => Applied {
                failures: vec![(CONFIG.into(), e)],
                http: addr_of(&self.http),
                https: addr_of(&self.https),
            },
        }
    }

    /// Serves `cfg`: distributions and certificates at once, listeners rebound only when
    /// their address changed.
    pub async fn apply(&self, cfg: &PlaneConfig) -> Applied {
        let _g = self.applying.lock().await;
        let mut failures = vec![];
        self.edge.load(cfg);
        let mut certs = Certs::default();
        for d in &cfg.distributions {
            let Some((chain, key)) = &d.tls else {
                continue;
            };
            match certified(chain, key) {
                Ok(c) => {
                    for name in std::iter::once(&d.domain).chain(&d.aliases) {
                        certs.by_name.insert(name.to_ascii_lowercase(), c.clone());
                    }
                }
                Err(e) => failures.push((format!("certificate of {}", d.id), e)),
            }
        }
        self.certs.store(Arc::new(certs));
        for (slot, want, tls) in [
            (&self.http, cfg.http, false),
            (&self.https, cfg.https, true),
        ] {
            let current = addr_of(slot);
            let same = match (current, want) {
                (Some(c), Some(w)) => c == w || (w.port() == 0 && c.ip() == w.ip()),
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some(addr) = want else {
                continue;
            };
            match self.listen(addr, tls) {
                Ok(l) => {
                    tracing::info!(addr = %l.addr, tls, "CDN listening");
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                }
                Err(e) => failures.push((format!("listener {addr}"), e.to_string())),
            }
        }
        for (what, e) in &failures {
            tracing::warn!(%what, error = %e, "cannot serve");
        }
        Applied {
            failures,
            http: addr_of(&self.http),
            https: addr_of(&self.https),
        }
    }

    fn listen(&self, addr: SocketAddr, tls: bool) -> std::io::Result<Listening> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        // A newer build binds beside this one and takes over.
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(s.into())?;
        let bound = l.local_addr()?;
        let edge = self.edge.clone();
        let limits = veeps_http::Limits::default();
        let make = move |peer: SocketAddr| {
            let edge = edge.clone();
            hyper::service::service_fn(move |req| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(edge.handle(req, tls, peer).await) }
            })
        };
        let task = if tls {
            let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Swapped(self.certs.clone())));
            sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio::spawn(veeps_http::serve_tls(
                l,
                "cdn-https",
                limits,
                Arc::new(sc),
                make,
            ))
        } else {
            tokio::spawn(veeps_http::serve(l, "cdn", limits, make))
        };
        Ok(Listening { addr: bound, task })
    }

    /// Counters, by metric name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .edge
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let u = self.edge.cache.usage();
        out.insert("cdn_cached_objects".into(), u.objects);
        out.insert("cdn_cache_memory_bytes".into(), u.memory_bytes);
        out.insert("cdn_cache_disk_bytes".into(), u.disk_bytes);
        out.insert("cdn_evictions_total".into(), u.evictions);
        out
    }
}

fn addr_of(slot: &Mutex<Option<Listening>>) -> Option<SocketAddr> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|l| l.addr)
}

/// `veeps cdn-plane DIR [--takeover]`: runs the edge until told to stop.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    veeps_sys::plane::main(
        args,
        "cdn-plane",
        "veeps cdn-plane DIR [--takeover] (started by veeps)",
        2,
        run,
    )
}

async fn run(dir: PathBuf, takeover: bool) -> i32 {
    let plane = match Plane::new(&dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the cache");
            return 1;
        }
    };
    let applied = plane.reload().await;
    if takeover {
        veeps_sys::plane::retire_previous(&dir).await;
    }
    tracing::info!(http = ?applied.http, https = ?applied.https, "CDN data plane serving");
    let served = veeps_sys::plane::serve_json(&dir, CONFIG, "CDN data plane", move |req, stop| {
        let plane = plane.clone();
        async move { control(&plane, req, stop).await }
    })
    .await;
    match served {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the control socket");
            1
        }
    }
}

async fn control(plane: &Plane, req: Request, stop: veeps_sys::plane::Stop) -> serde_json::Value {
    let json = |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or_default();
    match req {
        Request::Hello => veeps_sys::plane::hello(),
        Request::Apply => json(serde_json::to_value(plane.reload().await)),
        Request::Stats => json(serde_json::to_value(plane.stats())),
        Request::Invalidate { dist, paths } => {
            let objects = plane.edge.cache.invalidate(&dist, &paths);
            tracing::info!(%dist, ?paths, objects, "invalidated");
            json(serde_json::to_value(Invalidated { objects }))
        }
        Request::Stop => {
            let _ = stop.send(true);
            serde_json::json!({})
        }
    }
}
