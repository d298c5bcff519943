//! The operator: creates clusters (nodes in their subnets, endpoints, the internal security
//! group), supervises them (health, restarts, automatic failover with fencing, rebuilding
//! the old writer as a replica), performs switchovers, resizes and rolling restarts, and
//! reports metrics and events.

use crate::model::{
    check_parameters, pg_hba, postgresql_conf, slot, ClusterRec, ClusterSpec, NodeRec, Role,
    Secrets, Upstream, REPLICATOR,
};
use crate::pg;
use crate::proxy::{self, Proxy, Route};
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

use veeps_sys::now_ms;

fn key(env: &str, name: &str) -> String {
    format!("{env}/{name}")
}

/// A node while veeps runs it.
#[derive(Default)]
struct NodeRt {
    child: Option<tokio::process::Child>,
    /// Consecutive failed health checks.
    fails: u32,
    /// Whether the last check found it serving.
    healthy: bool,
}

/// A cluster while veeps runs it.
#[derive(Default)]
struct Inner {
    nodes: HashMap<String, NodeRt>,
    proxies: Vec<Proxy>,
    hba: String,
    /// The node holding the writer endpoint's address.
    address_on: Option<String>,
}

struct ClusterRt {
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
}

/// What a health check found.
struct Health {
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
            self.net
                .attach(AttachRequest {
                    name: format!("db/{env}/{name}/{which}"),
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
        if inner.proxies.is_empty() {
            let port = rec.spec.port;
            let (addr, ns) = &rec.reader_ep;
            let p = proxy::start(ns, SocketAddr::from((*addr, port)), rt.reader.clone())
                .map_err(|e| failed(format!("reader endpoint {addr}:{port}: {e}")))?;
            inner.proxies.push(p);
        }
        if inner.address_on.as_deref() != Some(w.name.as_str()) {
            self.place_writer_address(rec, &w).await?;
            inner.address_on = Some(w.name.clone());
        }
        self.update_routes(rec, rt, inner);
        self.reconfigure(rec, inner).await
    }

    fn running(&self, inner: &mut Inner, node: &str) -> bool {
        inner
            .nodes
            .get_mut(node)
            .and_then(|n| n.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn writer_prefix_len(&self, rec: &ClusterRec) -> u8 {
        self.net
            .endpoint(&format!("db/{}/{}/writer", rec.spec.env, rec.spec.name))
            .ok()
            .flatten()
            .map(|e| e.prefix_len)
            .unwrap_or(24)
    }

    /// Takes the writer endpoint's address off every node but `except` (and off its own
    /// namespace): no new connection reaches those nodes through it.
    async fn release_writer_address(&self, rec: &ClusterRec, except: Option<&str>) {
        let a = format!("{}/{}", rec.writer_ep.0, self.writer_prefix_len(rec));
        let mut nss: Vec<&str> = rec
            .nodes
            .iter()
            .filter(|n| Some(n.name.as_str()) != except)
            .map(|n| n.netns.as_str())
            .collect();
        nss.push(&rec.writer_ep.1);
        for ns in nss.into_iter().filter(|n| !n.is_empty()) {
            let _ = veeps_net::sys::ip(Some(ns), &["addr", "del", &a, "dev", "eth0"]).await;
        }
    }

    /// Moves the writer endpoint's address to `w` and announces it (gratuitous ARP), so
    /// clients reach the new writer directly, with no proxy in the way.
    async fn place_writer_address(&self, rec: &ClusterRec, w: &NodeRec) -> Result<(), DbError> {
        if w.netns.is_empty() {
            return Ok(());
        }
        self.release_writer_address(rec, Some(&w.name)).await;
        let a = format!("{}/{}", rec.writer_ep.0, self.writer_prefix_len(rec));
        veeps_net::sys::ip(Some(&w.netns), &["addr", "replace", &a, "dev", "eth0"])
            .await
            .map_err(|e| {
                failed(format!(
                    "placing the writer endpoint's address on {}: {e}",
                    w.name
                ))
            })?;
        let (ns, ip) = (w.netns.clone(), rec.writer_ep.0);
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || veeps_net::garp::announce(&ns, ip)).await
        {
            tracing::warn!(error = %e, "gratuitous ARP for the writer endpoint failed; neighbours learn it when their caches expire");
        }
        Ok(())
    }

    /// Points the endpoints at the writer and the healthy readers.
    fn update_routes(&self, rec: &ClusterRec, rt: &ClusterRt, inner: &Inner) {
        let port = rec.spec.port;
        let writer: Vec<SocketAddr> = rec
            .writer()
            .filter(|w| {
                inner
                    .nodes
                    .get(&w.name)
                    .is_some_and(|n| n.healthy || n.fails == 0)
            })
            .map(|w| SocketAddr::from((w.address, port)))
            .into_iter()
            .collect();
        let readers: Vec<SocketAddr> = rec
            .nodes
            .iter()
            .filter(|n| n.role == Role::Reader)
            .filter(|n| inner.nodes.get(&n.name).is_some_and(|r| r.healthy))
            .map(|n| SocketAddr::from((n.address, port)))
            .collect();
        rt.reader
            .set(if readers.is_empty() { writer } else { readers });
    }

    /// Issues the node's certificate and writes its TLS files.
    fn tls(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        dir: &Path,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let id = format!("db:{}:{}:{}", rec.spec.env, rec.spec.name, node.name);
        let names = vec![
            node.address.to_string(),
            rec.writer_ep.0.to_string(),
            rec.reader_ep.0.to_string(),
            format!("{}.{}.db.veeps.internal", rec.spec.name, rec.spec.env),
        ];
        let cert = match self.certs.get(&id) {
            Some(c) if c.names == names => c,
            _ => self.certs.issue(&id, &names).map_err(failed)?,
        };
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(failed)?;
        std::fs::write(tls.join("server.crt"), &cert.chain_pem).map_err(failed)?;
        veeps_kms::write_private(&tls.join("server.key"), cert.key_pem.as_bytes())
            .map_err(failed)?;
        std::fs::write(tls.join("ca.crt"), &self.ca_pem).map_err(failed)?;
        pg::chown_tree(&tls, ids.0, ids.1).map_err(failed)
    }

    /// The sources `pg_hba.conf` admits besides nodes and endpoints: the ranges and members
    /// of the security groups' rules for the port.
    fn sources(&self, rec: &ClusterRec) -> Vec<ipnet::Ipv4Net> {
        let port = rec.spec.port;
        let eps = self.net.endpoints().unwrap_or_default();
        let mut out = vec![];
        for id in &rec.spec.security_groups {
            let Ok(Some(g)) = self.net.sg(id) else {
                continue;
            };
            for r in &g.ingress {
                let covers = (r.protocol == "tcp" || r.protocol == "all" || r.protocol == "-1")
                    && (r.protocol != "tcp" || (r.from_port <= port && port <= r.to_port));
                if !covers {
                    continue;
                }
                out.extend(r.cidr_blocks.iter().copied());
                for e in &eps {
                    let member = e
                        .security_groups
                        .iter()
                        .any(|s| r.security_groups.contains(s) || (r.self_ && s == id));
                    if member {
                        if let Ok(n) = ipnet::Ipv4Net::new(e.address, 32) {
                            out.push(n);
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn hba(&self, rec: &ClusterRec) -> String {
        let nodes: Vec<Ipv4Addr> = rec.nodes.iter().map(|n| n.address).collect();
        pg_hba(&nodes, &[rec.reader_ep.0], &self.sources(rec))
    }

    /// Writes a node's configuration files (as its role wants them).
    fn write_conf(&self, rec: &ClusterRec, node: &NodeRec, ids: (u32, u32)) -> Result<(), DbError> {
        let secrets = self.secrets(rec)?;
        let dir = self.node_dir(rec, &node.name);
        let pgdata = dir.join("pgdata");
        // Only nodes that have their data can confirm commits: listing one still being
        // created would stop every commit until it streams.
        let others: Vec<String> = rec
            .nodes
            .iter()
            .filter(|n| n.name != node.name)
            .filter(|n| {
                self.node_dir(rec, &n.name)
                    .join("pgdata/PG_VERSION")
                    .exists()
            })
            .map(|n| n.name.clone())
            .collect();
        let slot_name = slot(&node.name);
        let upstream = match node.role {
            Role::Writer => None,
            Role::Reader => rec.writer().map(|w| Upstream {
                host: w.address,
                slot: &slot_name,
            }),
        };
        let conf = postgresql_conf(
            &rec.spec,
            node,
            &others,
            upstream,
            &secrets,
            rec.spec.backup_retention_days > 0,
        );
        std::fs::write(pgdata.join("postgresql.conf"), conf).map_err(failed)?;
        std::fs::write(pgdata.join("pg_hba.conf"), self.hba(rec)).map_err(failed)?;
        // ALTER SYSTEM would override veeps' settings; they come from `parameters` only.
        let _ = std::fs::write(pgdata.join("postgresql.auto.conf"), "");
        let standby = pgdata.join("standby.signal");
        match node.role {
            Role::Reader => std::fs::write(&standby, "").map_err(failed)?,
            Role::Writer => {
                let _ = std::fs::remove_file(&standby);
            }
        }
        pg::chown_tree(&pgdata, ids.0, ids.1).map_err(failed)
    }

    /// Starts a node, creating its data first (initdb for a new cluster's writer, a base
    /// backup from the writer for a reader).
    async fn start_node(
        self: &Arc<Self>,
        rec: &mut ClusterRec,
        node: &NodeRec,
        inner: &mut Inner,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let dir = self.node_dir(rec, &node.name);
        self.clear_leftovers(rec, node, &dir).await;
        for d in ["run", "spool", "restore"] {
            std::fs::create_dir_all(dir.join(d)).map_err(failed)?;
        }
        pg::chown_tree(&dir, ids.0, ids.1).map_err(failed)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        self.tls(rec, node, &dir, ids)?;
        let has_data = dir.join("pgdata/PG_VERSION").exists();
        // A new cluster's writer (not restored) gets its roles and database once.
        let fresh = node.role == Role::Writer && !rec.initialised && rec.spec.restore.is_none();
        if !has_data {
            match node.role {
                Role::Writer if !rec.initialised => {
                    if rec.spec.restore.is_some() {
                        self.restore_into(rec, node, ids).await?;
                    } else {
                        self.initdb(rec, node, ids).await?;
                    }
                }
                Role::Writer => {
                    return Err(failed(format!(
                        "the writer {}'s data directory is missing; promote a reader with `veeps db failover`",
                        node.name
                    )))
                }
                Role::Reader => self.base_backup(rec, node, ids).await?,
            }
        }
        self.write_conf(rec, node, ids)?;
        // A restore in progress: recover from the archive, then promote.
        let recovering = std::fs::read_to_string(dir.join("recovery.extra")).ok();
        if let Some(extra) = &recovering {
            let conf = dir.join("pgdata/postgresql.conf");
            let mut c = std::fs::read_to_string(&conf).map_err(failed)?;
            c.push_str(extra);
            std::fs::write(&conf, c).map_err(failed)?;
            std::fs::write(dir.join("pgdata/recovery.signal"), "").map_err(failed)?;
            pg::chown_tree(&dir.join("pgdata"), ids.0, ids.1).map_err(failed)?;
        }
        let cg = self.cgroup(rec, &node.name);
        if let Err(e) = cg.create(limits(&rec.spec)) {
            tracing::warn!(error = %e, "cannot limit the node's CPU and memory");
        }
        let mut cmd = pg::command(&dir, &node.netns, ids, "postgres").map_err(failed)?;
        cmd.args(["-D", pg::PGDATA])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| failed(format!("postgres: {e}")))?;
        if let Some(pid) = child.id() {
            for f in cg.procs_files() {
                let _ = std::fs::write(f, pid.to_string());
            }
        }
        self.obs.capture(
            &mut child,
            &rec.spec.env,
            &format!("db/{}", rec.spec.name),
            &node.name,
        );
        inner.nodes.insert(
            node.name.clone(),
            NodeRt {
                child: Some(child),
                fails: 0,
                healthy: false,
            },
        );
        self.wait_ready(rec, node, inner).await?;
        if let Some(n) = inner.nodes.get_mut(&node.name) {
            n.healthy = true;
        }
        if fresh {
            self.bootstrap(rec, node).await?;
        }
        if recovering.is_some() {
            self.finish_restore(rec, node).await?;
            self.write_conf(rec, node, ids)?;
            if let Ok(c) = self.admin(rec, node).await {
                let _ = c.batch_execute("SELECT pg_reload_conf()").await;
            }
        }
        if node.role == Role::Writer && !rec.initialised {
            rec.initialised = true;
            self.save(rec)?;
        }
        Ok(())
    }

    /// A node left running by an earlier server (killed without stopping its nodes) is
    /// shut down (fast, then killed) before veeps starts it under its own supervision.
    async fn clear_leftovers(&self, rec: &ClusterRec, node: &NodeRec, dir: &Path) {
        let cg = self.cgroup(rec, &node.name);
        let pid: Option<i32> = std::fs::read_to_string(dir.join("pgdata/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        let Some(pid) = pid.filter(|p| cg.pids().contains(p)) else {
            return;
        };
        tracing::info!(node = %node.name, pid, "stopping a node left by an earlier server run");
        veeps_sys::proc::signal(pid as u32, libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cg.pids().contains(&pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::task::spawn_blocking(move || cg.kill_all())
            .await
            .ok();
    }

    async fn wait_ready(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        inner: &mut Inner,
    ) -> Result<(), DbError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.admin(rec, node).await.is_ok() {
                return Ok(());
            }
            let exited = inner
                .nodes
                .get_mut(&node.name)
                .and_then(|n| n.child.as_mut())
                .map(|c| c.try_wait())
                .and_then(|r| r.ok().flatten());
            if let Some(status) = exited {
                return Err(failed(format!(
                    "node {} exited while starting ({status}); see `veeps logs {} db/{}/{}`",
                    node.name, rec.spec.env, rec.spec.name, node.name
                )));
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "node {} did not start within 120 s",
                    node.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A superuser connection over the node's local socket.
    pub(crate) async fn admin(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
    ) -> Result<tokio_postgres::Client, DbError> {
        let sock = self.node_dir(rec, &node.name).join("run");
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&sock)
            .port(rec.spec.port)
            .user(&rec.spec.master_username)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2));
        let (client, conn) = tokio::time::timeout(Duration::from_secs(3), cfg.connect(NoTls))
            .await
            .map_err(|_| failed("timed out connecting"))?
            .map_err(failed)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn initdb(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let dir = self.node_dir(rec, &node.name);
        let secrets = self.secrets(rec)?;
        let pw = dir.join("pwfile");
        veeps_kms::write_private(&pw, secrets.master.as_bytes()).map_err(failed)?;
        pg::chown_tree(&pw, ids.0, ids.1).map_err(failed)?;
        let r = pg::run(
            &dir,
            "",
            ids,
            "initdb",
            &[
                "-D",
                pg::PGDATA,
                "-U",
                &rec.spec.master_username,
                &format!("--pwfile={}/pwfile", pg::MOUNT),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--data-checksums",
            ],
            &[],
        )
        .await;
        let _ = std::fs::remove_file(&pw);
        r.map_err(failed)?;
        Ok(())
    }

    /// After the first start: the replication role and the database.
    async fn bootstrap(&self, rec: &ClusterRec, node: &NodeRec) -> Result<(), DbError> {
        let secrets = self.secrets(rec)?;
        let c = self.admin(rec, node).await?;
        // Readers may not be streaming yet: these commits must not wait for them.
        c.batch_execute("SET synchronous_commit TO local")
            .await
            .map_err(failed)?;
        let has_role = !c
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&REPLICATOR])
            .await
            .map_err(failed)?
            .is_empty();
        c.batch_execute(&format!(
            "{} ROLE {REPLICATOR} WITH REPLICATION LOGIN PASSWORD {}",
            if has_role { "ALTER" } else { "CREATE" },
            literal(&secrets.replication)
        ))
        .await
        .map_err(failed)?;
        let has_db = !c
            .query(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&rec.spec.database_name],
            )
            .await
            .map_err(failed)?
            .is_empty();
        if !has_db {
            c.batch_execute(&format!(
                "CREATE DATABASE {} OWNER {}",
                ident(&rec.spec.database_name),
                ident(&rec.spec.master_username)
            ))
            .await
            .map_err(failed)?;
        }
        Ok(())
    }

    async fn ensure_slot(
        &self,
        rec: &ClusterRec,
        writer: &NodeRec,
        node: &str,
    ) -> Result<(), DbError> {
        let c = self.admin(rec, writer).await?;
        c.execute(
            "SELECT pg_create_physical_replication_slot($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot(node)],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// A fresh copy of the writer's data for a reader, over the network, with its slot.
    async fn base_backup(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let w = rec
            .writer()
            .cloned()
            .ok_or_else(|| failed("no writer to copy from"))?;
        self.ensure_slot(rec, &w, &node.name).await?;
        let secrets = self.secrets(rec)?;
        let dir = self.node_dir(rec, &node.name);
        let _ = std::fs::remove_dir_all(dir.join("pgdata"));
        let host = w.address.to_string();
        let port = rec.spec.port.to_string();
        let slot_name = slot(&node.name);
        pg::run(
            &dir,
            &node.netns,
            ids,
            "pg_basebackup",
            &[
                "-D",
                pg::PGDATA,
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                REPLICATOR,
                "-X",
                "stream",
                "-S",
                &slot_name,
                "-c",
                "fast",
                "--no-password",
            ],
            &[
                ("PGPASSWORD", &secrets.replication),
                ("PGSSLMODE", "require"),
            ],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// Stops a node: fast shutdown (or SIGKILL when `kill`), then everything in its cgroup.
    async fn stop_node(&self, rec: &ClusterRec, node: &NodeRec, inner: &mut Inner, kill: bool) {
        if let Some(mut rt) = inner.nodes.remove(&node.name) {
            if let Some(c) = rt.child.as_mut() {
                if let Some(pid) = c.id() {
                    let sig = if kill { libc::SIGKILL } else { libc::SIGINT };
                    veeps_sys::proc::signal(pid, sig);
                }
                let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
            }
        }
        let cg = self.cgroup(rec, &node.name);
        tokio::task::spawn_blocking(move || cg.kill_all())
            .await
            .ok();
    }

    /// Rewrites every node's configuration and reloads those running (roles, sources,
    /// parameters that need no restart).
    async fn reconfigure(&self, rec: &ClusterRec, inner: &mut Inner) -> Result<(), DbError> {
        let ids = self.prepare()?;
        inner.hba = self.hba(rec);
        for n in &rec.nodes {
            if !self
                .node_dir(rec, &n.name)
                .join("pgdata/PG_VERSION")
                .exists()
            {
                continue;
            }
            self.write_conf(rec, n, ids)?;
            if self.running(inner, &n.name) {
                if let Ok(c) = self.admin(rec, n).await {
                    let _ = c.batch_execute("SELECT pg_reload_conf()").await;
                }
            }
        }
        Ok(())
    }

    /// Checks one node.
    async fn health(&self, rec: &ClusterRec, node: &NodeRec) -> Health {
        let q = async {
            let c = self.admin(rec, node).await.ok()?;
            let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
            Some(row.get::<_, bool>(0))
        };
        match tokio::time::timeout(Duration::from_secs(2), q).await {
            Ok(Some(r)) => Health {
                serving: true,
                in_recovery: r,
            },
            _ => Health {
                serving: false,
                in_recovery: false,
            },
        }
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

    /// Stops every node (fast shutdown) and endpoint; records are kept.
    pub async fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
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
                    let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
                }
                continue;
            };
            inner.proxies.clear();
            // Readers first, so the writer's last WAL reaches them.
            let mut nodes = rec.nodes.clone();
            nodes.sort_by_key(|n| n.role == Role::Writer);
            for n in &nodes {
                self.stop_node(&rec, n, &mut inner, false).await;
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
        inner.proxies.clear();
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
    /// three failed checks of the writer, restarts and rebuilds of readers, backups.
    pub fn run(self: &Arc<Self>) {
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

    async fn check(self: &Arc<Self>, rec: &ClusterRec, tick: u64) {
        let rt = self.rt(&rec.spec.env, &rec.spec.name);
        // An operation in progress owns the cluster; check next time.
        let Ok(mut inner) = rt.inner.try_lock() else {
            return;
        };
        if inner.proxies.is_empty() {
            return;
        }
        let Ok(ids) = self.prepare() else { return };
        let mut writer_down = false;
        for n in rec.nodes.clone() {
            let alive = self.running(&mut inner, &n.name);
            let h = if alive {
                self.health(rec, &n).await
            } else {
                Health {
                    serving: false,
                    in_recovery: false,
                }
            };
            let ok = h.serving && (h.in_recovery == (n.role == Role::Reader));
            let e = inner.nodes.entry(n.name.clone()).or_default();
            if ok {
                e.fails = 0;
                e.healthy = true;
            } else {
                e.fails += 1;
                e.healthy = false;
            }
            let fails = e.fails;
            if n.role == Role::Writer && (fails >= 3 || (!alive && fails >= 1)) {
                writer_down = true;
            }
            if n.role == Role::Reader && !alive && fails >= 2 {
                // A reader died: start it again (rebuilding it when its data is unusable).
                let mut r = rec.clone();
                if self.start_node(&mut r, &n, &mut inner, ids).await.is_err() {
                    self.stop_node(rec, &n, &mut inner, true).await;
                    let _ = std::fs::remove_dir_all(self.node_dir(rec, &n.name).join("pgdata"));
                    match self.start_node(&mut r, &n, &mut inner, ids).await {
                        Ok(()) => self.event(
                            &rec.spec.env,
                            &rec.spec.name,
                            "rebuilt",
                            &format!("reader {} rebuilt from a fresh base backup", n.name),
                        ),
                        Err(e) => self.event(
                            &rec.spec.env,
                            &rec.spec.name,
                            "error",
                            &format!("reader {} cannot be rebuilt: {e}", n.name),
                        ),
                    }
                } else {
                    self.event(
                        &rec.spec.env,
                        &rec.spec.name,
                        "restarted",
                        &format!("reader {} restarted", n.name),
                    );
                }
            }
        }
        if writer_down {
            let _ = self
                .failover_locked(rec, &rt, &mut inner, None, false)
                .await;
            return;
        }
        self.update_routes(rec, &rt, &inner);
        // Security group members change: keep pg_hba in step.
        if tick.is_multiple_of(10) && self.hba(rec) != inner.hba {
            let _ = self.reconfigure(rec, &mut inner).await;
        }
    }

    /// A planned switchover to `to` (the most caught-up reader when `None`): no
    /// acknowledged commit is lost.
    pub async fn switchover(
        self: &Arc<Self>,
        env: &str,
        name: &str,
        to: Option<&str>,
    ) -> Result<String, DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        if let Some(t) = to {
            match rec.node(t) {
                None => {
                    return Err(DbError::NotFound(format!(
                        "no node {t} in {name} (see `veeps db status {env} {name}`)"
                    )))
                }
                Some(n) if n.role == Role::Writer => {
                    return Err(DbError::Invalid(format!("{t} is the writer already")))
                }
                _ => {}
            }
        }
        let rt = self.rt(env, name);
        let mut inner = rt.inner.lock().await;
        self.failover_locked(&rec, &rt, &mut inner, to, true).await
    }

    /// Fences the writer, promotes the best reader, repoints everything and rebuilds the
    /// old writer as a reader. `planned`: stop the writer cleanly and wait for the target to
    /// replay all it wrote.
    async fn failover_locked(
        self: &Arc<Self>,
        rec: &ClusterRec,
        rt: &ClusterRt,
        inner: &mut Inner,
        to: Option<&str>,
        planned: bool,
    ) -> Result<String, DbError> {
        let started = Instant::now();
        let (env, name) = (rec.spec.env.clone(), rec.spec.name.clone());
        let old = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
        // Fence: no new connection reaches the old writer (its endpoint address goes), and
        // its processes are stopped (killed, when it failed) before anything is promoted.
        self.release_writer_address(rec, None).await;
        inner.address_on = None;
        let mut final_lsn: Option<String> = None;
        if planned {
            if let Ok(c) = self.admin(rec, &old).await {
                let _ = c.batch_execute("CHECKPOINT").await;
            }
            self.stop_node(rec, &old, inner, false).await;
            let ids = self.prepare()?;
            let out = pg::run(
                &self.node_dir(rec, &old.name),
                "",
                ids,
                "pg_controldata",
                &["-D", pg::PGDATA],
                &[],
            )
            .await
            .unwrap_or_default();
            final_lsn = out
                .lines()
                .find(|l| {
                    l.starts_with("Latest checkpoint's REDO location:")
                        || l.starts_with("Latest checkpoint location:")
                })
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string());
        } else {
            self.event(
                &env,
                &name,
                "failover",
                &format!("writer {} is down; failing over", old.name),
            );
            self.stop_node(rec, &old, inner, true).await;
        }
        // The candidate: the reader with the most WAL received (or the one asked for).
        let mut best: Option<(NodeRec, i64)> = None;
        for n in rec.nodes.iter().filter(|n| n.role == Role::Reader) {
            if to.is_some_and(|t| t != n.name) {
                continue;
            }
            if !self.running(inner, &n.name) {
                continue;
            }
            let Ok(c) = self.admin(rec, n).await else {
                continue;
            };
            let Ok(row) = c
                .query_one(
                    "SELECT COALESCE(pg_wal_lsn_diff(GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0'), 0)::bigint",
                    &[],
                )
                .await
            else {
                continue;
            };
            let lsn: i64 = row.get(0);
            if best.as_ref().is_none_or(|(_, b)| lsn > *b) {
                best = Some((n.clone(), lsn));
            }
        }
        let Some((target, _)) = best else {
            // Nobody to promote: bring the old writer back.
            let msg = format!("no healthy reader to promote; restarting {}", old.name);
            self.event(&env, &name, "failover", &msg);
            let ids = self.prepare()?;
            let mut r = rec.clone();
            self.start_node(&mut r, &old, inner, ids).await?;
            self.place_writer_address(rec, &old).await?;
            inner.address_on = Some(old.name.clone());
            self.update_routes(rec, rt, inner);
            return Err(failed(msg));
        };
        if planned {
            // Wait until the target has replayed the old writer's last record.
            if let Some(lsn) = &final_lsn {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let caught = match self.admin(rec, &target).await {
                        Ok(c) => c
                            .query_one(
                                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), $1::text::pg_lsn) >= 0",
                                &[lsn],
                            )
                            .await
                            .map(|r| r.get::<_, bool>(0))
                            .unwrap_or(false),
                        Err(_) => false,
                    };
                    if caught || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let c = self.admin(rec, &target).await?;
        // Record the new roles first (intent before action): a crash from here on restarts
        // the target as the writer (its configuration drops standby.signal, which promotes
        // it) and the old writer as a reader that rejoins, never the old roles over a
        // promoted node.
        let mut new = rec.clone();
        for n in &mut new.nodes {
            n.role = if n.name == target.name {
                Role::Writer
            } else {
                Role::Reader
            };
        }
        self.save(&new)?;
        crate::failpoint("db-before-promote");
        if let Err(e) = c.batch_execute("SELECT pg_promote(true, 60)").await {
            // Not promoted: the recorded roles go back to what runs.
            let _ = self.save(rec);
            return Err(failed(format!("promoting {}: {e}", target.name)));
        }
        let new_writer = new.writer().cloned().ok_or_else(|| failed("no writer"))?;
        for n in new.nodes.iter().filter(|n| n.name != new_writer.name) {
            let _ = self.ensure_slot(&new, &new_writer, &n.name).await;
        }
        self.place_writer_address(&new, &new_writer).await?;
        inner.address_on = Some(new_writer.name.clone());
        self.reconfigure(&new, inner).await?;
        if let Some(n) = inner.nodes.get_mut(&new_writer.name) {
            n.healthy = true;
            n.fails = 0;
        }
        self.update_routes(&new, rt, inner);
        let took = started.elapsed();
        let kind = if planned { "switchover" } else { "failover" };
        let msg = format!(
            "{} promoted to writer in {} ms (was {}); endpoints repointed",
            new_writer.name,
            took.as_millis(),
            old.name
        );
        self.event(&env, &name, kind, &msg);
        self.obs.record(&[Sample::new(
            "db_failover_seconds",
            &[("env", env.as_str()), ("cluster", name.as_str())],
            took.as_secs_f64(),
        )]);
        // The new timeline must be in the new writer's control file before pg_rewind can
        // compare histories with it.
        if let Ok(c) = self.admin(&new, &new_writer).await {
            let _ = c.batch_execute("CHECKPOINT").await;
        }
        // The old writer returns as a reader: rewound, or copied afresh.
        if let Err(e) = self.rejoin(&new, &old, inner, planned).await {
            self.event(
                &env,
                &name,
                "error",
                &format!("{} cannot rejoin as a reader: {e}", old.name),
            );
        }
        self.update_routes(&new, rt, inner);
        Ok(msg)
    }

    /// Brings a former writer back as a reader of the current writer.
    async fn rejoin(
        self: &Arc<Self>,
        rec: &ClusterRec,
        old: &NodeRec,
        inner: &mut Inner,
        clean: bool,
    ) -> Result<(), DbError> {
        let ids = self.prepare()?;
        let dir = self.node_dir(rec, &old.name);
        let node = rec
            .node(&old.name)
            .cloned()
            .ok_or_else(|| failed("node gone"))?;
        let w = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
        let secrets = self.secrets(rec)?;
        let mut how = "rewound";
        let rewound = async {
            if !dir.join("pgdata/PG_VERSION").exists() {
                return Err("no data".to_string());
            }
            if !clean {
                // pg_rewind wants a cleanly shut down target: finish crash recovery alone.
                let _ = std::fs::remove_file(dir.join("pgdata/standby.signal"));
                let _ = std::fs::remove_file(dir.join("pgdata/postmaster.pid"));
                pg::run(
                    &dir,
                    "",
                    ids,
                    "postgres",
                    &[
                        "--single",
                        "-D",
                        pg::PGDATA,
                        "-c",
                        "archive_mode=off",
                        "postgres",
                    ],
                    &[],
                )
                .await?;
            }
            let src = format!(
                "host={} port={} user={} dbname=postgres sslmode=require",
                w.address, rec.spec.port, rec.spec.master_username
            );
            pg::run(
                &dir,
                &node.netns,
                ids,
                "pg_rewind",
                &["-D", pg::PGDATA, &format!("--source-server={src}")],
                &[("PGPASSWORD", &secrets.master)],
            )
            .await
            .map(|_| ())
        }
        .await;
        let mut r = rec.clone();
        let started = match rewound {
            Ok(()) => {
                self.ensure_slot(rec, &w, &node.name).await?;
                self.start_node(&mut r, &node, inner, ids).await
            }
            Err(e) => Err(failed(e)),
        };
        if let Err(e) = started {
            tracing::info!(node = %old.name, error = %e, "rewinding did not work; taking a fresh base backup");
            how = "copied afresh";
            self.stop_node(rec, &node, inner, true).await;
            self.base_backup(rec, &node, ids).await?;
            self.start_node(&mut r, &node, inner, ids).await?;
        }
        self.event(
            &rec.spec.env,
            &rec.spec.name,
            "rebuilt",
            &format!("{} rejoined as a reader ({how})", old.name),
        );
        Ok(())
    }

    /// Restarts every node for settings that need it: readers one at a time, then a
    /// switchover, then the former writer.
    pub async fn rolling_restart(self: &Arc<Self>, env: &str, name: &str) -> Result<(), DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        let ids = self.prepare()?;
        let rt = self.rt(env, name);
        {
            let mut inner = rt.inner.lock().await;
            for n in rec.nodes.iter().filter(|n| n.role == Role::Reader) {
                if let Some(r) = inner.nodes.get_mut(&n.name) {
                    r.healthy = false;
                }
                self.update_routes(&rec, &rt, &inner);
                self.stop_node(&rec, n, &mut inner, false).await;
                let mut r = rec.clone();
                self.start_node(&mut r, n, &mut inner, ids).await?;
                self.update_routes(&rec, &rt, &inner);
            }
        }
        if rec.nodes.len() > 1 {
            self.switchover(env, name, None).await?;
        } else {
            let mut inner = rt.inner.lock().await;
            let w = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
            self.stop_node(&rec, &w, &mut inner, false).await;
            let mut r = rec.clone();
            self.start_node(&mut r, &w, &mut inner, ids).await?;
            self.place_writer_address(&rec, &w).await?;
            self.update_routes(&rec, &rt, &inner);
        }
        self.event(
            env,
            name,
            "restarted",
            "rolling restart done (settings that need a restart applied)",
        );
        Ok(())
    }

    /// Each node's role, health, lag and process, as JSON.
    pub async fn status(
        self: &Arc<Self>,
        env: &str,
        name: &str,
    ) -> Result<serde_json::Value, DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        let rt = self.rt(env, name);
        let (pids, address_on): (HashMap<String, Option<u32>>, Option<String>) = {
            let inner = rt.inner.lock().await;
            let pids = inner
                .nodes
                .iter()
                .map(|(k, v)| (k.clone(), v.child.as_ref().and_then(|c| c.id())))
                .collect();
            (pids, inner.address_on.clone())
        };
        // The node holding the writer endpoint's address.
        let writer_targets: Vec<String> = address_on
            .and_then(|n| {
                rec.node(&n)
                    .map(|n| format!("{}:{}", n.address, rec.spec.port))
            })
            .into_iter()
            .collect();
        let mut lag: HashMap<String, (i64, f64)> = HashMap::new();
        if let Some(w) = rec.writer() {
            if let Ok(c) = self.admin(&rec, w).await {
                if let Ok(rows) = c
                    .query(
                        "SELECT application_name, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 FROM pg_stat_replication",
                        &[],
                    )
                    .await
                {
                    for r in rows {
                        lag.insert(r.get(0), (r.get(1), r.get(2)));
                    }
                }
            }
        }
        let mut nodes = vec![];
        for n in &rec.nodes {
            let h = self.health(&rec, n).await;
            let (bytes, secs) = lag.get(&n.name).copied().unwrap_or((0, 0.0));
            nodes.push(serde_json::json!({
                "name": n.name,
                "role": match n.role { Role::Writer => "writer", Role::Reader => "reader" },
                "address": n.address.to_string(),
                "subnet": n.subnet,
                "healthy": h.serving && h.in_recovery == (n.role == Role::Reader),
                "lag_bytes": bytes,
                "lag_seconds": secs,
                "pid": pids.get(&n.name).copied().flatten(),
            }));
        }
        Ok(serde_json::json!({
            "cluster": name,
            "env": env,
            "endpoint": format!("{}:{}", rec.writer_ep.0, rec.spec.port),
            "reader_endpoint": format!("{}:{}", rec.reader_ep.0, rec.spec.port),
            "writer_targets": writer_targets,
            "reader_targets": rt.reader.targets().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "nodes": nodes,
        }))
    }

    /// The namespace and connection settings for an operator's `psql` (run in the writer
    /// or reader endpoint's namespace, against that endpoint, with the master credentials).
    pub fn psql_target(
        &self,
        env: &str,
        name: &str,
        reader: bool,
    ) -> Result<(String, Vec<(String, String)>), DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        let secrets = self.secrets(&rec)?;
        // From the reader endpoint's namespace: an address of the cluster's own, inside
        // its VPC, admitted by its security groups and pg_hba.
        let ns = &rec.reader_ep.1;
        let addr = if reader {
            &rec.reader_ep.0
        } else {
            &rec.writer_ep.0
        };
        let ca = self.data_dir.join("pki").join("ca.crt");
        if !ca.exists() {
            let _ = std::fs::write(&ca, &self.ca_pem);
        }
        Ok((
            ns.clone(),
            vec![
                ("PGHOST".into(), addr.to_string()),
                ("PGPORT".into(), rec.spec.port.to_string()),
                ("PGUSER".into(), rec.spec.master_username.clone()),
                ("PGPASSWORD".into(), secrets.master),
                ("PGDATABASE".into(), rec.spec.database_name.clone()),
                ("PGSSLMODE".into(), "verify-ca".into()),
                ("PGSSLROOTCERT".into(), ca.display().to_string()),
            ],
        ))
    }

    async fn collect_samples(&self) {
        let mut out = vec![];
        for rec in self.clusters() {
            let (env, name) = (rec.spec.env.as_str(), rec.spec.name.as_str());
            let l = [("env", env), ("cluster", name)];
            let Some(w) = rec.writer() else { continue };
            if let Ok(c) = self.admin(&rec, w).await {
                if let Ok(r) = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::float8, \
                         COALESCE(sum(xact_commit + xact_rollback), 0)::float8, COALESCE(sum(deadlocks), 0)::float8 FROM pg_stat_database",
                        &[],
                    )
                    .await
                {
                    out.push(Sample::new("db_connections", &l, r.get(0)));
                    out.push(Sample::new("db_transactions_total", &l, r.get(1)));
                    out.push(Sample::new("db_deadlocks_total", &l, r.get(2)));
                }
                if let Ok(rows) = c
                    .query(
                        "SELECT application_name, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 FROM pg_stat_replication",
                        &[],
                    )
                    .await
                {
                    for r in rows {
                        let node: String = r.get(0);
                        let nl = [("env", env), ("cluster", name), ("node", node.as_str())];
                        out.push(Sample::new("db_replication_lag_bytes", &nl, r.get(1)));
                        out.push(Sample::new("db_replication_lag_seconds", &nl, r.get(2)));
                    }
                }
            }
            for n in &rec.nodes {
                let bytes = dir_size(&self.node_dir(&rec, &n.name).join("pgdata"));
                let nl = [("env", env), ("cluster", name), ("node", n.name.as_str())];
                out.push(Sample::new("db_disk_used_bytes", &nl, bytes as f64));
            }
            let rt = self.rt(env, name);
            let el = [("env", env), ("cluster", name), ("endpoint", "reader")];
            out.push(Sample::new(
                "db_endpoint_connections_total",
                &el,
                rt.reader
                    .accepted
                    .load(std::sync::atomic::Ordering::Relaxed) as f64,
            ));
            out.push(Sample::new(
                "db_endpoint_failed_connections_total",
                &el,
                rt.reader.failed.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ));
        }
        *self.samples.lock().unwrap_or_else(|p| p.into_inner()) = out;
    }

    /// The latest metrics.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

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
