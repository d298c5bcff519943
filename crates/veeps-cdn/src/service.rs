//! The CDN's control plane: distributions kept in the store, compiled into the edge's
//! configuration (origins resolved, certificates read), pushed to the data plane on every
//! change and every second (so a renewed certificate reaches the listeners), and the data
//! plane adopted, started or replaced as the DNS and balancer planes are.

use crate::cache::Bounds;
use crate::model::{DistSpec, Distribution, Origin, PlaneConfig};
use crate::plane::{self, Applied, Invalidated, Request};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veeps_state::Store;

const K_DIST: &str = "cdn/dist/";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such distribution.
    #[error("{0}")]
    NotFound(String),
    /// The store.
    #[error("state store: {0}")]
    Store(String),
    /// The data plane or the disk.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn plane_err(e: impl std::fmt::Display) -> CdnError {
    CdnError::Io(std::io::Error::other(format!("the CDN data plane: {e}")))
}

/// Where the edge listens and how much it keeps.
#[derive(Debug, Clone, Default)]
pub struct CdnOptions {
    /// Plain HTTP.
    pub http: Option<SocketAddr>,
    /// HTTPS.
    pub https: Option<SocketAddr>,
    /// The cache's bounds (the plane's defaults when `None`).
    pub bounds: Option<Bounds>,
    /// The bucket websites' listener (origins named `*.s3-website.localhost` go there).
    pub website: Option<SocketAddr>,
    /// A CA trusted for HTTPS origins beside the system's (veeps' own, PEM).
    pub origin_ca: Option<String>,
}

/// The CDN service of one server.
pub struct Cdn {
    store: Arc<Store>,
    certs: Option<Arc<veeps_pki::Certs>>,
    opts: CdnOptions,
    dir: Option<PathBuf>,
    exe: PathBuf,
    bound: Mutex<(Option<SocketAddr>, Option<SocketAddr>)>,
    applied: Mutex<Option<PlaneConfig>>,
    adopted: AtomicBool,
    pushing: tokio::sync::Mutex<()>,
    /// One change at a time (checks against the others, then the write).
    change: tokio::sync::Mutex<()>,
    /// Where the edge's access logs go, and the distributions whose spools it reads.
    obs: Option<Arc<veeps_obs::Obs>>,
    followed: Mutex<std::collections::BTreeSet<String>>,
}

impl Cdn {
    /// The service; `dir` is where the data plane keeps its files (none: no data plane).
    pub fn new(
        store: Arc<Store>,
        certs: Option<Arc<veeps_pki::Certs>>,
        obs: Option<Arc<veeps_obs::Obs>>,
        opts: CdnOptions,
        dir: Option<PathBuf>,
    ) -> Arc<Cdn> {
        Arc::new(Cdn {
            store,
            certs,
            opts,
            dir,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            bound: Mutex::new((None, None)),
            applied: Mutex::new(None),
            adopted: AtomicBool::new(false),
            pushing: tokio::sync::Mutex::new(()),
            change: tokio::sync::Mutex::new(()),
            obs,
            followed: Mutex::new(Default::default()),
        })
    }

