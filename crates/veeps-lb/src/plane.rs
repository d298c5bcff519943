//! A balancer's data plane as a process of its own (`veeps lb-plane DIR`), apart from the
//! control plane: it serves from the last configuration it was given
//! (`DIR/config.json`) whether or not the control plane runs, keeps checking its targets'
//! health, spools its access logs, and counts. The control plane talks to it over
//! `DIR/control.sock` (one JSON request and one JSON reply per connection): apply the
//! configuration file again, health, counters, drain a target, stop, and hand its
//! listening sockets to a newer process (an upgrade that drops no connection, as
//! HAProxy's and Envoy's hot restarts do).
//!
//! Inside, one worker thread per core, each a single-threaded runtime living in the
//! balancer's network namespace with its own SO_REUSEPORT socket per listener (as nginx's
//! workers); the process's main runtime, in the host's namespace, serves the control socket
//! and a listener's host port.

use crate::auth::{Gate, Guard};
use crate::model::{Action, LbSpec, ListenerSpec, Protocol, RuleSpec, TgSpec};
use crate::proxy::{self, Compiled, ListenerRt, Snapshot, SniCerts, Stats};
use crate::targets::TgState;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The configuration file in a plane's directory.
pub const CONFIG: &str = "config.json";
/// The control socket in a plane's directory.
pub const SOCKET: &str = veeps_sys::plane::SOCKET;
/// Bytes of access log kept while the control plane is away.
pub const SPOOL_LIMIT: u64 = 32 * 1024 * 1024;

/// Everything one balancer serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaneConfig {
    /// The balancer.
    pub lb: LbSpec,
    /// Its address in its namespace.
    pub address: Ipv4Addr,
    /// Its network namespace (empty: the host's, without isolation).
    pub netns: String,
    /// The CA targets' certificates are checked against.
    pub ca_pem: String,
    /// Its listeners.
    pub listeners: Vec<PlaneListener>,
    /// The target groups its listeners forward to, with their targets.
    pub groups: Vec<PlaneGroup>,
    /// ACME HTTP-01 answers served on its plain-HTTP listeners: token to key authorization.
    #[serde(default)]
    pub challenges: std::collections::BTreeMap<String, String>,
    /// Where functions are invoked (`lambda` target groups): veeps' local invoke socket.
    #[serde(default)]
    pub functions_socket: Option<std::path::PathBuf>,
}

/// A listener, its rules (in priority order) and certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaneListener {
    /// As declared.
    pub spec: ListenerSpec,
    /// Its rules, by priority.
    pub rules: Vec<RuleSpec>,
    /// Its certificates (the first is the default).
    pub certs: Vec<PlaneCert>,
}

/// A certificate and its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaneCert {
    /// Names it serves.
    pub names: Vec<String>,
    /// PEM chain.
    pub chain_pem: String,
    /// PEM key.
    pub key_pem: String,
}

/// A target group and its registered targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaneGroup {
    /// As declared.
    pub spec: TgSpec,
    /// Where its targets listen.
    pub targets: Vec<SocketAddr>,
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who are you.
    Hello,
    /// Read `config.json` again and apply it.
    Apply,
    /// Targets' health by group.
    Health,
    /// Counters (latency and per-target request counts since the last call).
    Stats,
    /// Drain the targets at `ip` in `groups`; answers when done.
    Drain {
        /// Target group ids.
        groups: Vec<String>,
        /// The target's address.
        ip: IpAddr,
    },
    /// The addresses that failed to authenticate since the last call, with how many
    /// times; starts over.
    AuthFailures,
    /// Refuse connections from these address groups (replacing the previous list).
    Banned {
        /// Addresses and IPv6 /64s.
        groups: Vec<ipnet::IpNet>,
    },
    /// Stop serving and exit.
    Stop,
    /// Send the listening sockets (with the reply, as SCM_RIGHTS), stop accepting, finish
    /// the connections in progress and exit.
    Handoff,
}

/// The reply to `Hello`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hello {
    /// Its pid.
    pub pid: u32,
    /// The build of veeps it runs ([`build_id`]).
    pub version: String,
}

/// Names the program this process runs: [`veeps_sys::plane::build_id`].
pub fn build_id() -> String {
    veeps_sys::plane::build_id()
}

/// The reply to `Apply`: the listeners that could not bind (each left out).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    /// `(listener id, why)`.
    pub failures: Vec<(String, String)>,
}

/// One target group's targets, as this balancer sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupHealth {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Requests sent to it so far.
    pub requests_total: u64,
    /// Its targets.
    pub targets: Vec<TargetHealth>,
}

/// One target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetHealth {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `healthy`, `unhealthy` or `draining`.
    pub state: String,
    /// Requests it serves now.
    pub in_flight: usize,
}

