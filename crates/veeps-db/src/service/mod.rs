//! The operator: creates clusters (nodes in their subnets, endpoints, the internal security
//! group), supervises them (health, restarts, automatic failover with fencing, rebuilding
//! the old writer as a replica), performs switchovers, resizes and rolling restarts, and
//! reports metrics and events.

mod endpoints;
mod failover;
mod node;
mod status;

use crate::model::{
    check_parameters, pg_hba, postgresql_conf, slot, ClusterRec, ClusterSpec, NodeRec, Role,
    Secrets, Upstream, REPLICATOR,
};
use crate::pg;
use crate::proxy::Route;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use veeps_net::{AttachRequest, Net, SecurityGroup, SgRule};
use veeps_obs::collect::Sample;
use veeps_obs::logs::LogLine;
use veeps_state::Store;
use veeps_sys::cgroup::{Cgroup, Flavor, Limits};
use veeps_sys::now_ms;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Bad input; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// No such cluster or node.
    #[error("{0}")]
    NotFound(String),
    /// Something underneath failed.
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> DbError {
    DbError::Failed(e.to_string())
}

const K_CLUSTER: &str = "db/cluster/";
const K_EVENT: &str = "db/event/";

/// An entry of a cluster's activity log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Event {
    /// When (ms since the epoch).
    pub ts: i64,
    /// What kind: `created`, `failover`, `switchover`, `rebuilt`, `restarted`, ...
    pub kind: String,
    /// What happened.
    pub message: String,
}

fn key(env: &str, name: &str) -> String {
    format!("{env}/{name}")
}

/// A node while veeps runs it.
#[derive(Default)]
pub(crate) struct NodeRt {
    /// Its shim's pid and start time (the shim holds `postgres` and its output).
    shim: Option<(u32, u64)>,
    /// Its directory on the host.
    dir: PathBuf,
    /// Consecutive failed health checks.
    fails: u32,
    /// Whether the last check found it serving.
    healthy: bool,
    /// Consecutive checks of a reader that the writer did not list as replicating.
    unseen: u32,
}

impl NodeRt {
    /// How its shim stands (`Gone` when it has none).
    fn state(&self) -> veeps_compute::shim::ShimState {
        match self.shim {
            Some((pid, started)) => veeps_compute::shim::state(&self.dir.join("log"), pid, started),
            None => veeps_compute::shim::ShimState::Gone,
        }
    }

    fn runs(&self) -> bool {
        self.state() == veeps_compute::shim::ShimState::Running
    }

    /// Whether the postmaster its pid file names has ended (gone, or a zombie) while its
    /// shim may still wait on postgres' other processes: a writer killed with -9 is known
    /// dead at once, not when the last backend lets go of its output (up to 2 s later).
    fn postmaster_dead(&self) -> bool {
        let Some(pid) = self.postmaster() else {
            return false;
        };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    == Some("Z")
            }
        }
    }

    /// The postmaster's pid, as its pid file says.
    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pgdata/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

/// A cluster while veeps runs it.
#[derive(Default)]
pub(crate) struct Inner {
    nodes: HashMap<String, NodeRt>,
    /// The reader endpoint's process runs (started or adopted).
    reader_up: bool,
    hba: String,
    /// The node holding the writer endpoint's address.
    address_on: Option<String>,
    /// Restoring synchronous replication after a failover: since when the writer waits
    /// for its readers again, and the position they must reach before readers may be
    /// promoted again (see `ClusterRec::sync_relaxed`).
    tightening: Option<(Instant, Option<i64>)>,
    /// Checks in a row that found fewer readers streaming than commits wait for.
    sync_short: u32,
}

pub(crate) struct ClusterRt {
    inner: tokio::sync::Mutex<Inner>,
    reader: Route,
}

impl Default for ClusterRt {
    fn default() -> Self {
        ClusterRt {
            inner: tokio::sync::Mutex::new(Inner::default()),
            reader: Route::default(),
        }
    }
}

/// The database service of one server.
pub struct Dbs {
    pub(crate) data_dir: PathBuf,
    pub(crate) store: Arc<Store>,
    pub(crate) kms: Arc<veeps_kms::Kms>,
    net: Arc<Net>,
    pub(crate) obs: Arc<veeps_obs::Obs>,
    certs: Arc<veeps_pki::Certs>,
    pub(crate) objects: Arc<veeps_s3::store::ObjectStore>,
    ca_pem: String,
    flavor: Flavor,
    prefix: String,
    clusters: Mutex<HashMap<String, Arc<ClusterRt>>>,
    samples: Mutex<Vec<Sample>>,
    stopping: std::sync::atomic::AtomicBool,
    ids: std::sync::OnceLock<(u32, u32)>,
    /// The program nodes' shims run (this veeps).
    pub(crate) shim_exe: PathBuf,
}

