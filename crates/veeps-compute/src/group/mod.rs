//! Auto scaling groups: a supervisor per group keeps its desired count of instances
//! running, each a confined process in its own endpoint namespace and cgroup; replaces
//! the dead and the unhealthy; scales; and rolls out a changed launch template batch by
//! batch, rolling back when new instances do not become healthy.

mod health;
mod launch;
mod model;
mod rollout;

pub use model::*;

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
use veeps_sys::now_ms;

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
    /// Nothing by that name.
    #[error("{0}")]
    NotFound(String),
}

const K_GROUP: &str = "compute/group/";
const K_NEXT_UID: &str = "compute/next-uid";
/// The first user id given to a group (above any a distribution gives to people or
/// services, below what user namespaces usually map).
pub const FIRST_UID: u32 = 200_000;
const K_TEMPLATE: &str = "compute/template/";
const TICK: Duration = Duration::from_millis(250);
/// How often instances not yet in service are probed.
const PENDING_PROBE: Duration = Duration::from_millis(50);
/// How often instances in service are probed (and CPU sampled).
const IN_SERVICE_PROBE: Duration = Duration::from_secs(1);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running group.
pub(crate) struct Group {
    rec: Mutex<GroupRecord>,
    /// Last CPU reading per instance: (time ns, cpu ns, percent of its limit).
    cpu: Mutex<HashMap<String, (u128, u64, f64)>>,
    /// A rollout is in charge of the count.
    refreshing: std::sync::atomic::AtomicBool,
    stop: tokio::sync::watch::Sender<bool>,
    /// Wakes the supervisor: a change, or an instance's supervisor ending.
    wake: Arc<tokio::sync::Notify>,
    /// Instances being stopped in the background (a deletion waits for them).
    stops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Pending instances whose launch boost ended by time (their limit is applied once).
    boost_over: Mutex<std::collections::HashSet<String>>,
}

impl Group {
    /// Whether an instance is started and not yet in service.
    fn has_pending(&self) -> bool {
        self.rec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .instances
            .iter()
            .any(|i| i.lifecycle == Lifecycle::Pending && i.pid != 0)
    }
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
    /// Images that rebuild themselves on a schedule.
    pub updates: Arc<crate::update::Updates>,
    cgroups: cgroup::Flavor,
    ids: Option<Ids>,
    uid_lock: Mutex<()>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    target_health: std::sync::OnceLock<Arc<dyn TargetHealth>>,
    roles: std::sync::OnceLock<Arc<dyn veeps_resource::roles::Roles>>,
    /// When each instance's role credentials expire (unix seconds).
    role_expiry: Mutex<HashMap<String, i64>>,
    /// The CA certificate instances trust (given to them as `VEEPS_CA_PEM`).
    ca_pem: String,
    /// The program instances' shims run (this veeps).
    shim_exe: PathBuf,
    /// Keys: instances' secrets are sealed with their environment's.
    pub kms: Arc<veeps_kms::Kms>,
}

impl Compute {
    /// Plugs in the load balancers' view of targets.
    pub fn set_target_health(&self, t: Arc<dyn TargetHealth>) {
        let _ = self.target_health.set(t);
    }

    /// Where instances' role credentials come from (IAM).
    pub fn set_roles(&self, r: Arc<dyn veeps_resource::roles::Roles>) {
        let _ = self.roles.set(r);
    }

    /// Whether `role` exists (true when no IAM is wired, as in offline tools).
    pub fn role_exists(&self, role: &str) -> bool {
        self.roles.get().is_none_or(|r| r.exists(role))
    }