/// Counters of a balancer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsView {
    /// Requests.
    pub requests: u64,
    /// By status class (index 2 is 2xx...).
    pub status: [u64; 6],
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Open connections.
    pub connections: u64,
    /// Requests retried on another target.
    pub retries: u64,
    /// Target response time percentiles since the last call.
    pub latency: Vec<(String, f64)>,
    /// Per target group: `(id, name, requests since the last call, usable targets,
    /// healthy, unhealthy)`.
    pub groups: Vec<(String, String, u64, usize, usize, usize)>,
}

struct Listening {
    spec: ListenerSpec,
    snap: Arc<ArcSwap<Snapshot>>,
    sni: Arc<SniCerts>,
    tasks: Vec<tokio::task::AbortHandle>,
    /// The workers' listening sockets (dups), for a handoff.
    sockets: Vec<OwnedFd>,
    /// Its connections by worker.
    spread: Option<Arc<proxy::Spread>>,
}

/// The balancer running in this process.
struct Lb {
    spec: LbSpec,
    address: Ipv4Addr,
    netns: String,
    workers: Workers,
    clients: Vec<proxy::Client>,
    listeners: HashMap<String, Listening>,
    tgs: HashMap<String, Arc<TgState>>,
}

impl Drop for Lb {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            for t in &l.tasks {
                t.abort();
            }
        }
        for tg in self.tgs.values() {
            tg.stop();
        }
        self.workers.rts.clear();
    }
}

/// A balancer's worker threads, one per core, each with a single-threaded runtime and
/// living in the balancer's network namespace (so every socket they open is there). Each
/// accepts on its own SO_REUSEPORT socket and keeps its connections: no cross-thread
/// wakeups, as nginx's workers.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    rts: Vec<veeps_sys::netns::NsRuntime>,
}

impl Workers {
    fn start(ns: &str, name: &str) -> std::io::Result<Workers> {
        let rts = veeps_sys::netns::NsRuntime::start_many(
            &format!("lb-{name}"),
            Some(ns).filter(|n| !n.is_empty()),
            veeps_sys::netns::NsRuntime::per_core(),
        )?;
        let handles = rts.iter().map(|r| r.handle().clone()).collect();
        Ok(Workers { handles, rts })
    }
}

