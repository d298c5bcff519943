//! HTTP Basic authentication in front of a listener's or rule's action (RFC 7617), and
//! what a balancer's data plane keeps for intrusion detection: the failures it saw, for the
//! control plane to count, and the addresses banned, refused at accept.
//!
//! Passwords are kept as argon2id hashes. Verifying one takes tens of milliseconds of CPU,
//! so a guard remembers the `Authorization` values it has judged (by keyed digest, never the
//! value itself), and at most [`VERIFYING`] verifications run at once for the whole
//! process: a flood of guesses queues, it does not take the workers.

use arc_swap::ArcSwap;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hyper::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::model::BasicAuth;

/// Password verifications running at once, in the whole process.
pub const VERIFYING: usize = 2;
/// How long a request waits for a verification slot before it is answered 503.
const VERIFY_WAIT: Duration = Duration::from_secs(5);
/// Judged `Authorization` values a guard remembers (then it starts over).
const REMEMBERED: usize = 4096;
/// The most memory (KiB), passes and lanes a declared hash may ask for.
const MAX_PARAMS: (u32, u32, u32) = (256 * 1024, 16, 8);

static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(VERIFYING);

/// The hash a password is kept as: argon2id with default parameters, salted from `seed`
/// and the user (so that applying the same configuration again gives the same hash). A
/// value that is already an argon2 PHC string is kept as it is.
pub fn hash_password(seed: &str, user: &str, password: &str) -> String {
    if password.starts_with("$argon2") {
        return password.to_string();
    }
    let d = Sha256::new()
        .chain_update(b"veeps-lb-basic-auth\0")
        .chain_update(seed.as_bytes())
        .chain_update(b"\0")
        .chain_update(user.as_bytes())
        .finalize();
    let salt = SaltString::encode_b64(&d[..16]).expect("16 bytes encode");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .expect("argon2 hashes any password with default parameters")
}

/// Why a declared password hash is refused, if it is.
pub fn check_hash(value: &str) -> Option<String> {
    if !value.starts_with("$argon2") {
        return None;
    }
    let h = match PasswordHash::new(value) {
        Ok(h) => h,
        Err(e) => return Some(format!("is not a valid argon2 PHC string ({e})")),
    };
    if h.salt.is_none() || h.hash.is_none() {
        return Some("is not a whole argon2 PHC string (no salt or no hash)".into());
    }
    let get = |k: &str| h.params.get_decimal(k).unwrap_or(0);
    let (m, t, p) = (get("m"), get("t"), get("p"));
    if m > MAX_PARAMS.0 || t > MAX_PARAMS.1 || p > MAX_PARAMS.2 {
        return Some(format!(
            "asks for m={m} KiB, t={t}, p={p}; at most m={}, t={}, p={} (every wrong guess costs that much)",
            MAX_PARAMS.0, MAX_PARAMS.1, MAX_PARAMS.2
        ));
    }
    None
}

/// What a guard says of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Valid credentials of this user.
    Allowed(Arc<str>),
    /// No Basic credentials: ask for them (not a failure).
    Missing,
    /// Wrong user name or password (a failure, reported).
    Denied,
    /// No verification slot in time.
    Busy,
}

/// One action's Basic authentication, ready to check requests.
pub struct Guard {
    /// As declared.
    pub spec: BasicAuth,
    /// `WWW-Authenticate` of a 401.
    pub challenge: HeaderValue,
    users: HashMap<String, String>,
    key: [u8; 16],
    judged: RwLock<HashMap<[u8; 32], Option<Arc<str>>>>,
}

fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let pw: [u8; 16] = rand::random();
        hash_password("dummy", "dummy", &hex::encode(pw))
    })
}

impl Guard {
    /// A guard for `spec`.
    pub fn new(spec: &BasicAuth) -> Guard {
        let realm: String = spec
            .realm
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        Guard {
            spec: spec.clone(),
            challenge: HeaderValue::from_str(&format!(
                "Basic realm=\"{realm}\", charset=\"UTF-8\""
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"veeps\"")),
            users: spec.users.iter().cloned().collect(),
            key: rand::random(),
            judged: RwLock::new(HashMap::new()),
        }
    }

