//! Intrusion detection, after fail2ban's jail model without its known faults: listeners
//! report failed authentications as they happen (nothing re-reads logs), a jail counts them
//! per source address within `find_time`, and `max_retry` of them ban the address for
//! `ban_time` (doubled for each earlier ban when `increment` is on, up to `max_ban_time`).
//! IPv6 addresses are grouped by /64. A ban is an element with a timeout in an nftables set
//! (the kernel drops the address's packets and forgets it on time, however many there
//! are) and an entry the listeners check. Bans are recorded in the store and restored at
//! start; bans and unbans are audit events.

pub mod http;
pub mod part;
pub mod resources;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use veeps_state::{AuditRecord, AuditSink, Store};

const K_POLICY: &str = "ban/policy/";
const K_ACTIVE: &str = "ban/active/";
const K_OFFENDER: &str = "ban/offender/";

/// Failure sources a jail can watch.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "api",
        "API authentication: invalid tokens and failed logins",
    ),
    (
        "s3",
        "S3 signatures: unknown access keys and signatures that do not match",
    ),
    (
        "lb",
        "the environment's load balancers: wrong user names or passwords on listeners and rules with authenticate_basic",
    ),
];

/// Addresses never banned: the host itself (its CLI and its own checks).
pub const ALWAYS_ALLOWED: &[&str] = &["127.0.0.1/32", "::1/128"];

/// One jail of a policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Jail {
    /// What it watches (one of [`SOURCES`]).
    pub source: String,
    /// Failures within `find_time` that ban.
    pub max_retry: u32,
    /// Seconds failures are counted over.
    pub find_time: u64,
    /// Seconds of the first ban.
    pub ban_time: u64,
    /// Each earlier ban of the address doubles the next.
    pub increment: bool,
    /// The longest ban, in seconds.
    pub max_ban_time: u64,
}

/// A `ban_policy`: its jails and the addresses it never bans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BanPolicy {
    /// The environment that declares it.
    pub env: String,
    /// Its name.
    pub name: String,
    /// Its jails.
    pub jails: Vec<Jail>,
    /// Never banned.
    pub allow: Vec<IpNet>,
}

/// A ban as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ban {
    /// The address (or /64).
    pub group: IpNet,
    /// The jail.
    pub jail: String,
    /// Since (unix seconds).
    pub since: i64,
    /// Until (unix seconds).
    pub until: i64,
    /// Bans of this address so far, this one included.
    pub offences: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Offender {
    bans: u32,
    last: i64,
}

/// What the kernel is told, in order, by one worker.
enum Op {
    /// A policy exists: the table must.
    Load,
    Ban(Ban),
    Unban(IpNet, &'static str),
    /// An unban already recorded: the kernel's element alone is left to delete.
    Forget(IpNet),
}

pub use veeps_resource::intrusion::group;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Ban bookkeeping and enforcement.
pub struct Bans {
    store: Arc<Store>,
    table: String,
    audit: Option<Arc<dyn AuditSink>>,
    policies: RwLock<Vec<BanPolicy>>,
    counts: Mutex<HashMap<(String, IpNet), VecDeque<i64>>>,
    active: RwLock<HashMap<IpNet, Ban>>,
    kernel: std::sync::atomic::AtomicBool,
    ops: Mutex<Option<tokio::sync::mpsc::Sender<Op>>>,
    /// Failures reported, bans made.
    pub failures: AtomicU64,
    /// Bans made since start.
    pub banned_total: AtomicU64,
    /// Changes whenever the bans in force do.
    generation: AtomicU64,
    /// Held while a change is written to the store: an unban recorded at once and a ban
    /// still queued behind it are written one after the other, never interleaved.
    recording: Mutex<()>,
}

/// Why a ban operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The store failed.
    #[error("the state store failed: {0}")]
    Store(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

fn st(e: impl std::fmt::Display) -> BanError {
    BanError::Store(e.to_string())
}

impl Bans {
    /// Over the store; `table` names the nftables table (`inet TABLE`) the bans go in.
    pub fn new(store: Arc<Store>, table: &str, audit: Option<Arc<dyn AuditSink>>) -> Bans {
        let b = Bans {
            store,
            table: table.into(),
            audit,
            policies: RwLock::new(vec![]),
            counts: Mutex::new(HashMap::new()),
            active: RwLock::new(HashMap::new()),
            kernel: std::sync::atomic::AtomicBool::new(false),
            ops: Mutex::new(None),
            failures: AtomicU64::new(0),
            banned_total: AtomicU64::new(0),
            generation: AtomicU64::new(1),
            recording: Mutex::new(()),
        };
        b.reload();
        let t = now();
        let active: HashMap<IpNet, Ban> = b
            .store
            .kv_scan::<Ban>(K_ACTIVE)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, b)| b)
            .filter(|x| x.until > t)
            .map(|x| (x.group, x))
            .collect();
        *b.active.write().unwrap_or_else(|p| p.into_inner()) = active;
        b
    }

