//! Serving DNS over UDP and TCP: each datagram is answered where it is read (no task per
//! query); TCP connections are capped, framed (RFC 1035 4.2.2) and timed out. Every query
//! passes the per-source rate limit, every answer response rate limiting (RRL: identical
//! answers to one /24 beyond a rate are dropped, every `slip`-th sent truncated so that a
//! real client retries over TCP). Malformed packets get FORMERR when their header is
//! readable, silence otherwise.

use crate::catalog::{Catalog, Live, Outcome, View, Zone};
use crate::health::Health;
use crate::model::{RecordSpec, ZoneSpec};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most TCP connections open at once per listener.
pub const MAX_TCP: usize = 256;
/// How long a TCP connection may sit idle.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most queries on one TCP connection.
const MAX_TCP_QUERIES: usize = 1000;
/// Most sources (or answer buckets) tracked at once by a limiter.
const MAX_TRACKED: usize = 100_000;
/// The largest UDP answer without EDNS.
const PLAIN_UDP: usize = 512;
/// The largest UDP answer with EDNS (the 2020 DNS flag day's size).
const EDNS_UDP: usize = 1232;

/// Rates (per second); 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Queries from one address.
    pub per_source: u32,
    /// Identical answers (name, type, response code) to one /24 (IPv6: /56).
    pub responses: u32,
    /// Every `slip`-th answer over the response limit is sent truncated instead of
    /// dropped (0: all dropped).
    pub slip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_source: 1000,
            responses: 100,
            slip: 2,
        }
    }
}

/// Counters of a server.
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

impl Stats {
    /// The counters by their metric's name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("dns_queries_total", c(&self.queries)),
            ("dns_answered_total", c(&self.answered)),
            ("dns_nxdomain_total", c(&self.nxdomain)),
            ("dns_refused_total", c(&self.refused)),
            ("dns_errors_total", c(&self.errors)),
            ("dns_malformed_total", c(&self.malformed)),
            ("dns_rate_limited_total", c(&self.rate_limited)),
            ("dns_rrl_dropped_total", c(&self.rrl_dropped)),
            ("dns_tcp_refused_total", c(&self.tcp_refused)),
            ("dns_transfers_total", c(&self.transfers)),
            ("dns_forwarded_total", c(&self.forwarded)),
            ("dns_forward_failed_total", c(&self.forward_failed)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// What a server answers from: every zone with its records, what aliases point at now,
/// the health checks that routing follows, and where queries outside every zone go.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answers {
    /// Zones (associated VPCs folded in).
    pub zones: Vec<ZoneSpec>,
    /// Their record sets (ACME challenges included).
    pub records: Vec<RecordSpec>,
    /// Alias targets' addresses, by target id.
    pub aliases: BTreeMap<String, Vec<IpAddr>>,
    /// Rates.
    pub limits: Limits,
    /// Upstream resolvers of VPCs' queries for other names.
    pub upstreams: Vec<SocketAddr>,
    /// Each VPC's range, by id (its resolver answers its addresses' names itself).
    #[serde(default)]
    pub vpcs: BTreeMap<String, ipnet::Ipv4Net>,
}

impl Answers {
    /// The snapshot of every zone that can be served, and why the others cannot.
    pub fn catalog(&self) -> (Catalog, Vec<(String, String)>) {
        let mut built = vec![];
        let mut failed = vec![];
        for z in &self.zones {
            let mine: Vec<RecordSpec> = self
                .records
                .iter()
                .filter(|r| r.zone_id == z.id)
                .cloned()
                .collect();
            match Zone::build(z, &mine) {
                Ok(zone) => built.push(zone),
                Err(e) => failed.push((z.name.clone(), e)),
            }
        }
        (Catalog::new(built).with_vpcs(self.vpcs.clone()), failed)
    }
}

/// Why a cached answer was not sent whole.
enum Silence {
    /// Over the response rate: dropped.
    Rrl,
    /// Over the response rate: sent truncated (in the buffer).
    Truncated,
}

/// Most answers the answer cache keeps (it starts again empty when full).
const CACHE_MAX: usize = 65_536;

/// An answer that depends on the question alone (given one snapshot): no alias, health
/// check or weighted choice went into it.
struct Cached {
    /// The message as sent (its ID is the asker's).
    out: Vec<u8>,
    outcome: Outcome,
    /// What response rate limiting counts it under: name, type, response code.
    rrl: (String, u16, u8),
}

/// One snapshot of the zones, with the answers already computed from it, by where the
/// query came from, the transport and the query's bytes after its ID.
struct Snap {
    catalog: Arc<Catalog>,
    answers: RwLock<HashMap<Vec<u8>, Arc<Cached>>>,
}

impl Snap {
    fn new(catalog: Arc<Catalog>) -> Snap {
        Snap {
            catalog,
            answers: RwLock::new(HashMap::new()),
        }
    }
}

fn cache_key(bytes: &[u8], view: View<'_>, tcp: bool) -> Option<Vec<u8>> {
    let mut k = Vec::new();
    cache_key_into(bytes, view, tcp, &mut k).then_some(k)
}

/// Writes the cache key of `bytes` into `k`; false when such a packet is never cached.
fn cache_key_into(bytes: &[u8], view: View<'_>, tcp: bool, k: &mut Vec<u8>) -> bool {
    if bytes.len() < 12 || bytes.len() > 512 {
        return false;
    }
    let vpc = match view {
        View::Public => "",
        View::Vpc(v) => v,
    };
    k.clear();
    k.reserve(bytes.len() + vpc.len() + 2);
    k.extend_from_slice(vpc.as_bytes());
    k.push(0);
    k.push(u8::from(tcp));
    k.extend_from_slice(&bytes[2..]);
    true
}

/// A serving thread's own view of the answers already computed: a hit costs no lock, no
/// write to memory another thread reads and no allocation. Emptied when the server loads
/// new zones (its generation moves); counters go to the shared ones once a batch.
pub struct Local {
    gen: u64,
    limits: Limits,
    answers: HashMap<Box<[u8]>, Arc<Cached>>,
    key: Vec<u8>,
    /// Queries, answered, NXDOMAIN, refused, errors, rate limited, RRL'd since the last
    /// flush.
    counts: [u64; 7],
}

impl Local {
    /// An empty view (it fills as queries are answered).
    pub fn new() -> Local {
        Local {
            gen: u64::MAX,
            limits: Limits::default(),
            answers: HashMap::new(),
            key: Vec::with_capacity(600),
            counts: [0; 7],
        }
    }

