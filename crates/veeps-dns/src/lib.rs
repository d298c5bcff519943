//! DNS: hosted zones (public, or private to VPCs), their record sets (simple, weighted and
//! failover routing; aliases that follow a load balancer's address) and health checks,
//! answered by an authoritative server on UDP and TCP ([`server`]): on the public listener
//! for public zones, and in every VPC by a resolver at the VPC's base address + 2 (as
//! AmazonProvidedDNS is), listening inside the VPC's router namespace, so that which VPC
//! asks is known from where the query arrives, never from its source address.
//!
//! [`catalog`] answers one query from one snapshot of every zone; [`model`] is what is
//! stored; [`health`] probes; [`resources`] are the resource types.

pub mod catalog;
pub mod health;
pub mod model;
pub mod part;
pub mod resources;
pub mod server;

use catalog::{Catalog, Live, Zone};
use model::{CheckSpec, RecordSpec, ZoneSpec};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
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

/// Counters of the server.
#[derive(Default)]
pub struct Stats {
    /// Packets received.
    pub queries: AtomicU64,
    /// Answered from a zone.
    pub answered: AtomicU64,
    /// Answered NXDOMAIN.
    pub nxdomain: AtomicU64,
    /// Refused (not ours; transfers not allowed).
    pub refused: AtomicU64,
    /// FORMERR, NOTIMP and the like.
    pub errors: AtomicU64,
    /// Packets that did not parse.
    pub malformed: AtomicU64,
    /// Dropped by the per-source limit.
    pub rate_limited: AtomicU64,
    /// Dropped or truncated by response rate limiting.
    pub rrl_dropped: AtomicU64,
    /// TCP connections refused over the cap.
    pub tcp_refused: AtomicU64,
    /// Zone transfers served.
    pub transfers: AtomicU64,
    /// Queries of VPCs relayed upstream.
    pub forwarded: AtomicU64,
    /// Relayed queries no upstream answered.
    pub forward_failed: AtomicU64,
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

/// The public listener's sockets: UDP (one per core) and TCP, on one port.
pub type PublicSockets = (Vec<std::net::UdpSocket>, std::net::TcpListener);

/// Tasks serving one address.
struct Listening {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The DNS service of one server.
pub struct Dns {
    store: Arc<Store>,
    net: Option<Arc<veeps_net::Net>>,
    catalog: RwLock<Arc<Catalog>>,
    aliases: RwLock<Option<Arc<dyn AliasTargets>>>,
    /// ACME DNS-01 answers being published (name to values): kept in memory only, as an
    /// order in progress does not outlive a restart anyway.
    challenges: Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// Health checks and their status.
    pub health: Arc<health::Health>,
    limits: server::Limits,
    buckets: server::Buckets<std::net::IpAddr>,
    answers: server::Buckets<(std::net::IpAddr, String, u16, u8)>,
    /// Counters.
    pub stats: Stats,
    listen: Mutex<Option<PublicSockets>>,
    /// Where VPCs' queries for names outside veeps' zones go.
    upstreams: Vec<SocketAddr>,
    forwards: tokio::sync::Semaphore,
    public: Mutex<Option<Listening>>,
    resolvers: tokio::sync::Mutex<HashMap<String, Listening>>,
    change: tokio::sync::Mutex<()>,
}

impl Dns {
    /// The service; `listen` holds the public listener's sockets (none: no public
    /// listener), bound early so that a busy port is reported at start.
    pub fn new(
        store: Arc<Store>,
        net: Option<Arc<veeps_net::Net>>,
        listen: Option<PublicSockets>,
        limits: server::Limits,
    ) -> Arc<Dns> {
        let dns = Arc::new(Dns {
            health: Arc::new(health::Health::default()),
            store,
            net,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            aliases: RwLock::new(None),
            challenges: Mutex::new(Default::default()),
            limits,
            buckets: server::Buckets::new(),
            answers: server::Buckets::new(),
            stats: Stats::default(),
            listen: Mutex::new(listen),
            upstreams: upstreams(),
            forwards: tokio::sync::Semaphore::new(512),
            public: Mutex::new(None),
            resolvers: tokio::sync::Mutex::new(HashMap::new()),
            change: tokio::sync::Mutex::new(()),
        });
        if let Err(e) = dns.rebuild() {
            tracing::warn!(error = %e, "loading DNS zones");
        }
        dns
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

    fn live(&self) -> &dyn Live {
        self
    }

    /// The current snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The public listener's address, once it listens.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.addr)
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

    /// Builds the snapshot again from the store.
    fn rebuild(&self) -> Result<(), DnsError> {
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
        let mut built = vec![];
        for z in &zones {
            let mine: Vec<RecordSpec> = records
                .iter()
                .filter(|r| r.zone_id == z.id)
                .cloned()
                .collect();
            match Zone::build(z, &mine) {
                Ok(zone) => built.push(zone),
                Err(e) => tracing::warn!(zone = %z.name, error = %e, "a zone cannot be served"),
            }
        }
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Catalog::new(built));
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
        self.health.put(c);
        Ok(())
    }

    /// Deletes a health check.
    pub fn delete_check(&self, id: &str) -> Result<(), DnsError> {
        self.store
            .kv_delete(&format!("{K_CHECK}{id}"))
            .map_err(store_err)?;
        self.health.delete(id);
        Ok(())
    }

    /// A health check's record.
    pub fn check(&self, id: &str) -> Option<CheckSpec> {
        self.store.kv_get(&format!("{K_CHECK}{id}")).ok().flatten()
    }

