//! The load balancer service, the control plane of balancers: records the model
//! (balancers, listeners, rules, target groups, attachments), places each balancer as an
//! endpoint, and runs its data plane as a process of its own ([`crate::plane`]) that keeps
//! serving when the control plane stops, crashes or is replaced. Every change compiles the
//! model into each balancer's configuration file and tells its plane to apply it (listeners
//! are never restarted for a change); target groups' targets follow attachments and auto
//! scaling groups. At start, running planes are adopted (the same process, no gap), and a
//! plane of an older veeps hands its sockets to a new one.

use crate::model::{Action, AttachmentSpec, LbSpec, ListenerSpec, RuleSpec, TgSpec};
use crate::plane::{
    Applied, GroupHealth, Hello, PlaneCert, PlaneConfig, PlaneGroup, PlaneListener, Request,
    StatsView, CONFIG, SOCKET,
};
use crate::plane_client::{request, request_blocking};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A balancer's data-plane process, as the control plane knows it.
struct PlaneRef {
    spec: LbSpec,
    address: std::net::Ipv4Addr,
    netns: String,
    dir: PathBuf,
    /// The configuration it last applied (`None`: unknown, send it).
    applied: Option<PlaneConfig>,
    /// The generation of the ban list it was last sent (0: none).
    bans_sent: u64,
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
    /// Where planes keep their files (`DIR/ID/`).
    dir: PathBuf,
    /// The program planes run (this veeps).
    exe: PathBuf,
    planes: Mutex<HashMap<String, PlaneRef>>,
    /// Failed renewals: tries so far and when to try again (unix seconds), by certificate.
    renewals: Mutex<HashMap<String, (u32, i64)>>,
    /// ACME HTTP-01 answers served on every plain-HTTP listener: token to key
    /// authorization (in memory: an order in progress does not outlive a restart).
    challenges: Mutex<BTreeMap<String, String>>,
    /// Renewals that failed, ever.
    renewal_failures: std::sync::atomic::AtomicU64,
    /// Each plane's last reported target health, by balancer id.
    health: Mutex<HashMap<String, Vec<GroupHealth>>>,
    change: tokio::sync::Mutex<()>,
    /// Where failed Basic authentications are reported, and bans come from.
    intrusion: std::sync::OnceLock<Arc<dyn veeps_resource::intrusion::Intrusion>>,
}

fn io(e: impl std::fmt::Display) -> LbError {
    LbError::Io(e.to_string())
}