    /// Where an outcome is counted in `counts`.
    fn slot(outcome: Outcome) -> usize {
        match outcome {
            Outcome::Answered => 1,
            Outcome::NxDomain => 2,
            Outcome::Refused => 3,
            Outcome::Error => 4,
        }
    }

    /// Adds what was counted here to the server's counters.
    pub fn flush(&mut self, stats: &Stats) {
        let all = [
            &stats.queries,
            &stats.answered,
            &stats.nxdomain,
            &stats.refused,
            &stats.errors,
            &stats.rate_limited,
            &stats.rrl_dropped,
        ];
        for (n, a) in self.counts.iter_mut().zip(all) {
            if *n != 0 {
                a.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

/// What [`Server::respond_local`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Not answered before: ask [`Server::respond`].
    Miss,
    /// Answered into the buffer.
    Sent,
    /// Dropped by a limit.
    Silent,
}

/// A [`Live`] that notes whether an answer consulted it.
struct Watched<'a> {
    live: &'a dyn Live,
    touched: std::sync::atomic::AtomicBool,
}

impl Live for Watched<'_> {
    fn alias(&self, target: &str) -> Vec<IpAddr> {
        self.touched.store(true, Ordering::Relaxed);
        self.live.alias(target)
    }
    fn healthy(&self, check_id: &str) -> bool {
        self.touched.store(true, Ordering::Relaxed);
        self.live.healthy(check_id)
    }
    fn varies(&self) {
        self.touched.store(true, Ordering::Relaxed);
    }
}

/// An authoritative server's state: what it answers from, its health checks, limiters and
/// counters. Shared by every socket it serves.
pub struct Server {
    snap: RwLock<Arc<Snap>>,
    /// Moves each time the zones are loaded (threads' [`Local`] views are then stale).
    gen: AtomicU64,
    aliases: RwLock<Arc<BTreeMap<String, Vec<IpAddr>>>>,
    /// Health checks and their status.
    pub health: Arc<Health>,
    limits: RwLock<Limits>,
    buckets: Buckets<IpAddr>,
    answers: Buckets<(IpAddr, String, u16, u8)>,
    /// Counters.
    pub stats: Stats,
    upstreams: RwLock<Vec<SocketAddr>>,
    forwards: tokio::sync::Semaphore,
}

impl Server {
    /// A server answering nothing yet.
    pub fn new() -> Arc<Server> {
        Arc::new(Server {
            snap: RwLock::new(Arc::new(Snap::new(Arc::new(Catalog::default())))),
            gen: AtomicU64::new(0),
            aliases: RwLock::new(Arc::new(BTreeMap::new())),
            health: Arc::new(Health::default()),
            limits: RwLock::new(Limits::default()),
            buckets: Buckets::new(),
            answers: Buckets::new(),
            stats: Stats::default(),
            upstreams: RwLock::new(vec![]),
            forwards: tokio::sync::Semaphore::new(512),
        })
    }

    /// Answers from `a` from now on; the zones that cannot be served (left out), and why.
    pub fn load(&self, a: &Answers) -> Vec<(String, String)> {
        let (catalog, failed) = a.catalog();
        *self.aliases.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(a.aliases.clone());
        // A new snapshot starts with no answers computed.
        *self.snap.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Snap::new(Arc::new(catalog)));
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = a.limits;
        *self.upstreams.write().unwrap_or_else(|p| p.into_inner()) = a.upstreams.clone();
        self.gen.fetch_add(1, Ordering::Release);
        failed
    }

    /// The current snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snap().catalog.clone()
    }