    /// Checks that the edge can listen at `addr`: free, or held by this data directory's
    /// own data plane. The address to listen at.
    pub fn check_listen(addr: &str, dir: &Path, tls: bool) -> std::io::Result<SocketAddr> {
        let at: SocketAddr = addr.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
        })?;
        let ours = veeps_sys::plane::running(dir).is_some()
            && read_config(dir).is_some_and(|c| if tls { c.https } else { c.http } == Some(at));
        if ours {
            return Ok(at);
        }
        let l = std::net::TcpListener::bind(at)?;
        l.local_addr()
    }

    /// Where the edge listens (HTTP, HTTPS), once its data plane does.
    pub fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every distribution.
    pub fn list(&self) -> Vec<DistSpec> {
        self.store
            .kv_scan::<DistSpec>(K_DIST)
            .map(|v| v.into_iter().map(|(_, d)| d).collect())
            .unwrap_or_default()
    }

    /// A distribution.
    pub fn get(&self, id: &str) -> Option<DistSpec> {
        self.store.kv_get(&format!("{K_DIST}{id}")).ok().flatten()
    }

    /// Checks `d` (behaviours name its origins, origins resolve, names are free) and
    /// serves it.
    pub async fn put(&self, d: DistSpec) -> Result<(), CdnError> {
        let _g = self.change.lock().await;
        if d.dist.behaviors.is_empty() {
            return Err(CdnError::Invalid(
                "a distribution needs a default_cache_behavior".into(),
            ));
        }
        for b in &d.dist.behaviors {
            if !d.origins.iter().any(|o| o.id == b.origin) {
                return Err(CdnError::Invalid(format!(
                    "target_origin_id \"{}\" names no origin of the distribution (it has: {})",
                    b.origin,
                    d.origins
                        .iter()
                        .map(|o| o.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        for o in &d.origins {
            self.resolve(o).await.map_err(CdnError::Invalid)?;
        }
        if let Some(c) = &d.certificate {
            if self.certs.as_ref().and_then(|cs| cs.get(c)).is_none() {
                return Err(CdnError::Invalid(format!(
                    "certificate \"{c}\" does not exist"
                )));
            }
        }
        for other in self.list() {
            if other.dist.id == d.dist.id {
                continue;
            }
            for a in &d.dist.aliases {
                if other.dist.aliases.iter().any(|b| b.eq_ignore_ascii_case(a)) {
                    return Err(CdnError::Invalid(format!(
                        "the alias {a} belongs to distribution {} already",
                        other.dist.id
                    )));
                }
            }
        }
        self.store
            .kv_put(&format!("{K_DIST}{}", d.dist.id), &d)
            .map_err(|e| CdnError::Store(e.to_string()))?;
        if self.adopted.load(Ordering::SeqCst) {
            self.push().await
        } else {
            self.ensure_plane().await
        }
    }

    /// Stops serving a distribution (its cached objects go).
    pub async fn delete(&self, id: &str) -> Result<(), CdnError> {
        let _g = self.change.lock().await;
        self.store
            .kv_delete(&format!("{K_DIST}{id}"))
            .map_err(|e| CdnError::Store(e.to_string()))?;
        self.push().await
    }

    /// Forgets the objects of distribution `id` under `paths` at the edge; how many.
    pub async fn invalidate(&self, id: &str, paths: &[String]) -> Result<usize, CdnError> {
        if self.get(id).is_none() {
            return Err(CdnError::NotFound(format!("no distribution {id}")));
        }
        if paths.is_empty() || paths.len() > 3000 {
            return Err(CdnError::Invalid("give between 1 and 3,000 paths".into()));
        }
        for p in paths {
            if !p.starts_with('/') || p[..p.len() - 1].contains('*') {
                return Err(CdnError::Invalid(format!(
                    "\"{p}\": a path starts with / and may end with * (and have no other)"
                )));
            }
        }
        let Some(dir) = &self.dir else {
            return Ok(0);
        };
        let r: Invalidated = ask(
            dir,
            &Request::Invalidate {
                dist: id.to_string(),
                paths: paths.to_vec(),
            },
        )
        .await?;
        Ok(r.objects)
    }

    /// An origin's address. A name is looked up on tokio's blocking threads, never on the
    /// runtime's workers (this runs every second).
    async fn resolve(&self, o: &crate::model::OriginSpec) -> Result<SocketAddr, String> {
        let name = o.domain_name.trim().trim_end_matches('/');
        let name = name
            .strip_prefix("http://")
            .or_else(|| name.strip_prefix("https://"))
            .unwrap_or(name);
        let port = if o.protocol_policy == "https-only" {
            o.https_port
        } else {
            o.http_port
        };
        if name.ends_with(".s3-website.localhost") || name == "s3-website.localhost" {
            return self.opts.website.ok_or_else(|| {
                format!("origin {}: bucket websites are not served (start the server with --s3-website-listen)", o.id)
            });
        }
        if let Ok(a) = name.parse::<SocketAddr>() {
            return Ok(a);
        }
        if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let with_port = if name
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            name.to_string()
        } else {
            format!("{name}:{port}")
        };
        tokio::net::lookup_host(with_port)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("origin {}: cannot resolve {name}", o.id))
    }

    /// What the data plane should serve now.
    async fn config(&self) -> PlaneConfig {
        let mut dists = vec![];
        for d in self.list() {
            let mut dist: Distribution = d.dist.clone();
            let mut resolved = Vec::with_capacity(d.origins.len());
            for o in &d.origins {
                resolved.push((o, self.resolve(o).await));
            }
            dist.origins = resolved
                .into_iter()
                .filter_map(|(o, r)| match r {
                    Ok(addr) => Some(Origin {
                        id: o.id.clone(),
                        addr,
                        host: if o.protocol_policy == "https-only" {
                            origin_host(&o.domain_name, o.https_port)
                        } else {
                            o.domain_name.trim_start_matches("http://").to_string()
                        },
                        path: o.origin_path.clone(),
                        https: o.protocol_policy == "https-only",
                    }),
                    Err(e) => {
                        tracing::warn!(dist = %d.dist.id, error = %e, "CDN origin");
                        None
                    }
                })
                .collect();
            dist.tls = d
                .certificate
                .as_ref()
                .and_then(|c| self.certs.as_ref()?.get(c))
                .map(|i| (i.chain_pem, i.key_pem));
            dists.push(dist);
        }
        PlaneConfig {
            http: self.opts.http,
            https: self.opts.https,
            bounds: self.opts.bounds,
            origin_ca: self.opts.origin_ca.clone(),
            distributions: dists,
        }
    }

    /// Sends the current configuration to the data plane when it changed.
    async fn push(&self) -> Result<(), CdnError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if !self.adopted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _g = self.pushing.lock().await;
        let cfg = self.config().await;
        if self
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            == Some(&cfg)
        {
            return Ok(());
        }
        write_config(dir, &cfg)?;
        let a: Applied = ask(dir, &Request::Apply).await?;
        for (what, e) in &a.failures {
            tracing::warn!(%what, error = %e, "the CDN data plane cannot serve");
        }
        *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = (a.http, a.https);
        self.follow_logs(dir, &cfg);
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
        Ok(())
    }

    /// Reads each distribution's access log spool into the log store (group `cdn-ID` of
    /// its environment), from where the last reader stopped.
    fn follow_logs(&self, dir: &Path, cfg: &PlaneConfig) {
        let Some(obs) = &self.obs else {
            return;
        };
        let mut followed = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        for d in &cfg.distributions {
            if followed.contains(&d.id) {
                continue;
            }
            let spool = dir.join("logs").join(&d.id);
            if let Err(e) = std::fs::create_dir_all(&spool) {
                tracing::warn!(dist = %d.id, error = %e, "CDN access log");
                continue;
            }
            obs.follow(
                &format!("cdn/{}", d.id),
                &spool,
                &d.env,
                &format!("cdn-{}", d.id.to_ascii_lowercase()),
                "cdn",
            );
            followed.insert(d.id.clone());
        }
        followed.retain(|id| {
            let keep = cfg.distributions.iter().any(|d| &d.id == id);
            if !keep {
                obs.unfollow(&format!("cdn/{id}"));
            }
            keep
        });
    }

    /// Makes sure the data plane runs and serves the store: the one running is adopted
    /// (replaced beside it when it runs another build), else one is started.
    pub async fn ensure_plane(&self) -> Result<(), CdnError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        // No distribution, no edge: a server that never declares one starts no process.
        if self.list().is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let cfg = self.config().await;
        write_config(dir, &cfg)?;
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        veeps_sys::plane::adopt_or_start(&self.exe, "cdn-plane", dir, "the CDN data plane")
            .await
            .map_err(plane_err)?;
        self.adopted.store(true, Ordering::SeqCst);
        self.push().await
    }

    /// Keeps the data plane running and in step (a renewed certificate, a plane that
    /// died).
    pub fn run(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                let Some(dir) = me.dir.clone() else { break };
                let adopted = me.adopted.load(Ordering::SeqCst);
                if !adopted || veeps_sys::plane::running(&dir).is_none() {
                    if adopted {
                        tracing::warn!("the CDN data plane is gone; starting it again");
                    }
                    if let Err(e) = me.ensure_plane().await {
                        tracing::error!(error = %e, "CDN data plane");
                    }
                    continue;
                }
                if let Err(e) = me.push().await {
                    tracing::warn!(error = %e, "CDN");
                }
            }
        })
    }

    /// The control plane stops; with `everything`, the data plane stops too.
    pub async fn stop(&self, everything: bool) {
        let Some(dir) = &self.dir else { return };
        if everything {
            veeps_sys::plane::stop_dir(dir).await;
        }
    }

    /// The data plane's counters, by metric name (empty when it does not answer).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let Some(dir) = &self.dir else {
            return BTreeMap::new();
        };
        veeps_sys::plane::ask_json_blocking(dir, &Request::Stats, Duration::from_secs(5))
            .unwrap_or_default()
    }
}