    /// The nftables table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the kernel enforces bans.
    pub fn kernel(&self) -> bool {
        self.kernel.load(Ordering::Relaxed)
    }

    fn reload(&self) {
        let list: Vec<BanPolicy> = self
            .store
            .kv_scan::<BanPolicy>(K_POLICY)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = list;
    }

    /// Records (or replaces) a policy.
    pub fn put_policy(&self, p: &BanPolicy) -> Result<(), BanError> {
        for j in &p.jails {
            if !SOURCES.iter().any(|(s, _)| *s == j.source) {
                return Err(BanError::Invalid(format!(
                    "jail source \"{}\" is not watched here (known: {})",
                    j.source,
                    SOURCES
                        .iter()
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        self.store
            .kv_put(&format!("{K_POLICY}{}/{}", p.env, p.name), p)
            .map_err(st)?;
        self.reload();
        self.send(Op::Load);
        Ok(())
    }

    /// A policy.
    pub fn policy(&self, env: &str, name: &str) -> Option<BanPolicy> {
        self.store
            .kv_get(&format!("{K_POLICY}{env}/{name}"))
            .ok()
            .flatten()
    }

    /// Removes a policy (its bans stay until they end).
    pub fn delete_policy(&self, env: &str, name: &str) -> Result<(), BanError> {
        self.store
            .kv_delete(&format!("{K_POLICY}{env}/{name}"))
            .map_err(st)?;
        self.reload();
        Ok(())
    }

    fn allowed(&self, ip: IpAddr, p: &BanPolicy) -> bool {
        ALWAYS_ALLOWED
            .iter()
            .filter_map(|a| a.parse::<IpNet>().ok())
            .chain(p.allow.iter().copied())
            .any(|n| n.contains(&ip))
    }

    /// Counts a failure; bans the address when a jail's count is reached.
    pub fn failure(&self, source: &str, ip: IpAddr) {
        self.failure_in(source, None, ip)
    }

    /// The same, counted only by the policies of `env` when given (a balancer's listener
    /// belongs to one environment; the API and S3 to all).
    pub fn failure_in(&self, source: &str, env: Option<&str>, ip: IpAddr) {
        let ip = veeps_resource::intrusion::canonical(ip);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let g = group(ip);
        let t = now();
        let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
        for p in policies.iter() {
            if env.is_some_and(|e| e != p.env) || self.allowed(ip, p) {
                continue;
            }
            for j in p.jails.iter().filter(|j| j.source == source) {
                let jail = format!("{}/{}/{}", p.env, p.name, j.source);
                let reached = {
                    let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
                    if c.len() >= 100_000 {
                        // Forget the quietest first: entries with no failure in an hour.
                        c.retain(|_, q| q.back().is_some_and(|l| t - l < 3600));
                        if c.len() >= 100_000 {
                            c.clear();
                        }
                    }
                    let q = c.entry((jail.clone(), g)).or_default();
                    q.push_back(t);
                    while q.front().is_some_and(|f| t - f >= j.find_time as i64) {
                        q.pop_front();
                    }
                    while q.len() > j.max_retry as usize {
                        q.pop_front();
                    }
                    if q.len() >= j.max_retry as usize {
                        c.remove(&(jail.clone(), g));
                        true
                    } else {
                        false
                    }
                };
                if reached && !self.banned(ip) {
                    self.ban(g, &jail, j, t);
                }
            }
        }
    }

    fn ban(&self, g: IpNet, jail: &str, j: &Jail, t: i64) {
        let prior: Offender = self
            .store
            .kv_get(&format!("{K_OFFENDER}{}", key(g)))
            .ok()
            .flatten()
            .unwrap_or_default();
        let offences = prior.bans + 1;
        let secs = if j.increment {
            let factor = 1u64 << (offences - 1).min(30);
            j.ban_time
                .saturating_mul(factor)
                .min(j.max_ban_time.max(j.ban_time))
        } else {
            j.ban_time
        };
        let b = Ban {
            group: g,
            jail: jail.into(),
            since: t,
            until: t + secs as i64,
            offences,
        };
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(g, b.clone());
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.banned_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(address = %g, jail, seconds = secs, offences, "banned");
        self.send(Op::Ban(b));
    }

    fn send(&self, op: Op) {
        let tx = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) => {
                if tx.try_send(op).is_err() {
                    tracing::error!("the ban queue is full; a ban or unban was not recorded");
                }
            }
            // Not started (offline tools, unit tests): record at once.
            None => self.apply_record(&op),
        }
    }

    /// Whether `ip` is banned now.
    pub fn banned(&self, ip: IpAddr) -> bool {
        let g = group(ip);
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&g)
            .is_some_and(|b| b.until > now())
    }

    /// Bans in force.
    pub fn list(&self) -> Vec<Ban> {
        let t = now();
        let mut v: Vec<Ban> = self
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|b| b.until > t)
            .cloned()
            .collect();
        v.sort_by_key(|b| b.since);
        v
    }

    /// Lifts the ban of `ip`'s group; false if there was none. The store and the audit
    /// log hold the unban when this returns (it blocks); the kernel follows.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let g = group(ip);
        let had = self
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&g)
            .is_some();
        if had {
            self.generation.fetch_add(1, Ordering::Relaxed);
            self.apply_record(&Op::Unban(g, "lifted by an operator"));
            self.send(Op::Forget(g));
        }
        had
    }

    /// Records an operation in the store and the audit log (blocking).
    fn apply_record(&self, op: &Op) {
        let _one_at_a_time = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        let (who, source, action) = match op {
            Op::Load | Op::Forget(_) => return,
            Op::Ban(b) => {
                // Stored only while in force: an operator may have lifted it already.
                let current = self
                    .active
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&b.group)
                    .is_some_and(|x| x.since == b.since && x.until == b.until);
                if current {
                    let _ = self.store.kv_put(&format!("{K_ACTIVE}{}", key(b.group)), b);
                }
                let _ = self.store.kv_put(
                    &format!("{K_OFFENDER}{}", key(b.group)),
                    &Offender {
                        bans: b.offences,
                        last: b.since,
                    },
                );
                (
                    "ban",
                    b.group.to_string(),
                    format!(
                        "banned {} for {} s by jail {} (ban {} of this address)",
                        b.group,
                        b.until - b.since,
                        b.jail,
                        b.offences
                    ),
                )
            }
            Op::Unban(g, why) => {
                let _ = self.store.kv_delete(&format!("{K_ACTIVE}{}", key(*g)));
                ("ban", g.to_string(), format!("unbanned {g}: {why}"))
            }
        };
        if let Some(a) = &self.audit {
            a.note(AuditRecord {
                who: who.into(),
                source,
                action,
                result: 403,
            });
        }
    }

    /// Creates the nftables table (again) with every recorded ban, then applies bans and
    /// unbans as they come and ends expired ones. Without nftables the listeners alone
    /// refuse banned clients.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Op>(4096);
        *self.ops.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let me = self.clone();
        tokio::spawn(async move {
            // The table exists while there is something to enforce: made at start when a
            // policy or a ban is recorded, otherwise with the first ban.
            let needed = !me.list().is_empty()
                || !me
                    .policies
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
            if needed {
                let ok = me.load_table().await;
                me.kernel.store(ok, Ordering::Relaxed);
            }
            let mut tried = needed;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    op = rx.recv() => {
                        let Some(op) = op else { break };
                        if !tried && matches!(op, Op::Ban(_) | Op::Load) {
                            // Loads every ban in force, this one included.
                            tried = true;
                            let ok = me.load_table().await;
                            me.kernel.store(ok, Ordering::Relaxed);
                        } else if me.kernel() {
                            let cmd = match &op {
                                Op::Load => continue,
                                Op::Ban(b) => format!("add element inet {} {} {{ {} timeout {}s }}\n", me.table, set_of(b.group), b.group, (b.until - now()).max(1)),
                                Op::Unban(g, _) | Op::Forget(g) => format!("delete element inet {} {} {{ {g} }}\n", me.table, set_of(*g)),
                            };
                            if let Err(e) = nft(&cmd).await {
                                tracing::warn!(error = %e, "nftables refused a ban change; the listeners still refuse banned clients");
                            }
                        }
                        let m = me.clone();
                        let _ = tokio::task::spawn_blocking(move || m.apply_record(&op)).await;
                    }
                    _ = tick.tick() => me.expire(),
                }
            }
        })
    }

    /// Ends bans whose time is up (the kernel's elements time out by themselves).
    fn expire(&self) {
        let t = now();
        let gone: Vec<IpNet> = {
            let mut a = self.active.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<IpNet> = a
                .values()
                .filter(|b| b.until <= t)
                .map(|b| b.group)
                .collect();
            for g in &gone {
                a.remove(g);
            }
            gone
        };
        if !gone.is_empty() {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        for g in gone {
            tracing::info!(address = %g, "ban ended");
            let op = Op::Unban(g, "its time is up");
            // Recorded off the runtime's threads by the worker's next pass.
            let tx = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match tx {
                Some(tx) => {
                    let _ = tx.try_send(op);
                }
                None => self.apply_record(&op),
            }
        }
    }

    async fn load_table(&self) -> bool {
        let t = now();
        let mut rules = format!(
            "table inet {0} {{}}\ndelete table inet {0}\ntable inet {0} {{\n  set ban4 {{ type ipv4_addr; flags interval, timeout; }}\n  set ban6 {{ type ipv6_addr; flags interval, timeout; }}\n  chain input {{ type filter hook input priority -5; policy accept; ip saddr @ban4 drop; ip6 saddr @ban6 drop; }}\n  chain forward {{ type filter hook forward priority -5; policy accept; ip saddr @ban4 drop; ip6 saddr @ban6 drop; }}\n}}\n",
            self.table
        );
        for b in self.list() {
            rules.push_str(&format!(
                "add element inet {} {} {{ {} timeout {}s }}\n",
                self.table,
                set_of(b.group),
                b.group,
                (b.until - t).max(1)
            ));
        }
        match nft(&rules).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "nftables is not usable: banned clients are refused by the listeners only");
                false
            }
        }
    }

    /// Removes the nftables table (everything stops).
    pub async fn remove_table(&self) {
        let _ = nft(&format!(
            "table inet {0} {{}}\ndelete table inet {0}\n",
            self.table
        ))
        .await;
    }
}