    fn snap(&self) -> Arc<Snap> {
        self.snap.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Answered => self.stats.answered.fetch_add(1, Ordering::Relaxed),
            Outcome::NxDomain => self.stats.nxdomain.fetch_add(1, Ordering::Relaxed),
            Outcome::Refused => self.stats.refused.fetch_add(1, Ordering::Relaxed),
            Outcome::Error => self.stats.errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Response rate limiting: one answer to one network, again and again, is what a
    /// reflection attack looks like. Not inside a VPC, whose sources cannot be forged:
    /// there, many instances asking one name is normal. `Some(truncate)` when the answer
    /// is over the limit: dropped, or sent truncated (every `slip`-th).
    fn over_rrl(
        &self,
        limits: Limits,
        src: IpAddr,
        view: View<'_>,
        rrl: &(String, u16, u8),
        now: Instant,
    ) -> Option<bool> {
        if !matches!(view, View::Public) || limits.responses == 0 {
            return None;
        }
        let k = (net_of(src), rrl.0.clone(), rrl.1, rrl.2);
        let n = self.answers.take(&k, limits.responses, now).err()?;
        Some(limits.slip != 0 && n % limits.slip == 0)
    }

    /// A cached answer to `bytes`, with the asker's ID, into `out`, unless response rate
    /// limiting drops it (false) or cuts it (truncated).
    #[allow(clippy::too_many_arguments)]
    fn reply_cached(
        &self,
        limits: Limits,
        hit: &Cached,
        bytes: &[u8],
        src: IpAddr,
        view: View<'_>,
        tcp: bool,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Result<(), Silence> {
        out.clear();
        out.extend_from_slice(&hit.out);
        out[..2].copy_from_slice(&bytes[..2]);
        if !tcp {
            match self.over_rrl(limits, src, view, &hit.rrl, now) {
                Some(false) => return Err(Silence::Rrl),
                Some(true) => {
                    let truncated = Message::from_vec(out)
                        .ok()
                        .and_then(|m| m.truncate().to_vec().ok());
                    let Some(t) = truncated else {
                        return Err(Silence::Rrl);
                    };
                    *out = t;
                    return Err(Silence::Truncated);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Answers a public UDP query from what this thread (or, failing that, any) has
    /// answered before from the current zones, into `out`.
    pub fn respond_local(
        &self,
        local: &mut Local,
        bytes: &[u8],
        src: IpAddr,
        out: &mut Vec<u8>,
    ) -> Fast {
        let gen = self.gen.load(Ordering::Acquire);
        if gen != local.gen {
            local.answers.clear();
            local.limits = self.limits();
            local.gen = gen;
        }
        if !cache_key_into(bytes, View::Public, false, &mut local.key) {
            return Fast::Miss;
        }
        // Borrowed, not cloned: the answer is shared with the other threads, and a
        // reference count moving on every query would bounce its cache line between them.
        if let Some(hit) = local.answers.get(local.key.as_slice()) {
            return self.send_cached(hit, &mut local.counts, local.limits, bytes, src, out);
        }
        let snap = self.snap();
        let shared = snap
            .answers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(local.key.as_slice())
            .cloned();
        let Some(hit) = shared else {
            return Fast::Miss;
        };
        let sent = self.send_cached(&hit, &mut local.counts, local.limits, bytes, src, out);
        if local.answers.len() >= CACHE_MAX {
            local.answers.clear();
        }
        local.answers.insert(local.key.as_slice().into(), hit);
        sent
    }

    /// Sends a cached answer under the asker's ID (within the limits), counting it in a
    /// thread's `counts`.
    fn send_cached(
        &self,
        hit: &Cached,
        counts: &mut [u64; 7],
        limits: Limits,
        bytes: &[u8],
        src: IpAddr,
        out: &mut Vec<u8>,
    ) -> Fast {
        counts[0] += 1;
        let now = if limits.per_source == 0 && limits.responses == 0 {
            None
        } else {
            Some(Instant::now())
        };
        if let Some(now) = now {
            if self.buckets.take(&src, limits.per_source, now).is_err() {
                counts[5] += 1;
                return Fast::Silent;
            }
        }
        counts[Local::slot(hit.outcome)] += 1;
        match now {
            None => {
                out.clear();
                out.extend_from_slice(&hit.out);
                out[..2].copy_from_slice(&bytes[..2]);
                Fast::Sent
            }
            Some(now) => {
                match self.reply_cached(limits, hit, bytes, src, View::Public, false, now, out) {
                    Ok(()) => Fast::Sent,
                    Err(Silence::Truncated) => {
                        counts[6] += 1;
                        Fast::Sent
                    }
                    Err(Silence::Rrl) => {
                        counts[6] += 1;
                        Fast::Silent
                    }
                }
            }
        }
    }

    fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Live for Server {
    fn alias(&self, target: &str) -> Vec<IpAddr> {
        self.aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
            .unwrap_or_default()
    }
    fn healthy(&self, check_id: &str) -> bool {
        self.health.healthy(check_id)
    }
}

/// Token buckets by key, bounded in number.
pub(crate) struct Buckets<K> {
    map: Mutex<HashMap<K, (f64, Instant, u32)>>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    pub(crate) fn new() -> Self {
        Buckets {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `k`'s bucket (`rate` per second, a second's worth of burst);
    /// `Err(n)` with the count of refusals so far when it is empty.
    pub(crate) fn take(&self, k: &K, rate: u32, now: Instant) -> Result<(), u32> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_TRACKED && !m.contains_key(k) {
            // Forget buckets that have refilled: they hold nothing worth keeping.
            m.retain(|_, (tokens, at, _)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < rate
            });
            if m.len() >= MAX_TRACKED {
                m.clear();
            }
        }
        let e = m.entry(k.clone()).or_insert((rate, now, 0));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * rate).min(rate);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            Ok(())
        } else {
            e.2 = e.2.wrapping_add(1);
            Err(e.2)
        }
    }
}

fn net_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            IpAddr::V4([o[0], o[1], o[2], 0].into())
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[7..].fill(0);
            IpAddr::V6(o.into())
        }
    }
}

/// A FORMERR for a packet whose header can be read (and that is a query).
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let op = OpCode::from_u8((bytes[2] >> 3) & 0x0f);
    let mut m = Message::error_msg(id, op, ResponseCode::FormErr);
    m.metadata.recursion_desired = bytes[2] & 1 != 0;
    m.to_vec().ok()
}

