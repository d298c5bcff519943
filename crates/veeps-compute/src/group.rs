//! Auto scaling groups: a supervisor per group keeps its desired count of instances
//! running, each a confined process in its own endpoint namespace and cgroup; replaces
//! the dead and the unhealthy; scales; and rolls out a changed launch template batch by
//! batch, rolling back when new instances do not become healthy.

use crate::cgroup::{self, Cgroup, Limits};
use crate::image::Images;
use crate::sandbox::{self, Bind, Confine, Ids};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veeps_net::{AttachRequest, Net};
use veeps_obs::Obs;
use veeps_state::Store;

/// What an instance runs and with what limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Template {
    /// The launch template's id.
    pub id: String,
    /// The image.
    pub image_id: String,
    /// CPUs.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Most processes and threads.
    pub pids: u64,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The app's port (`PORT`), checked for health when set.
    pub port: Option<u16>,
    /// HTTP path of the health check (with `port`).
    pub health_check_path: Option<String>,
}

impl Template {
    /// A fingerprint: instances with another one are out of date.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let j = serde_json::to_string(self).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(j.as_bytes()))[..12].to_string()
    }
}

/// The load balancers' view of targets: a group with target groups enters instances into
/// service when the balancers find them healthy, and drains them before stopping them.
#[async_trait::async_trait]
pub trait TargetHealth: Send + Sync {
    /// Healthy in every balancer that knows the address as a target of these groups;
    /// `None` when none does.
    fn healthy(&self, target_groups: &[String], address: &str) -> Option<bool>;
    /// True if some balancer forwards to one of these groups.
    fn serves(&self, target_groups: &[String]) -> bool;
    /// Requests the balancers have sent to these groups so far.
    fn requests(&self, target_groups: &[String]) -> u64;
    /// Stops new requests to the address and waits for its in-flight ones (up to each
    /// group's deregistration delay).
    async fn drain(&self, target_groups: &[String], address: &str);
}

/// How instance health is judged.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum HealthCheck {
    /// The process is running.
    #[serde(rename = "process")]
    Process,
    /// The application answers its health check (the load balancer's view).
    #[serde(rename = "lb")]
    Lb,
}

/// Rolling replacement settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Refresh {
    /// Percent of the desired count that stays in service during a rollout.
    pub min_healthy_percentage: u32,
    /// Start new instances before stopping old ones.
    pub create_before_destroy: bool,
    /// Seconds new instances have to become healthy.
    pub timeout_secs: u64,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            min_healthy_percentage: 90,
            create_before_destroy: true,
            timeout_secs: 120,
        }
    }
}

/// A group as declared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupSpec {
    /// Its id (`asg-...`).
    pub id: String,
    /// The environment.
    pub env: String,
    /// Its name (the log group and `VEEPS_GROUP`).
    pub name: String,
    /// What instances run.
    pub template: Template,
    /// Subnets to spread across.
    pub subnets: Vec<String>,
    /// Security groups of every instance.
    pub security_groups: Vec<String>,
    /// Bounds.
    pub min_size: u32,
    /// Bounds.
    pub max_size: u32,
    /// Health check type.
    pub health_check: HealthCheck,
    /// Seconds after launch before health checks can fail an instance.
    pub grace_secs: u64,
    /// Load balancer target groups (registered by the load balancer part).
    pub target_groups: Vec<String>,
    /// Which instances go first when scaling in.
    pub termination_policies: Vec<String>,
    /// Rollouts.
    pub refresh: Refresh,
    /// Extra environment: VPC name and the like.
    pub extra_env: BTreeMap<String, String>,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Lifecycle {
    /// Started, not yet healthy.
    Pending,
    /// Healthy.
    InService,
    /// Being stopped.
    Terminating,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    /// `i-` and 8 hex digits.
    pub id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its address.
    pub address: String,
    /// The template fingerprint it runs.
    pub fingerprint: String,
    /// The image it runs.
    pub image_id: String,
    /// When it started (ms).
    pub launched_ms: i64,
    /// Its state.
    pub lifecycle: Lifecycle,
    /// Its process id.
    pub pid: u32,
    /// Consecutive failed health checks.
    #[serde(default)]
    pub failures: u32,
}

/// Something that happened to a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    /// When (RFC 3339).
    pub time: String,
    /// What.
    pub description: String,
    /// Why.
    pub cause: String,
}

/// A group's recorded state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The declaration.
    pub spec: GroupSpec,
    /// The current desired count (scaling changes it).
    pub desired: u32,
    /// Instances.
    pub instances: Vec<Instance>,
    /// The newest activities, oldest first.
    pub activities: VecDeque<Activity>,
    /// When scaling last changed `desired` (ms).
    #[serde(default)]
    pub last_scaled_ms: i64,
}

/// Errors of the compute service.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// Something declared cannot be run.
    #[error("{0}")]
    Invalid(String),
    /// A rollout failed and was rolled back.
    #[error("{0}")]
    RolledBack(String),
    /// Networking failed.
    #[error(transparent)]
    Net(#[from] veeps_net::NetError),
    /// The disk failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error("state store: {0}")]
    Store(String),
}

const K_GROUP: &str = "compute/group/";
const K_TEMPLATE: &str = "compute/template/";
const TICK: Duration = Duration::from_millis(250);
const STOP_GRACE: Duration = Duration::from_secs(5);

use veeps_sys::now_ms;