fn key(g: IpNet) -> String {
    g.to_string().replace('/', "_")
}

fn set_of(g: IpNet) -> &'static str {
    match g {
        IpNet::V4(_) => "ban4",
        IpNet::V6(_) => "ban6",
    }
}

async fn nft(rules: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(rules.as_bytes())
            .await
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl veeps_resource::intrusion::Intrusion for Bans {
    fn failed(&self, source: &'static str, ip: IpAddr) {
        self.failure(source, ip)
    }
    fn failed_in(&self, source: &'static str, env: &str, ip: IpAddr) {
        self.failure_in(source, Some(env), ip)
    }
    fn banned(&self, ip: IpAddr) -> bool {
        Bans::banned(self, ip)
    }
    fn banned_groups(&self) -> (u64, Vec<IpNet>) {
        // The generation is read first: a change racing this read is sent again next time.
        let g = self.generation.load(Ordering::Relaxed);
        (g, self.list().into_iter().map(|b| b.group).collect())
    }
    fn ban_generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans() -> (tempfile::TempDir, Bans) {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        (d, Bans::new(store, "test", None))
    }

    fn jail(source: &str, max_retry: u32) -> Jail {
        Jail {
            source: source.into(),
            max_retry,
            find_time: 600,
            ban_time: 60,
            increment: true,
            max_ban_time: 200,
        }
    }

    fn policy(jails: Vec<Jail>, allow: &[&str]) -> BanPolicy {
        BanPolicy {
            env: "e".into(),
            name: "p".into(),
            jails,
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn max_retry_failures_ban_and_the_ban_doubles_for_repeat_offenders() {
        let (_d, b) = bans();
        b.put_policy(&policy(vec![jail("api", 3)], &[])).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        b.failure("api", ip);
        b.failure("api", ip);
        b.failure("s3", ip); // another source: not this jail's
        assert!(!b.banned(ip));
        b.failure("api", ip);
        assert!(b.banned(ip));
        let first = b.list()[0].clone();
        assert_eq!((first.until - first.since, first.offences), (60, 1));
        assert!(b.unban(ip));
        assert!(!b.banned(ip));
        for _ in 0..3 {
            b.failure("api", ip);
        }
        assert_eq!(b.list()[0].until - b.list()[0].since, 120);
        b.unban(ip);
        for _ in 0..3 {
            b.failure("api", ip);
        }
        assert_eq!(
            b.list()[0].until - b.list()[0].since,
            200,
            "capped by max_ban_time"
        );
        // Recorded: a new service over the same store knows the ban.
        let again = Bans::new(b.store.clone(), "test", None);
        assert!(again.banned(ip));
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_allow_lists_are_never_banned() {
        let (_d, b) = bans();
        b.put_policy(&policy(vec![jail("s3", 2)], &["198.51.100.0/24"]))
            .unwrap();
        b.failure("s3", "2001:db8:1:2::1".parse().unwrap());
        b.failure("s3", "2001:db8:1:2:ffff::9".parse().unwrap());
        assert!(b.banned("2001:db8:1:2::abcd".parse().unwrap()));
        assert!(!b.banned("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(b.list()[0].group.to_string(), "2001:db8:1:2::/64");
        for _ in 0..5 {
            b.failure("s3", "198.51.100.4".parse().unwrap());
            b.failure("s3", "127.0.0.1".parse().unwrap());
        }
        assert!(!b.banned("198.51.100.4".parse().unwrap()));
        assert!(!b.banned("127.0.0.1".parse().unwrap()));
        // An IPv4-mapped address is the IPv4 address.
        b.failure("s3", "::ffff:203.0.113.5".parse().unwrap());
        b.failure("s3", "203.0.113.5".parse().unwrap());
        assert!(b.banned("203.0.113.5".parse().unwrap()));
    }

    #[test]
    fn failures_outside_find_time_do_not_count_and_unknown_sources_are_refused() {
        let (_d, b) = bans();
        let mut j = jail("api", 2);
        j.find_time = 0;
        b.put_policy(&policy(vec![j], &[])).unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..5 {
            b.failure("api", ip);
        }
        assert!(!b.banned(ip));
        let e = b
            .put_policy(&policy(vec![jail("telnet", 2)], &[]))
            .unwrap_err();
        assert!(e.to_string().contains("known: api, s3, lb"), "{e}");
    }

    #[test]
    fn a_balancers_failures_count_only_for_its_environments_policies() {
        use veeps_resource::intrusion::Intrusion;
        let (_d, b) = bans();
        b.put_policy(&policy(vec![jail("lb", 2)], &[])).unwrap(); // env "e"
        let ip: IpAddr = "192.0.2.20".parse().unwrap();
        let g0 = b.ban_generation();
        b.failed_in("lb", "other", ip);
        b.failed_in("lb", "other", ip);
        assert!(!b.banned(ip), "another environment's balancer");
        assert_eq!(b.ban_generation(), g0);
        b.failed_in("lb", "e", ip);
        b.failed_in("lb", "e", ip);
        assert!(b.banned(ip));
        let (g1, groups) = b.banned_groups();
        assert!(g1 > g0);
        assert_eq!(groups, vec!["192.0.2.20/32".parse::<IpNet>().unwrap()]);
        b.unban(ip);
        assert!(b.ban_generation() > g1, "an unban changes the list too");
        assert!(b.banned_groups().1.is_empty());
    }

    /// Collects audit records.
    #[derive(Default)]
    struct Notes(std::sync::Mutex<Vec<String>>);
    impl AuditSink for Notes {
        fn note(&self, r: AuditRecord) {
            self.0.lock().unwrap().push(r.action);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_operators_unban_is_stored_and_audited_before_it_returns() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let notes = Arc::new(Notes::default());
        // A table name nftables refuses: the worker runs, the kernel part fails.
        let b = Arc::new(Bans::new(store.clone(), "", Some(notes.clone())));
        b.put_policy(&policy(vec![jail("api", 1)], &[])).unwrap();
        let _worker = b.start();
        let ip: IpAddr = "192.0.2.30".parse().unwrap();
        b.failure("api", ip);
        assert!(b.banned(ip));
        let b2 = b.clone();
        assert!(tokio::task::spawn_blocking(move || b2.unban(ip))
            .await
            .unwrap());
        // No waiting: both hold the unban already.
        assert!(notes
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|a| a == "unbanned 192.0.2.30/32: lifted by an operator"));
        assert!(
            !Bans::new(store, "", None).banned(ip),
            "a restart keeps it lifted"
        );
    }

    #[test]
    fn a_ban_recorded_after_its_unban_is_not_stored_again() {
        let (_d, b) = bans();
        b.put_policy(&policy(vec![jail("api", 1)], &[])).unwrap();
        let ip: IpAddr = "192.0.2.31".parse().unwrap();
        b.failure("api", ip);
        let ban = b.list()[0].clone();
        assert!(b.unban(ip));
        // The worker reaches the ban's record only now.
        b.apply_record(&Op::Ban(ban));
        assert!(!Bans::new(b.store.clone(), "", None).banned(ip));
    }

    #[test]
    fn a_flood_of_sources_keeps_memory_bounded() {
        let (_d, b) = bans();
        b.put_policy(&policy(vec![jail("api", 1000)], &[])).unwrap();
        for i in 0..150_000u32 {
            b.failure(
                "api",
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
            );
        }
        assert!(b.counts.lock().unwrap().len() <= 100_000);
    }
}