impl Server {
    /// The answers to one packet from `src` (none: stay silent). Over UDP at most one,
    /// truncated to what the client can take; over TCP a zone transfer may take several.
    pub fn respond(&self, bytes: &[u8], src: IpAddr, view: View<'_>, tcp: bool) -> Vec<Vec<u8>> {
        match self.respond_or_forward(bytes, src, view, tcp) {
            Reply::Send(v) => v,
            // No upstream from here: what a resolver without one says.
            Reply::Forward => servfail(bytes).into_iter().collect(),
        }
    }

    /// Like [`Dns::respond`], but a VPC's query for a name outside every zone it sees is
    /// handed back to be forwarded upstream (as AmazonProvidedDNS resolves the internet's
    /// names); the public listener never recurses.
    pub fn respond_or_forward(
        &self,
        bytes: &[u8],
        src: IpAddr,
        view: View<'_>,
        tcp: bool,
    ) -> Reply {
        if let (View::Vpc(_), false) = (
            view,
            self.upstreams
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
        ) {
            if let Ok(m) = Message::from_vec(bytes) {
                let outside = m.metadata.message_type == MessageType::Query
                    && m.metadata.op_code == OpCode::Query
                    && m.queries.len() == 1
                    && !matches!(
                        m.queries[0].query_type(),
                        RecordType::AXFR | RecordType::IXFR
                    )
                    && {
                        let catalog = self.catalog();
                        let name = m.queries[0].name();
                        catalog.zone_for(name, view).is_none() && !catalog.local(name, view)
                    };
                if outside {
                    self.stats.queries.fetch_add(1, Ordering::Relaxed);
                    if self
                        .buckets
                        .take(&src, self.limits().per_source, Instant::now())
                        .is_err()
                    {
                        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        return Reply::Send(vec![]);
                    }
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    return Reply::Forward;
                }
            }
        }
        Reply::Send(self.respond_inner(bytes, src, view, tcp))
    }

    /// Relays a query to the upstream resolvers in turn (2 s each); their answer, if any.
    pub async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        let _permit = self.forwards.try_acquire().ok()?;
        if query.len() < 2 {
            return None;
        }
        for up in &self.upstreams() {
            let bind: SocketAddr = if up.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(query, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 65_535];
            let got = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                    // Only the upstream's answer to this query.
                    if from == *up && n >= 2 && buf[..2] == query[..2] {
                        return Some(buf[..n].to_vec());
                    }
                }
            })
            .await;
            if let Ok(Some(answer)) = got {
                return Some(answer);
            }
        }
        self.stats.forward_failed.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn respond_inner(&self, bytes: &[u8], src: IpAddr, view: View<'_>, tcp: bool) -> Vec<Vec<u8>> {
        let now = Instant::now();
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        if self
            .buckets
            .take(&src, self.limits().per_source, now)
            .is_err()
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return vec![];
        }
        let snap = self.snap();
        // The same question asked before, from the same snapshot: its answer again.
        let key = cache_key(bytes, view, tcp);
        let hit = key.as_ref().and_then(|k| {
            snap.answers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(k)
                .cloned()
        });
        if let Some(hit) = hit {
            self.count(hit.outcome);
            let mut out = Vec::with_capacity(hit.out.len());
            return match self.reply_cached(
                self.limits(),
                &hit,
                bytes,
                src,
                view,
                tcp,
                now,
                &mut out,
            ) {
                Ok(()) => vec![out],
                Err(Silence::Truncated) => {
                    self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    vec![out]
                }
                Err(Silence::Rrl) => {
                    self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    vec![]
                }
            };
        }
        let req = match Message::from_vec(bytes) {
            Ok(m) if m.metadata.message_type == MessageType::Query => m,
            Ok(_) => return vec![],
            Err(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return formerr(bytes).into_iter().collect();
            }
        };
        if let Some(q) = req.queries.first() {
            if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
                return self.transfer(&req, src, view, tcp);
            }
        }
        let watched = Watched {
            live: self,
            touched: std::sync::atomic::AtomicBool::new(false),
        };
        let pick = rand::random::<u64>();
        let (resp, outcome) = snap.catalog.answer(&req, view, &watched, pick);
        self.count(outcome);
        let Ok(mut out) = resp.to_vec() else {
            return vec![];
        };
        if !tcp {
            let limit = match &req.edns {
                Some(e) => usize::from(e.max_payload()).clamp(PLAIN_UDP, EDNS_UDP),
                None => PLAIN_UDP,
            };
            if out.len() > limit {
                out = resp.truncate().to_vec().unwrap_or_default();
            }
        }
        let rrl = match req.queries.first() {
            Some(q) => (
                q.name().to_lowercase().to_ascii(),
                u16::from(q.query_type()),
                resp.metadata.response_code.low(),
            ),
            None => (String::new(), 0, resp.metadata.response_code.low()),
        };
        if let (Some(k), false) = (key, watched.touched.load(Ordering::Relaxed)) {
            let mut answers = snap.answers.write().unwrap_or_else(|p| p.into_inner());
            if answers.len() >= CACHE_MAX {
                answers.clear();
            }
            answers.insert(
                k,
                Arc::new(Cached {
                    out: out.clone(),
                    outcome,
                    rrl: rrl.clone(),
                }),
            );
        }
        if !tcp && !req.queries.is_empty() {
            match self.over_rrl(self.limits(), src, view, &rrl, now) {
                Some(false) => {
                    self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    return vec![];
                }
                Some(true) => {
                    self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    return resp.truncate().to_vec().into_iter().collect();
                }
                None => {}
            }
        }
        vec![out]
    }

    /// AXFR: over TCP, to an allowed peer, the whole zone (in messages of at most 500
    /// records); otherwise refused.
    fn transfer(&self, req: &Message, src: IpAddr, view: View<'_>, tcp: bool) -> Vec<Vec<u8>> {
        let catalog = self.catalog();
        let q = &req.queries[0];
        let mut refused = Message::error_msg(req.metadata.id, OpCode::Query, ResponseCode::Refused);
        refused.queries = req.queries.clone();
        let zone = catalog
            .zone_for(q.name(), view)
            .filter(|z| z.name == q.name().to_lowercase());
        let allowed = zone.is_some_and(|z| z.allow_transfer.iter().any(|n| n.contains(&src)));
        let (Some(zone), true, true, RecordType::AXFR) = (zone, allowed, tcp, q.query_type())
        else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return refused.to_vec().into_iter().collect();
        };
        self.stats.transfers.fetch_add(1, Ordering::Relaxed);
        let records = zone.transfer(self);
        records
            .chunks(500)
            .filter_map(|chunk| {
                let mut m = Message::response(req.metadata.id, OpCode::Query);
                m.metadata.authoritative = true;
                m.queries = req.queries.clone();
                m.add_answers(chunk.iter().cloned());
                m.to_vec().ok()
            })
            .collect()
    }
}