/// `HOST:PORT` of an HTTPS origin (`domain_name` may name its port, or a scheme).
fn origin_host(domain_name: &str, https_port: u16) -> String {
    let name = domain_name
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if name
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        name.to_string()
    } else {
        format!("{name}:{https_port}")
    }
}

fn read_config(dir: &Path) -> Option<PlaneConfig> {
    serde_json::from_slice(&std::fs::read(dir.join(plane::CONFIG)).ok()?).ok()
}

fn write_config(dir: &Path, cfg: &PlaneConfig) -> Result<(), CdnError> {
    let body = serde_json::to_vec(cfg).map_err(|e| CdnError::Invalid(e.to_string()))?;
    Ok(veeps_sys::plane::write_private(
        &dir.join(plane::CONFIG),
        &body,
    )?)
}

async fn ask<T: serde::de::DeserializeOwned>(dir: &Path, req: &Request) -> Result<T, CdnError> {
    veeps_sys::plane::ask_json(dir, req, Duration::from_secs(10))
        .await
        .map_err(plane_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(domain_name: &str) -> crate::model::OriginSpec {
        crate::model::OriginSpec {
            id: "o".into(),
            domain_name: domain_name.into(),
            http_port: 8080,
            https_port: 8443,
            protocol_policy: "http-only".into(),
            origin_path: String::new(),
        }
    }

    /// Origins by address, by name (looked up off the runtime's workers, here a runtime of
    /// one thread) and with a port of their own; a name that does not resolve is refused.
    #[tokio::test(flavor = "current_thread")]
    async fn origins_resolve_by_address_and_by_name() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("state.redb")).unwrap());
        let cdn = Cdn::new(store, None, None, CdnOptions::default(), None);
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(
            cdn.resolve(&origin("10.0.0.5")).await,
            Ok(at("10.0.0.5:8080"))
        );
        for (name, port) in [("http://localhost:9000/", 9000), ("localhost", 8080)] {
            let a = cdn.resolve(&origin(name)).await.unwrap();
            assert!(a.ip().is_loopback() && a.port() == port, "{name}: {a}");
        }
        let e = cdn.resolve(&origin("no-such-host.invalid")).await;
        assert!(e.is_err_and(|e| e.contains("cannot resolve")));
    }
}
