//! The load balancer service: records the model (balancers, listeners, rules, target
//! groups, attachments), places each balancer as an endpoint with a runtime of its own
//! inside the endpoint's network namespace (so its sockets, to clients and to targets,
//! live there), compiles the model into snapshots on every change, and keeps target
//! groups' targets in line with attachments and auto scaling groups.

use crate::model::{Action, AttachmentSpec, LbSpec, ListenerSpec, Protocol, RuleSpec, TgSpec};
use crate::proxy::{self, Compiled, ListenerRt, Snapshot, SniCerts, Stats};
use crate::targets::TgState;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veeps_compute::Compute;
use veeps_net::{AttachRequest, Net};
use veeps_obs::Obs;
use veeps_pki::Certs;
use veeps_state::Store;

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// Declared wrong.
    #[error("{0}")]
    Invalid(String),
    /// Networking.
    #[error(transparent)]
    Net(#[from] veeps_net::NetError),
    /// Disk, sockets, runtime.
    #[error("{0}")]
    Io(String),
}

const K_LB: &str = "lb/lb/";
const K_LISTENER: &str = "lb/listener/";
const K_RULE: &str = "lb/rule/";
const K_TG: &str = "lb/tg/";
const K_ATTACH: &str = "lb/attach/";

struct Listening {
    spec: ListenerSpec,
    snap: Arc<ArcSwap<Snapshot>>,
    sni: Arc<SniCerts>,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// A running balancer.
struct Lb {
    spec: LbSpec,
    address: std::net::Ipv4Addr,
    workers: Workers,
    /// A pooled client per worker.
    clients: Vec<proxy::Client>,
    stats: Arc<Stats>,
    listeners: HashMap<String, Listening>,
    tgs: HashMap<String, Arc<TgState>>,
}

impl Lb {
    /// The first worker: health checks and draining run there.
    fn handle(&self) -> tokio::runtime::Handle {
        self.workers.handles[0].clone()
    }
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
        self.workers.stop();
    }
}

/// The service of one server.
pub struct Lbs {
    store: Arc<Store>,
    net: Arc<Net>,
    obs: Arc<Obs>,
    compute: Arc<Compute>,
    /// Issued certificates.
    pub certs: Arc<Certs>,
    ca_pem: String,
    lbs: Mutex<HashMap<String, Lb>>,
    change: tokio::sync::Mutex<()>,
}

fn io(e: impl std::fmt::Display) -> LbError {
    LbError::Io(e.to_string())
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
    fn start(ns: &str, name: &str) -> Result<Workers, LbError> {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16);
        let rts = veeps_sys::netns::NsRuntime::start_many(
            &format!("lb-{name}"),
            Some(ns).filter(|n| !n.is_empty()),
            n,
        )
        .map_err(|e| {
            LbError::Io(format!(
                "a balancer worker could not start in its namespace: {e}"
            ))
        })?;
        let handles = rts.iter().map(|r| r.handle().clone()).collect();
        Ok(Workers { handles, rts })
    }

    fn stop(&mut self) {
        self.rts.clear();
    }
}

impl Lbs {
    /// The service.
    pub fn new(
        store: Arc<Store>,
        net: Arc<Net>,
        obs: Arc<Obs>,
        compute: Arc<Compute>,
        certs: Arc<Certs>,
        ca_pem: String,
    ) -> Arc<Lbs> {
        Arc::new(Lbs {
            store,
            net,
            obs,
            compute,
            certs,
            ca_pem,
            lbs: Mutex::new(HashMap::new()),
            change: tokio::sync::Mutex::new(()),
        })
    }

    fn all<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Vec<T> {
        self.store
            .kv_scan::<T>(prefix)
            .map(|v| v.into_iter().map(|(_, x)| x).collect())
            .unwrap_or_default()
    }

    fn put<T: serde::Serialize>(&self, prefix: &str, id: &str, v: &T) -> Result<(), LbError> {
        self.store.kv_put(&format!("{prefix}{id}"), v).map_err(io)
    }