    /// Judges a request's `Authorization`.
    pub async fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
            return Verdict::Missing;
        };
        let raw = value.as_bytes();
        let is_basic = raw.len() > 6 && raw[..6].eq_ignore_ascii_case(b"basic ");
        if !is_basic {
            return Verdict::Missing;
        }
        let digest: [u8; 32] = Sha256::new()
            .chain_update(self.key)
            .chain_update(raw)
            .finalize()
            .into();
        if let Some(known) = self
            .judged
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return match known {
                Some(u) => Verdict::Allowed(u.clone()),
                None => Verdict::Denied,
            };
        }
        let verdict = match parse(&raw[6..]) {
            None => None,
            Some((user, password)) => {
                let phc = self
                    .users
                    .get(&user)
                    .cloned()
                    .unwrap_or_else(|| dummy_hash().to_string());
                let known = self.users.contains_key(&user);
                let Ok(Ok(_slot)) = tokio::time::timeout(VERIFY_WAIT, SLOTS.acquire()).await else {
                    return Verdict::Busy;
                };
                // An unknown user costs a verification too: the time does not tell users apart.
                let ok = tokio::task::spawn_blocking(move || verify(&password, &phc))
                    .await
                    .unwrap_or(false);
                (ok && known).then(|| Arc::<str>::from(user))
            }
        };
        let mut j = self.judged.write().unwrap_or_else(|p| p.into_inner());
        if j.len() >= REMEMBERED {
            j.clear();
        }
        j.insert(digest, verdict.clone());
        match verdict {
            Some(u) => Verdict::Allowed(u),
            None => Verdict::Denied,
        }
    }
}

/// `user:password` from a Basic credential's base64 (RFC 7617; the user has no colon).
fn parse(b64: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    let text = std::str::from_utf8(b64).ok()?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn verify(password: &str, phc: &str) -> bool {
    if check_hash(phc).is_some() {
        return false;
    }
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Addresses that failed to authenticate since the control plane last asked, at most this
/// many (beyond, failures are counted as dropped).
const FAILING_ADDRESSES: usize = 10_000;

/// A plane's failures seen and bans to enforce.
pub struct Gate {
    failures: Mutex<HashMap<IpAddr, u32>>,
    /// Failures not kept (too many addresses at once).
    pub dropped: AtomicU64,
    banned: ArcSwap<HashSet<IpNet>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            failures: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            banned: ArcSwap::from_pointee(HashSet::new()),
        }
    }
}

impl Gate {
    /// A client at `ip` gave wrong credentials.
    pub fn failed(&self, ip: IpAddr) {
        let ip = veeps_resource::intrusion::canonical(ip);
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= FAILING_ADDRESSES && !f.contains_key(&ip) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *f.entry(ip).or_default() += 1;
    }

    /// The failures since the last call, by address.
    pub fn take_failures(&self) -> Vec<(IpAddr, u32)> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// The address groups banned from now on (replacing the previous list).
    pub fn set_banned(&self, groups: Vec<IpNet>) {
        self.banned.store(Arc::new(groups.into_iter().collect()));
    }