impl Lbs {
    /// The service; planes keep their files under `data_dir/lb`.
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        net: Arc<Net>,
        obs: Arc<Obs>,
        compute: Arc<Compute>,
        certs: Arc<Certs>,
        ca_pem: String,
    ) -> std::io::Result<Arc<Lbs>> {
        Ok(Arc::new(Lbs {
            store,
            net,
            obs,
            compute,
            certs,
            ca_pem,
            dir: data_dir.join("lb"),
            exe: std::env::current_exe()?,
            planes: Mutex::new(HashMap::new()),
            renewals: Mutex::new(HashMap::new()),
            challenges: Mutex::new(BTreeMap::new()),
            renewal_failures: std::sync::atomic::AtomicU64::new(0),
            health: Mutex::new(HashMap::new()),
            change: tokio::sync::Mutex::new(()),
            intrusion: std::sync::OnceLock::new(),
        }))
    }

    /// Reports the balancers' failed Basic authentications to `i` (source `lb`, counted by
    /// the balancer's environment's policies) and has them refuse the addresses it bans.
    pub fn set_intrusion(&self, i: Arc<dyn veeps_resource::intrusion::Intrusion>) {
        let _ = self.intrusion.set(i);
    }

    /// One plane's part in intrusion detection: its failures since the last pass are
    /// counted, and it is sent the ban list when that changed since it was last sent.
    async fn intrusion_pass(&self, id: &str, env: &str, dir: &Path) {
        let Some(i) = self.intrusion.get() else {
            return;
        };
        let sock = dir.join(SOCKET);
        // Only a balancer asking for credentials has failures to collect.
        let (sent, guarded) = self
            .planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|p| {
                let guarded = p.applied.as_ref().is_none_or(|c| {
                    c.listeners.iter().any(|l| {
                        l.spec.default_auth.is_some() || l.rules.iter().any(|r| r.auth.is_some())
                    })
                });
                (Some(p.bans_sent), guarded)
            })
            .unwrap_or((None, false));
        if guarded {
            match request::<Vec<(std::net::IpAddr, u32)>>(
                &sock,
                &Request::AuthFailures,
                Duration::from_secs(1),
            )
            .await
            {
                Ok(failures) => {
                    for (ip, n) in failures {
                        for _ in 0..n.min(1000) {
                            i.failed_in("lb", env, ip);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(lb = %id, error = %e, "no authentication failures from a balancer")
                }
            }
        }
        if sent.is_none_or(|s| s == i.ban_generation()) {
            return;
        }
        let (generation, groups) = i.banned_groups();
        let ok = request::<serde_json::Value>(
            &sock,
            &Request::Banned { groups },
            Duration::from_secs(5),
        )
        .await;
        match ok {
            Ok(_) => {
                if let Some(p) = self
                    .planes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(id)
                {
                    p.bans_sent = generation;
                }
            }
            Err(e) => tracing::debug!(lb = %id, error = %e, "a balancer was not sent its bans"),
        }
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

    fn plane_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates or updates a balancer (placed, its data plane running); returns its address.
    pub async fn put_lb(self: &Arc<Self>, spec: LbSpec) -> Result<String, LbError> {
        let _g = self.change.lock().await;
        let subnet = spec
            .subnets
            .first()
            .ok_or_else(|| LbError::Invalid("a load balancer needs at least one subnet".into()))?;
        // Moved to another subnet (AWS's SetSubnets): the balancer is placed anew there,
        // with a new address (DNS aliases follow it).
        if let Ok(Some(old)) = self.net.endpoint(&Self::endpoint_name(&spec)) {
            if &old.subnet_id != subnet {
                self.planes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&spec.id);
                self.stop_plane(&self.plane_dir(&spec.id)).await;
                self.net.detach(&Self::endpoint_name(&spec)).await?;
            }
        }
        let ep = self
            .net
            .attach(AttachRequest {
                name: Self::endpoint_name(&spec),
                subnet_id: subnet.clone(),
                security_groups: spec.security_groups.clone(),
            })
            .await?;
        self.put(K_LB, &spec.id, &spec)?;
        self.ensure_plane(&spec, ep.address, &ep.netns).await?;
        self.apply_model().await?;
        Ok(ep.address.to_string())
    }

    /// Makes sure the balancer's data plane runs where it is placed: the one known, else
    /// one left running by a previous control plane (adopted as it is, upgraded in place
    /// when it runs an older veeps), else a new one.
    async fn ensure_plane(
        self: &Arc<Self>,
        spec: &LbSpec,
        address: std::net::Ipv4Addr,
        netns: &str,
    ) -> Result<(), LbError> {
        let dir = self.plane_dir(&spec.id);
        let known = {
            let mut planes = self.planes.lock().unwrap_or_else(|p| p.into_inner());
            match planes.get_mut(&spec.id) {
                Some(p) if p.address == address && p.netns == netns => {
                    p.spec = spec.clone();
                    true
                }
                Some(_) => {
                    planes.remove(&spec.id);
                    false
                }
                None => false,
            }
        };
        if known && self.plane_alive(&dir) {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Its configuration holds listeners' private keys.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let running = self.plane_alive(&dir);
        let same_place =
            read_config(&dir).is_some_and(|c| c.address == address && c.netns == netns);
        let version = if running && same_place {
            request::<Hello>(&dir.join(SOCKET), &Request::Hello, Duration::from_secs(5))
                .await
                .ok()
                .map(|h| h.version)
        } else {
            None
        };
        // Its configuration, as it stands (listeners follow with the model).
        let cfg = self.compile_one(spec, address, netns, &self.model(Some(&spec.env)));
        write_config(&dir, &cfg)?;
        match version {
            Some(v) if v == crate::plane::build_id() => {
                tracing::info!(lb = %spec.name, "adopted the running load balancer data plane");
            }
            Some(v) => {
                tracing::info!(lb = %spec.name, from = %v, "upgrading the load balancer data plane in place (it runs another build)");
                self.spawn_plane(&dir, true).await?;
            }
            None => {
                if running {
                    // Placed elsewhere now: the old one goes first.
                    self.stop_plane(&dir).await;
                }
                self.spawn_plane(&dir, false).await?;
            }
        }
        // Its access logs, from where the last reader stopped.
        self.obs.follow(
            &format!("lb/{}", spec.id),
            &dir,
            &spec.env,
            &format!("lb-{}", spec.name),
            "lb",
        );
        self.planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                spec.id.clone(),
                PlaneRef {
                    spec: spec.clone(),
                    address,
                    netns: netns.to_string(),
                    dir,
                    applied: None,
                    bans_sent: 0,
                },
            );
        Ok(())
    }

    /// Whether the process named in the plane's pid file runs.
    fn plane_alive(&self, dir: &Path) -> bool {
        plane_pid(dir).is_some()
    }

    /// Starts a plane process (taking over the running one's sockets with `takeover`) and
    /// waits until it answers.
    pub async fn spawn_plane(&self, dir: &Path, takeover: bool) -> Result<(), LbError> {
        let mut args: Vec<&std::ffi::OsStr> = vec!["lb-plane".as_ref(), dir.as_os_str()];
        if takeover {
            args.push("--takeover".as_ref());
        }
        veeps_sys::plane::spawn(&self.exe, &args, dir, "the balancer's data plane")
            .await
            .map(|_| ())
            .map_err(LbError::Io)
    }

    /// Stops a plane process and waits for it to go.
    async fn stop_plane(&self, dir: &Path) {
        let Some(p) = plane_pid(dir) else {
            return;
        };
        let ask = async {
            let _ = request::<serde_json::Value>(
                &dir.join(SOCKET),
                &Request::Stop,
                Duration::from_secs(5),
            )
            .await;
        };
        veeps_sys::plane::stop(p, ask).await;
    }

    /// Stops and forgets a balancer.
    pub async fn delete_lb(self: &Arc<Self>, id: &str) -> Result<(), LbError> {
        let _g = self.change.lock().await;
        let spec: Option<LbSpec> = self.store.kv_get(&format!("{K_LB}{id}")).map_err(io)?;
        self.planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let dir = self.plane_dir(id);
        self.stop_plane(&dir).await;
        self.obs.unfollow(&format!("lb/{id}"));
        let _ = std::fs::remove_dir_all(&dir);
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

    /// Compiles the model into every balancer's configuration and has each plane apply
    /// it: listeners bound or closed, rules and certificates swapped, target groups'
    /// settings and targets updated.
    async fn apply_model(self: &Arc<Self>) -> Result<(), LbError> {
        for (id, e) in self.compile_model().await {
            tracing::warn!(listener = %id, error = %e, "a listener could not start; the next apply of it retries");
        }
        Ok(())
    }

    /// Everything recorded, read once for a compilation.
    fn model(&self, also: Option<&str>) -> Model {
        let attachments: Vec<AttachmentSpec> = self.all(K_ATTACH);
        let planes = self.planes.lock().unwrap_or_else(|p| p.into_inner());
        let mut envs: std::collections::BTreeSet<String> =
            planes.values().map(|l| l.spec.env.clone()).collect();
        drop(planes);
        envs.extend(also.map(str::to_string));
        Model {
            listeners: self.all(K_LISTENER),
            rules: self.all(K_RULE),
            tgs: self
                .all::<TgSpec>(K_TG)
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
            attachments,
            // Each environment's groups once per compilation, not once per target group.
            groups: envs.iter().flat_map(|e| self.compute.records(e)).collect(),
        }
    }

    /// One balancer's configuration.
    fn compile_one(
        &self,
        spec: &LbSpec,
        address: std::net::Ipv4Addr,
        netns: &str,
        m: &Model,
    ) -> PlaneConfig {
        let mine: Vec<&ListenerSpec> = m.listeners.iter().filter(|l| l.lb_id == spec.id).collect();
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
        let mut listeners = vec![];
        for l in &mine {
            note(&l.default_action);
            let mut rules: Vec<RuleSpec> = m
                .rules
                .iter()
                .filter(|r| r.listener_id == l.id)
                .cloned()
                .collect();
            rules.sort_by_key(|r| r.priority);
            for r in &rules {
                note(&r.action);
            }
            let mut certs = vec![];
            for c in &l.certificates {
                match self.certs.get(c) {
                    Some(issued) => certs.push(PlaneCert {
                        names: issued.names.clone(),
                        chain_pem: issued.chain_pem.clone(),
                        key_pem: issued.key_pem.clone(),
                    }),
                    None => {
                        tracing::warn!(certificate = %c, "listener names an unknown certificate")
                    }
                }
            }
            listeners.push(PlaneListener {
                spec: (*l).clone(),
                rules,
                certs,
            });
        }
        let mut groups = vec![];
        for id in &used {
            let Some(tg) = m.tgs.get(id) else { continue };
            let port = tg.port;
            let mut want: Vec<SocketAddr> = m
                .attachments
                .iter()
                .filter(|a| &a.tg_id == id)
                .filter_map(|a| {
                    a.target
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, a.port.unwrap_or(port)))
                })
                .collect();
            for g in m
                .groups
                .iter()
                .filter(|g| g.spec.target_groups.contains(id))
            {
                for i in &g.instances {
                    if i.lifecycle == veeps_compute::group::Lifecycle::Terminating || i.pid == 0 {
                        continue;
                    }
                    if let Ok(ip) = i.address.parse::<std::net::IpAddr>() {
                        want.push(SocketAddr::new(ip, port));
                    }
                }
            }
            want.sort();
            want.dedup();
            groups.push(PlaneGroup {
                spec: tg.clone(),
                targets: want,
            });
        }
        PlaneConfig {
            lb: spec.clone(),
            address,
            netns: netns.to_string(),
            ca_pem: self.ca_pem.clone(),
            listeners,
            groups,
            challenges: self
                .challenges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            functions_socket: self
                .dir
                .parent()
                .map(veeps_resource::edge::local_invoke_socket),
        }
    }

    /// Compiles every balancer; each whose configuration changed writes it and has its plane
    /// apply it. Returns the listeners that could not bind (each left out, so the next
    /// apply retries it).
    async fn compile_model(self: &Arc<Self>) -> Vec<(String, LbError)> {
        let m = self.model(None);
        let planes: Vec<(
            String,
            LbSpec,
            std::net::Ipv4Addr,
            String,
            PathBuf,
            Option<PlaneConfig>,
        )> = self
            .planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    p.spec.clone(),
                    p.address,
                    p.netns.clone(),
                    p.dir.clone(),
                    p.applied.clone(),
                )
            })
            .collect();
        let mut failures = vec![];
        for (id, spec, address, netns, dir, applied) in planes {
            let cfg = self.compile_one(&spec, address, netns.as_str(), &m);
            if applied.as_ref() == Some(&cfg) {
                continue;
            }
            if let Err(e) = write_config(&dir, &cfg) {
                failures.push((id.clone(), e));
                continue;
            }
            match request::<Applied>(&dir.join(SOCKET), &Request::Apply, Duration::from_secs(30))
                .await
            {
                Ok(a) => {
                    let failed: Vec<String> = a.failures.iter().map(|(l, _)| l.clone()).collect();
                    failures.extend(a.failures.into_iter().map(|(l, e)| (l, LbError::Io(e))));
                    // A listener left out is retried at the next change.
                    let mut planes = self.planes.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = planes.get_mut(&id) {
                        p.applied = failed.is_empty().then_some(cfg);
                    }
                }
                Err(e) => {
                    tracing::warn!(lb = %spec.name, error = %e, "the balancer's data plane did not apply its configuration");
                    failures.push((id.clone(), LbError::Io(e.to_string())));
                }
            }
        }
        failures
    }

    /// Brings every target group's targets in line with attachments and groups, and
    /// reads the planes' view of their health.
    pub async fn refresh_targets(self: &Arc<Self>) {
        if let Ok(_g) = self.change.try_lock() {
            for (id, e) in self.compile_model().await {
                tracing::debug!(listener = %id, error = %e, "refresh");
            }
        }
        let planes: Vec<(String, String, PathBuf)> = self
            .planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, p)| (id.clone(), p.spec.env.clone(), p.dir.clone()))
            .collect();
        for (id, env, dir) in planes {
            self.intrusion_pass(&id, &env, &dir).await;
            match request::<Vec<GroupHealth>>(
                &dir.join(SOCKET),
                &Request::Health,
                Duration::from_secs(2),
            )
            .await
            {
                Ok(h) => {
                    self.health
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, h);
                }
                Err(e) => {
                    tracing::warn!(lb = %id, error = %e, "cannot read a balancer's target health");
                    // Gone (killed): start it again from its last configuration.
                    if plane_pid(&dir).is_none() {
                        let _g = self.change.lock().await;
                        if let Err(e) = self.spawn_plane(&dir, false).await {
                            tracing::error!(lb = %id, error = %e, "cannot restart a balancer's data plane");
                        } else if let Some(p) = self
                            .planes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_mut(&id)
                        {
                            tracing::warn!(lb = %id, "restarted a balancer's data plane that had died");
                            p.applied = None;
                            p.bans_sent = 0;
                        }
                    }
                }
            }
        }
    }

    /// Runs the target refresh loop (every 250 ms) and the ACME renewal loop.
    pub fn run(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(250));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.refresh_targets().await;
            }
        });
        let weak = Arc::downgrade(self);
        // How often certificates are looked at (a test knob; renewal is due at two
        // thirds of a lifetime, so minutes are plenty).
        let every = std::env::var("VEEPS_ACME_CHECK_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300)
            .max(1);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(every));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.renew_due().await;
            }
        });
    }

    /// Renews the ACME certificates due (two thirds of their lifetime gone), swapping each
    /// into its listeners at once; a failure is retried with back-off (1 minute, doubling,
    /// at most 6 hours) and counted.
    pub async fn renew_due(self: &Arc<Self>) {
        let now = veeps_sys::now_ms() / 1000;
        for c in self.certs.list() {
            let Some(spec) = c.acme.clone() else { continue };
            let Ok((nb, na)) = veeps_pki::acme::validity(&c.chain_pem) else {
                continue;
            };
            if now < veeps_pki::acme::due(nb, na) {
                continue;
            }
            let next = self
                .renewals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&c.id)
                .copied();
            if next.is_some_and(|(_, at)| now < at) {
                continue;
            }
            match self.certs.acme.issue(&c.id, &c.names, &spec).await {
                Ok(x) => {
                    let stored = self.certs.put(&x).map_err(|e| e.to_string());
                    let swapped = match stored {
                        Ok(()) => self.refresh_certificates().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    match swapped {
                        Ok(()) => {
                            self.renewals
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&c.id);
                            tracing::info!(certificate = %c.id, not_after = %x.not_after, "certificate renewed");
                        }
                        Err(e) => {
                            tracing::warn!(certificate = %c.id, error = %e, "a renewed certificate could not be stored")
                        }
                    }
                }
                Err(e) => {
                    self.renewal_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut r = self.renewals.lock().unwrap_or_else(|p| p.into_inner());
                    let tries = r.get(&c.id).map(|(n, _)| n + 1).unwrap_or(1);
                    let wait = (60i64 << (tries - 1).min(9)).min(6 * 3600);
                    r.insert(c.id.clone(), (tries, now + wait));
                    tracing::warn!(certificate = %c.id, error = %e, retry_in_secs = wait, "certificate renewal failed");
                }
            }
        }
    }

    /// Target health by target group, as each balancer sees it.
    pub fn target_health(&self, env_filter: Option<&str>) -> Vec<veeps_wire::TargetGroupView> {
        let planes = self.planes.lock().unwrap_or_else(|p| p.into_inner());
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        for (id, p) in planes
            .iter()
            .filter(|(_, l)| env_filter.is_none_or(|e| l.spec.env == e))
        {
            for g in health.get(id).into_iter().flatten() {
                out.push(veeps_wire::TargetGroupView {
                    load_balancer: p.spec.name.clone(),
                    target_group: g.name.clone(),
                    target_group_id: g.id.clone(),
                    targets: g
                        .targets
                        .iter()
                        .map(|t| veeps_wire::TargetView {
                            target: t.addr.to_string(),
                            state: t.state.clone(),
                            in_flight: t.in_flight,
                        })
                        .collect(),
                });
            }
        }
        out.sort_by(|a, b| {
            (&a.load_balancer, &a.target_group).cmp(&(&b.load_balancer, &b.target_group))
        });
        out
    }

    /// Metrics of every balancer, read from their planes.
    pub fn samples(&self) -> Vec<veeps_obs::collect::Sample> {
        use veeps_obs::collect::Sample;
        let planes: Vec<(LbSpec, PathBuf)> = self
            .planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|p| (p.spec.clone(), p.dir.clone()))
            .collect();
        let mut out = vec![];
        // Seconds each certificate has left (an alarm below a threshold warns before
        // expiry), and renewals that failed.
        let now = veeps_sys::now_ms() / 1000;
        for c in self.certs.list() {
            if let Ok((_, na)) = veeps_pki::acme::validity(&c.chain_pem) {
                out.push(Sample::new(
                    "certificate_expiry_seconds",
                    &[("env", "system"), ("certificate", c.id.as_str())],
                    (na - now) as f64,
                ));
            }
        }
        out.push(Sample::new(
            "certificate_renewal_failures_total",
            &[("env", "system")],
            self.renewal_failures
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        ));
        for (spec, dir) in planes {
            let s: StatsView = match request_blocking(
                &dir.join(SOCKET),
                &Request::Stats,
                Duration::from_secs(1),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(lb = %spec.name, error = %e, "no counters from a balancer");
                    continue;
                }
            };
            let l = [
                ("env", spec.env.as_str()),
                ("load_balancer", spec.name.as_str()),
            ];
            out.push(Sample::new("lb_request_count_total", &l, s.requests as f64));
            for (i, name) in [
                (2, "lb_http_2xx_total"),
                (3, "lb_http_3xx_total"),
                (4, "lb_http_4xx_total"),
                (5, "lb_http_5xx_total"),
            ] {
                out.push(Sample::new(name, &l, s.status[i] as f64));
            }
            out.push(Sample::new(
                "lb_received_bytes_total",
                &l,
                s.bytes_in as f64,
            ));
            out.push(Sample::new("lb_sent_bytes_total", &l, s.bytes_out as f64));
            out.push(Sample::new(
                "lb_active_connections",
                &l,
                s.connections as f64,
            ));
            out.push(Sample::new(
                "lb_retried_requests_total",
                &l,
                s.retries as f64,
            ));
            for (k, v) in s.latency {
                out.push(Sample::new(
                    &format!("lb_target_response_seconds_{k}"),
                    &l,
                    v,
                ));
            }
            for (_, name, n, usable, h, u) in s.groups {
                let tl = [
                    ("env", spec.env.as_str()),
                    ("load_balancer", spec.name.as_str()),
                    ("target_group", name.as_str()),
                ];
                out.push(Sample::new(
                    "lb_requests_per_target",
                    &tl,
                    n as f64 / usable.max(1) as f64,
                ));
                out.push(Sample::new("lb_healthy_host_count", &tl, h as f64));
                out.push(Sample::new("lb_unhealthy_host_count", &tl, u as f64));
            }
        }
        out
    }

    /// The control plane is stopping: with `everything`, every balancer's data plane
    /// stops too; without, they keep serving and the next start adopts them.
    pub async fn shutdown(&self, everything: bool) {
        if !everything {
            return;
        }
        let dirs: Vec<PathBuf> = self
            .planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, p)| p.dir)
            .collect();
        for d in dirs {
            self.stop_plane(&d).await;
        }
    }

    fn cached_groups(&self) -> Vec<GroupHealth> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }
}