    fn del(&self, prefix: &str, id: &str) -> Result<(), LbError> {
        self.store.kv_delete(&format!("{prefix}{id}")).map_err(io)
    }

    /// True if a recorded object exists.
    pub fn exists(&self, kind: &str, id: &str) -> bool {
        let prefix = match kind {
            "lb" => K_LB,
            "listener" => K_LISTENER,
            "rule" => K_RULE,
            "tg" => K_TG,
            _ => K_ATTACH,
        };
        matches!(
            self.store
                .kv_get::<serde_json::Value>(&format!("{prefix}{id}")),
            Ok(Some(_))
        )
    }

    fn endpoint_name(spec: &LbSpec) -> String {
        format!("{}/lb-{}", spec.env, spec.name)
    }

    /// Creates or updates a balancer (placed, running); returns its address.
    pub async fn put_lb(self: &Arc<Self>, spec: LbSpec) -> Result<String, LbError> {
        let _g = self.change.lock().await;
        let subnet = spec
            .subnets
            .first()
            .ok_or_else(|| LbError::Invalid("a load balancer needs at least one subnet".into()))?;
        let ep = self
            .net
            .attach(AttachRequest {
                name: Self::endpoint_name(&spec),
                subnet_id: subnet.clone(),
                security_groups: spec.security_groups.clone(),
            })
            .await?;
        self.put(K_LB, &spec.id, &spec)?;
        let running = {
            let lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
            lbs.get(&spec.id)
                .map(|l| l.address == ep.address && l.spec.subnets.first() == spec.subnets.first())
        };
        match running {
            Some(true) => {
                let mut lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = lbs.get_mut(&spec.id) {
                    l.spec = spec.clone();
                }
            }
            _ => {
                // (Re)start it in its namespace.
                let old = self
                    .lbs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&spec.id);
                drop_lb(old);
                let workers = Workers::start(&ep.netns, &spec.name)?;
                let idle = Duration::from_secs(spec.idle_timeout.max(1));
                let clients = workers
                    .handles
                    .iter()
                    .map(|h| {
                        let _e = h.enter();
                        proxy::client(&self.ca_pem, idle)
                    })
                    .collect();
                self.lbs.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    spec.id.clone(),
                    Lb {
                        spec: spec.clone(),
                        address: ep.address,
                        workers,
                        clients,
                        stats: Arc::new(Stats::default()),
                        listeners: HashMap::new(),
                        tgs: HashMap::new(),
                    },
                );
            }
        }
        self.apply_model().await?;
        Ok(ep.address.to_string())
    }

    /// Stops and forgets a balancer.
    pub async fn delete_lb(self: &Arc<Self>, id: &str) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        let spec: Option<LbSpec> = self.store.kv_get(&format!("{K_LB}{id}")).map_err(io)?;
        let old = self
            .lbs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        drop_lb(old);
        if let Some(spec) = spec {
            self.net.detach(&Self::endpoint_name(&spec)).await?;
        }
        self.del(K_LB, id)
    }

    /// Records a listener and applies it.
    pub async fn put_listener(self: &Arc<Self>, l: ListenerSpec) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        self.put(K_LISTENER, &l.id, &l)?;
        // Only this listener's own failure is this change's; others are logged.
        let mut mine = None;
        for (id, e) in self.compile_model().await {
            if id == l.id {
                mine = Some(e);
            } else {
                tracing::warn!(listener = %id, error = %e, "a listener could not start; the next apply of it retries");
            }
        }
        mine.map_or(Ok(()), Err)
    }

    /// Records a rule and applies it.
    pub async fn put_rule(self: &Arc<Self>, r: RuleSpec) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        self.put(K_RULE, &r.id, &r)?;
        self.apply_model().await
    }

    /// Records a target group and applies it.
    pub async fn put_tg(self: &Arc<Self>, t: TgSpec) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        self.put(K_TG, &t.id, &t)?;
        self.apply_model().await
    }

    /// Records an attachment and applies it.
    pub async fn put_attachment(self: &Arc<Self>, a: AttachmentSpec) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        self.put(K_ATTACH, &a.id, &a)?;
        self.apply_model().await
    }

    /// Forgets a listener, rule, target group or attachment.
    pub async fn delete(self: &Arc<Self>, kind: &str, id: &str) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        let prefix = match kind {
            "listener" => K_LISTENER,
            "rule" => K_RULE,
            "tg" => K_TG,
            _ => K_ATTACH,
        };
        self.del(prefix, id)?;
        self.apply_model().await
    }

    /// After a restart: starts every recorded balancer.
    pub async fn reconcile_all(self: &Arc<Self>) {
        for spec in self.all::<LbSpec>(K_LB) {
            let name = spec.name.clone();
            if let Err(e) = self.put_lb(spec).await {
                tracing::error!(lb = %name, error = %e, "could not start a load balancer");
            }
        }
    }

    /// Listeners pick up certificates issued again under the same id.
    pub async fn refresh_certificates(self: &Arc<Self>) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        self.apply_model().await
    }

    /// Compiles the model into every balancer: listeners bound or closed, snapshots and
    /// certificates swapped, target groups' settings and targets updated.
    async fn apply_model(self: &Arc<Self>) -> Result<(), LbError> {
        for (id, e) in self.compile_model().await {
            tracing::warn!(listener = %id, error = %e, "a listener could not start; the next apply of it retries");
        }
        Ok(())
    }

    /// Compiles the model into every balancer; returns the listeners that could not bind
    /// (each left out, so the next apply retries it).
    async fn compile_model(self: &Arc<Self>) -> Vec<(String, LbError)> {
        let listeners: Vec<ListenerSpec> = self.all(K_LISTENER);
        let rules: Vec<RuleSpec> = self.all(K_RULE);
        let tgs: BTreeMap<String, TgSpec> = self
            .all::<TgSpec>(K_TG)
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let mut binds = vec![];
        {
            let mut lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
            for lb in lbs.values_mut() {
                let mine: Vec<&ListenerSpec> =
                    listeners.iter().filter(|l| l.lb_id == lb.spec.id).collect();
                // Target groups this balancer forwards to.
                let mut used: Vec<String> = vec![];
                let mut note = |a: &Action| {
                    if let Action::Forward { groups, .. } = a {
                        for (g, _) in groups {
                            if !used.contains(g) {
                                used.push(g.clone());
                            }
                        }
                    }
                };
                for l in &mine {
                    note(&l.default_action);
                    for r in rules.iter().filter(|r| r.listener_id == l.id) {
                        note(&r.action);
                    }
                }
                lb.tgs.retain(|id, st| {
                    let keep = used.contains(id) && tgs.contains_key(id);
                    if !keep {
                        st.stop();
                    }
                    keep
                });
                for id in &used {
                    if let Some(spec) = tgs.get(id) {
                        match lb.tgs.get(id) {
                            Some(st) => st.spec.store(Arc::new(spec.clone())),
                            None => {
                                lb.tgs.insert(id.clone(), TgState::new(spec.clone()));
                            }
                        }
                    }
                }
                let compile = |a: &Action| -> Compiled {
                    match a {
                        Action::Forward {
                            groups,
                            stickiness_secs,
                        } => {
                            let gs: Vec<_> = groups
                                .iter()
                                .filter_map(|(g, w)| {
                                    lb.tgs.get(g).map(|st| (g.clone(), st.clone(), *w))
                                })
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
                // Listeners gone: close them.
                lb.listeners.retain(|id, l| {
                    let keep = mine.iter().any(|m| {
                        &m.id == id
                            && m.port == l.spec.port
                            && m.protocol == l.spec.protocol
                            && m.host_port == l.spec.host_port
                    });
                    if !keep {
                        for t in &l.tasks {
                            t.abort();
                        }
                    }
                    keep
                });
                for l in &mine {
                    let mut rs: Vec<&RuleSpec> =
                        rules.iter().filter(|r| r.listener_id == l.id).collect();
                    rs.sort_by_key(|r| r.priority);
                    let snap = Snapshot {
                        rules: rs
                            .iter()
                            .map(|r| (r.id.clone(), r.conditions.clone(), compile(&r.action)))
                            .collect(),
                        default: compile(&l.default_action),
                    };
                    let mut keys = vec![];
                    for c in &l.certificates {
                        match self.certs.get(c) {
                            Some(issued) => {
                                match proxy::certified_key(&issued.chain_pem, &issued.key_pem) {
                                    Ok(k) => keys.push((issued.names.clone(), k)),
                                    Err(e) => {
                                        tracing::error!(certificate = %c, error = %e, "unusable certificate")
                                    }
                                }
                            }
                            None => {
                                tracing::warn!(certificate = %c, "listener names an unknown certificate")
                            }
                        }
                    }
                    match lb.listeners.get_mut(&l.id) {
                        Some(run) => {
                            run.snap.store(Arc::new(snap));
                            run.sni.certs.store(Arc::new(keys));
                            run.spec = (*l).clone();
                        }
                        None => {
                            let sni = Arc::new(SniCerts::default());
                            sni.certs.store(Arc::new(keys));
                            let snap = Arc::new(ArcSwap::from_pointee(snap));
                            binds.push((
                                lb.spec.id.clone(),
                                (*l).clone(),
                                snap.clone(),
                                sni.clone(),
                            ));
                            lb.listeners.insert(
                                l.id.clone(),
                                Listening {
                                    spec: (*l).clone(),
                                    snap,
                                    sni,
                                    tasks: vec![],
                                },
                            );
                        }
                    }
                }
            }
        }
        let mut failures = vec![];
        for (lb_id, l, snap, sni) in binds {
            if let Err(e) = self.bind(&lb_id, &l, snap, sni).await {
                self.lbs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&lb_id)
                    .map(|lb| lb.listeners.remove(&l.id));
                failures.push((l.id.clone(), e));
            }
        }
        self.refresh_targets();
        failures
    }

    async fn bind(
        self: &Arc<Self>,
        lb_id: &str,
        l: &ListenerSpec,
        snap: Arc<ArcSwap<Snapshot>>,
        sni: Arc<SniCerts>,
    ) -> Result<(), LbError> {
        let (handles, addr, rts) = {
            let lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
            let lb = lbs
                .get(lb_id)
                .ok_or_else(|| LbError::Invalid(format!("load balancer {lb_id} is not running")))?;
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
                            stats: lb.stats.clone(),
                            logs: lb.spec.access_logs.then(|| self.obs.clone()),
                            timeout: idle,
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
        // Each worker binds its own SO_REUSEPORT socket, inside the namespace.
        let mut tasks: Vec<tokio::task::AbortHandle> = vec![];
        for (h, rt) in handles.iter().zip(&rts) {
            let bound = h
                .spawn(async move { bind_reuse(addr) })
                .await
                .map_err(io)
                .and_then(|r| r.map_err(|e| LbError::Io(format!("cannot listen on {addr}: {e}"))));
            let listener = match bound {
                Ok(l) => l,
                Err(e) => {
                    for t in &tasks {
                        t.abort();
                    }
                    return Err(e);
                }
            };
            tasks.push(
                h.spawn(proxy::accept_loop(listener, rt.clone()))
                    .abort_handle(),
            );
        }
        if let Some(hp) = l.host_port {
            // The host's loopback: accepted here (the host's namespace), served by the
            // workers in turn.
            let host = match tokio::net::TcpListener::bind(("127.0.0.1", hp)).await {
                Ok(h) => h,
                Err(e) => {
                    // The workers' sockets close with their tasks: nothing half-bound stays.
                    for t in &tasks {
                        t.abort();
                    }
                    return Err(LbError::Io(format!("cannot listen on 127.0.0.1:{hp}: {e}")));
                }
            };
            tasks.push(
                tokio::spawn(async move {
                    let mut next = 0usize;
                    loop {
                        let Ok(permit) = rts[0].slots.clone().acquire_owned().await else {
                            return;
                        };
                        let Ok((s, peer)) = host.accept().await else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let Ok(std) = s.into_std() else { continue };
                        next = (next + 1) % handles.len();
                        let rt = rts[next].clone();
                        handles[next].spawn(async move {
                            let _permit = permit;
                            if let Ok(s) = tokio::net::TcpStream::from_std(std) {
                                let _ = s.set_nodelay(true);
                                proxy::serve_stream(s, peer, rt).await;
                            }
                        });
                    }
                })
                .abort_handle(),
            );
        }
        if let Some(run) = self
            .lbs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(lb_id)
            .and_then(|lb| lb.listeners.get_mut(&l.id))
        {
            run.tasks = tasks;
        }
        tracing::info!(listener = %addr, "load balancer listening");
        Ok(())
    }

    /// Brings every target group's targets in line with attachments and groups.
    pub fn refresh_targets(&self) {
        let attachments: Vec<AttachmentSpec> = self.all(K_ATTACH);
        let lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
        let envs: std::collections::BTreeSet<String> =
            lbs.values().map(|l| l.spec.env.clone()).collect();
        // Each environment's groups once per refresh, not once per target group.
        let groups: Vec<veeps_compute::group::GroupRecord> =
            envs.iter().flat_map(|e| self.compute.records(e)).collect();
        for lb in lbs.values() {
            for (id, st) in &lb.tgs {
                let port = st.spec.load().port;
                let mut want: Vec<SocketAddr> = attachments
                    .iter()
                    .filter(|a| &a.tg_id == id)
                    .filter_map(|a| {
                        a.target
                            .parse::<std::net::IpAddr>()
                            .ok()
                            .map(|ip| SocketAddr::new(ip, a.port.unwrap_or(port)))
                    })
                    .collect();
                for g in groups.iter().filter(|g| g.spec.target_groups.contains(id)) {
                    for i in &g.instances {
                        if i.lifecycle == veeps_compute::group::Lifecycle::Terminating || i.pid == 0
                        {
                            continue;
                        }
                        if let Ok(ip) = i.address.parse::<std::net::IpAddr>() {
                            want.push(SocketAddr::new(ip, port));
                        }
                    }
                }
                want.sort();
                want.dedup();
                st.set_targets(&want, &lb.clients[0], &lb.handle());
            }
        }
    }

    /// Runs the target refresh loop (every 250 ms).
    pub fn run(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(250));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.refresh_targets();
            }
        });
    }

    /// Target health by target group, as each balancer sees it.
    pub fn target_health(&self, env_filter: Option<&str>) -> Vec<serde_json::Value> {
        let lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        for lb in lbs
            .values()
            .filter(|l| env_filter.is_none_or(|e| l.spec.env == e))
        {
            for (id, st) in &lb.tgs {
                let targets: Vec<serde_json::Value> = st
                    .targets
                    .load()
                    .iter()
                    .map(|t| serde_json::json!({
                        "target": t.addr.to_string(),
                        "state": if t.draining.load(Ordering::Relaxed) { "draining" } else if t.healthy.load(Ordering::Relaxed) { "healthy" } else { "unhealthy" },
                        "in_flight": t.in_flight.load(Ordering::Relaxed),
                    }))
                    .collect();
                out.push(serde_json::json!({"load_balancer": lb.spec.name, "target_group": st.spec.load().name, "target_group_id": id, "targets": targets}));
            }
        }
        out
    }

    /// Metrics of every balancer.
    pub fn samples(&self) -> Vec<veeps_obs::collect::Sample> {
        use veeps_obs::collect::Sample;
        let lbs = self.lbs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        for lb in lbs.values() {
            let l = [
                ("env", lb.spec.env.as_str()),
                ("load_balancer", lb.spec.name.as_str()),
            ];
            let s = &lb.stats;
            out.push(Sample::new(
                "lb_request_count_total",
                &l,
                s.requests.load(Ordering::Relaxed) as f64,
            ));
            for (i, name) in [
                (2, "lb_http_2xx_total"),
                (3, "lb_http_3xx_total"),
                (4, "lb_http_4xx_total"),
                (5, "lb_http_5xx_total"),
            ] {
                out.push(Sample::new(
                    name,
                    &l,
                    s.status[i].load(Ordering::Relaxed) as f64,
                ));
            }
            out.push(Sample::new(
                "lb_received_bytes_total",
                &l,
                s.bytes_in.load(Ordering::Relaxed) as f64,
            ));
            out.push(Sample::new(
                "lb_sent_bytes_total",
                &l,
                s.bytes_out.load(Ordering::Relaxed) as f64,
            ));
            out.push(Sample::new(
                "lb_active_connections",
                &l,
                s.connections.load(Ordering::Relaxed) as f64,
            ));
            out.push(Sample::new(
                "lb_retried_requests_total",
                &l,
                s.retries.load(Ordering::Relaxed) as f64,
            ));
            for (k, v) in s.latency.take() {
                out.push(Sample::new(
                    &format!("lb_target_response_seconds_{k}"),
                    &l,
                    v,
                ));
            }
            for (id, n, usable) in crate::targets::take_requests(&lb.tgs) {
                let name = lb
                    .tgs
                    .get(&id)
                    .map(|t| t.spec.load().name.clone())
                    .unwrap_or_default();
                let tl = [
                    ("env", lb.spec.env.as_str()),
                    ("load_balancer", lb.spec.name.as_str()),
                    ("target_group", name.as_str()),
                ];
                out.push(Sample::new(
                    "lb_requests_per_target",
                    &tl,
                    n as f64 / usable.max(1) as f64,
                ));
                if let Some(st) = lb.tgs.get(&id) {
                    let (h, u) = st.counts();
                    out.push(Sample::new("lb_healthy_host_count", &tl, h as f64));
                    out.push(Sample::new("lb_unhealthy_host_count", &tl, u as f64));
                }
            }
        }
        out
    }

    /// Stops every balancer (the server is stopping).
    pub fn shutdown(&self) {
        let all: Vec<Lb> = self
            .lbs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in all {
            drop_lb(Some(l));
        }
    }

    fn tg_states(&self) -> Vec<(String, Arc<TgState>)> {
        self.lbs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|l| {
                l.tgs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn drop_lb(lb: Option<Lb>) {
    // A runtime must not be dropped inside another's async context: shut down in the
    // background (Lb's Drop does so).
    drop(lb);
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

#[async_trait::async_trait]
impl veeps_compute::group::TargetHealth for Lbs {
    fn healthy(&self, target_groups: &[String], address: &str) -> Option<bool> {
        let ip: std::net::IpAddr = address.parse().ok()?;
        let states = self.tg_states();
        crate::targets::find(states.iter().map(|(k, v)| (k, v)), target_groups, ip)
    }
    fn requests(&self, target_groups: &[String]) -> u64 {
        self.tg_states()
            .iter()
            .filter(|(id, _)| target_groups.contains(id))
            .map(|(_, s)| s.requests_total.load(Ordering::Relaxed))
            .sum()
    }
    fn serves(&self, target_groups: &[String]) -> bool {
        self.tg_states()
            .iter()
            .any(|(id, _)| target_groups.contains(id))
    }
    async fn drain(&self, target_groups: &[String], address: &str) {
        let Ok(ip) = address.parse::<std::net::IpAddr>() else {
            return;
        };
        let states: Vec<Arc<TgState>> = self
            .tg_states()
            .into_iter()
            .filter(|(id, _)| target_groups.contains(id))
            .map(|(_, s)| s)
            .collect();
        let waits: Vec<_> = states.iter().map(|s| s.drain(ip)).collect();
        futures::future::join_all(waits).await;
    }
}