/// What a health check found.
pub(crate) struct Health {
    serving: bool,
    in_recovery: bool,
}

impl Dbs {
    /// The service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        kms: Arc<veeps_kms::Kms>,
        net: Arc<Net>,
        obs: Arc<veeps_obs::Obs>,
        certs: Arc<veeps_pki::Certs>,
        objects: Arc<veeps_s3::store::ObjectStore>,
        ca_pem: String,
    ) -> Arc<Dbs> {
        Arc::new(Dbs {
            data_dir: data_dir.to_path_buf(),
            prefix: format!("{}-db", net.prefix()),
            store,
            kms,
            net,
            obs,
            certs,
            objects,
            ca_pem,
            flavor: veeps_sys::cgroup::detect(),
            clusters: Mutex::default(),
            samples: Mutex::default(),
            stopping: Default::default(),
            ids: std::sync::OnceLock::new(),
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        })
    }

    fn rt(&self, env: &str, name: &str) -> Arc<ClusterRt> {
        self.clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key(env, name))
            .or_default()
            .clone()
    }

    /// A cluster's record.
    pub fn cluster(&self, env: &str, name: &str) -> Result<Option<ClusterRec>, DbError> {
        self.store
            .kv_get(&format!("{K_CLUSTER}{}", key(env, name)))
            .map_err(failed)
    }

    /// Whether cluster `name` is declared in `env`'s configuration (a `db_cluster`
    /// resource), rather than made by a restore.
    pub fn declared(&self, env: &str, name: &str) -> bool {
        self.store
            .resources(env)
            .unwrap_or_default()
            .into_iter()
            .any(|r| {
                r.type_name == "db_cluster"
                    && r.attrs.get("name").and_then(|v| v.as_str()) == Some(name)
            })
    }

    /// Every cluster's record.
    pub fn clusters(&self) -> Vec<ClusterRec> {
        self.store
            .kv_scan::<ClusterRec>(K_CLUSTER)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    fn save(&self, rec: &ClusterRec) -> Result<(), DbError> {
        self.store
            .kv_put(
                &format!("{K_CLUSTER}{}", key(&rec.spec.env, &rec.spec.name)),
                rec,
            )
            .map_err(failed)
    }

    /// Records an event in the cluster's activity log, its logs and monitoring.
    pub fn event(&self, env: &str, name: &str, kind: &str, message: &str) {
        let ts = now_ms();
        tracing::info!(env, cluster = name, kind, "{message}");
        let _ = self.store.kv_put(
            &format!(
                "{K_EVENT}{}/{ts:015}-{}",
                key(env, name),
                hex::encode(rand::random::<[u8; 2]>())
            ),
            &Event {
                ts,
                kind: kind.into(),
                message: message.into(),
            },
        );
        self.obs.log(LogLine {
            ts,
            env: env.into(),
            group: format!("db/{name}"),
            source: "events".into(),
            stream: "event".into(),
            text: format!("{kind}: {message}"),
        });
        self.obs.record(&[Sample::new(
            "db_events_total",
            &[("env", env), ("cluster", name), ("kind", kind)],
            1.0,
        )]);
    }

    /// A cluster's activity log, oldest first.
    pub fn events(&self, env: &str, name: &str) -> Vec<Event> {
        self.store
            .kv_scan::<Event>(&format!("{K_EVENT}{}/", key(env, name)))
            .unwrap_or_default()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    pub(crate) fn secrets(&self, rec: &ClusterRec) -> Result<Secrets, DbError> {
        let plain = self
            .kms
            .decrypt(&rec.spec.env, &rec.secrets, &secrets_context(&rec.spec))
            .map_err(failed)?;
        serde_json::from_slice(&plain).map_err(failed)
    }

    fn seal(&self, spec: &ClusterSpec, s: &Secrets) -> Result<Vec<u8>, DbError> {
        let plain = serde_json::to_vec(s).map_err(failed)?;
        self.kms
            .encrypt(&spec.env, &plain, &secrets_context(spec))
            .map_err(failed)
    }

    pub(crate) fn cluster_dir(&self, env: &str, name: &str) -> PathBuf {
        self.data_dir.join("db").join(env).join(name)
    }

    pub(crate) fn node_dir(&self, rec: &ClusterRec, node: &str) -> PathBuf {
        self.cluster_dir(&rec.spec.env, &rec.spec.name).join(node)
    }

    /// The node user's ids, and the directories its processes need.
    /// Done once: the supervisor asks twice a second.
    pub(crate) fn prepare(&self) -> Result<(u32, u32), DbError> {
        if let Some(ids) = self.ids.get() {
            return Ok(*ids);
        }
        let ids = pg::ensure_user().map_err(DbError::Failed)?;
        std::fs::create_dir_all(pg::MOUNT).map_err(failed)?;
        std::fs::create_dir_all(self.data_dir.join("db")).map_err(failed)?;
        Ok(*self.ids.get_or_init(|| ids))
    }

    fn cgroup(&self, rec: &ClusterRec, node: &str) -> Cgroup {
        Cgroup::new(
            &self.flavor,
            &self.prefix,
            &format!("{}-{}-{node}", rec.spec.env, rec.spec.name),
        )
    }

    /// Creates a cluster, or brings it to its new spec.
    pub async fn put(
        self: &Arc<Self>,
        spec: ClusterSpec,
        master_password: &str,
    ) -> Result<ClusterRec, DbError> {
        if let Some(e) = check_parameters(&spec.parameters).into_iter().next() {
            return Err(DbError::Invalid(e.1));
        }
        let ids = self.prepare()?;
        let rt = self.rt(&spec.env, &spec.name);
        let mut inner = rt.inner.lock().await;
        let mut rec = match self.cluster(&spec.env, &spec.name)? {
            Some(r) => r,
            None => self.allocate(&spec, master_password).await?,
        };
        let old = rec.spec.clone();
        let old_secrets = self.secrets(&rec)?;
        rec.spec = spec.clone();
        if old_secrets.master != master_password {
            rec.secrets = self.seal(
                &spec,
                &Secrets {
                    master: master_password.into(),
                    replication: old_secrets.replication.clone(),
                },
            )?;
        }
        // More nodes: attach them (they start as readers below); fewer: the highest go.
        self.place_nodes(&mut rec).await?;
        self.save(&rec)?;
        self.ensure_running(&mut rec, &rt, &mut inner, ids).await?;
        if old_secrets.master != master_password && rec.initialised {
            let w = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
            let c = self.admin(&rec, &w).await?;
            c.batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                ident(&spec.master_username),
                literal(master_password)
            ))
            .await
            .map_err(failed)?;
        }
        self.remove_extra_nodes(&mut rec, &rt, &mut inner).await?;
        self.save(&rec)?;
        // Limits apply in place.
        for n in &rec.nodes {
            let _ = self.cgroup(&rec, &n.name).create(limits(&spec));
        }
        // New names: new certificates, which PostgreSQL takes on a reload.
        if old.dns_names != spec.dns_names && rec.initialised {
            let ids = pg::ensure_user().map_err(DbError::Failed)?;
            for n in &rec.nodes {
                self.tls(&rec, n, &self.node_dir(&rec, &n.name), ids)?;
                if let Ok(c) = self.admin(&rec, n).await {
                    let _ = c.batch_execute("SELECT pg_reload_conf()").await;
                }
            }
        }
        if old.parameters != spec.parameters
            || old.synchronous_replicas != spec.synchronous_replicas
        {
            let restart = spec
                .parameters
                .iter()
                .chain(old.parameters.iter())
                .any(|(k, _)| {
                    old.parameters.get(k) != spec.parameters.get(k)
                        && pg::known_settings().get(k).copied().unwrap_or(false)
                });
            self.reconfigure(&rec, &mut inner).await?;
            if restart {
                drop(inner);
                self.rolling_restart(&spec.env, &spec.name).await?;
            }
        }
        Ok(rec)
    }

    /// A new cluster's record: secrets, the internal group, endpoints.
    async fn allocate(&self, spec: &ClusterSpec, master: &str) -> Result<ClusterRec, DbError> {
        let first = spec
            .subnets
            .first()
            .ok_or_else(|| DbError::Invalid("give at least one subnet".into()))?;
        let subnet = self.net.subnet(first).map_err(failed)?;
        let sg_id = format!(
            "sg-db-{}",
            &hex::encode(sha(&format!("{}/{}", spec.env, spec.name)))[..8]
        );
        let self_rule = SgRule {
            protocol: "tcp".into(),
            from_port: spec.port,
            to_port: spec.port,
            self_: true,
            ..Default::default()
        };
        self.net
            .ensure_sg(SecurityGroup {
                id: sg_id.clone(),
                vpc_id: subnet.vpc_id.clone(),
                ingress: vec![self_rule.clone()],
                egress: vec![self_rule],
            })
            .await
            .map_err(failed)?;
        let mut sgs = spec.security_groups.clone();
        sgs.push(sg_id.clone());
        let mut eps = vec![];
        for which in ["writer", "reader"] {
            let ep = self
                .net
                .attach(AttachRequest {
                    name: format!("db/{}/{}/{which}", spec.env, spec.name),
                    subnet_id: first.clone(),
                    security_groups: sgs.clone(),
                })
                .await
                .map_err(failed)?;
            eps.push((ep.address, ep.netns));
        }
        let secrets = Secrets {
            master: master.into(),
            replication: hex::encode(rand::random::<[u8; 24]>()),
        };
        let rec = ClusterRec {
            spec: spec.clone(),
            internal_sg: sg_id,
            nodes: vec![],
            writer_ep: eps[0].clone(),
            reader_ep: eps[1].clone(),
            secrets: self.seal(spec, &secrets)?,
            initialised: false,
            sync_relaxed: false,
        };
        self.event(
            &spec.env,
            &spec.name,
            "created",
            &format!(
                "cluster created: writer endpoint {}:{}, reader endpoint {}:{}",
                rec.writer_ep.0, spec.port, rec.reader_ep.0, spec.port
            ),
        );
        Ok(rec)
    }

    /// Attaches nodes up to `instance_count` (the first is the writer).
    async fn place_nodes(&self, rec: &mut ClusterRec) -> Result<(), DbError> {
        let spec = rec.spec.clone();
        let mut sgs = spec.security_groups.clone();
        sgs.push(rec.internal_sg.clone());
        let mut i = 1;
        while (rec.nodes.len() as u32) < spec.instance_count.max(1) {
            let name = format!("{}-{i}", spec.name);
            i += 1;
            if rec.node(&name).is_some() {
                continue;
            }
            let subnet = spec.subnets[(rec.nodes.len()) % spec.subnets.len()].clone();
            let ep = self
                .net
                .attach(AttachRequest {
                    name: format!("db/{}/{}/{name}", spec.env, spec.name),
                    subnet_id: subnet.clone(),
                    security_groups: sgs.clone(),
                })
                .await
                .map_err(failed)?;
            let role = if rec.writer().is_none() {
                Role::Writer
            } else {
                Role::Reader
            };
            rec.nodes.push(NodeRec {
                name,
                subnet,
                role,
                address: ep.address,
                netns: ep.netns,
            });
        }
        // Security groups may have changed: endpoints and nodes carry the new ones.
        for n in &rec.nodes {
            let _ = self
                .net
                .attach(AttachRequest {
                    name: format!("db/{}/{}/{}", spec.env, spec.name, n.name),
                    subnet_id: n.subnet.clone(),
                    security_groups: sgs.clone(),
                })
                .await;
        }
        Ok(())
    }

    /// Attaches the cluster's nodes and endpoints again (recreating missing namespaces).
    async fn reattach(&self, rec: &ClusterRec) -> Result<(), DbError> {
        let (env, name) = (&rec.spec.env, &rec.spec.name);
        let mut sgs = rec.spec.security_groups.clone();
        sgs.push(rec.internal_sg.clone());
        let first = rec.spec.subnets.first().cloned().unwrap_or_default();
        let mut all: Vec<(String, String)> = rec
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.subnet.clone()))
            .collect();
        all.push(("writer".into(), first.clone()));
        all.push(("reader".into(), first));
        for (which, subnet) in all {
            let ep = format!("db/{env}/{name}/{which}");
            // The writer endpoint's own namespace only holds its address until a writer
            // takes it: attached again while nodes run, it would claim the address a
            // running writer holds (two owners, connections cut).
            if which == "writer" && self.net.endpoint_exists(&ep).await {
                continue;
            }
            self.net
                .attach(AttachRequest {
                    name: ep,
                    subnet_id: subnet,
                    security_groups: sgs.clone(),
                })
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Stops and forgets readers beyond `instance_count` (the writer is never removed: a
    /// shrink to one keeps it).
    async fn remove_extra_nodes(
        &self,
        rec: &mut ClusterRec,
        rt: &ClusterRt,
        inner: &mut Inner,
    ) -> Result<(), DbError> {
        while rec.nodes.len() as u32 > rec.spec.instance_count.max(1) {
            let Some(pos) = rec.nodes.iter().rposition(|n| n.role == Role::Reader) else {
                break;
            };
            let n = rec.nodes.remove(pos);
            self.update_routes(rec, rt, inner);
            self.stop_node(rec, &n, inner, false).await;
            if let Some(w) = rec.writer() {
                if let Ok(c) = self.admin(rec, w).await {
                    let _ = c
                        .execute(
                            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                            &[&slot(&n.name)],
                        )
                        .await;
                }
            }
            let _ = self
                .net
                .detach(&format!("db/{}/{}/{}", rec.spec.env, rec.spec.name, n.name))
                .await;
            let _ = std::fs::remove_dir_all(self.node_dir(rec, &n.name));
            self.cgroup(rec, &n.name).remove();
            self.event(
                &rec.spec.env,
                &rec.spec.name,
                "removed",
                &format!("node {} removed", n.name),
            );
        }
        self.save(rec)?;
        self.reconfigure(rec, inner).await
    }

    /// Starts whatever of the cluster is not running: the writer, then each reader, then
    /// the endpoints.
    async fn ensure_running(
        self: &Arc<Self>,
        rec: &mut ClusterRec,
        rt: &ClusterRt,
        inner: &mut Inner,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let w = rec
            .writer()
            .cloned()
            .ok_or_else(|| failed("the cluster has no writer"))?;
        if !self.running(inner, &w.name) {
            self.start_node(rec, &w, inner, ids).await?;
        }
        // Every reader has its slot on the writer (a writer promoted by a restart, after
        // a crash in the middle of a failover, has none yet).
        for n in rec.nodes.iter().filter(|n| n.role == Role::Reader) {
            if let Err(e) = self.ensure_slot(rec, &w, &n.name).await {
                tracing::warn!(node = %n.name, error = %e, "cannot make the reader's replication slot yet");
            }
        }
        for n in rec.nodes.clone() {
            if n.role == Role::Reader && !self.running(inner, &n.name) {
                if let Err(e) = self.start_node(rec, &n, inner, ids).await {
                    self.event(
                        &rec.spec.env,
                        &rec.spec.name,
                        "error",
                        &format!("reader {} did not start: {e}", n.name),
                    );
                }
            }
        }
        if !inner.reader_up {
            self.ensure_reader_endpoint(rec, rt).await?;
            inner.reader_up = true;
        }
        if inner.address_on.as_deref() != Some(w.name.as_str()) {
            self.place_writer_address(rec, &w).await?;
            inner.address_on = Some(w.name.clone());
        }
        self.update_routes(rec, rt, inner);
        self.reconfigure(rec, inner).await
    }

    fn running(&self, inner: &mut Inner, node: &str) -> bool {
        inner.nodes.get(node).is_some_and(NodeRt::runs)
    }

    /// Whether a node serves: its shim runs and its postmaster has not ended.
    fn serving_process(&self, inner: &Inner, node: &str) -> bool {
        inner
            .nodes
            .get(node)
            .is_some_and(|n| n.runs() && !n.postmaster_dead())
    }

    /// Starts every recorded cluster (after a server start).
    pub async fn reconcile_all(self: &Arc<Self>) {
        for mut rec in self.clusters() {
            let rt = self.rt(&rec.spec.env, &rec.spec.name);
            let ids = match self.prepare() {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "databases cannot start");
                    return;
                }
            };
            let mut inner = rt.inner.lock().await;
            // Namespaces may be gone (a host reboot, `veeps up` stopped): attach again.
            if let Err(e) = self.reattach(&rec).await {
                self.event(
                    &rec.spec.env,
                    &rec.spec.name,
                    "error",
                    &format!("cluster networking could not be restored: {e}"),
                );
                continue;
            }
            if let Err(e) = self.ensure_running(&mut rec, &rt, &mut inner, ids).await {
                self.event(
                    &rec.spec.env,
                    &rec.spec.name,
                    "error",
                    &format!("cluster did not start: {e}"),
                );
            }
        }
    }

    /// Stops the supervisors; with `everything`, every node (fast shutdown) and endpoint
    /// too (records are kept); without, nodes keep serving and the next start adopts them.
    pub async fn shutdown(&self, everything: bool) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if !everything {
            self.obs.pump_spools();
            return;
        }
        let rts: Vec<(String, Arc<ClusterRt>)> = self
            .clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, rt) in rts {
            let Some((env, name)) = k.split_once('/') else {
                continue;
            };
            let Ok(Some(rec)) = self.cluster(env, name) else {
                continue;
            };
            // An operation stuck holding the cluster must not hold up the server's exit:
            // then the nodes are killed (crash recovery at the next start loses nothing
            // committed).
            let Ok(mut inner) = tokio::time::timeout(Duration::from_secs(5), rt.inner.lock()).await
            else {
                for n in &rec.nodes {
                    let cg = self.cgroup(&rec, &n.name);
                    let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
                }
                continue;
            };
            self.stop_reader_endpoint(&rec).await;
            inner.reader_up = false;
            // Readers first, so the writer's last WAL reaches them.
            let mut nodes = rec.nodes.clone();
            nodes.sort_by_key(|n| n.role == Role::Writer);
            for n in &nodes {
                self.stop_node(&rec, n, &mut inner, false).await;
                // Like the namespaces, the node's cgroup goes (its next start makes it).
                let cg = self.cgroup(&rec, &n.name);
                let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
            }
        }
    }

    /// Deletes a cluster: nodes, endpoints, data (backups are kept).
    pub async fn delete(self: &Arc<Self>, env: &str, name: &str) -> Result<(), DbError> {
        let Some(rec) = self.cluster(env, name)? else {
            return Ok(());
        };
        let rt = self.rt(env, name);
        let mut inner = rt.inner.lock().await;
        self.stop_reader_endpoint(&rec).await;
        inner.reader_up = false;
        for n in &rec.nodes {
            self.stop_node(&rec, n, &mut inner, false).await;
            self.cgroup(&rec, &n.name).remove();
            let _ = self
                .net
                .detach(&format!("db/{env}/{name}/{}", n.name))
                .await;
            let _ = self.certs.delete(&format!("db:{env}:{name}:{}", n.name));
        }
        for which in ["writer", "reader"] {
            let _ = self.net.detach(&format!("db/{env}/{name}/{which}")).await;
        }
        let _ = self.net.delete_sg(&rec.internal_sg).await;
        let _ = std::fs::remove_dir_all(self.cluster_dir(env, name));
        self.store
            .kv_delete(&format!("{K_CLUSTER}{}", key(env, name)))
            .map_err(failed)?;
        drop(inner);
        self.clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(env, name));
        self.event(env, name, "deleted", "cluster deleted (backups are kept)");
        Ok(())
    }

    /// Supervises every cluster: health checks twice a second, automatic failover after
    /// three failed checks of the writer (or at once when its process is gone, which is
    /// looked at ten times a second), restarts and rebuilds of readers, backups.
    pub fn run(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WRITER_WATCH).await;
                if me.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                for rec in me.clusters() {
                    let Some(w) = rec.nodes.iter().find(|n| n.role == Role::Writer) else {
                        continue;
                    };
                    let rt = me.rt(&rec.spec.env, &rec.spec.name);
                    // An operation in progress owns the cluster (a failover already, say).
                    let gone = match rt.inner.try_lock() {
                        Ok(inner) => {
                            inner.reader_up
                                && inner
                                    .nodes
                                    .get(&w.name)
                                    .is_some_and(|n| !n.runs() || n.postmaster_dead())
                        }
                        Err(_) => false,
                    };
                    if gone {
                        me.check(&rec, 1).await;
                    }
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if me.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                tick += 1;
                for rec in me.clusters() {
                    me.check(&rec, tick).await;
                }
                if tick.is_multiple_of(10) {
                    me.collect_samples().await;
                }
                if tick.is_multiple_of(4) {
                    me.clone().backup_tick().await;
                }
            }
        });
    }
}

/// How often the writer's process is looked at (a dead writer fails over at once, without
/// waiting for the next health check).
const WRITER_WATCH: Duration = Duration::from_millis(100);

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn limits(spec: &ClusterSpec) -> Limits {
    Limits {
        cpu: spec.cpu,
        memory: spec.memory_mb * 1024 * 1024,
        pids: 4096,
    }
}

fn secrets_context(spec: &ClusterSpec) -> String {
    format!("db_cluster {}/{}", spec.env, spec.name)
}

fn sha(s: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).to_vec()
}

/// A quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