    /// Whether connections from `ip` are refused.
    pub fn banned(&self, ip: IpAddr) -> bool {
        let banned = self.banned.load();
        !banned.is_empty() && banned.contains(&veeps_resource::intrusion::group(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    fn basic(user: &str, pw: &str) -> HeaderMap {
        use base64::Engine;
        headers(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        ))
    }

    #[tokio::test]
    async fn only_a_declared_user_with_its_password_passes() {
        let spec = BasicAuth {
            realm: "staff \"only\"".into(),
            users: vec![
                (
                    "alice".into(),
                    hash_password("rule-1", "alice", "correct horse"),
                ),
                // Declared as a hash already.
                (
                    "bob".into(),
                    hash_password("elsewhere", "bob", "battery staple"),
                ),
            ],
        };
        let g = Guard::new(&spec);
        assert_eq!(
            g.challenge.to_str().unwrap(),
            "Basic realm=\"staff only\", charset=\"UTF-8\""
        );
        assert_eq!(
            g.check(&basic("alice", "correct horse")).await,
            Verdict::Allowed("alice".into())
        );
        // Judged once, remembered: the same answer again.
        assert_eq!(
            g.check(&basic("alice", "correct horse")).await,
            Verdict::Allowed("alice".into())
        );
        assert_eq!(
            g.check(&basic("bob", "battery staple")).await,
            Verdict::Allowed("bob".into())
        );
        for (u, p) in [
            ("alice", "wrong"),
            ("alice", "correct horse "),
            ("bob", "correct horse"),
            ("carol", "correct horse"),
            ("", ""),
        ] {
            assert_eq!(g.check(&basic(u, p)).await, Verdict::Denied, "{u}:{p}");
        }
        assert_eq!(
            g.check(&headers("Basic !!notbase64")).await,
            Verdict::Denied
        );
        assert_eq!(
            g.check(&headers("Basic bm9jb2xvbg==")).await,
            Verdict::Denied
        );
        assert_eq!(g.check(&HeaderMap::new()).await, Verdict::Missing);
        assert_eq!(g.check(&headers("Bearer x")).await, Verdict::Missing);
        // The scheme is case-insensitive.
        use base64::Engine;
        let v = base64::engine::general_purpose::STANDARD.encode("alice:correct horse");
        assert_eq!(
            g.check(&headers(&format!("bAsIc {v}"))).await,
            Verdict::Allowed("alice".into())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_clients_at_once_get_the_right_verdicts_within_the_cap() {
        let g = Arc::new(Guard::new(&BasicAuth {
            realm: "r".into(),
            users: vec![("alice".into(), hash_password("s", "alice", "right"))],
        }));
        let mut tasks = vec![];
        for i in 0..24 {
            let g = g.clone();
            tasks.push(tokio::spawn(async move {
                // Half guess (each a different password: no remembered verdict helps),
                // half use the right one.
                let pw = if i % 2 == 0 {
                    format!("guess-{i}")
                } else {
                    "right".into()
                };
                g.check(&basic("alice", &pw)).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let v = t.await.unwrap();
            let want = if i % 2 == 0 {
                Verdict::Denied
            } else {
                Verdict::Allowed("alice".into())
            };
            assert_eq!(v, want, "client {i}");
        }
    }

    #[test]
    fn hashes_are_stable_per_seed_and_declared_ones_are_bounded() {
        let a = hash_password("rule-1", "alice", "pw");
        assert_eq!(a, hash_password("rule-1", "alice", "pw"));
        assert_ne!(a, hash_password("rule-2", "alice", "pw"));
        assert_eq!(hash_password("x", "y", &a), a, "a hash is kept as it is");
        assert_eq!(check_hash(&a), None);
        assert_eq!(check_hash("plain password"), None);
        assert!(check_hash("$argon2id$nonsense").is_some());
        let greedy = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let e = check_hash(greedy).unwrap();
        assert!(e.contains("m=4194304"), "{e}");
        assert!(!verify("anything", greedy));
    }

    #[test]
    fn the_gate_counts_failures_by_address_and_refuses_banned_groups() {
        let g = Gate::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        g.failed(a);
        g.failed("::ffff:192.0.2.1".parse().unwrap());
        g.failed("2001:db8::1".parse().unwrap());
        let mut f = g.take_failures();
        f.sort();
        assert_eq!(f, vec![(a, 2), ("2001:db8::1".parse().unwrap(), 1)]);
        assert!(g.take_failures().is_empty());
        assert!(!g.banned(a));
        g.set_banned(vec![
            "192.0.2.1/32".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ]);
        assert!(g.banned(a));
        assert!(g.banned("2001:db8::ffff".parse().unwrap()));
        assert!(!g.banned("192.0.2.2".parse().unwrap()));
        g.set_banned(vec![]);
        assert!(!g.banned(a));
        for i in 0..(FAILING_ADDRESSES as u32 + 10) {
            g.failed(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(g.take_failures().len(), FAILING_ADDRESSES);
        assert_eq!(g.dropped.load(Ordering::Relaxed), 10);
    }
}
