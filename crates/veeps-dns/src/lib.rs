//! DNS: hosted zones (public, or private to VPCs), their record sets (simple, weighted and
//! failover routing; aliases that follow a load balancer's address) and health checks,
//! answered by an authoritative server on UDP and TCP ([`server`]): on the public listener
//! for public zones, and in every VPC by a resolver at the VPC's base address + 2 (as
//! AmazonProvidedDNS is), listening inside the VPC's router namespace, so that which VPC
//! asks is known from where the query arrives, never from its source address.
//!
//! [`Dns`] is the control plane: it stores declarations, checks them, and compiles them
//! into the configuration of the data plane ([`plane`], a process of its own that keeps
//! answering and probing while the control plane is away). [`catalog`] answers one query
//! from one snapshot of every zone; [`model`] is what is stored; [`health`] probes;
//! [`resources`] are the resource types.

pub mod catalog;
pub mod health;
pub mod local;
pub mod model;
pub mod part;
pub mod plane;
pub mod resources;
pub mod server;

use catalog::{Catalog, Zone};
use model::{CheckSpec, RecordSpec, ZoneSpec};
use plane::{PlaneConfig, Request, ResolverSpec};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use veeps_resource::alias::AliasTargets;
use veeps_state::Store;

const K_ZONE: &str = "dns/zone/";
const K_RECORD: &str = "dns/record/";
const K_CHECK: &str = "dns/check/";
const K_ASSOC: &str = "dns/assoc/";

/// A private zone answered in one more VPC (declared apart from the zone, as another
/// environment's VPC is).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Association {
    /// Its id (`ZONE:VPC`).
    pub id: String,
    /// The zone.
    pub zone_id: String,
    /// The VPC.
    pub vpc_id: String,
}

/// Why a DNS change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The declaration cannot be served.
    #[error("{0}")]
    Invalid(String),
    /// Nothing by that id.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("state store: {0}")]
    Store(String),
    /// A socket or namespace failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn store_err(e: impl std::fmt::Display) -> DnsError {
    DnsError::Store(e.to_string())
}