/// What to do with a packet.
pub enum Reply {
    /// Send these (none: stay silent).
    Send(Vec<Vec<u8>>),
    /// Relay it to the upstream resolvers.
    Forward,
}

/// SERVFAIL for a query whose upstream did not answer.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::from_vec(query).ok()?;
    m.metadata.message_type = MessageType::Response;
    m.metadata.response_code = ResponseCode::ServFail;
    m.metadata.recursion_available = true;
    m.to_vec().ok()
}

/// Serves UDP on `sock` with `workers` loops sharing it, until the task is aborted.
pub fn serve_udp(
    dns: Arc<Server>,
    sock: Arc<tokio::net::UdpSocket>,
    vpc: Option<String>,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers.max(1))
        .map(|_| {
            let (dns, sock, vpc) = (dns.clone(), sock.clone(), vpc.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                        continue;
                    };
                    let view = match &vpc {
                        Some(v) => View::Vpc(v),
                        None => View::Public,
                    };
                    match dns.respond_or_forward(&buf[..n], peer.ip(), view, false) {
                        Reply::Send(outs) => {
                            for out in outs {
                                let _ = sock.send_to(&out, peer).await;
                            }
                        }
                        Reply::Forward => {
                            let (dns, sock, q) = (dns.clone(), sock.clone(), buf[..n].to_vec());
                            tokio::spawn(async move {
                                let answer = dns.forward(&q).await.or_else(|| servfail(&q));
                                if let Some(a) = answer {
                                    let _ = sock.send_to(&a, peer).await;
                                }
                            });
                        }
                    }
                }
            })
        })
        .collect()
}

/// Threads answering UDP on the public listener, one per socket: a blocking receive, the
/// answer, a blocking send, with no runtime in between (as NSD's processes do). They stop
/// within half a second of this being dropped.
pub struct UdpThreads {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for UdpThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Serves the public view on `socks`, a thread each (the public listener never relays, so
/// nothing here waits on anything but its socket).
pub fn serve_udp_threads(
    dns: Arc<Server>,
    socks: Vec<std::net::UdpSocket>,
) -> std::io::Result<UdpThreads> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (i, sock) in socks.into_iter().enumerate() {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let (dns, stop) = (dns.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || {
                if std::env::var("VEEPS_DNS_PIN").as_deref() == Ok("1") {
                    let _ = veeps_sys::mmsg::pin_to_cpu(i);
                }
                // Queries are small (a DNS message over UDP is at most 64 KiB, a question
                // far less): what does not fit is cut, and answered FORMERR or not at all.
                let mut batch = veeps_sys::mmsg::RecvBatch::new(32, 4096);
                // Answer buffers, reused batch after batch; the first `used` are this
                // batch's.
                let mut answers: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(32);
                let mut local = Local::new();
                let mut out = veeps_sys::mmsg::SendBuf::default();
                let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = veeps_sys::mmsg::recv(&sock, &mut batch) else {
                        continue;
                    };
                    let mut used = 0;
                    for i in 0..n {
                        let peer = batch.got[i].1;
                        if used == answers.len() {
                            answers.push((Vec::with_capacity(512), unspecified));
                        }
                        let slot = &mut answers[used];
                        match dns.respond_local(
                            &mut local,
                            batch.datagram(i),
                            peer.ip(),
                            &mut slot.0,
                        ) {
                            Fast::Sent => {
                                slot.1 = peer;
                                used += 1;
                                continue;
                            }
                            Fast::Silent => continue,
                            Fast::Miss => {}
                        }
                        for out in dns.respond(batch.datagram(i), peer.ip(), View::Public, false) {
                            if used == answers.len() {
                                answers.push((out, peer));
                            } else {
                                answers[used] = (out, peer);
                            }
                            used += 1;
                        }
                    }
                    local.flush(&dns.stats);
                    let _ = veeps_sys::mmsg::send_with(&sock, &answers[..used], &mut out);
                }
            })?;
    }
    Ok(UdpThreads { stop })
}

/// Serves TCP on `listener` until the task is aborted.
pub fn serve_tcp(
    dns: Arc<Server>,
    listener: tokio::net::TcpListener,
    vpc: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                dns.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                continue; // dropped: closed at once
            };
            let (dns, vpc) = (dns.clone(), vpc.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp_conn(&dns, stream, peer, vpc.as_deref()).await;
            });
        }
    })
}