/// A running group.
struct Group {
    rec: Mutex<GroupRecord>,
    /// Instance id -> exit status, filled by waiter tasks.
    exited: Mutex<HashMap<String, String>>,
    /// Last CPU reading per instance: (time ns, cpu ns, percent of its limit).
    cpu: Mutex<HashMap<String, (u128, u64, f64)>>,
    /// A rollout is in charge of the count.
    refreshing: std::sync::atomic::AtomicBool,
    /// Health check rounds so far.
    rounds: std::sync::atomic::AtomicU64,
    stop: tokio::sync::watch::Sender<bool>,
    wake: tokio::sync::Notify,
}

/// The compute service of one server.
pub struct Compute {
    data_dir: PathBuf,
    run_dir: PathBuf,
    prefix: String,
    store: Arc<Store>,
    net: Arc<Net>,
    obs: Arc<Obs>,
    /// The image store.
    pub images: Arc<Images>,
    cgroups: cgroup::Flavor,
    ids: Option<Ids>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    target_health: std::sync::OnceLock<Arc<dyn TargetHealth>>,
    /// The CA certificate instances trust (given to them as `VEEPS_CA_PEM`).
    ca_pem: String,
}

impl Compute {
    /// Plugs in the load balancers' view of targets.
    pub fn set_target_health(&self, t: Arc<dyn TargetHealth>) {
        let _ = self.target_health.set(t);
    }