    /// The service for a data directory; instances trust `ca_pem`.
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        net: Arc<Net>,
        obs: Arc<Obs>,
        ca_pem: String,
        kms: Arc<veeps_kms::Kms>,
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
            updates: Arc::new(crate::update::Updates::new(store.clone())),
            store,
            net,
            obs,
            images,
            cgroups,
            ids,
            uid_lock: Mutex::new(()),
            groups: Mutex::new(HashMap::new()),
            target_health: std::sync::OnceLock::new(),
            roles: std::sync::OnceLock::new(),
            role_expiry: Mutex::new(HashMap::new()),
            ca_pem,
            shim_exe: std::env::current_exe()?,
            kms,
        }))
    }

    /// A user id no group has had: the next of a counter kept in the store (from
    /// [`FIRST_UID`]), so that no group ever inherits another's files.
    fn allocate_uid(&self) -> Result<u32, ComputeError> {
        let _g = self.uid_lock.lock().unwrap_or_else(|p| p.into_inner());
        let next = self
            .store
            .kv_get::<u32>(K_NEXT_UID)
            .map_err(|e| ComputeError::Store(e.to_string()))?
            .unwrap_or(FIRST_UID);
        self.store
            .kv_put(K_NEXT_UID, &(next + 1))
            .map_err(|e| ComputeError::Store(e.to_string()))?;
        Ok(next)
    }

    /// The identity instances of `rec` run as: the group's own user, or none when veeps
    /// runs without privileges.
    fn instance_ids(&self, rec: &GroupRecord) -> Option<Ids> {
        self.ids.map(|shared| {
            if rec.uid == 0 {
                shared
            } else {
                Ids {
                    uid: rec.uid,
                    gid: rec.uid,
                }
            }
        })
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
                        uid: 0,
                    });
                let g = self.start(rec);
                // Instances of a previous run still running are adopted; the rest are
                // cleaned up (and replaced).
                self.adopt(&g).await;
                g
            }
        };
        if self.ids.is_some() && g.rec.lock().unwrap_or_else(|p| p.into_inner()).uid == 0 {
            let uid = self.allocate_uid()?;
            g.rec.lock().unwrap_or_else(|p| p.into_inner()).uid = uid;
        }
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

    /// Takes over the recorded instances whose shims still run (after a restart of veeps:
    /// same processes, no duplicate) and cleans up after the others.
    async fn adopt(self: &Arc<Self>, g: &Arc<Group>) {
        // The records stay as they are while each is looked at: balancers read them.
        let (spec, old) = {
            let r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
            (r.spec.clone(), r.instances.clone())
        };
        let mut kept = 0;
        for i in old {
            let runs = i.pid != 0
                && i.started != 0
                && i.lifecycle != Lifecycle::Terminating
                && crate::shim::state(&self.shim_dir(&i.id), i.pid, i.started)
                    == crate::shim::ShimState::Running
                && self
                    .net
                    .endpoint_exists(&Self::endpoint_name(&spec, &i.id))
                    .await;
            if runs {
                self.follow(&spec, &i.id);
                kept += 1;
                continue;
            }
            {
                let mut r = g.rec.lock().unwrap_or_else(|p| p.into_inner());
                r.instances.retain(|x| x.id != i.id);
                self.save(&r);
            }
            // Nothing of it may run twice: its processes, if any, go with its cgroup.
            self.cleanup(g, &i).await;
            let cause = "veeps restarted and the instance was no longer running".to_string();
            self.activity(g, format!("Terminating instance {}", i.id), cause);
        }
        if kept > 0 {
            tracing::info!(env = %spec.env, group = %spec.name, instances = kept, "adopted running instances");
        }
    }

    /// Reads an instance's spool into the log store from now on (from where the last
    /// reader stopped).
    pub(crate) fn follow(&self, spec: &GroupSpec, iid: &str) {
        self.obs
            .follow(iid, &self.shim_dir(iid), &spec.env, &spec.name, iid);
    }

    /// Reads the rest of an instance's spool and stops following it.
    pub(crate) fn unfollow(&self, iid: &str) {
        self.obs.unfollow(iid);
    }

    /// Whether the instance ended, and how.
    fn ended(&self, inst: &Instance) -> Option<String> {
        use crate::shim::ShimState;
        if inst.pid == 0 || inst.lifecycle == Lifecycle::Terminating {
            return None;
        }
        match crate::shim::state(&self.shim_dir(&inst.id), inst.pid, inst.started) {
            ShimState::Running => None,
            ShimState::Exited(s) => Some(s),
            ShimState::Gone => Some("its supervisor was killed".into()),
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
            self.adopt(&g).await;
            g.wake.notify_one();
        }
    }

    fn start(self: &Arc<Self>, rec: GroupRecord) -> Arc<Group> {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let id = rec.spec.id.clone();
        let g = Arc::new(Group {
            rec: Mutex::new(rec),
            cpu: Mutex::new(HashMap::new()),
            refreshing: false.into(),
            stop,
            wake: Arc::new(tokio::sync::Notify::new()),
            stops: Mutex::new(vec![]),
            boost_over: Mutex::new(Default::default()),
        });
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, g.clone());
        let me = self.clone();
        let g2 = g.clone();
        tokio::spawn(async move {
            // New instances are probed every 50 ms (so they enter service as soon as they
            // answer), instances in service every second.
            let mut health = tokio::time::interval(PENDING_PROBE);
            health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_full = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = g2.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                    _ = health.tick() => {
                        let full = last_full.elapsed() >= IN_SERVICE_PROBE;
                        if !full && !g2.has_pending() {
                            continue;
                        }
                        if full {
                            last_full = std::time::Instant::now();
                        }
                        me.check_health(&g2, full).await
                    }
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
        self.renew_role_credentials(g);
        let exits: Vec<(String, String)> = {
            let insts = g
                .rec
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .instances
                .clone();
            insts
                .iter()
                .filter_map(|i| self.ended(i).map(|s| (i.id.clone(), s)))
                .collect()
        };
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
            // Cleaned up beside its replacement's launch, not before it.
            self.terminate_soon(g, &inst.id, cause);
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
        // Stops already under way finish first: none may record the group after it is gone.
        let running = std::mem::take(&mut *g.stops.lock().unwrap_or_else(|p| p.into_inner()));
        for h in running {
            let _ = h.await;
        }
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

    /// Stops the supervisors. With `stop_instances` (`veeps up` ending, `veeps down`)
    /// every instance stops too, the records kept (the next start launches them again);
    /// without, instances keep running and the next start adopts them.
    pub async fn shutdown(self: &Arc<Self>, stop_instances: bool) {
        let groups: Vec<Arc<Group>> = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, g)| g)
            .collect();
        for g in groups {
            let _ = g.stop.send(true);
            if !stop_instances {
                continue;
            }
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
        // What the instances wrote last is in the log store before the server goes.
        self.obs.pump_spools();
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