/// What a compilation reads.
struct Model {
    listeners: Vec<ListenerSpec>,
    rules: Vec<RuleSpec>,
    tgs: BTreeMap<String, TgSpec>,
    attachments: Vec<AttachmentSpec>,
    groups: Vec<veeps_compute::group::GroupRecord>,
}

fn read_config(dir: &Path) -> Option<PlaneConfig> {
    serde_json::from_slice(&std::fs::read(dir.join(CONFIG)).ok()?).ok()
}

fn write_config(dir: &Path, cfg: &PlaneConfig) -> Result<(), LbError> {
    let body = serde_json::to_vec(cfg).map_err(io)?;
    veeps_sys::plane::write_private(&dir.join(CONFIG), &body).map_err(io)
}

/// The plane process named in `dir`'s pid file, if it still runs.
fn plane_pid(dir: &Path) -> Option<(u32, u64)> {
    veeps_sys::plane::running(dir)
}

#[async_trait::async_trait]
impl veeps_compute::group::TargetHealth for Lbs {
    fn healthy(&self, target_groups: &[String], address: &str) -> Option<bool> {
        let ip: std::net::IpAddr = address.parse().ok()?;
        let mut seen = None;
        for g in self
            .cached_groups()
            .iter()
            .filter(|g| target_groups.contains(&g.id))
        {
            for t in g
                .targets
                .iter()
                .filter(|t| t.addr.ip() == ip && t.state != "draining")
            {
                seen = Some(seen.unwrap_or(true) && t.state == "healthy");
            }
        }
        seen
    }
    fn requests(&self, target_groups: &[String]) -> u64 {
        self.cached_groups()
            .iter()
            .filter(|g| target_groups.contains(&g.id))
            .map(|g| g.requests_total)
            .sum()
    }
    fn serves(&self, target_groups: &[String]) -> bool {
        self.cached_groups()
            .iter()
            .any(|g| target_groups.contains(&g.id))
    }
    async fn drain(&self, target_groups: &[String], address: &str) {
        let Ok(ip) = address.parse::<std::net::IpAddr>() else {
            return;
        };
        let dirs: Vec<PathBuf> = {
            let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let planes = self.planes.lock().unwrap_or_else(|p| p.into_inner());
            planes
                .iter()
                .filter(|(id, _)| {
                    health
                        .get(*id)
                        .is_some_and(|gs| gs.iter().any(|g| target_groups.contains(&g.id)))
                })
                .map(|(_, p)| p.dir.clone())
                .collect()
        };
        let req = Request::Drain {
            groups: target_groups.to_vec(),
            ip,
        };
        let waits = dirs.iter().map(|d| {
            let sock = d.join(SOCKET);
            let req = req.clone();
            async move {
                // The longest deregistration delay is an hour.
                let _ = request::<serde_json::Value>(&sock, &req, Duration::from_secs(3700)).await;
            }
        });
        futures::future::join_all(waits).await;
    }
}