/// The upstream resolvers: `VEEPS_DNS_UPSTREAM` (comma-separated `IP:PORT`s), else the
/// host's `/etc/resolv.conf` nameservers on port 53.
fn upstreams() -> Vec<SocketAddr> {
    if let Ok(v) = std::env::var("VEEPS_DNS_UPSTREAM") {
        return v.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    }
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

/// The DNS service of one server: its control plane.
pub struct Dns {
    store: Arc<Store>,
    net: Option<Arc<veeps_net::Net>>,
    /// The served snapshot, as the control plane sees it (to check changes against).
    catalog: RwLock<Arc<Catalog>>,
    aliases: RwLock<Option<Arc<dyn AliasTargets>>>,
    /// ACME DNS-01 answers being published (name to values): kept in memory only, as an
    /// order in progress does not outlive a restart anyway.
    challenges: Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    limits: server::Limits,
    /// Where VPCs' queries for names outside veeps' zones go.
    upstreams: Vec<SocketAddr>,
    /// The public listener's address (none: no public listener).
    listen: Option<SocketAddr>,
    /// The data plane's directory (none: no data plane, as in tests of the control plane).
    dir: Option<PathBuf>,
    exe: PathBuf,
    /// Where the data plane says its public listener listens.
    bound: Mutex<Option<SocketAddr>>,
    /// VPCs whose resolver address is in place, by id.
    resolvers: Mutex<BTreeMap<String, ResolverSpec>>,
    /// The configuration the data plane last accepted.
    applied: Mutex<Option<PlaneConfig>>,
    /// Whether the data plane has been adopted or started: until then (while recorded
    /// resources are reconciled at start) changes are not pushed, as what is known of the
    /// VPCs is not complete yet.
    adopted: std::sync::atomic::AtomicBool,
    /// One push to the data plane at a time (changes come from applies and the loop).
    pushing: Mutex<()>,
    change: tokio::sync::Mutex<()>,
}

impl Dns {
    /// The service. `listen` is the public listener's address (checked free with
    /// [`Dns::check_listen`]); `dir` is where the data plane keeps its files.
    pub fn new(
        store: Arc<Store>,
        net: Option<Arc<veeps_net::Net>>,
        listen: Option<SocketAddr>,
        limits: server::Limits,
        dir: Option<PathBuf>,
    ) -> Arc<Dns> {
        let dns = Arc::new(Dns {
            store,
            net,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            aliases: RwLock::new(None),
            challenges: Mutex::new(Default::default()),
            limits,
            upstreams: upstreams(),
            listen,
            dir,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            bound: Mutex::new(None),
            resolvers: Mutex::new(BTreeMap::new()),
            applied: Mutex::new(None),
            adopted: std::sync::atomic::AtomicBool::new(false),
            pushing: Mutex::new(()),
            change: tokio::sync::Mutex::new(()),
        });
        if let Err(e) = dns.rebuild() {
            tracing::warn!(error = %e, "loading DNS zones");
        }
        dns
    }

    /// Checks that the public listener can listen at `addr` (UDP and TCP): free, or held by
    /// this data directory's own data plane. The address to listen at (a port 0 chosen).
    pub fn check_listen(addr: &str, dir: &Path) -> std::io::Result<SocketAddr> {
        let addr: SocketAddr = addr.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
        })?;
        let ours = veeps_sys::plane::running(dir).is_some()
            && read_config(dir).is_some_and(|c| c.public == Some(addr));
        if ours {
            return Ok(addr);
        }
        let u = std::net::UdpSocket::bind(addr)?;
        let bound = u.local_addr()?;
        std::net::TcpListener::bind(bound)?;
        Ok(bound)
    }

    /// Plugs in what aliases may point at (the load balancers).
    pub fn set_alias_targets(&self, a: Arc<dyn AliasTargets>) {
        *self.aliases.write().unwrap_or_else(|p| p.into_inner()) = Some(a);
    }

    /// The stable id of an alias target named by its dns_name, id or ARN.
    pub fn resolve_alias(&self, name: &str) -> Option<String> {
        self.aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|a| a.resolve(name))
    }

    /// The current snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The public listener's address, once the data plane listens there.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        *self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn all<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, DnsError> {
        Ok(self
            .store
            .kv_scan::<T>(prefix)
            .map_err(store_err)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Every zone.
    pub fn zones(&self) -> Vec<ZoneSpec> {
        self.all(K_ZONE).unwrap_or_default()
    }

    /// A zone.
    pub fn zone(&self, id: &str) -> Option<ZoneSpec> {
        self.store.kv_get(&format!("{K_ZONE}{id}")).ok().flatten()
    }

    /// Every record set.
    pub fn records(&self) -> Vec<RecordSpec> {
        self.all(K_RECORD).unwrap_or_default()
    }

    /// A record set.
    pub fn record(&self, id: &str) -> Option<RecordSpec> {
        self.store.kv_get(&format!("{K_RECORD}{id}")).ok().flatten()
    }

    /// What the data plane should serve now, from the store.
    pub(crate) fn config(&self) -> Result<PlaneConfig, DnsError> {
        let mut zones: Vec<ZoneSpec> = self.all(K_ZONE)?;
        for a in self.all::<Association>(K_ASSOC)? {
            if let Some(z) = zones.iter_mut().find(|z| z.id == a.zone_id) {
                if !z.vpcs.contains(&a.vpc_id) {
                    z.vpcs.push(a.vpc_id);
                }
            }
        }
        let mut records: Vec<RecordSpec> = self.all(K_RECORD)?;
        records.extend(self.challenge_records(&zones));
        let mut aliases = BTreeMap::new();
        if let Some(targets) = &*self.aliases.read().unwrap_or_else(|p| p.into_inner()) {
            for a in records.iter().filter_map(|r| r.alias.as_ref()) {
                aliases
                    .entry(a.target.clone())
                    .or_insert_with(|| targets.addresses(&a.target));
            }
        }
        Ok(PlaneConfig {
            public: self.listen,
            resolvers: self
                .resolvers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect(),
            checks: self.all(K_CHECK)?,
            answers: server::Answers {
                zones,
                records,
                aliases,
                limits: self.limits,
                upstreams: self.upstreams.clone(),
                vpcs: match &self.net {
                    Some(net) if net.isolated() => {
                        net.vpcs().into_iter().map(|v| (v.id, v.cidr)).collect()
                    }
                    _ => BTreeMap::new(),
                },
            },
        })
    }

    /// Compiles the store into the data plane's configuration and has the plane serve it
    /// (when it differs from what the plane serves). A plane that does not answer gets it
    /// when it is started again.
    fn rebuild(&self) -> Result<(), DnsError> {
        let _one = self.pushing.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = self.config()?;
        let (catalog, failed) = cfg.answers.catalog();
        for (zone, e) in failed {
            tracing::warn!(%zone, error = %e, "a zone cannot be served");
        }
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if !self.adopted.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
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
        match ask_blocking::<plane::Applied>(dir, &Request::Apply) {
            Ok(a) => {
                for (what, e) in &a.failures {
                    tracing::warn!(%what, error = %e, "the DNS data plane cannot serve");
                }
                *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = a.public;
                *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
            }
            Err(e) => {
                tracing::debug!(error = %e, "the DNS data plane does not answer; it gets the change when it starts");
                *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        Ok(())
    }

    /// The DNS-01 answers as TXT record sets of the public zones holding them.
    fn challenge_records(&self, zones: &[ZoneSpec]) -> Vec<RecordSpec> {
        let ch = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        for (name, values) in ch.iter().filter(|(_, v)| !v.is_empty()) {
            let Ok(n) = catalog::parse_name(name) else {
                continue;
            };
            let zone = zones
                .iter()
                .filter(|z| z.vpcs.is_empty())
                .filter(|z| catalog::parse_name(&z.name).is_ok_and(|a| a.zone_of(&n)))
                .max_by_key(|z| z.name.len());
            if let Some(z) = zone {
                out.push(RecordSpec {
                    id: format!("acme:{name}"),
                    zone_id: z.id.clone(),
                    name: name.clone(),
                    rtype: "TXT".into(),
                    ttl: 5,
                    values: values.iter().cloned().collect(),
                    alias: None,
                    set_identifier: None,
                    weight: None,
                    failover: None,
                    health_check_id: None,
                });
            }
        }
        out
    }

    /// A serial after `prev`: the time in seconds, or one more when that is not later.
    fn next_serial(prev: u32) -> u32 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        now.max(prev.wrapping_add(1))
    }

    /// Creates or changes a zone (its serial moves on).
    pub async fn put_zone(&self, mut z: ZoneSpec) -> Result<ZoneSpec, DnsError> {
        let _g = self.change.lock().await;
        catalog::parse_name(&z.name).map_err(DnsError::Invalid)?;
        for n in &z.name_servers {
            catalog::parse_name(n).map_err(DnsError::Invalid)?;
        }
        let prev = self.zone(&z.id);
        if prev.as_ref().is_some_and(|p| {
            ZoneSpec {
                serial: z.serial,
                ..p.clone()
            } == z
        }) {
            return Ok(prev.unwrap_or(z));
        }
        z.serial = Self::next_serial(prev.map(|p| p.serial).unwrap_or(0));
        self.store
            .kv_put(&format!("{K_ZONE}{}", z.id), &z)
            .map_err(store_err)?;
        self.rebuild()?;
        Ok(z)
    }

    /// Answers a private zone in one more VPC.
    pub async fn put_association(&self, a: Association) -> Result<(), DnsError> {
        let _g = self.change.lock().await;
        let z = self.zone(&a.zone_id).ok_or_else(|| {
            DnsError::NotFound(format!(
                "zone {} does not exist; use dns_zone.NAME.zone_id",
                a.zone_id
            ))
        })?;
        if z.vpcs.is_empty() {
            return Err(DnsError::Invalid(format!(
                "zone {} ({}) is public: only a private zone (one with a vpc block) is associated with VPCs",
                z.id, z.name
            )));
        }
        self.store
            .kv_put(&format!("{K_ASSOC}{}", a.id), &a)
            .map_err(store_err)?;
        self.rebuild()
    }

    /// An association.
    pub fn association(&self, id: &str) -> Option<Association> {
        self.store.kv_get(&format!("{K_ASSOC}{id}")).ok().flatten()
    }

    /// Stops answering a private zone in a VPC it was associated with.
    pub async fn delete_association(&self, id: &str) -> Result<(), DnsError> {
        let _g = self.change.lock().await;
        self.store
            .kv_delete(&format!("{K_ASSOC}{id}"))
            .map_err(store_err)?;
        self.rebuild()
    }

    /// Deletes a zone; refused while it holds record sets (Route 53's HostedZoneNotEmpty).
    pub async fn delete_zone(&self, id: &str) -> Result<(), DnsError> {
        let _g = self.change.lock().await;
        let left = self
            .records()
            .into_iter()
            .filter(|r| r.zone_id == id)
            .count();
        if left > 0 {
            return Err(DnsError::Invalid(format!(
                "zone {id} still holds {left} record sets; delete them first"
            )));
        }
        self.store
            .kv_delete(&format!("{K_ZONE}{id}"))
            .map_err(store_err)?;
        self.rebuild()
    }

    fn bump(&self, zone_id: &str) -> Result<(), DnsError> {
        if let Some(mut z) = self.zone(zone_id) {
            z.serial = Self::next_serial(z.serial);
            self.store
                .kv_put(&format!("{K_ZONE}{}", z.id), &z)
                .map_err(store_err)?;
        }
        Ok(())
    }

    /// Creates or changes a record set, after checking it as Route 53 does.
    pub async fn put_record(&self, r: RecordSpec) -> Result<(), DnsError> {
        let _g = self.change.lock().await;
        let zone = self.zone(&r.zone_id).ok_or_else(|| {
            DnsError::NotFound(format!(
                "zone {} does not exist; use dns_zone.NAME.zone_id",
                r.zone_id
            ))
        })?;
        self.check_record(&zone, &r)?;
        if self.record(&r.id).as_ref() == Some(&r) {
            return Ok(());
        }
        // Test it as served: a zone that would not build is refused before it is stored.
        let mut others: Vec<RecordSpec> = self
            .records()
            .into_iter()
            .filter(|o| o.zone_id == r.zone_id && o.id != r.id)
            .collect();
        others.push(r.clone());
        Zone::build(&zone, &others).map_err(DnsError::Invalid)?;
        self.store
            .kv_put(&format!("{K_RECORD}{}", r.id), &r)
            .map_err(store_err)?;
        self.bump(&r.zone_id)?;
        self.rebuild()
    }

    fn check_record(&self, zone: &ZoneSpec, r: &RecordSpec) -> Result<(), DnsError> {
        let apex = catalog::parse_name(&zone.name).map_err(DnsError::Invalid)?;
        let owner = catalog::parse_name(&r.name).map_err(DnsError::Invalid)?;
        if !apex.zone_of(&owner) {
            return Err(DnsError::Invalid(format!(
                "{} is not inside zone {} (give a name ending in .{})",
                r.name, zone.name, zone.name
            )));
        }
        if owner == apex && matches!(r.rtype.as_str(), "CNAME" | "NS") {
            return Err(DnsError::Invalid(format!(
                "a {} record cannot be at the zone's apex {} (use an alias for the apex)",
                r.rtype, zone.name
            )));
        }
        let key = owner.to_ascii();
        for o in self
            .records()
            .into_iter()
            .filter(|o| o.zone_id == r.zone_id && o.id != r.id)
        {
            let same = catalog::parse_name(&o.name)
                .map(|n| n.to_ascii() == key)
                .unwrap_or(false);
            if !same {
                continue;
            }
            if (o.rtype == "CNAME") != (r.rtype == "CNAME") {
                return Err(DnsError::Invalid(format!(
                    "a CNAME at {} conflicts with its {} record set (a CNAME must be alone at its name)",
                    r.name,
                    if o.rtype == "CNAME" { &r.rtype } else { &o.rtype }
                )));
            }
            if o.rtype == r.rtype && (o.set_identifier.is_none() || r.set_identifier.is_none()) {
                return Err(DnsError::Invalid(format!(
                    "{} already has a {} record set; give each of them a set_identifier and a routing policy",
                    r.name, r.rtype
                )));
            }
            if o.rtype == r.rtype && o.set_identifier == r.set_identifier {
                return Err(DnsError::Invalid(format!(
                    "{} {} already has set_identifier {:?}",
                    r.name,
                    r.rtype,
                    r.set_identifier.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    /// Deletes a record set.
    pub async fn delete_record(&self, id: &str) -> Result<(), DnsError> {
        let _g = self.change.lock().await;
        let Some(r) = self.record(id) else {
            return Ok(());
        };
        self.store
            .kv_delete(&format!("{K_RECORD}{id}"))
            .map_err(store_err)?;
        self.bump(&r.zone_id)?;
        self.rebuild()
    }

    /// Creates or changes a health check.
    pub fn put_check(&self, c: CheckSpec) -> Result<(), DnsError> {
        self.store
            .kv_put(&format!("{K_CHECK}{}", c.id), &c)
            .map_err(store_err)?;
        self.rebuild()
    }

    /// Deletes a health check.
    pub fn delete_check(&self, id: &str) -> Result<(), DnsError> {
        self.store
            .kv_delete(&format!("{K_CHECK}{id}"))
            .map_err(store_err)?;
        self.rebuild()
    }

    /// A health check's record.
    pub fn check(&self, id: &str) -> Option<CheckSpec> {
        self.store.kv_get(&format!("{K_CHECK}{id}")).ok().flatten()
    }

    /// Puts each VPC's resolver address in place (on its router namespace's loopback) and
    /// forgets VPCs that are gone.
    async fn sync_resolvers(&self) {
        let Some(net) = &self.net else { return };
        if !net.isolated() {
            return;
        }
        let vpcs = net.vpcs();
        self.resolvers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| vpcs.iter().any(|v| &v.id == id));
        for v in vpcs {
            use std::os::unix::fs::MetadataExt;
            let Ok(ns_id) =
                std::fs::metadata(Path::new("/run/netns").join(&v.router_ns)).map(|m| m.ino())
            else {
                continue;
            };
            let known = self
                .resolvers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&v.id)
                .is_some_and(|r| r.ns_id == ns_id && r.netns == v.router_ns);
            if known {
                continue;
            }
            let ip = v.resolver();
            let cidr = format!("{ip}/32");
            let ns = v.router_ns.as_str();
            let present =
                veeps_net::sys::ip(Some(ns), &["-4", "addr", "show", "dev", "lo", "to", &cidr])
                    .await
                    .is_ok_and(|o| !o.trim().is_empty());
            if !present {
                if let Err(e) =
                    veeps_net::sys::ip(Some(ns), &["addr", "add", &cidr, "dev", "lo"]).await
                {
                    tracing::warn!(vpc = %v.name, error = %e, "VPC resolver address");
                    continue;
                }
            }
            self.resolvers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    v.id.clone(),
                    ResolverSpec {
                        vpc_id: v.id.clone(),
                        netns: v.router_ns.clone(),
                        addr: ip,
                        ns_id,
                    },
                );
        }
    }

    /// Makes sure the data plane runs and serves the store: the one running is adopted
    /// (replaced in place, beside it, when it runs another build of veeps), else one is
    /// started.
    pub async fn ensure_plane(&self) -> Result<(), DnsError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        self.sync_resolvers().await;
        let cfg = self.config()?;
        write_config(dir, &cfg)?;
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        veeps_sys::plane::adopt_or_start(&self.exe, "dns-plane", dir, "the DNS data plane")
            .await
            .map_err(plane_err)?;
        let a: plane::Applied = ask(dir, &Request::Apply).await?;
        for (what, e) in &a.failures {
            tracing::warn!(%what, error = %e, "the DNS data plane cannot serve");
        }
        *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = a.public;
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
        self.adopted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Keeps the data plane running and in step: VPCs' resolvers, aliases whose targets
    /// moved, and a plane that died (started again).
    pub fn run(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                let Some(dir) = me.dir.clone() else { break };
                let adopted = me.adopted.load(std::sync::atomic::Ordering::SeqCst);
                if !adopted || veeps_sys::plane::running(&dir).is_none() {
                    if adopted {
                        tracing::warn!("the DNS data plane is gone; starting it again");
                    }
                    if let Err(e) = me.ensure_plane().await {
                        tracing::error!(error = %e, "DNS data plane");
                    }
                    continue;
                }
                me.sync_resolvers().await;
                let _g = me.change.lock().await;
                if let Err(e) = me.rebuild() {
                    tracing::warn!(error = %e, "DNS");
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

    /// Addresses of the VPC resolvers, by VPC id.
    pub fn resolver_addrs(&self) -> HashMap<String, Ipv4Addr> {
        self.resolvers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, r)| (k.clone(), r.addr))
            .collect()
    }

    /// The data plane's counters, by metric name (empty when it does not answer).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        match &self.dir {
            Some(dir) => ask_blocking(dir, &Request::Stats).unwrap_or_default(),
            None => BTreeMap::new(),
        }
    }

    /// Every health check with its status, as the data plane probes them.
    pub fn health(&self) -> Vec<(CheckSpec, health::Status)> {
        let Some(dir) = &self.dir else {
            return vec![];
        };
        let statuses: Vec<(String, health::Status)> =
            ask_blocking(dir, &Request::Health).unwrap_or_default();
        let checks: HashMap<String, CheckSpec> = self
            .all::<CheckSpec>(K_CHECK)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        statuses
            .into_iter()
            .filter_map(|(id, st)| Some((checks.get(&id)?.clone(), st)))
            .collect()
    }
}

fn read_config(dir: &Path) -> Option<PlaneConfig> {
    serde_json::from_slice(&std::fs::read(dir.join(plane::CONFIG)).ok()?).ok()
}

fn write_config(dir: &Path, cfg: &PlaneConfig) -> Result<(), DnsError> {
    let body = serde_json::to_vec(cfg).map_err(|e| DnsError::Invalid(e.to_string()))?;
    Ok(veeps_sys::plane::write_private(
        &dir.join(plane::CONFIG),
        &body,
    )?)
}

fn plane_err(e: impl std::fmt::Display) -> DnsError {
    DnsError::Io(std::io::Error::other(format!("the DNS data plane: {e}")))
}

async fn ask<T: serde::de::DeserializeOwned>(dir: &Path, req: &Request) -> Result<T, DnsError> {
    veeps_sys::plane::ask_json(dir, req, Duration::from_secs(10))
        .await
        .map_err(plane_err)
}

fn ask_blocking<T: serde::de::DeserializeOwned>(dir: &Path, req: &Request) -> Result<T, DnsError> {
    veeps_sys::plane::ask_json_blocking(dir, req, Duration::from_secs(10)).map_err(plane_err)
}

/// ACME DNS-01 answers, from veeps' own public zones.
impl veeps_resource::acme::Dns01 for Dns {
    fn publish(&self, name: &str, value: &str) -> Result<(), String> {
        let n = catalog::parse_name(name)?;
        if self.catalog().zone_for(&n, catalog::View::Public).is_none() {
            return Err(format!(
                "no public dns_zone of veeps holds {name}: declare one for the certificate's domain (and delegate it to veeps), or validate another way"
            ));
        }
        self.challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(n.to_ascii().trim_end_matches('.').to_string())
            .or_default()
            .insert(value.to_string());
        self.rebuild().map_err(|e| e.to_string())
    }

    fn withdraw(&self, name: &str, value: &str) {
        let Ok(n) = catalog::parse_name(name) else {
            return;
        };
        let key = n.to_ascii().trim_end_matches('.').to_string();
        {
            let mut ch = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = ch.get_mut(&key) {
                v.remove(value);
                if v.is_empty() {
                    ch.remove(&key);
                }
            }
        }
        let _ = self.rebuild();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    #[tokio::test]
    async fn associations_and_challenges_join_the_served_zones() {
        use veeps_resource::acme::Dns01;
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let dns = Dns::new(store, None, None, server::Limits::default(), None);
        let zone = |id: &str, name: &str, vpcs: Vec<String>| ZoneSpec {
            id: id.into(),
            env: "mgmt".into(),
            name: name.into(),
            vpcs,
            allow_transfer: vec![],
            name_servers: vec![format!("ns1.{name}")],
            serial: 0,
        };
        dns.put_zone(zone("Z1", "internal.test", vec!["vpc-a".into()]))
            .await
            .unwrap();
        dns.put_zone(zone("Z2", "public.test", vec![]))
            .await
            .unwrap();
        let n = Name::from_ascii("db.internal.test.").unwrap();
        let seen = |vpc: &str| {
            dns.catalog()
                .zone_for(&n, catalog::View::Vpc(vpc))
                .is_some()
        };
        assert!(seen("vpc-a") && !seen("vpc-b"));
        let a = Association {
            id: "Z1:vpc-b".into(),
            zone_id: "Z1".into(),
            vpc_id: "vpc-b".into(),
        };
        dns.put_association(a.clone()).await.unwrap();
        assert!(seen("vpc-b"));
        // A public zone is not associated with VPCs.
        let bad = Association {
            id: "Z2:vpc-b".into(),
            zone_id: "Z2".into(),
            vpc_id: "vpc-b".into(),
        };
        assert!(dns.put_association(bad).await.is_err());
        dns.delete_association(&a.id).await.unwrap();
        assert!(!seen("vpc-b"));
        // DNS-01 answers: only in veeps' public zones, gone once withdrawn.
        assert!(dns.publish("_acme-challenge.elsewhere.test", "x").is_err());
        assert!(dns
            .publish("_acme-challenge.db.internal.test", "x")
            .is_err());
        dns.publish("_acme-challenge.www.public.test", "token-1")
            .unwrap();
        let txt = |dns: &Dns| {
            let mut q = hickory_proto::op::Message::query();
            q.add_query(hickory_proto::op::Query::query(
                Name::from_ascii("_acme-challenge.www.public.test.").unwrap(),
                hickory_proto::rr::RecordType::TXT,
            ));
            dns.catalog()
                .answer(&q, catalog::View::Public, &catalog::NoLive, 0)
                .0
                .answers
                .len()
        };
        assert_eq!(txt(&dns), 1);
        dns.withdraw("_acme-challenge.www.public.test", "token-1");
        assert_eq!(txt(&dns), 0);
    }

    /// Record sets applied at once (as an apply's parallel walk does) all land, the serial
    /// only moves forward, and one refused in the middle leaves the others and the served
    /// zone as they were.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_all_land_and_a_refused_one_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let dns = Dns::new(store, None, None, server::Limits::default(), None);
        let z = dns
            .put_zone(ZoneSpec {
                id: "Z1".into(),
                env: "e".into(),
                name: "example.test".into(),
                vpcs: vec![],
                allow_transfer: vec![],
                name_servers: vec!["ns1.example.test".into()],
                serial: 0,
            })
            .await
            .unwrap();
        let rec = |i: usize, rtype: &str, value: &str| RecordSpec {
            id: format!("r{i}-{rtype}"),
            zone_id: "Z1".into(),
            name: format!("h{i}.example.test"),
            rtype: rtype.into(),
            ttl: 60,
            values: vec![value.into()],
            alias: None,
            set_identifier: None,
            weight: None,
            failover: None,
            health_check_id: None,
        };
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (dns, r) = (dns.clone(), rec(i, "A", &format!("192.0.2.{i}")));
                tokio::spawn(async move { dns.put_record(r).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(dns.records().len(), 32);
        let after = dns.zone("Z1").unwrap().serial;
        assert!(after > z.serial);
        let served = |dns: &Dns| dns.config().unwrap().answers.records.len();
        assert_eq!(served(&dns), 32);
        // A CNAME beside h3's A record is refused: nothing stored, nothing served changes.
        let bad = dns.put_record(rec(3, "CNAME", "elsewhere.test")).await;
        assert!(bad.is_err());
        assert_eq!(dns.records().len(), 32);
        assert_eq!(dns.zone("Z1").unwrap().serial, after);
        assert_eq!(served(&dns), 32);
    }
}