async fn tcp_conn(
    dns: &Server,
    mut s: tokio::net::TcpStream,
    peer: SocketAddr,
    vpc: Option<&str>,
) -> std::io::Result<()> {
    for _ in 0..MAX_TCP_QUERIES {
        let mut len = [0u8; 2];
        let read = async {
            s.read_exact(&mut len).await?;
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut msg).await?;
            Ok::<_, std::io::Error>(msg)
        };
        let msg = match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(m)) => m,
            _ => return Ok(()),
        };
        let view = match vpc {
            Some(v) => View::Vpc(v),
            None => View::Public,
        };
        let outs = match dns.respond_or_forward(&msg, peer.ip(), view, true) {
            Reply::Send(outs) => outs,
            Reply::Forward => dns
                .forward(&msg)
                .await
                .or_else(|| servfail(&msg))
                .into_iter()
                .collect(),
        };
        if outs.is_empty() {
            return Ok(());
        }
        for out in outs {
            let Ok(n) = u16::try_from(out.len()) else {
                return Ok(());
            };
            let write = async {
                s.write_all(&n.to_be_bytes()).await?;
                s.write_all(&out).await
            };
            if tokio::time::timeout(TCP_IDLE, write).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordSpec, ZoneSpec};
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::Name;

    /// A server answering what a control plane compiled from its store.
    async fn dns(limits: Limits) -> (Arc<Server>, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(veeps_state::Store::open(&d.path().join("s.redb")).unwrap());
        let dns = crate::Dns::new(store, None, None, limits, None);
        dns.put_zone(ZoneSpec {
            id: "Z1".into(),
            env: "e".into(),
            name: "example.com".into(),
            vpcs: vec![],
            allow_transfer: vec!["192.0.2.0/24".parse().unwrap()],
            name_servers: vec!["ns1.example.com".into()],
            serial: 0,
        })
        .await
        .unwrap();
        let many: Vec<String> = (1..=60)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        dns.put_record(RecordSpec {
            id: "big".into(),
            zone_id: "Z1".into(),
            name: "big.example.com".into(),
            rtype: "A".into(),
            ttl: 60,
            values: many,
            alias: None,
            set_identifier: None,
            weight: None,
            failover: None,
            health_check_id: None,
        })
        .await
        .unwrap();
        let server = Server::new();
        assert!(server.load(&dns.config().unwrap().answers).is_empty());
        (server, d)
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            q.set_edns(e);
        }
        q.to_vec().unwrap()
    }

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test]
    async fn malformed_packets_get_formerr_or_silence_and_never_a_panic() {
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        // Too short for a header: silence. A readable header: FORMERR with its id.
        assert!(d.respond(&[1, 2, 3], SRC, View::Public, false).is_empty());
        let mut bad = query("www.example.com.", RecordType::A, false);
        bad.truncate(bad.len() - 3);
        let out = d.respond(&bad, SRC, View::Public, false);
        let m = Message::from_vec(&out[0]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, u16::from_be_bytes([bad[0], bad[1]]));
        // A response sent to us is never answered (no loops).
        let mut resp = query("www.example.com.", RecordType::A, false);
        resp[2] |= 0x80;
        assert!(d.respond(&resp, SRC, View::Public, false).is_empty());
        // Fuzz: random packets and valid ones with bytes flipped.
        let valid = query("big.example.com.", RecordType::A, true);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..20_000 {
            let pkt: Vec<u8> = if i % 2 == 0 {
                (0..(next() % 600) as usize).map(|_| next() as u8).collect()
            } else {
                let mut p = valid.clone();
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % p.len();
                    p[at] = next() as u8;
                }
                p
            };
            for out in d.respond(&pkt, SRC, View::Public, i % 3 == 0) {
                if let Ok(m) = Message::from_vec(&out) {
                    assert_eq!(m.metadata.message_type, MessageType::Response);
                }
            }
        }
    }

    #[tokio::test]
    async fn big_answers_truncate_over_udp_and_fit_over_tcp() {
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        let plain = d.respond(
            &query("big.example.com.", RecordType::A, false),
            SRC,
            View::Public,
            false,
        );
        let m = Message::from_vec(&plain[0]).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty());
        assert!(plain[0].len() <= 512);
        let with_edns = d.respond(
            &query("big.example.com.", RecordType::A, true),
            SRC,
            View::Public,
            false,
        );
        let m = Message::from_vec(&with_edns[0]).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        let tcp = d.respond(
            &query("big.example.com.", RecordType::A, false),
            SRC,
            View::Public,
            true,
        );
        assert_eq!(Message::from_vec(&tcp[0]).unwrap().answers.len(), 60);
    }

    #[tokio::test]
    async fn floods_are_limited_per_source_and_per_answer() {
        let (d, _t) = dns(Limits {
            per_source: 50,
            responses: 10,
            slip: 2,
        })
        .await;
        let q = query("www.example.com.", RecordType::A, false);
        // One source: at most a second's burst answered.
        let answered = (0..200)
            .filter(|_| !d.respond(&q, SRC, View::Public, false).is_empty())
            .count();
        assert!(answered <= 50, "{answered}");
        // Many sources in one /24 asking the same: RRL, every second one truncated.
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 10,
            slip: 2,
        })
        .await;
        let mut full = 0;
        let mut truncated = 0;
        for i in 0..100u8 {
            let src = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, i));
            for out in d.respond(&q, src, View::Public, false) {
                if Message::from_vec(&out).unwrap().metadata.truncation {
                    truncated += 1;
                } else {
                    full += 1;
                }
            }
        }
        assert!(full <= 10, "{full}");
        assert!((40..=50).contains(&truncated), "{truncated}");
        // Another network is not held back by that one.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
        assert!(!d.respond(&q, other, View::Public, false).is_empty());
    }

    /// Hostile TCP clients: idle connections beyond the cap are closed at once, and an
    /// idle one is closed after the idle time; a client that asks is answered meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_connections_are_capped_and_idle_ones_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        let task = serve_tcp(d.clone(), l, None);
        let started = Instant::now();
        let mut idle = vec![];
        for _ in 0..MAX_TCP {
            idle.push(tokio::net::TcpStream::connect(at).await.unwrap());
        }
        // One more: closed without a word.
        let mut extra = tokio::net::TcpStream::connect(at).await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut b))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // Idle ones are closed after the idle time, which frees room for a real client.
        let n = tokio::time::timeout(TCP_IDLE * 3, idle[0].read(&mut b))
            .await
            .expect("closed when idle")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= TCP_IDLE);
        drop(idle);
        let q = query("www.example.com.", RecordType::A, false);
        let mut c = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
                c.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
                c.write_all(&q).await.unwrap();
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).await.is_ok() {
                    return (c, u16::from_be_bytes(len));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("a client is answered once the idle ones are gone");
        let mut body = vec![0u8; usize::from(c.1)];
        c.0.read_exact(&mut body).await.unwrap();
        assert_eq!(
            Message::from_vec(&body).unwrap().metadata.id,
            u16::from_be_bytes([q[0], q[1]])
        );
        task.abort();
    }

    fn rec(id: &str, values: &[&str], weight: Option<u32>) -> RecordSpec {
        RecordSpec {
            id: id.into(),
            zone_id: "Z1".into(),
            name: format!("{}.example.com", id.trim_end_matches(char::is_numeric)),
            rtype: "A".into(),
            ttl: 60,
            values: values.iter().map(|v| v.to_string()).collect(),
            alias: None,
            set_identifier: weight.map(|_| id.to_string()),
            weight,
            failover: None,
            health_check_id: None,
        }
    }

    /// example.com with www (one address) and w (two weighted ones).
    fn www_and_weighted() -> Answers {
        Answers {
            zones: vec![ZoneSpec {
                id: "Z1".into(),
                env: "e".into(),
                name: "example.com".into(),
                vpcs: vec![],
                allow_transfer: vec![],
                name_servers: vec!["ns1.example.com".into()],
                serial: 1,
            }],
            records: vec![
                rec("www", &["192.0.2.1"], None),
                rec("w1", &["192.0.2.10"], Some(1)),
                rec("w2", &["192.0.2.20"], Some(1)),
            ],
            ..Default::default()
        }
    }

    /// The addresses an answer gives.
    fn ips(out: &[Vec<u8>]) -> Vec<String> {
        Message::from_vec(&out[0])
            .unwrap()
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect()
    }

    #[tokio::test]
    async fn answers_are_reused_only_while_they_depend_on_the_question_alone() {
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        let mut a = www_and_weighted();
        d.load(&a);
        // Asked again with another ID: the same answer, under the asker's ID.
        let mut q = query("www.example.com.", RecordType::A, true);
        let first = d.respond(&q, SRC, View::Public, false);
        q[..2].copy_from_slice(&[0x12, 0x34]);
        let again = d.respond(&q, SRC, View::Public, false);
        assert_eq!(&again[0][..2], &[0x12, 0x34]);
        assert_eq!(first[0][2..], again[0][2..]);
        assert_eq!(ips(&again), ["192.0.2.1"]);
        let cached = || d.snap().answers.read().unwrap().len();
        assert_eq!(cached(), 1);
        // A weighted choice is made anew each time, never reused.
        let w = query("w.example.com.", RecordType::A, true);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            seen.extend(ips(&d.respond(&w, SRC, View::Public, false)));
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(cached(), 1);
        // A changed record set is a new snapshot: nothing old is answered.
        a.records[0].values = vec!["192.0.2.2".into()];
        d.load(&a);
        assert_eq!(cached(), 0);
        assert_eq!(ips(&d.respond(&q, SRC, View::Public, false)), ["192.0.2.2"]);
        // Over UDP and TCP, and from a VPC, separately.
        d.respond(&q, SRC, View::Public, true);
        d.respond(&q, SRC, View::Vpc("vpc-1"), false);
        assert_eq!(cached(), 3);
    }

    #[tokio::test]
    async fn a_vpc_answers_its_own_names_and_private_reverse_zones_without_going_upstream() {
        let (d, _t) = dns(Limits::default()).await;
        let mut a = www_and_weighted();
        a.upstreams = vec!["127.0.0.1:9".parse().unwrap()];
        a.vpcs = [("vpc-1".to_string(), "10.73.0.0/16".parse().unwrap())].into();
        d.load(&a);
        let vpc = View::Vpc("vpc-1");
        let send = |q: &[u8], view| match d.respond_or_forward(q, SRC, view, false) {
            Reply::Send(v) => Message::from_vec(&v[0]).unwrap(),
            Reply::Forward => panic!("relayed upstream"),
        };
        let m = send(
            &query("9.3.73.10.in-addr.arpa.", RecordType::PTR, true),
            vpc,
        );
        assert_eq!(m.answers[0].data.to_string(), "ip-10-73-3-9.ec2.internal.");
        let m = send(
            &query("ip-10-73-3-9.ec2.internal.", RecordType::A, false),
            vpc,
        );
        assert_eq!(m.answers[0].data.to_string(), "10.73.3.9");
        let m = send(
            &query("1.0.168.192.in-addr.arpa.", RecordType::PTR, false),
            vpc,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // Another VPC knows none of them; the public listener refuses them.
        let m = send(
            &query("9.3.73.10.in-addr.arpa.", RecordType::PTR, false),
            View::Vpc("vpc-2"),
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = send(
            &query("9.3.73.10.in-addr.arpa.", RecordType::PTR, false),
            View::Public,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // The internet's names still go upstream.
        let q = query("example.org.", RecordType::A, false);
        assert!(matches!(
            d.respond_or_forward(&q, SRC, vpc, false),
            Reply::Forward
        ));
        let q = query("8.8.8.8.in-addr.arpa.", RecordType::PTR, false);
        assert!(matches!(
            d.respond_or_forward(&q, SRC, vpc, false),
            Reply::Forward
        ));
    }

    /// What a UDP thread does with one datagram: its own answers first, then the server.
    fn ask(d: &Server, local: &mut Local, q: &[u8], src: IpAddr) -> (Fast, Vec<Vec<u8>>) {
        let mut out = vec![];
        match d.respond_local(local, q, src, &mut out) {
            Fast::Sent => (Fast::Sent, vec![out]),
            Fast::Silent => (Fast::Silent, vec![]),
            Fast::Miss => (Fast::Miss, d.respond(q, src, View::Public, false)),
        }
    }

    #[tokio::test]
    async fn a_threads_own_answers_follow_reloads_limits_and_counters() {
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        let mut a = www_and_weighted();
        d.load(&a);
        let (mut one, mut two) = (Local::new(), Local::new());
        let mut q = query("www.example.com.", RecordType::A, true);
        // First asked: computed by the server; then every thread answers it itself, with
        // the asker's ID and the server's bytes.
        let (how, first) = ask(&d, &mut one, &q, SRC);
        assert_eq!(how, Fast::Miss);
        q[..2].copy_from_slice(&[0xab, 0xcd]);
        for local in [&mut one, &mut two] {
            let (how, again) = ask(&d, local, &q, SRC);
            assert_eq!(how, Fast::Sent);
            assert_eq!(&again[0][..2], &[0xab, 0xcd]);
            assert_eq!(again[0][2..], first[0][2..]);
        }
        // A weighted answer is never kept, by the server or a thread.
        let w = query("w.example.com.", RecordType::A, true);
        for _ in 0..3 {
            assert_eq!(ask(&d, &mut one, &w, SRC).0, Fast::Miss);
        }
        // Counted once a batch, all the same.
        let before = d.stats.snapshot()["dns_queries_total"];
        one.flush(&d.stats);
        two.flush(&d.stats);
        assert_eq!(d.stats.snapshot()["dns_queries_total"], before + 2);
        // New zones: no thread answers from the old ones.
        a.records[0].values = vec!["192.0.2.2".into()];
        d.load(&a);
        let (how, now) = ask(&d, &mut one, &q, SRC);
        assert_eq!(how, Fast::Miss);
        assert_eq!(ips(&now), ["192.0.2.2"]);
        assert_eq!(ips(&ask(&d, &mut two, &q, SRC).1), ["192.0.2.2"]);
        // Limits hold on a thread's own answers too: one source, a second's burst.
        a.limits = Limits {
            per_source: 50,
            responses: 0,
            slip: 0,
        };
        d.load(&a);
        ask(&d, &mut one, &q, SRC);
        let answered = (0..200)
            .filter(|_| !ask(&d, &mut one, &q, SRC).1.is_empty())
            .count();
        assert!(answered <= 50, "{answered}");
        one.flush(&d.stats);
        assert!(d.stats.snapshot()["dns_rate_limited_total"] >= 150);
        // And RRL: one /24 asking the same, dropped or truncated beyond the rate.
        a.limits = Limits {
            per_source: 0,
            responses: 10,
            slip: 2,
        };
        d.load(&a);
        let (mut full, mut truncated) = (0, 0);
        for i in 0..100u8 {
            let src = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, i));
            for out in ask(&d, &mut two, &q, src).1 {
                if Message::from_vec(&out).unwrap().metadata.truncation {
                    truncated += 1;
                } else {
                    full += 1;
                }
            }
        }
        assert!(full <= 11, "{full}");
        assert!((40..=50).contains(&truncated), "{truncated}");
    }

    #[tokio::test]
    async fn zone_transfers_go_over_tcp_to_allowed_peers_only() {
        let (d, _t) = dns(Limits::default()).await;
        let q = query("example.com.", RecordType::AXFR, false);
        let refused = |out: Vec<Vec<u8>>| {
            Message::from_vec(&out[0]).unwrap().metadata.response_code == ResponseCode::Refused
        };
        assert!(refused(d.respond(&q, SRC, View::Public, false)), "over UDP");
        let stranger = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
        assert!(
            refused(d.respond(&q, stranger, View::Public, true)),
            "to a stranger"
        );
        let out = d.respond(&q, SRC, View::Public, true);
        let m = Message::from_vec(&out[0]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.first().unwrap().record_type(), RecordType::SOA);
        assert_eq!(m.answers.last().unwrap().record_type(), RecordType::SOA);
        assert!(m.answers.len() >= 60 + 3);
    }
}