    /// Binds the public listener's sockets (UDP and TCP on one port).
    /// One UDP socket per core on the same port (`SO_REUSEPORT`: the kernel spreads
    /// clients over them, and each is served by a loop of its own).
    pub fn bind(addr: &str) -> std::io::Result<PublicSockets> {
        let addr: SocketAddr = addr.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
        })?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16);
        let one = |at: SocketAddr| -> std::io::Result<std::net::UdpSocket> {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(at),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            s.set_reuse_port(true)?;
            s.bind(&at.into())?;
            Ok(s.into())
        };
        let first = one(addr)?;
        let bound = first.local_addr()?;
        let mut udp = vec![first];
        for _ in 1..cores {
            udp.push(one(bound)?);
        }
        for u in &udp {
            u.set_nonblocking(true)?;
        }
        let tcp = std::net::TcpListener::bind(bound)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    }

    /// Starts serving on the public listener's sockets.
    pub async fn listen_public(self: &Arc<Self>) -> Result<Option<SocketAddr>, DnsError> {
        let Some((udp, tcp)) = self.listen.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(self.public_addr());
        };
        let mut tasks = vec![];
        let mut bound = None;
        for u in udp {
            let u = tokio::net::UdpSocket::from_std(u)?;
            bound = Some(u.local_addr()?);
            tasks.extend(server::serve_udp(self.clone(), Arc::new(u), None, 1));
        }
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let bound = match bound {
            Some(b) => b,
            None => tcp.local_addr()?,
        };
        tasks.push(server::serve_tcp(self.clone(), tcp, None));
        *self.public.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Listening { addr: bound, tasks });
        tracing::info!(%bound, "DNS listening");
        Ok(Some(bound))
    }

    /// Runs a resolver in every VPC (and stops those of VPCs gone), at the VPC's base
    /// address + 2, port 53, inside its router namespace.
    pub async fn sync_resolvers(self: &Arc<Self>) {
        let Some(net) = &self.net else { return };
        if !net.isolated() {
            return;
        }
        let vpcs = net.vpcs();
        let mut running = self.resolvers.lock().await;
        running.retain(|id, _| vpcs.iter().any(|v| &v.id == id));
        for v in vpcs {
            if running.contains_key(&v.id) || !veeps_net::sys::netns_exists(&v.router_ns) {
                continue;
            }
            match self.start_resolver(&v).await {
                Ok(l) => {
                    tracing::info!(vpc = %v.name, addr = %l.addr, "VPC resolver listening");
                    running.insert(v.id.clone(), l);
                }
                Err(e) => tracing::warn!(vpc = %v.name, error = %e, "VPC resolver"),
            }
        }
    }

    async fn start_resolver(self: &Arc<Self>, v: &veeps_net::Vpc) -> Result<Listening, DnsError> {
        let ip = v.resolver();
        let ns = v.router_ns.clone();
        let cidr = format!("{ip}/32");
        if !veeps_net::sys::ip_ok(Some(&ns), &["-4", "addr", "show", "dev", "lo", "to", &cidr])
            .await
            || veeps_net::sys::ip(Some(&ns), &["-4", "addr", "show", "dev", "lo", "to", &cidr])
                .await
                .map(|o| o.trim().is_empty())
                .unwrap_or(true)
        {
            veeps_net::sys::ip(Some(&ns), &["addr", "add", &cidr, "dev", "lo"])
                .await
                .map_err(|e| DnsError::Invalid(e.to_string()))?;
        }
        let addr = SocketAddr::from((ip, 53));
        let (udp, tcp) = veeps_sys::netns::in_netns(&ns, move || {
            let u = std::net::UdpSocket::bind(addr)?;
            u.set_nonblocking(true)?;
            let t = std::net::TcpListener::bind(addr)?;
            t.set_nonblocking(true)?;
            Ok::<_, std::io::Error>((u, t))
        })??;
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp)?);
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let mut tasks = server::serve_udp(self.clone(), udp, Some(v.id.clone()), 1);
        tasks.push(server::serve_tcp(self.clone(), tcp, Some(v.id.clone())));
        Ok(Listening { addr, tasks })
    }

    /// Keeps the resolvers in step with the VPCs, and probes health checks.
    pub fn run(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        if let Ok(checks) = self.all::<CheckSpec>(K_CHECK) {
            for c in checks {
                self.health.put(c);
            }
        }
        self.health.run();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.sync_resolvers().await;
            }
        })
    }

    /// Stops every listener.
    pub async fn stop(&self) {
        self.public.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.resolvers.lock().await.clear();
        self.health.stop();
    }

    /// Addresses of the VPC resolvers running, by VPC id.
    pub async fn resolver_addrs(&self) -> HashMap<String, Ipv4Addr> {
        self.resolvers
            .lock()
            .await
            .iter()
            .filter_map(|(k, l)| match l.addr.ip() {
                std::net::IpAddr::V4(a) => Some((k.clone(), a)),
                _ => None,
            })
            .collect()
    }
}

impl Live for Dns {
    fn alias(&self, target: &str) -> Vec<std::net::IpAddr> {
        match &*self.aliases.read().unwrap_or_else(|p| p.into_inner()) {
            Some(a) => a.addresses(target),
            None => vec![],
        }
    }
    fn healthy(&self, check_id: &str) -> bool {
        self.health.healthy(check_id)
    }
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
        let dns = Dns::new(store, None, None, server::Limits::default());
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
}