    /// The service for a data directory; instances trust `ca_pem`.
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        net: Arc<Net>,
        obs: Arc<Obs>,
        ca_pem: String,
    ) -> std::io::Result<Arc<Compute>> {
        let cgroups = cgroup::detect();
        if let cgroup::Flavor::None(why) = &cgroups {
            tracing::warn!("instance limits are off: {why}");
        }
        let ids = sandbox::unprivileged();
        if ids.is_none() && !sandbox::user_namespaces() {
            tracing::warn!("instances run as veeps' own user and CAN READ ITS DATA DIRECTORY (root.token, root.key): this kernel allows no unprivileged user namespaces; run veeps as root to isolate them");
        }
        let prefix = net.prefix().to_string();
        let images =
            Arc::new(Images::open(data_dir, store.clone())?.with_cgroups(cgroups.clone(), &prefix));
        // Where instances' binds are mounted: /run with privileges, else a directory of
        // ours outside the data directory (which instances do not see).
        let run_dir = if ids.is_some() {
            PathBuf::from("/run").join(format!("veeps-{prefix}"))
        } else {
            std::env::temp_dir().join(format!("veeps-{prefix}"))
        };
        Ok(Arc::new(Compute {
            data_dir: data_dir.to_path_buf(),
            run_dir,
            prefix,
            store,
            net,
            obs,
            images,
            cgroups,
            ids,
            groups: Mutex::new(HashMap::new()),
            target_health: std::sync::OnceLock::new(),
            ca_pem,
        }))
    }

    fn save(&self, rec: &GroupRecord) {
        if let Err(e) = self.store.kv_put(&format!("{K_GROUP}{}", rec.spec.id), rec) {
            tracing::error!(group = %rec.spec.name, error = %e, "could not record the group");
        }
    }

    fn group(&self, id: &str) -> Option<Arc<Group>> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every group's record (running or not), for listings.
    pub fn records(&self, env: &str) -> Vec<GroupRecord> {
        let mut out: Vec<GroupRecord> = self
            .store
            .kv_scan::<GroupRecord>(K_GROUP)
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default();
        out.retain(|r| r.spec.env == env);
        for r in out.iter_mut() {
            if let Some(g) = self.group(&r.spec.id) {
                *r = g.rec.lock().unwrap_or_else(|p| p.into_inner()).clone();
            }
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        out
    }

    /// Creates or updates a group and starts its supervisor; with a changed template,
    /// rolls it out and returns once every instance runs it (or after rolling back).
    /// `desired` is applied when `Some` (clamped to the bounds).
    pub async fn ensure_group(
        self: &Arc<Self>,
        spec: GroupSpec,
        desired: Option<u32>,
        wait: bool,
    ) -> Result<GroupRecord, ComputeError> {
        if self.images.get(&spec.template.image_id).is_none() {
            return Err(ComputeError::Invalid(format!(
                "image {} is not in the image store (see `veeps image list`)",
                spec.template.image_id
            )));
        }
        if spec.subnets.is_empty() {
            return Err(ComputeError::Invalid(
                "a group needs at least one subnet".into(),
            ));
        }
        let existing = self.group(&spec.id);
        let g = match existing {
            Some(g) => g,
            None => {
                let rec = self
                    .store
                    .kv_get::<GroupRecord>(&format!("{K_GROUP}{}", spec.id))
                    .map_err(|e| ComputeError::Store(e.to_string()))?
                    .unwrap_or(GroupRecord {
                        spec: spec.clone(),
                        desired: desired.unwrap_or(spec.min_size),
                        instances: vec![],
                        activities: VecDeque::new(),
                        last_scaled_ms: 0,
                    });
                let g = self.start(rec);
                // Instances of a previous run are gone with their pipes: stop what is
                // left of them, so no two copies of one instance ever run.
                self.clear_stale(&g).await;
                g
            }
        };
        let old_template = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let old = r.spec.template.clone();
            r.spec = GroupSpec {
                template: old.clone(),
                ..spec.clone()
            };
            if let Some(d) = desired {
                r.desired = d;
            }
            r.desired = r.desired.clamp(spec.min_size, spec.max_size);
            self.save(&r);
            old
        };
        let stale = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            r.instances
                .iter()
                .any(|i| i.fingerprint != spec.template.fingerprint())
        };
        if old_template != spec.template && stale {
            self.roll_out(&g, spec.template.clone(), old_template)
                .await?;
        } else {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            r.spec.template = spec.template.clone();
            self.save(&r);
        }
        g.wake.notify_one();
        // Wait (briefly) until the group has its count running, as an apply should.
        if wait {
            self.wait_in_service(&g, Duration::from_secs(spec.grace_secs.clamp(5, 60)))
                .await;
        }
        let rec = g.rec.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(rec)
    }

    async fn wait_in_service(&self, g: &Arc<Group>, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while tokio::time::Instant::now() < deadline {
            {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                let up = r
                    .instances
                    .iter()
                    .filter(|i| i.lifecycle == Lifecycle::InService)
                    .count() as u32;
                if up >= r.desired && r.instances.len() as u32 == r.desired {
                    return;
                }
            }
            tokio::time::sleep(TICK).await;
        }
    }

    async fn clear_stale(self: &Arc<Self>, g: &Arc<Group>) {
        let old: Vec<Instance> = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut r.instances)
        };
        for i in old {
            let cause = "veeps restarted; the instance is replaced".to_string();
            self.cleanup(g, &i).await;
            self.activity(g, format!("Terminating instance {}", i.id), cause);
        }
    }

    /// Restarts the supervisors of every recorded group (after a server restart).
    pub async fn reconcile_all(self: &Arc<Self>) {
        let recs: Vec<GroupRecord> = self
            .store
            .kv_scan::<GroupRecord>(K_GROUP)
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default();
        for rec in recs {
            if self.group(&rec.spec.id).is_some() {
                continue;
            }
            let g = self.start(rec);
            self.clear_stale(&g).await;
            g.wake.notify_one();
        }
    }

    fn start(self: &Arc<Self>, rec: GroupRecord) -> Arc<Group> {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let id = rec.spec.id.clone();
        let g = Arc::new(Group {
            rec: Mutex::new(rec),
            exited: Mutex::new(HashMap::new()),
            cpu: Mutex::new(HashMap::new()),
            refreshing: false.into(),
            rounds: 0.into(),
            stop,
            wake: tokio::sync::Notify::new(),
        });
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, g.clone());
        let me = self.clone();
        let g2 = g.clone();
        tokio::spawn(async move {
            // New instances are probed every 200 ms (so they enter service quickly),
            // instances in service every second.
            let mut health = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = g2.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                    _ = health.tick() => me.check_health(&g2).await,
                }
                if *stopped.borrow() {
                    break;
                }
                me.tick(&g2).await;
            }
        });
        g
    }

    fn activity(&self, g: &Group, description: String, cause: String) {
        let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(env = %r.spec.env, group = %r.spec.name, %cause, "{description}");
        r.activities.push_back(Activity {
            time: veeps_state::now(),
            description,
            cause,
        });
        while r.activities.len() > 200 {
            r.activities.pop_front();
        }
        self.save(&r);
    }

    /// One supervisor step: reap exits, then bring the count to `desired`.
    async fn tick(self: &Arc<Self>, g: &Arc<Group>) {
        let exits: Vec<(String, String)> = g
            .exited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (iid, status) in exits {
            let inst = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances.iter().find(|i| i.id == iid).cloned()
            };
            let Some(inst) = inst else { continue };
            if inst.lifecycle == Lifecycle::Terminating {
                continue;
            }
            let cause = match self.oom_note(&inst) {
                Some(n) => format!("the instance's process exited ({status}); {n}"),
                None => format!("the instance's process exited ({status})"),
            };
            self.terminate(g, &inst.id, cause).await;
        }
        if g.refreshing.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.converge(g).await;
    }

    fn oom_note(&self, inst: &Instance) -> Option<String> {
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        (cg.oom_kills() > 0).then(|| "it was killed for exceeding its memory limit".to_string())
    }

    async fn converge(self: &Arc<Self>, g: &Arc<Group>) {
        let (live, desired) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let live = r
                .instances
                .iter()
                .filter(|i| i.lifecycle != Lifecycle::Terminating)
                .count() as u32;
            (live, r.desired)
        };
        if live < desired {
            let template = g
                .rec
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .spec
                .template
                .clone();
            let cause = format!("the group has {live} instances and wants {desired}");
            let launches = (live..desired).map(|_| self.launch(g, &template, cause.clone()));
            let failed: Vec<ComputeError> = futures_join(launches.collect())
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if let Some(e) = failed.first() {
                self.activity(g, "Launching a new instance failed".into(), e.to_string());
                // Do not spin: the next tick tries again.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        } else if live > desired {
            let victims = self.pick_victims(g, (live - desired) as usize, None);
            for v in victims {
                self.terminate(
                    g,
                    &v,
                    format!("the group has {live} instances and wants {desired}"),
                )
                .await;
            }
        }
    }

    /// Chooses instances to stop, by the group's termination policies.
    fn pick_victims(&self, g: &Group, n: usize, only_fp: Option<&str>) -> Vec<String> {
        let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
        let current = r.spec.template.fingerprint();
        let mut cands: Vec<&Instance> = r
            .instances
            .iter()
            .filter(|i| i.lifecycle != Lifecycle::Terminating)
            .filter(|i| only_fp.is_none_or(|f| i.fingerprint == f))
            .collect();
        let policy = r
            .spec
            .termination_policies
            .first()
            .map(String::as_str)
            .unwrap_or("Default");
        // Per subnet counts, to keep the spread.
        let mut per_subnet: HashMap<&str, usize> = HashMap::new();
        for i in &cands {
            *per_subnet.entry(i.subnet_id.as_str()).or_default() += 1;
        }
        cands.sort_by_key(|i| {
            let outdated = i.fingerprint != current;
            let crowd = per_subnet.get(i.subnet_id.as_str()).copied().unwrap_or(0);
            match policy {
                "OldestInstance" => (0, 0, i.launched_ms),
                "NewestInstance" => (0, 0, -i.launched_ms),
                "OldestLaunchTemplate" => (!outdated as i64, 0, i.launched_ms),
                // AWS's default: the most crowded subnet, then the oldest template, then
                // the oldest instance.
                _ => (-(crowd as i64), !outdated as i64, i.launched_ms),
            }
        });
        cands.into_iter().take(n).map(|i| i.id.clone()).collect()
    }

    fn endpoint_name(spec: &GroupSpec, iid: &str) -> String {
        format!("{}/{}/{iid}", spec.env, spec.name)
    }

    fn instance_dir(&self, iid: &str) -> PathBuf {
        self.data_dir.join("instances").join(iid)
    }

    /// Starts one instance with `template`.
    async fn launch(
        self: &Arc<Self>,
        g: &Arc<Group>,
        template: &Template,
        cause: String,
    ) -> Result<Instance, ComputeError> {
        let spec = g.rec.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        let image = self.images.get(&template.image_id).ok_or_else(|| {
            ComputeError::Invalid(format!("image {} is missing", template.image_id))
        })?;
        let iid = format!("i-{}", hex::encode(rand::random::<[u8; 4]>()));
        // Record it before placing and starting it (with its subnet, so concurrent
        // launches spread): a crash in between leaves a record the next start cleans up.
        let mut inst = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let subnet = pick_subnet(&r);
            let inst = Instance {
                id: iid.clone(),
                subnet_id: subnet,
                address: String::new(),
                fingerprint: template.fingerprint(),
                image_id: template.image_id.clone(),
                launched_ms: now_ms(),
                lifecycle: Lifecycle::Pending,
                pid: 0,
                failures: 0,
            };
            r.instances.push(inst.clone());
            self.save(&r);
            inst
        };
        let ep = match self
            .net
            .attach(AttachRequest {
                name: Self::endpoint_name(&spec, &iid),
                subnet_id: inst.subnet_id.clone(),
                security_groups: spec.security_groups.clone(),
            })
            .await
        {
            Ok(ep) => ep,
            Err(e) => {
                self.cleanup(g, &inst).await;
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances.retain(|i| i.id != iid);
                self.save(&r);
                return Err(e.into());
            }
        };
        inst.address = ep.address.to_string();
        match self.spawn(g, &spec, template, &image, &inst, &ep).await {
            Ok(pid) => {
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = r.instances.iter_mut().find(|i| i.id == iid) {
                    i.pid = pid;
                    i.address = inst.address.clone();
                }
                self.save(&r);
                drop(r);
                self.activity(g, format!("Launching a new instance: {iid}"), cause);
                Ok(Instance { pid, ..inst })
            }
            Err(e) => {
                self.cleanup(g, &inst).await;
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances.retain(|i| i.id != iid);
                self.save(&r);
                Err(e)
            }
        }
    }

    async fn spawn(
        self: &Arc<Self>,
        g: &Arc<Group>,
        spec: &GroupSpec,
        t: &Template,
        image: &crate::image::Image,
        inst: &Instance,
        ep: &veeps_net::Endpoint,
    ) -> Result<u32, ComputeError> {
        let data = self.instance_dir(&inst.id);
        std::fs::create_dir_all(data.join("tmp"))?;
        if let Some(ids) = self.ids {
            sandbox::chown_tree(&data, ids)?;
        }
        let image_root = self.images.root(&image.id);
        // With privileges, the image and the private directory are bind-mounted in a
        // mount namespace of the instance's own (the image read-only); without, the
        // instance runs in place.
        // Without privileges, a user namespace (where the kernel allows one) gives the
        // instance the same mount namespace and binds, and hides the data directory.
        let userns = self.ids.is_none() && sandbox::user_namespaces();
        let (image_at, data_at, binds) = if self.ids.is_some() || userns {
            let run_dir = self.run_dir.clone();
            let base = run_dir.join(&inst.id);
            let (im, da) = (base.join("image"), base.join("data"));
            std::fs::create_dir_all(&im)?;
            std::fs::create_dir_all(&da)?;
            for d in [&run_dir, &base] {
                use std::os::unix::fs::PermissionsExt;
                // Unprivileged, the directories are ours alone; privileged, the instance's
                // user must pass through them.
                let mode = if userns { 0o700 } else { 0o755 };
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
            }
            let binds = vec![
                Bind {
                    source: image_root.clone(),
                    target: im.clone(),
                    readonly: true,
                },
                Bind {
                    source: data.clone(),
                    target: da.clone(),
                    readonly: false,
                },
            ];
            (im, da, binds)
        } else {
            (image_root.clone(), data.clone(), vec![])
        };
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        cg.create(Limits {
            cpu: t.cpu,
            memory: t.memory_mb.saturating_mul(1024 * 1024),
            pids: t.pids,
        })?;
        let first = &image.entrypoint[0];
        let program = if !first.starts_with('/') && image_root.join(first).exists() {
            image_at.join(first)
        } else {
            PathBuf::from(first)
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&image.entrypoint[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(&image.env)
            .envs(&spec.extra_env)
            .envs(&t.env)
            .env("VEEPS_ENV", &spec.env)
            .env("VEEPS_GROUP", &spec.name)
            .env("VEEPS_INSTANCE_ID", &inst.id)
            .env("VEEPS_INSTANCE_ADDRESS", &inst.address)
            .env("VEEPS_CA_PEM", &self.ca_pem)
            .env("HOST", &inst.address)
            .env("HOME", &data_at)
            .env("TMPDIR", data_at.join("tmp"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false);
        if let Some(p) = t.port {
            cmd.env("PORT", p.to_string());
        }
        if self.ids.is_none() && !userns {
            cmd.current_dir(&image_at);
        }
        let (uid, gid) = veeps_sys::proc::ids();
        let me = sandbox::Ids { uid, gid };
        sandbox::confine(
            cmd.as_std_mut(),
            &Confine {
                netns: Some(ep.netns.clone()).filter(|n| !n.is_empty()),
                new_netns: false,
                cgroup_procs: cg.procs_files(),
                ids: self.ids,
                chdir: (self.ids.is_some() || userns).then(|| image_at.clone()),
                binds,
                user_ns: userns.then_some(me),
                hide: if userns {
                    vec![self.data_dir.clone()]
                } else {
                    vec![]
                },
                session: true,
                no_new_privs: true,
            },
        )?;
        let mut child = cmd.spawn().map_err(|e| {
            ComputeError::Invalid(format!(
                "cannot start {} in image {}: {e}",
                program.display(),
                image.id
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        self.obs
            .capture(&mut child, &spec.env, &spec.name, &inst.id);
        let g2 = g.clone();
        let iid = inst.id.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            g2.exited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(iid, status);
            g2.wake.notify_one();
        });
        Ok(pid)
    }

    /// Stops an instance: SIGTERM to its processes, SIGKILL after a grace period; then its
    /// endpoint, cgroup and directories go.
    async fn terminate(self: &Arc<Self>, g: &Arc<Group>, iid: &str, cause: String) {
        let inst = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let Some(i) = r.instances.iter_mut().find(|i| i.id == iid) else {
                return;
            };
            i.lifecycle = Lifecycle::Terminating;
            let i = i.clone();
            self.save(&r);
            i
        };
        self.activity(g, format!("Terminating instance {iid}"), cause);
        let tgs = g
            .rec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spec
            .target_groups
            .clone();
        if let Some(th) = self.target_health.get().filter(|_| !tgs.is_empty()) {
            // Out of the balancers first; in-flight requests finish.
            th.drain(&tgs, &inst.address).await;
        }
        veeps_sys::proc::signal_group(inst.pid, libc::SIGTERM);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while tokio::time::Instant::now() < deadline && self.alive(&inst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.cleanup(g, &inst).await;
        let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
        r.instances.retain(|i| i.id != iid);
        self.save(&r);
    }

    fn alive(&self, inst: &Instance) -> bool {
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        if !matches!(self.cgroups, cgroup::Flavor::None(_)) {
            return !cg.pids().is_empty();
        }
        inst.pid != 0 && Path::new(&format!("/proc/{}", inst.pid)).exists()
    }

    async fn cleanup(&self, g: &Group, inst: &Instance) {
        let spec = g.rec.lock().unwrap_or_else(|p| p.into_inner()).spec.clone();
        veeps_sys::proc::signal_group(inst.pid, libc::SIGKILL);
        let cg = Cgroup::new(&self.cgroups, &self.prefix, &inst.id);
        let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        if let Err(e) = self.net.detach(&Self::endpoint_name(&spec, &inst.id)).await {
            tracing::warn!(instance = %inst.id, error = %e, "could not remove the instance's endpoint");
        }
        let base = self.run_dir.join(&inst.id);
        let _ = std::fs::remove_dir(base.join("image"));
        let _ = std::fs::remove_dir(base.join("data"));
        let _ = std::fs::remove_dir(&base);
        // The server's run directory goes with its last instance.
        let _ = std::fs::remove_dir(&self.run_dir);
        let _ = std::fs::remove_dir_all(self.instance_dir(&inst.id));
        g.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&inst.id);
    }

    /// Health checks: pending instances enter service when healthy; with `lb` checks,
    /// in-service ones failing three times in a row (after the grace period) are replaced.
    async fn check_health(self: &Arc<Self>, g: &Arc<Group>) {
        let round = g.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let full = round.is_multiple_of(5);
        let (insts, spec) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            (r.instances.clone(), r.spec.clone())
        };
        let mut checks = vec![];
        // Instances still being placed (no process yet) are not checked.
        for i in insts.iter().filter(|i| {
            i.pid != 0
                && (i.lifecycle == Lifecycle::Pending
                    || (full && i.lifecycle == Lifecycle::InService))
        }) {
            let t = spec.template.clone();
            let endpoint = self
                .net
                .endpoint(&Self::endpoint_name(&spec, &i.id))
                .ok()
                .flatten();
            let i = i.clone();
            let lb = self
                .target_health
                .get()
                .filter(|_| !spec.target_groups.is_empty())
                .filter(|th| th.serves(&spec.target_groups))
                // Served by a balancer: in service only once it finds the instance healthy.
                .map(|th| th.healthy(&spec.target_groups, &i.address).unwrap_or(false));
            checks.push(async move {
                let ok = match (lb, &endpoint, t.port) {
                    // The balancers' verdict, once they know the instance.
                    (Some(h), _, _) => h,
                    (None, Some(ep), Some(port)) => {
                        probe(ep, port, t.health_check_path.clone()).await
                    }
                    _ => true,
                };
                (i, ok)
            });
        }
        let results = futures_join(checks).await;
        let now = now_ms();
        let mut replace = vec![];
        {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let mut changed = false;
            for (i, ok) in results {
                let alive = self.alive(&i);
                let Some(rec) = r.instances.iter_mut().find(|x| x.id == i.id) else {
                    continue;
                };
                if rec.lifecycle == Lifecycle::Terminating {
                    continue;
                }
                if ok && alive {
                    rec.failures = 0;
                    if rec.lifecycle == Lifecycle::Pending {
                        rec.lifecycle = Lifecycle::InService;
                        changed = true;
                    }
                    continue;
                }
                rec.failures += 1;
                let in_grace = now - rec.launched_ms < spec.grace_secs as i64 * 1000;
                if spec.health_check == HealthCheck::Lb && !in_grace && rec.failures >= 3 {
                    replace.push(rec.id.clone());
                }
            }
            if changed {
                self.save(&r);
            }
        }
        for iid in replace {
            self.terminate(
                g,
                &iid,
                "the instance failed its health check 3 times in a row".into(),
            )
            .await;
        }
        if full {
            self.sample_cpu(g);
        }
    }

    fn sample_cpu(&self, g: &Group) {
        let (insts, spec) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            (r.instances.clone(), r.spec.clone())
        };
        let now = std::time::Instant::now();
        let epoch = START.get_or_init(std::time::Instant::now);
        let t = now.duration_since(*epoch).as_nanos();
        let mut cpu = g.cpu.lock().unwrap_or_else(|p| p.into_inner());
        for i in insts {
            let cg = Cgroup::new(&self.cgroups, &self.prefix, &i.id);
            let Some(used) = cg.cpu_ns() else { continue };
            let pct = match cpu.get(&i.id) {
                Some((t0, u0, _)) if t > *t0 => {
                    let wall = (t - t0) as f64;
                    100.0 * used.saturating_sub(*u0) as f64 / wall / spec.template.cpu.max(0.01)
                }
                _ => 0.0,
            };
            cpu.insert(i.id.clone(), (t, used, pct.clamp(0.0, 100.0)));
        }
    }

    /// Rolls `new` out over instances running anything else, batch by batch.
    async fn roll_out(
        self: &Arc<Self>,
        g: &Arc<Group>,
        new: Template,
        old: Template,
    ) -> Result<(), ComputeError> {
        g.refreshing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = self.roll_out_inner(g, &new).await;
        if let Err(e) = &result {
            // Back to the old template: stop every new instance; the supervisor refills.
            let new_fp = new.fingerprint();
            let news: Vec<String> = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances
                    .iter()
                    .filter(|i| i.fingerprint == new_fp)
                    .map(|i| i.id.clone())
                    .collect()
            };
            for iid in news {
                self.terminate(g, &iid, "rolling back a failed rollout".into())
                    .await;
            }
            {
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.spec.template = old;
                self.save(&r);
            }
            self.activity(g, "Rolled back the rollout".into(), e.to_string());
        }
        g.refreshing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        g.wake.notify_one();
        result
    }

    async fn roll_out_inner(
        self: &Arc<Self>,
        g: &Arc<Group>,
        new: &Template,
    ) -> Result<(), ComputeError> {
        let new_fp = new.fingerprint();
        let (desired, refresh, grace) = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            r.spec.template = new.clone();
            self.save(&r);
            (r.desired, r.spec.refresh, r.spec.grace_secs)
        };
        let min_healthy =
            ((desired as u64 * refresh.min_healthy_percentage as u64).div_ceil(100)) as u32;
        let batch = desired.saturating_sub(min_healthy).max(1) as usize;
        self.activity(
            g,
            format!("Starting a rollout to image {}", new.image_id),
            format!("the launch template changed; batches of {batch}, at least {min_healthy} of {desired} in service"),
        );
        let timeout = Duration::from_secs(refresh.timeout_secs.max(grace).max(5));
        loop {
            let olds: Vec<String> = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances
                    .iter()
                    .filter(|i| i.fingerprint != new_fp && i.lifecycle != Lifecycle::Terminating)
                    .map(|i| i.id.clone())
                    .collect()
            };
            let in_new = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances
                    .iter()
                    .filter(|i| i.fingerprint == new_fp && i.lifecycle != Lifecycle::Terminating)
                    .count()
            };
            if olds.is_empty() {
                // Fill up to the desired count with new instances.
                if (in_new as u32) < desired {
                    for _ in in_new as u32..desired {
                        self.launch(g, new, "the rollout completes the group".into())
                            .await?;
                    }
                    self.wait_healthy(g, &new_fp, desired as usize, timeout)
                        .await?;
                }
                break;
            }
            let k = batch.min(olds.len());
            if refresh.create_before_destroy {
                let target = in_new + k;
                let launches =
                    (0..k).map(|_| self.launch(g, new, "the rollout replaces an instance".into()));
                for r in futures_join(launches.collect()).await {
                    r?;
                }
                self.wait_healthy(g, &new_fp, target, timeout).await?;
                let victims = self.pick_victims(g, k, Some(&olds_fp(g, &olds)));
                for v in victims {
                    self.terminate(g, &v, "replaced by the rollout".into())
                        .await;
                }
            } else {
                let victims = self.pick_victims(g, k, Some(&olds_fp(g, &olds)));
                for v in victims {
                    self.terminate(g, &v, "replaced by the rollout".into())
                        .await;
                }
                for _ in 0..k {
                    self.launch(g, new, "the rollout replaces an instance".into())
                        .await?;
                }
                self.wait_healthy(g, &new_fp, in_new + k, timeout).await?;
            }
        }
        self.activity(
            g,
            format!("Finished the rollout to image {}", new.image_id),
            "every instance runs the new launch template".into(),
        );
        Ok(())
    }

    async fn wait_healthy(
        &self,
        g: &Arc<Group>,
        fp: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), ComputeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (up, died) = {
                let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                let up = r
                    .instances
                    .iter()
                    .filter(|i| i.fingerprint == fp && i.lifecycle == Lifecycle::InService)
                    .count();
                let live = r
                    .instances
                    .iter()
                    .filter(|i| i.fingerprint == fp && i.lifecycle != Lifecycle::Terminating)
                    .count();
                (up, live < n)
            };
            if up >= n {
                return Ok(());
            }
            if died {
                return Err(ComputeError::RolledBack(
                    "new instances exited before becoming healthy; the rollout was rolled back (see `veeps logs` for their output)".to_string(),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ComputeError::RolledBack(format!(
                    "new instances did not become healthy within {} s; the rollout was rolled back",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Sets a group's desired count (clamped to its bounds); records why.
    pub fn set_desired(&self, group_id: &str, desired: i64, cause: String) -> Option<u32> {
        let g = self.group(group_id)?;
        let (old, new) = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            let new = desired.clamp(r.spec.min_size as i64, r.spec.max_size as i64) as u32;
            let old = r.desired;
            r.desired = new;
            if new != old {
                r.last_scaled_ms = now_ms();
            }
            self.save(&r);
            (old, new)
        };
        if old != new {
            self.activity(
                &g,
                format!("Changing the desired capacity from {old} to {new}"),
                cause,
            );
            g.wake.notify_one();
        }
        Some(new)
    }

    /// Changes a group's bounds and desired count (a scheduled action); records why.
    pub fn set_bounds(
        &self,
        group_id: &str,
        min: Option<u32>,
        max: Option<u32>,
        desired: Option<u32>,
        cause: String,
    ) {
        let Some(g) = self.group(group_id) else {
            return;
        };
        let (old, new) = {
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = min {
                r.spec.min_size = v;
            }
            if let Some(v) = max {
                r.spec.max_size = v.max(r.spec.min_size);
            }
            let old = r.desired;
            let want = desired.unwrap_or(old);
            r.desired = want.clamp(r.spec.min_size, r.spec.max_size);
            r.last_scaled_ms = now_ms();
            self.save(&r);
            (old, r.desired)
        };
        self.activity(
            &g,
            format!("Changing the desired capacity from {old} to {new} (bounds {min:?}..{max:?})"),
            cause,
        );
        g.wake.notify_one();
    }

    /// Requests the load balancers have sent to these target groups so far (`None` when
    /// none serves them).
    pub fn requests_served(&self, target_groups: &[String]) -> Option<u64> {
        let th = self.target_health.get()?;
        th.serves(target_groups).then(|| th.requests(target_groups))
    }

    /// Records a launch template.
    pub fn put_template(&self, t: &Template) -> Result<(), ComputeError> {
        self.store
            .kv_put(&format!("{K_TEMPLATE}{}", t.id), t)
            .map_err(|e| ComputeError::Store(e.to_string()))
    }

    /// A recorded launch template.
    pub fn template(&self, id: &str) -> Option<Template> {
        self.store
            .kv_get::<Template>(&format!("{K_TEMPLATE}{id}"))
            .ok()
            .flatten()
    }

    /// Forgets a launch template.
    pub fn delete_template(&self, id: &str) -> Result<(), ComputeError> {
        self.store
            .kv_delete(&format!("{K_TEMPLATE}{id}"))
            .map_err(|e| ComputeError::Store(e.to_string()))
    }

    /// The state store (for the policies).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The network service.
    pub fn net(&self) -> &Arc<Net> {
        &self.net
    }

    /// A group's record by id.
    pub fn record(&self, group_id: &str) -> Option<GroupRecord> {
        self.group(group_id)
            .map(|g| g.rec.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The group's average CPU over its in-service instances, in percent of their limits.
    pub fn average_cpu(&self, group_id: &str) -> Option<f64> {
        let g = self.group(group_id)?;
        let ids: Vec<String> = g
            .rec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .instances
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::InService)
            .map(|i| i.id.clone())
            .collect();
        let cpu = g.cpu.lock().unwrap_or_else(|p| p.into_inner());
        let v: Vec<f64> = ids.iter().filter_map(|i| cpu.get(i).map(|c| c.2)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Stops a group and every instance; forgets it.
    pub async fn delete_group(self: &Arc<Self>, id: &str) -> Result<(), ComputeError> {
        let g = match self.group(id) {
            Some(g) => g,
            None => match self
                .store
                .kv_get::<GroupRecord>(&format!("{K_GROUP}{id}"))
                .map_err(|e| ComputeError::Store(e.to_string()))?
            {
                Some(rec) => self.start(rec),
                None => return Ok(()),
            },
        };
        let _ = g.stop.send(true);
        g.refreshing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = g
            .rec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .instances
            .iter()
            .map(|i| i.id.clone())
            .collect();
        let mut stops = vec![];
        for iid in ids {
            let me = self.clone();
            let g = g.clone();
            stops.push(async move { me.terminate(&g, &iid, "the group is deleted".into()).await });
        }
        futures_join(stops).await;
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.store
            .kv_delete(&format!("{K_GROUP}{id}"))
            .map_err(|e| ComputeError::Store(e.to_string()))?;
        Ok(())
    }

    /// Stops every instance of every group, keeping the records (the server is
    /// stopping; the next start launches them again).
    pub async fn shutdown(self: &Arc<Self>) {
        let groups: Vec<Arc<Group>> = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, g)| g)
            .collect();
        for g in groups {
            let _ = g.stop.send(true);
            let insts = g
                .rec
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .instances
                .clone();
            for i in &insts {
                veeps_sys::proc::signal_group(i.pid, libc::SIGTERM);
            }
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while tokio::time::Instant::now() < deadline && insts.iter().any(|i| self.alive(i)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for i in &insts {
                self.cleanup(&g, i).await;
            }
            let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            r.instances.clear();
            self.save(&r);
        }
    }

    /// Samples for the metrics store: per instance CPU and memory, per group counts.
    pub fn samples(&self) -> Vec<veeps_obs::collect::Sample> {
        use veeps_obs::collect::Sample;
        let groups: Vec<Arc<Group>> = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out = vec![];
        for g in groups {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let cpu = g.cpu.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (env, name) = (r.spec.env.as_str(), r.spec.name.as_str());
            let gl = [("env", env), ("group", name)];
            out.push(Sample::new("group_desired_capacity", &gl, r.desired as f64));
            out.push(Sample::new(
                "group_in_service_instances",
                &gl,
                r.instances
                    .iter()
                    .filter(|i| i.lifecycle == Lifecycle::InService)
                    .count() as f64,
            ));
            out.push(Sample::new(
                "group_total_instances",
                &gl,
                r.instances.len() as f64,
            ));
            let limit = r.spec.template.memory_mb as f64 * 1024.0 * 1024.0;
            let mut cpus = vec![];
            for i in &r.instances {
                let l = [("env", env), ("group", name), ("instance", i.id.as_str())];
                if let Some((_, _, pct)) = cpu.get(&i.id) {
                    out.push(Sample::new("instance_cpu_percent", &l, *pct));
                    cpus.push(*pct);
                }
                let cg = Cgroup::new(&self.cgroups, &self.prefix, &i.id);
                if let Some(m) = cg.memory_bytes() {
                    out.push(Sample::new("instance_memory_bytes", &l, m as f64));
                    out.push(Sample::new(
                        "instance_memory_free_bytes",
                        &l,
                        (limit - m as f64).max(0.0),
                    ));
                    out.push(Sample::new(
                        "instance_memory_percent",
                        &l,
                        100.0 * m as f64 / limit.max(1.0),
                    ));
                }
                let disk = crate::disk_used(&self.instance_dir(&i.id));
                out.push(Sample::new("instance_disk_used_bytes", &l, disk as f64));
                if let Some((total, free)) = veeps_obs::collect::disk(&self.data_dir) {
                    let _ = total;
                    out.push(Sample::new("instance_disk_free_bytes", &l, free));
                }
            }
            if !cpus.is_empty() {
                out.push(Sample::new(
                    "group_cpu_percent",
                    &gl,
                    cpus.iter().sum::<f64>() / cpus.len() as f64,
                ));
            }
        }
        out
    }
}

/// The subnet with the fewest live instances (the first such, in declared order).
fn pick_subnet(r: &GroupRecord) -> String {
    let mut best = (usize::MAX, String::new());
    for s in &r.spec.subnets {
        let n = r
            .instances
            .iter()
            .filter(|i| &i.subnet_id == s && i.lifecycle != Lifecycle::Terminating)
            .count();
        if n < best.0 {
            best = (n, s.clone());
        }
    }
    best.1
}

fn olds_fp(g: &Group, olds: &[String]) -> String {
    let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
    r.instances
        .iter()
        .find(|i| olds.contains(&i.id))
        .map(|i| i.fingerprint.clone())
        .unwrap_or_default()
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    futures::future::join_all(fs).await
}

/// Connects to the instance's port from inside its namespace; with a path, asks it over
/// HTTP and wants a 2xx or 3xx answer.
async fn probe(ep: &veeps_net::Endpoint, port: u16, path: Option<String>) -> bool {
    let addr = std::net::SocketAddr::from((ep.address, port));
    let check = move || -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let Some(path) = path else { return true };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: veeps-health\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        // Read the whole (HTTP/1.0, so closed) answer: hanging up early makes servers
        // log broken pipes.
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 4096];
        while buf.len() < 64 * 1024 {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let head = String::from_utf8_lossy(&buf[..buf.len().min(16)]);
        head.starts_with("HTTP/")
            && head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .is_some_and(|c| (200..400).contains(&c))
    };
    if ep.netns.is_empty() {
        return tokio::task::spawn_blocking(check).await.unwrap_or(false);
    }
    let ns = ep.netns.clone();
    tokio::task::spawn_blocking(move || veeps_net::sys::in_netns(&ns, check).unwrap_or(false))
        .await
        .unwrap_or(false)
}