/// Where access log lines go: a thread appends them to the plane's spool, which the
/// control plane reads (from where it stopped) when it runs.
pub struct AccessSink {
    tx: std::sync::mpsc::SyncSender<(i64, String, String)>,
    /// Lines dropped because the writer fell behind.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl AccessSink {
    fn open(dir: &Path) -> std::io::Result<Arc<AccessSink>> {
        let mut w = veeps_obs::spool::SpoolWriter::open(dir, SPOOL_LIMIT)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(i64, String, String)>(64 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                while let Ok((ts, stream, text)) = rx.recv() {
                    let _ = w.append(ts, &stream, &text);
                    // Lines that come meanwhile join this one's write: a busy balancer
                    // wakes this thread a few times a second, not once a request.
                    std::thread::sleep(veeps_obs::spool::GATHER);
                    while let Ok((ts, stream, text)) = rx.try_recv() {
                        let _ = w.append(ts, &stream, &text);
                    }
                    let _ = w.flush();
                }
            })?;
        Ok(Arc::new(AccessSink {
            tx,
            dropped: 0.into(),
        }))
    }

    /// Queues one line; `source` becomes the log line's source (`listener-443`).
    pub fn log(&self, source: &str, text: String) {
        let stream = format!("{source}/access");
        if self
            .tx
            .try_send((veeps_sys::now_ms(), stream, text))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The data plane of one balancer.
pub struct Plane {
    dir: PathBuf,
    lb: Mutex<Option<Lb>>,
    stats: Arc<Stats>,
    access: Option<Arc<AccessSink>>,
    /// Handed off: no new binds.
    retired: std::sync::atomic::AtomicBool,
    /// Tells connections to finish and close (after a handoff).
    drain: tokio::sync::watch::Sender<bool>,
    /// The same, for the request path.
    draining_now: Arc<std::sync::atomic::AtomicBool>,
    /// Sockets received from the previous process, by address, taken as listeners bind.
    inherited: Mutex<HashMap<SocketAddr, Vec<OwnedFd>>>,
    /// Targets the previous process found healthy, by group (used by the first apply, so
    /// a takeover serves at once rather than after a health check).
    seed: Mutex<HashMap<String, Vec<SocketAddr>>>,
    /// veeps' local invoke socket (from the configuration), for `lambda` target groups.
    functions: Mutex<Option<PathBuf>>,
    /// Failed authentications and bans.
    gate: Arc<Gate>,
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

impl Plane {
    /// A plane over `dir` (its configuration, socket and spool).
    pub fn new(dir: &Path) -> Arc<Plane> {
        let access = match AccessSink::open(dir) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(error = %e, "access logs cannot be kept");
                None
            }
        };
        Arc::new(Plane {
            dir: dir.to_path_buf(),
            lb: Mutex::new(None),
            stats: Arc::new(Stats::default()),
            access,
            retired: false.into(),
            drain: tokio::sync::watch::channel(false).0,
            draining_now: Arc::default(),
            inherited: Mutex::new(HashMap::new()),
            seed: Mutex::new(HashMap::new()),
            functions: Mutex::new(None),
            gate: Arc::default(),
        })
    }

    /// Reads the configuration file and applies it.
    pub async fn reload(self: &Arc<Self>) -> Applied {
        let cfg: PlaneConfig = match std::fs::read(self.dir.join(CONFIG))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                return Applied {
                    failures: vec![("*".into(), format!("cannot read {CONFIG}: {e}"))],
                }
            }
        };
        self.apply(cfg).await
    }

    /// Applies `cfg`: workers (re)started if the balancer moved, listeners bound or
    /// closed, rules and certificates swapped, target groups and targets updated. A
    /// listener that cannot bind is left out and named in the answer.
    pub async fn apply(self: &Arc<Self>, cfg: PlaneConfig) -> Applied {
        *self.functions.lock().unwrap_or_else(|p| p.into_inner()) = cfg.functions_socket.clone();
        let mut binds = vec![];
        {
            let mut slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
            let moved = slot
                .as_ref()
                .is_none_or(|l| l.address != cfg.address || l.netns != cfg.netns);
            if moved {
                drop(slot.take());
                let workers = match Workers::start(&cfg.netns, &cfg.lb.name) {
                    Ok(w) => w,
                    Err(e) => {
                        return Applied {
                            failures: vec![(
                                "*".into(),
                                format!("a balancer worker could not start in its namespace: {e}"),
                            )],
                        }
                    }
                };
                let idle = Duration::from_secs(cfg.lb.idle_timeout.max(1));
                let clients = workers
                    .handles
                    .iter()
                    .map(|h| {
                        let _e = h.enter();
                        proxy::client(&cfg.ca_pem, idle)
                    })
                    .collect();
                *slot = Some(Lb {
                    spec: cfg.lb.clone(),
                    address: cfg.address,
                    netns: cfg.netns.clone(),
                    workers,
                    clients,
                    listeners: HashMap::new(),
                    tgs: HashMap::new(),
                });
            }
            let Some(lb) = slot.as_mut() else {
                return Applied::default();
            };
            lb.spec = cfg.lb.clone();
            let groups: HashMap<&String, &PlaneGroup> =
                cfg.groups.iter().map(|g| (&g.spec.id, g)).collect();
            lb.tgs.retain(|id, st| {
                let keep = groups.contains_key(id);
                if !keep {
                    st.stop();
                }
                keep
            });
            for g in &cfg.groups {
                match lb.tgs.get(&g.spec.id) {
                    Some(st) => st.spec.store(Arc::new(g.spec.clone())),
                    None => {
                        lb.tgs
                            .insert(g.spec.id.clone(), TgState::new(g.spec.clone()));
                    }
                }
            }
            let compile = |tgs: &HashMap<String, Arc<TgState>>, a: &Action| -> Compiled {
                match a {
                    Action::Forward {
                        groups,
                        stickiness_secs,
                    } => {
                        let gs: Vec<_> = groups
                            .iter()
                            .filter_map(|(g, w)| tgs.get(g).map(|st| (g.clone(), st.clone(), *w)))
                            .collect();
                        let sticky = if *stickiness_secs > 0 {
                            *stickiness_secs
                        } else {
                            gs.first()
                                .map(|g| g.1.spec.load().stickiness_secs)
                                .unwrap_or(0)
                        };
                        Compiled::Forward { groups: gs, sticky }
                    }
                    other => Compiled::Other(other.clone()),
                }
            };
            // Listeners gone or changed in what they bind: close them.
            lb.listeners.retain(|id, l| {
                let keep = cfg.listeners.iter().any(|m| {
                    &m.spec.id == id
                        && m.spec.port == l.spec.port
                        && m.spec.protocol == l.spec.protocol
                        && m.spec.host_port == l.spec.host_port
                });
                if !keep {
                    for t in &l.tasks {
                        t.abort();
                    }
                }
                keep
            });
            for l in &cfg.listeners {
                // Guards whose credentials did not change are kept, with what they judged.
                let old: Vec<Arc<Guard>> = lb
                    .listeners
                    .get(&l.spec.id)
                    .map(|run| {
                        let s = run.snap.load();
                        s.rules
                            .iter()
                            .filter_map(|r| r.3.clone())
                            .chain(s.default_guard.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let guard = |a: &Option<crate::model::BasicAuth>| {
                    a.as_ref().map(|a| {
                        old.iter()
                            .find(|g| g.spec == *a)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(Guard::new(a)))
                    })
                };
                let snap = Snapshot {
                    rules: l
                        .rules
                        .iter()
                        .map(|r| {
                            (
                                r.id.clone(),
                                r.conditions.clone(),
                                Arc::new(compile(&lb.tgs, &r.action)),
                                guard(&r.auth),
                            )
                        })
                        .collect(),
                    default: Arc::new(compile(&lb.tgs, &l.spec.default_action)),
                    default_guard: guard(&l.spec.default_auth),
                    challenges: match l.spec.protocol {
                        Protocol::Http => cfg.challenges.clone(),
                        _ => Default::default(),
                    },
                };
                let mut keys = vec![];
                for c in &l.certs {
                    match proxy::certified_key(&c.chain_pem, &c.key_pem) {
                        Ok(k) => keys.push((c.names.clone(), k)),
                        Err(e) => tracing::error!(error = %e, "unusable certificate"),
                    }
                }
                match lb.listeners.get_mut(&l.spec.id) {
                    Some(run) => {
                        run.snap.store(Arc::new(snap));
                        run.sni.certs.store(Arc::new(keys));
                        run.spec = l.spec.clone();
                    }
                    None => {
                        let sni = Arc::new(SniCerts::default());
                        sni.certs.store(Arc::new(keys));
                        let snap = Arc::new(ArcSwap::from_pointee(snap));
                        binds.push((l.spec.clone(), snap.clone(), sni.clone()));
                        lb.listeners.insert(
                            l.spec.id.clone(),
                            Listening {
                                spec: l.spec.clone(),
                                snap,
                                sni,
                                tasks: vec![],
                                sockets: vec![],
                                spread: None,
                            },
                        );
                    }
                }
            }
            let seed = std::mem::take(&mut *self.seed.lock().unwrap_or_else(|p| p.into_inner()));
            for g in &cfg.groups {
                if let Some(st) = lb.tgs.get(&g.spec.id) {
                    st.set_targets(&g.targets, &lb.clients[0], &lb.workers.handles[0]);
                    if let Some(up) = seed.get(&g.spec.id) {
                        st.assume_healthy(up);
                    }
                }
            }
        }
        let mut failures = vec![];
        for (l, snap, sni) in binds {
            if let Err(e) = self.bind(&l, snap, sni).await {
                if let Some(lb) = self.lb.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    lb.listeners.remove(&l.id);
                }
                failures.push((l.id.clone(), e));
            }
        }
        Applied { failures }
    }

    async fn bind(
        self: &Arc<Self>,
        l: &ListenerSpec,
        snap: Arc<ArcSwap<Snapshot>>,
        sni: Arc<SniCerts>,
    ) -> Result<(), String> {
        let (handles, addr, rts) = {
            let slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
            let lb = slot.as_ref().ok_or("the balancer is not running")?;
            let idle = Duration::from_secs(lb.spec.idle_timeout.max(1));
            let tls = (l.protocol == Protocol::Https).then(|| proxy::acceptor(sni.clone()));
            // One cap for the listener, whichever worker or the host's port accepts.
            let slots = Arc::new(tokio::sync::Semaphore::new(
                veeps_http::per_listener_connections(),
            ));
            let rts: Vec<Arc<ListenerRt>> = lb
                .clients
                .iter()
                .map(|client| {
                    Arc::new(ListenerRt {
                        ctx: Arc::new(proxy::Ctx {
                            env: lb.spec.env.clone(),
                            lb_name: lb.spec.name.clone(),
                            snap: snap.clone(),
                            protocol: l.protocol,
                            port: l.port,
                            client: client.clone(),
                            stats: self.stats.clone(),
                            logs: self.access.clone().filter(|_| lb.spec.access_logs),
                            timeout: idle,
                            draining: self.drain.subscribe(),
                            draining_now: self.draining_now.clone(),
                            functions: self
                                .functions
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .clone(),
                            gate: self.gate.clone(),
                        }),
                        tls: tls.clone(),
                        sni: sni.clone(),
                        idle,
                        slots: slots.clone(),
                    })
                })
                .collect();
            (
                lb.workers.handles.clone(),
                SocketAddr::from((lb.address, l.port)),
                rts,
            )
        };
        // Sockets handed over by the process this one replaces come first; each worker
        // binds its own SO_REUSEPORT socket for the rest, inside the namespace.
        let mut inherited = self
            .inherited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr)
            .unwrap_or_default();
        let mut tasks: Vec<tokio::task::AbortHandle> = vec![];
        let mut sockets = vec![];
        let abort = |tasks: &[tokio::task::AbortHandle]| {
            for t in tasks {
                t.abort();
            }
        };
        let mut listeners = vec![];
        for h in &handles {
            let std_l = match inherited.pop() {
                Some(fd) => std::net::TcpListener::from(fd),
                None => match h.spawn(async move { bind_reuse(addr) }).await {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        abort(&tasks);
                        return Err(format!("cannot listen on {addr}: {e}"));
                    }
                    Err(e) => {
                        abort(&tasks);
                        return Err(e.to_string());
                    }
                },
            };
            listeners.push(std_l);
        }
        // More sockets than workers (the old process had more cores): serve them too.
        listeners.extend(inherited.into_iter().map(std::net::TcpListener::from));
        let spread = proxy::Spread::new(handles.iter().cloned().zip(rts).collect());
        let spread_kept = spread.clone();
        for (i, std_l) in listeners.into_iter().enumerate() {
            let (h, spread) = (&handles[i % handles.len()], spread.clone());
            if let Ok(dup) = std_l.try_clone() {
                sockets.push(OwnedFd::from(dup));
            }
            let _ = std_l.set_nonblocking(true);
            let task = h.spawn(async move {
                match tokio::net::TcpListener::from_std(std_l) {
                    Ok(l) => proxy::accept_loop(l, spread, i).await,
                    Err(e) => tracing::error!(error = %e, "a listening socket cannot be served"),
                }
            });
            tasks.push(task.abort_handle());
        }
        if let Some(hp) = l.host_port {
            // The host's loopback: accepted here (the host's namespace), served by the
            // workers in turn.
            let host_addr = SocketAddr::from(([127, 0, 0, 1], hp));
            let inherited = self
                .inherited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&host_addr)
                .and_then(|mut v| v.pop());
            let host = match inherited {
                Some(fd) => {
                    let l = std::net::TcpListener::from(fd);
                    let _ = l.set_nonblocking(true);
                    tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())
                }
                None => bind_reuse(host_addr)
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| format!("cannot listen on {host_addr}: {e}")),
            };
            let host = match host {
                Ok(h) => h,
                Err(e) => {
                    // The workers' sockets close with their tasks: nothing half-bound stays.
                    abort(&tasks);
                    return Err(e);
                }
            };
            if let Ok(dup) = host.as_fd().try_clone_to_owned() {
                sockets.push(dup);
            }
            tasks.push(
                tokio::spawn(async move {
                    loop {
                        let Ok(permit) = spread.rt(0).slots.clone().acquire_owned().await else {
                            return;
                        };
                        let Ok((s, peer)) = host.accept().await else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let Ok(std) = s.into_std() else { continue };
                        spread.hand(std, peer, permit);
                    }
                })
                .abort_handle(),
            );
        }
        if let Some(run) = self
            .lb
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .and_then(|lb| lb.listeners.get_mut(&l.id))
        {
            run.tasks = tasks;
            run.sockets = sockets;
            run.spread = Some(spread_kept);
        }
        tracing::info!(listener = %addr, "load balancer listening");
        Ok(())
    }

    /// Target health by group.
    pub fn health(&self) -> Vec<GroupHealth> {
        let slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lb) = slot.as_ref() else {
            return vec![];
        };
        lb.tgs
            .iter()
            .map(|(id, st)| GroupHealth {
                id: id.clone(),
                name: st.spec.load().name.clone(),
                requests_total: st.requests_total.load(Ordering::Relaxed),
                targets: st
                    .targets
                    .load()
                    .iter()
                    .map(|t| TargetHealth {
                        addr: t.addr,
                        state: if t.draining.load(Ordering::Relaxed) {
                            "draining"
                        } else if t.healthy.load(Ordering::Relaxed) {
                            "healthy"
                        } else {
                            "unhealthy"
                        }
                        .into(),
                        in_flight: t.in_flight.load(Ordering::Relaxed),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Counters; latency and per-group request counts since the last call.
    pub fn stats(&self) -> StatsView {
        let s = &self.stats;
        let mut v = StatsView {
            requests: s.requests.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            latency: s
                .latency
                .take()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Default::default()
        };
        for (i, c) in s.status.iter().enumerate() {
            v.status[i] = c.load(Ordering::Relaxed);
        }
        let slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lb) = slot.as_ref() {
            for (id, n, usable) in crate::targets::take_requests(&lb.tgs) {
                if let Some(st) = lb.tgs.get(&id) {
                    let (h, u) = st.counts();
                    v.groups
                        .push((id.clone(), st.spec.load().name.clone(), n, usable, h, u));
                }
            }
        }
        v
    }

    /// Drains the targets at `ip` in `groups`.
    pub async fn drain(&self, groups: &[String], ip: IpAddr) {
        let states: Vec<Arc<TgState>> = {
            let slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
            slot.as_ref()
                .map(|lb| {
                    lb.tgs
                        .iter()
                        .filter(|(id, _)| groups.contains(id))
                        .map(|(_, s)| s.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        futures::future::join_all(states.iter().map(|s| s.drain(ip))).await;
    }

    /// Every listening socket with its address (for a handoff), and stops accepting on them.
    fn retire(&self) -> Vec<(SocketAddr, OwnedFd)> {
        self.retired.store(true, Ordering::SeqCst);
        self.draining_now.store(true, Ordering::SeqCst);
        self.drain.send_replace(true);
        let mut slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        if let Some(lb) = slot.as_mut() {
            for l in lb.listeners.values_mut() {
                for t in &l.tasks {
                    t.abort();
                }
                for fd in l.sockets.drain(..) {
                    let addr = socket2::SockRef::from(&fd)
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket());
                    if let Some(a) = addr {
                        out.push((a, fd));
                    }
                }
            }
        }
        out
    }

    /// Connections open on each worker, over every listener.
    pub fn worker_connections(&self) -> Vec<usize> {
        let slot = self.lb.lock().unwrap_or_else(|p| p.into_inner());
        let mut per = vec![];
        for l in slot.iter().flat_map(|lb| lb.listeners.values()) {
            for (i, n) in l.spread.iter().flat_map(|s| s.open()).enumerate() {
                if per.len() <= i {
                    per.resize(i + 1, 0);
                }
                per[i] += n;
            }
        }
        per
    }

    /// Connections open, those still in their TLS handshake included.
    pub fn connections(&self) -> u64 {
        self.stats.accepted_open.load(Ordering::Relaxed)
    }
}

/// `veeps lb-plane DIR [--takeover]`: runs a balancer's data plane until told to stop.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    veeps_sys::plane::main(
        args,
        "lb-plane",
        "veeps lb-plane DIR [--takeover] (started by veeps for each load balancer)",
        1,
        run,
    )
}

async fn run(dir: PathBuf, takeover: bool) -> i32 {
    let plane = Plane::new(&dir);
    let sock = dir.join(SOCKET);
    if takeover {
        // What the running process knows of its targets' health, then its sockets: bound
        // where they are, nothing refused meanwhile.
        if let Ok(h) = crate::plane_client::request::<Vec<GroupHealth>>(
            &sock,
            &Request::Health,
            Duration::from_secs(5),
        )
        .await
        {
            let mut seed = plane.seed.lock().unwrap_or_else(|p| p.into_inner());
            for g in h {
                let up = g
                    .targets
                    .iter()
                    .filter(|t| t.state == "healthy")
                    .map(|t| t.addr);
                seed.insert(g.id, up.collect());
            }
        }
        match crate::plane_client::handoff(&sock).await {
            Ok(fds) => {
                let mut map = plane.inherited.lock().unwrap_or_else(|p| p.into_inner());
                for (a, fd) in fds {
                    map.entry(a).or_default().push(fd);
                }
            }
            Err(e) => tracing::warn!(error = %e, "no sockets were handed over; binding anew"),
        }
    }
    let applied = plane.reload().await;
    for (id, e) in &applied.failures {
        tracing::warn!(listener = %id, error = %e, "a listener could not start");
    }
    // Whatever was handed over and not claimed by a listener closes now.
    plane
        .inherited
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let served = {
        let plane = plane.clone();
        veeps_sys::plane::serve(
            &dir,
            CONFIG,
            "load balancer data plane",
            move |conn, stop| serve_control(plane.clone(), conn, stop),
        )
        .await
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "cannot open the control socket");
        return 1;
    }
    if plane.retired.load(Ordering::SeqCst) {
        // Handed off: finish the connections in progress (bounded), then go. A connection
        // accepted just before the handoff may not be counted yet: wait a moment first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while plane.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    0
}

async fn serve_control(
    plane: Arc<Plane>,
    conn: tokio::net::UnixStream,
    stop: veeps_sys::plane::Stop,
) -> std::io::Result<()> {
    let mut conn = tokio::io::BufReader::new(conn);
    let line = veeps_sys::plane::read_request(&mut conn).await?;
    let req: Request = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let reply = match req {
        Request::Hello => serde_json::to_string(&Hello {
            pid: std::process::id(),
            version: build_id(),
        }),
        Request::Apply => serde_json::to_string(&plane.reload().await),
        Request::Health => serde_json::to_string(&plane.health()),
        Request::Stats => serde_json::to_string(&plane.stats()),
        Request::Drain { groups, ip } => {
            plane.drain(&groups, ip).await;
            serde_json::to_string(&serde_json::json!({}))
        }
        Request::AuthFailures => serde_json::to_string(&plane.gate.take_failures()),
        Request::Banned { groups } => {
            plane.gate.set_banned(groups);
            serde_json::to_string(&serde_json::json!({}))
        }
        Request::Stop => {
            let _ = stop.send(true);
            serde_json::to_string(&serde_json::json!({}))
        }
        Request::Handoff => {
            let socks = plane.retire();
            let addrs: Vec<SocketAddr> = socks.iter().map(|(a, _)| *a).collect();
            let text = serde_json::to_string(&addrs).unwrap_or_default() + "\n";
            let fds: Vec<OwnedFd> = socks.into_iter().map(|(_, f)| f).collect();
            let std = conn.into_inner().into_std()?;
            std.set_nonblocking(false)?;
            veeps_sys::fdpass::send(&std, text.as_bytes(), &fds)?;
            let _ = stop.send(true);
            return Ok(());
        }
    }
    .unwrap_or_default();
    veeps_sys::plane::write_reply(conn.get_mut(), &reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_reach_the_spool() {
        let d = tempfile::tempdir().unwrap();
        let sink = AccessSink::open(d.path()).unwrap();
        sink.log("listener-80", "GET / 200".into());
        let mut r = veeps_obs::spool::SpoolReader::open(d.path(), &d.path().join("out.read"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (recs, _) = r.read(1 << 20).unwrap();
            if let Some(rec) = recs.first() {
                assert_eq!(rec.stream, "listener-80/access");
                assert_eq!(rec.text, "GET / 200");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "nothing spooled");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A target that answers `METHOD PATH BODY` to every request (its health check too).
    async fn echo_target() -> SocketAddr {
        use http_body_util::BodyExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let text = format!(
                                "{} {} {}",
                                parts.method,
                                parts.uri,
                                String::from_utf8_lossy(&body)
                            );
                            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(text),
                            )))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// Reads one answer (a body of Content-Length, none for HEAD): status, head, body.
    async fn read_answer(
        s: &mut tokio::net::TcpStream,
        buf: &mut Vec<u8>,
        head_request: bool,
    ) -> (u16, String, String) {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(String::from)
                    })
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                let len = if head_request { 0 } else { len };
                while buf.len() < end + 4 + len {
                    let mut b = [0u8; 4096];
                    let k = s.read(&mut b).await.unwrap();
                    assert!(k > 0, "closed in a body after {head}");
                    buf.extend_from_slice(&b[..k]);
                }
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, head, body);
            }
            let mut b = [0u8; 4096];
            let k = s.read(&mut b).await.unwrap();
            assert!(
                k > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&b[..k]);
        }
    }

    /// Requests pipelined on one connection are answered in order, by the balancer's own
    /// HTTP/1.1 path or by hyper's from the first request with a body on, which must see
    /// every byte read before the hand-over; HEAD leaves no stray body; bad heads get
    /// hyper's answers; HTTP/1.0 closes; a head that never ends is let go after the idle
    /// timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_requests_bodies_and_bad_heads_on_one_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = echo_target().await;
        let d = tempfile::tempdir().unwrap();
        let plane = Plane::new(d.path());
        let port = free_port();
        let cfg = one_listener(
            "pipe",
            port,
            1,
            Action::Forward {
                groups: vec![("tg-echo".into(), 1)],
                stickiness_secs: 0,
            },
            vec![PlaneGroup {
                spec: crate::model::TgSpec {
                    id: "tg-echo".into(),
                    name: "echo".into(),
                    protocol: Protocol::Http,
                    port: target.port(),
                    health: crate::model::HealthSpec {
                        path: "/health".into(),
                        port: None,
                        protocol: Protocol::Http,
                        interval: 0.1,
                        timeout: 1.0,
                        healthy_threshold: 1,
                        unhealthy_threshold: 2,
                        matcher: "200".into(),
                    },
                    deregistration_delay: 0,
                    algorithm: "round_robin".into(),
                    stickiness_secs: 0,
                    function: None,
                    multi_value_headers: false,
                },
                targets: vec![target],
            }],
        );
        let applied = plane.apply(cfg).await;
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        until("the target is healthy", || {
            plane
                .health()
                .iter()
                .any(|g| g.targets.iter().any(|t| t.state == "healthy"))
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut buf = vec![];
        // Two heads in one write, then a body (hyper's from here), then more heads.
        s.write_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n\
              HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(read_answer(&mut s, &mut buf, false).await.2, "GET /a ");
        assert_eq!(read_answer(&mut s, &mut buf, false).await.2, "GET /b?q=1 ");
        let (st, head, _) = read_answer(&mut s, &mut buf, true).await;
        assert_eq!(st, 200);
        assert!(
            head.to_ascii_lowercase().contains("content-length: 8"),
            "{head}"
        );
        assert_eq!(read_answer(&mut s, &mut buf, false).await.2, "GET /c ");
        s.write_all(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /d HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(
            read_answer(&mut s, &mut buf, false).await.2,
            "POST /p hello"
        );
        assert_eq!(read_answer(&mut s, &mut buf, false).await.2, "GET /d ");
        // A bad head: hyper's 400, and the end of the connection.
        s.write_all(b"GARBAGE\r\n\r\n").await.unwrap();
        assert_eq!(read_answer(&mut s, &mut buf, false).await.0, 400);
        // HTTP/1.0 without keep-alive: answered, then closed.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
        let mut all = vec![];
        s.read_to_end(&mut all).await.unwrap();
        let all = String::from_utf8_lossy(&all);
        assert!(
            all.starts_with("HTTP/1.1 200 OK\r\n") && all.ends_with("GET /old "),
            "{all}"
        );
        // A head too large: 431 from hyper.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        let _ = s.write_all(big.as_bytes()).await;
        let mut buf = vec![];
        assert_eq!(read_answer(&mut s, &mut buf, false).await.0, 431);
        // A head that never ends: closed after the idle timeout (1 s), unanswered.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nx-slow: ")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = vec![];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest))
            .await
            .expect("the slow head was never let go");
        assert!(
            n.is_err() || rest.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
        until("every connection is closed", || {
            plane.worker_connections().iter().sum::<usize>() == 0
        })
        .await;
    }

    /// A client that asks and never reads holds a worker's connection only until a write
    /// has waited the idle timeout (1 s here), whatever it still sends, on the balancer's
    /// own HTTP/1.1 path and on hyper's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_is_let_go_after_the_idle_timeout() {
        use tokio::io::AsyncWriteExt;
        let d = tempfile::tempdir().unwrap();
        let plane = Plane::new(d.path());
        let port = free_port();
        let cfg = one_listener(
            "deaf",
            port,
            1,
            Action::Fixed {
                status: 200,
                content_type: "text/plain".into(),
                body: "x".repeat(64 * 1024),
            },
            vec![],
        );
        let applied = plane.apply(cfg).await;
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        // 400 answers of 64 KiB: far more than the two sockets' buffers hold. Plain asks are
        // the balancer's own path; asks with a body, hyper's side.
        for (side, ask) in [
            ("own", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            (
                "hyper's",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
            ),
        ] {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(16 * 1024).unwrap();
            let s = sock
                .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap();
            let (read_half, mut write_half) = s.into_split();
            let asks = ask.repeat(400);
            let writer = tokio::spawn(async move {
                let _ = write_half.write_all(asks.as_bytes()).await;
                // Held open (and unread) until this side is checked.
                write_half
            });
            until(
                &format!("the connection to the {side} side is open"),
                || plane.worker_connections().iter().sum::<usize>() == 1,
            )
            .await;
            let started = std::time::Instant::now();
            until(
                &format!("a client of the {side} side that never reads is let go"),
                || plane.worker_connections().iter().sum::<usize>() == 0,
            )
            .await;
            assert!(started.elapsed() < Duration::from_secs(10));
            drop(writer);
            drop(read_half);
        }
    }

    /// A loopback port free a moment ago.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A balancer on the host's loopback with one plain-HTTP listener, access logs on.
    fn one_listener(
        name: &str,
        port: u16,
        idle_timeout: u64,
        default_action: Action,
        groups: Vec<PlaneGroup>,
    ) -> PlaneConfig {
        PlaneConfig {
            lb: LbSpec {
                id: format!("lb-{name}"),
                env: "test".into(),
                name: name.into(),
                internal: false,
                subnets: vec![],
                security_groups: vec![],
                idle_timeout,
                access_logs: true,
            },
            address: Ipv4Addr::LOCALHOST,
            netns: String::new(),
            ca_pem: String::new(),
            listeners: vec![PlaneListener {
                spec: ListenerSpec {
                    id: format!("listener-{name}"),
                    lb_id: format!("lb-{name}"),
                    port,
                    protocol: Protocol::Http,
                    certificates: vec![],
                    default_action,
                    host_port: None,
                    default_auth: None,
                },
                rules: vec![],
                certs: vec![],
            }],
            groups,
            challenges: Default::default(),
            functions_socket: None,
        }
    }

    /// Waits until `f` holds (10 s at most).
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_spread_evenly_over_the_workers_whatever_the_kernel_hashes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let d = tempfile::tempdir().unwrap();
        let plane = Plane::new(d.path());
        let port = free_port();
        let cfg = one_listener(
            "spread",
            port,
            60,
            Action::Fixed {
                status: 200,
                content_type: "text/plain".into(),
                body: "spread".into(),
            },
            vec![],
        );
        let applied = plane.apply(cfg).await;
        assert!(applied.failures.is_empty(), "{:?}", applied.failures);
        let workers = plane.worker_connections().len();
        assert_eq!(workers, veeps_sys::netns::NsRuntime::per_core());
        // One connection after another, each answered before the next opens: the kernel
        // hashes them to the workers' sockets as it likes (a random walk, which strays
        // further than 2 in nearly every run of 40), and the counts must stay within 2
        // (a worker keeps a connection while it holds at most one more than the least).
        let mut open = vec![];
        for n in 1..=40 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut got = vec![];
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"spread") {
                let k = s.read(&mut buf).await.unwrap();
                assert!(k > 0, "closed after {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..k]);
            }
            open.push(s);
            let per = plane.worker_connections();
            assert_eq!(per.iter().sum::<usize>(), n, "{per:?}");
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 2, "connection {n}: {per:?}");
        }
        drop(open);
        until("closed connections are not counted", || {
            plane.worker_connections().iter().sum::<usize>() == 0
        })
        .await;
    }
}
