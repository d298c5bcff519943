//! The DNS data plane as a process of its own (`veeps dns-plane DIR`), apart from the
//! control plane: it answers from the last configuration it was given (`DIR/config.json`:
//! zones, records, what aliases point at, health checks, where to listen) whether or not
//! the control plane runs, and keeps probing the health checks that its routing follows.
//! The control plane talks to it over `DIR/control.sock` (one JSON request and one JSON
//! reply per connection): apply the configuration file again, counters, health, stop.
//!
//! Every socket is bound with `SO_REUSEPORT`, so that a newer build starts beside the
//! running one, binds the same addresses, takes over its checks' statuses and then stops
//! it: an upgrade refuses no query.

use crate::health::Status;
use crate::model::CheckSpec;
use crate::server::{self, Answers, Server};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The configuration file in a plane's directory.
pub const CONFIG: &str = "config.json";

/// Everything the plane serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaneConfig {
    /// The public listener (UDP and TCP), if any.
    pub public: Option<SocketAddr>,
    /// A resolver per VPC.
    pub resolvers: Vec<ResolverSpec>,
    /// Health checks to probe.
    pub checks: Vec<CheckSpec>,
    /// What it answers.
    pub answers: Answers,
}

/// A VPC's resolver: an address inside the VPC's router namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverSpec {
    /// The VPC.
    pub vpc_id: String,
    /// Its router namespace.
    pub netns: String,
    /// The VPC's base address + 2 (already on the namespace's loopback).
    pub addr: Ipv4Addr,
    /// The namespace's identity (its inode): one made again under the same name is
    /// another namespace, and its resolver is bound anew there.
    #[serde(default)]
    pub ns_id: u64,
}

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
    /// Every health check's status.
    Health,
    /// Stop serving and exit.
    Stop,
}

/// The reply to `Apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// What could not be served (a zone, the public listener, a VPC's resolver) and why.
    pub failures: Vec<(String, String)>,
    /// Where the public listener listens.
    pub public: Option<SocketAddr>,
}

/// Tasks serving one address.
struct Listening {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The public listener's UDP threads.
    _threads: Option<server::UdpThreads>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `count` UDP sockets and one TCP listener on `addr`, each with `SO_REUSEPORT` (the
/// kernel spreads clients over the UDP sockets, each served by a loop of its own).
pub fn bind_reuse(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<(Vec<std::net::UdpSocket>, std::net::TcpListener)> {
    let one = |at: SocketAddr, t: socket2::Type, p: socket2::Protocol| {
        let s = socket2::Socket::new(socket2::Domain::for_address(at), t, Some(p))?;
        s.set_reuse_port(true)?;
        if t == socket2::Type::STREAM {
            s.set_reuse_address(true)?;
        }
        s.bind(&at.into())?;
        s.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(s)
    };
    let first = one(addr, socket2::Type::DGRAM, socket2::Protocol::UDP)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    let mut udp: Vec<std::net::UdpSocket> = vec![first.into()];
    for _ in 1..count.max(1) {
        udp.push(one(bound, socket2::Type::DGRAM, socket2::Protocol::UDP)?.into());
    }
    let tcp = one(bound, socket2::Type::STREAM, socket2::Protocol::TCP)?;
    tcp.listen(1024)?;
    Ok((udp, tcp.into()))
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}

/// What could not be served, and why.
type Failures = Vec<(String, String)>;

/// The data plane's state.
pub struct Plane {
    dir: PathBuf,
    /// What answers.
    pub server: Arc<Server>,
    public: Mutex<Option<Listening>>,
    resolvers: Mutex<HashMap<String, (ResolverSpec, Listening)>>,
    applying: tokio::sync::Mutex<()>,
    /// The answers last loaded (the control plane pushes every second; the same answers
    /// again keep the answers already computed from them).
    loaded: Mutex<Option<(Answers, Failures)>>,
}

impl Plane {
    /// A plane serving from `dir`.
    pub fn new(dir: &Path) -> Arc<Plane> {
        Arc::new(Plane {
            dir: dir.to_path_buf(),
            server: Server::new(),
            public: Mutex::new(None),
            resolvers: Mutex::new(HashMap::new()),
            applying: tokio::sync::Mutex::new(()),
            loaded: Mutex::new(None),
        })
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
                public: self.public_addr(),
            },
        }
    }

    fn public_addr(&self) -> Option<SocketAddr> {
        self.public
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.addr)
    }