/// DNS aliases point at balancers: by id (or ARN, the same here) or current address, and
/// answer with the address of the balancer's endpoint as it is now.
impl veeps_resource::alias::AliasTargets for Lbs {
    fn resolve(&self, name: &str) -> Option<String> {
        let specs: Vec<LbSpec> = self.all(K_LB);
        if let Some(s) = specs.iter().find(|s| s.id == name) {
            return Some(s.id.clone());
        }
        specs
            .into_iter()
            .find(|s| self.addresses(&s.id).iter().any(|a| a.to_string() == name))
            .map(|s| s.id)
    }

    fn addresses(&self, id: &str) -> Vec<std::net::IpAddr> {
        let Ok(Some(spec)) = self.store.kv_get::<LbSpec>(&format!("{K_LB}{id}")) else {
            return vec![];
        };
        match self.net.endpoint(&Self::endpoint_name(&spec)) {
            Ok(Some(ep)) => vec![std::net::IpAddr::V4(ep.address)],
            _ => vec![],
        }
    }
}

/// ACME HTTP-01 answers, served by every balancer's plain-HTTP listeners.
pub struct HttpChallenges(pub Arc<Lbs>);

#[async_trait::async_trait]
impl veeps_resource::acme::Http01 for HttpChallenges {
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        let serving = self
            .0
            .planes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if serving == 0 {
            return Err("no load balancer of veeps runs to answer HTTP-01: declare one with an HTTP listener on port 80 where the name points, or use validation_method = \"acme_dns\"".into());
        }
        self.0
            .challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
        let _g = self.0.change.lock().await;
        self.0.apply_model().await.map_err(|e| e.to_string())
    }

    async fn withdraw(&self, token: &str) {
        self.0
            .challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
        let _g = self.0.change.lock().await;
        if let Err(e) = self.0.apply_model().await {
            tracing::warn!(error = %e, "withdrawing an HTTP-01 answer");
        }
    }
}