    /// Serves `cfg`: new answers at once, listeners opened and closed as it says (those
    /// that stay are not touched).
    pub async fn apply(&self, cfg: &PlaneConfig) -> Applied {
        let _g = self.applying.lock().await;
        let mut failures: Vec<(String, String)> = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            match &*loaded {
                // Unchanged: what failed to load before fails again, and is said again.
                Some((a, failed)) if *a == cfg.answers => failed.clone(),
                _ => {
                    let failed: Vec<(String, String)> = self
                        .server
                        .load(&cfg.answers)
                        .into_iter()
                        .map(|(z, e)| (format!("zone {z}"), e))
                        .collect();
                    *loaded = Some((cfg.answers.clone(), failed.clone()));
                    failed
                }
            }
        };
        self.server.health.sync(&cfg.checks);
        // The public listener, rebound only when its address changed.
        let current = self.public_addr();
        let same = match (current, cfg.public) {
            (Some(c), Some(w)) => c == w || (w.port() == 0 && c.ip() == w.ip()),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.public.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(addr) = cfg.public {
                match self.listen(addr, None, cores()) {
                    Ok(l) => {
                        tracing::info!(addr = %l.addr, "DNS listening");
                        *self.public.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                    }
                    Err(e) => failures.push((format!("public listener {addr}"), e.to_string())),
                }
            }
        }
        // A resolver per VPC.
        let mut running =
            std::mem::take(&mut *self.resolvers.lock().unwrap_or_else(|p| p.into_inner()));
        running.retain(|id, (spec, _)| cfg.resolvers.iter().any(|r| &r.vpc_id == id && r == spec));
        for r in &cfg.resolvers {
            if running.contains_key(&r.vpc_id) {
                continue;
            }
            let addr = SocketAddr::from((r.addr, 53));
            let ns = r.netns.clone();
            let bound =
                veeps_sys::netns::in_netns(&ns, move || bind_reuse(addr, 1)).and_then(|b| b);
            let started =
                bound.and_then(|(udp, tcp)| self.serve(addr, udp, tcp, Some(r.vpc_id.clone())));
            match started {
                Ok(l) => {
                    tracing::info!(vpc = %r.vpc_id, %addr, "VPC resolver listening");
                    running.insert(r.vpc_id.clone(), (r.clone(), l));
                }
                Err(e) => failures.push((format!("resolver of {}", r.vpc_id), e.to_string())),
            }
        }
        *self.resolvers.lock().unwrap_or_else(|p| p.into_inner()) = running;
        for (what, e) in &failures {
            tracing::warn!(%what, error = %e, "cannot serve");
        }
        Applied {
            failures,
            public: self.public_addr(),
        }
    }

    fn listen(
        &self,
        addr: SocketAddr,
        vpc: Option<String>,
        count: usize,
    ) -> std::io::Result<Listening> {
        let (udp, tcp) = bind_reuse(addr, count)?;
        // With VEEPS_DNS_STEER=cpu a query is answered on the CPU that took it in (see
        // `steer_by_cpu`); by default the kernel's hash spreads them, which measured the
        // same on this machine's 2 CPUs (bench/dns.sh, 2026-12-01).
        if std::env::var("VEEPS_DNS_STEER").as_deref() == Ok("cpu") {
            if let Err(e) = veeps_sys::mmsg::steer_by_cpu(&udp[0]) {
                tracing::warn!(error = %e, "could not steer DNS queries by CPU");
            }
        }
        self.serve(addr, udp, tcp, vpc)
    }

    fn serve(
        &self,
        addr: SocketAddr,
        udp: Vec<std::net::UdpSocket>,
        tcp: std::net::TcpListener,
        vpc: Option<String>,
    ) -> std::io::Result<Listening> {
        let bound = tcp.local_addr().unwrap_or(addr);
        let mut tasks = vec![];
        let mut threads = None;
        if vpc.is_none() {
            threads = Some(server::serve_udp_threads(self.server.clone(), udp)?);
        } else {
            // A VPC's resolver relays other names upstream: it waits, so it runs on the
            // runtime.
            for u in udp {
                let u = Arc::new(tokio::net::UdpSocket::from_std(u)?);
                tasks.extend(server::serve_udp(self.server.clone(), u, vpc.clone(), 1));
            }
        }
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        tasks.push(server::serve_tcp(self.server.clone(), tcp, vpc));
        Ok(Listening {
            addr: bound,
            tasks,
            _threads: threads,
        })
    }

    /// Every check's status.
    pub fn health(&self) -> Vec<(String, Status)> {
        self.server
            .health
            .list()
            .into_iter()
            .map(|(c, s)| (c.id, s))
            .collect()
    }

    /// Counters.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.server.stats.snapshot()
    }
}

/// `veeps dns-plane DIR [--takeover]`: runs the DNS data plane until told to stop.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    veeps_sys::plane::main(
        args,
        "dns-plane",
        "veeps dns-plane DIR [--takeover] (started by veeps)",
        2,
        run,
    )
}

async fn run(dir: PathBuf, takeover: bool) -> i32 {
    let plane = Plane::new(&dir);
    // Taking over: what the running plane knows of its checks.
    let seed: Vec<(String, Status)> = if takeover {
        veeps_sys::plane::ask_json(&dir, &Request::Health, Duration::from_secs(5))
            .await
            .unwrap_or_default()
    } else {
        vec![]
    };
    let applied = plane.reload().await;
    plane.server.health.seed(&seed);
    plane.server.health.run();
    if takeover {
        veeps_sys::plane::retire_previous(&dir).await;
    }
    tracing::info!(public = ?applied.public, "DNS data plane serving");
    let served = veeps_sys::plane::serve_json(&dir, CONFIG, "DNS data plane", move |req, stop| {
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
        Request::Health => json(serde_json::to_value(plane.health())),
        Request::Stop => {
            let _ = stop.send(true);
            serde_json::json!({})
        }
    }
}
