//! The embedded, transactional store. Only this crate writes state.
//!
//! One redb database in the data directory holds, per environment, the state of every
//! resource instance, the environment's outputs, its lock and its history of applied
//! versions; plus the audit log of every API call and wrapped keys. Every write is one
//! durable transaction, so killing veeps at any moment loses nothing that was recorded.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Digest;
use std::path::Path;

mod trail;

/// Bytes in a record (`#[serde(with = "veeps_state::b64")]`): written as base64, which
/// reads back in a fraction of the time a JSON array of numbers takes (wrapped keys as arrays
/// were a sixth of a small S3 GET); records written before as arrays still read.
pub mod b64 {
    use base64::Engine as _;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    struct Either;

    impl<'de> serde::de::Visitor<'de> for Either {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a wrapped key, in base64 or as an array of bytes")
        }

        fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Vec<u8>, E> {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(E::custom)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = a.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(Either)
    }
}
pub use trail::{AuditDigest, DigestExt, TrailKey, TrailReport};

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
const ENVS: TableDefinition<&str, &[u8]> = TableDefinition::new("envs");
const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks");
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("history");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// KV key of the hash the oldest kept audit entry chains from.
const AUDIT_ANCHOR: &str = "audit/anchor";
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database failed.
    #[error("state store: {0}")]
    Db(String),
    /// A record could not be decoded.
    #[error("state store: corrupt record {key}: {err}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why.
        err: String,
    },
    /// The environment is locked by someone else.
    #[error("environment \"{env}\" is locked by {} ({}, since {}, lock id {})", .holder.who, .holder.operation, .holder.since, .holder.id)]
    Locked {
        /// The environment.
        env: String,
        /// Who holds the lock.
        holder: Box<LockInfo>,
    },
    /// No such record.
    #[error("{0}")]
    NotFound(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T> = std::result::Result<T, StateError>;

/// The current time as RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether a recorded resource instance is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceStatus {
    /// Created (or updated) and recorded.
    Ready,
    /// A create was started and may not have finished; the next apply re-runs it.
    Creating,
    /// A previous operation failed part-way; the next apply replaces it.
    Tainted,
}

/// The recorded state of one resource instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceRecord {
    /// Its address, like `module.net.random_id.x[0]`.
    pub address: String,
    /// Its type.
    pub type_name: String,
    /// All attributes; sensitive ones encrypted as `{"$sensitive": "..."}`.
    pub attrs: serde_json::Value,
    /// Addresses of the resources it depends on (destroy order).
    pub dependencies: Vec<String>,
    /// Complete or not.
    pub status: ResourceStatus,
    /// Its `create_before_destroy` setting when last applied.
    #[serde(default)]
    pub create_before_destroy: bool,
    /// The layout version of `attrs` (its type's `schema_version` when written; records from
    /// before versions existed are version 1).
    #[serde(default = "first_layout")]
    pub schema_version: u64,
    /// When it was last written.
    pub updated_at: String,
    /// The address its object was created under, when it has since moved (`moved`
    /// blocks): controllers that name objects after their address keep that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl ResourceRecord {
    /// The address its controller knows the object by.
    pub fn identity(&self) -> &str {
        self.identity.as_deref().unwrap_or(&self.address)
    }
}

fn first_layout() -> u64 {
    1
}

/// An output of an environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputRecord {
    /// Its value (sensitive values are encrypted as `{"$sensitive": "..."}`).
    pub value: serde_json::Value,
    /// Masked in listings.
    pub sensitive: bool,
}

/// What the store knows about an environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EnvRecord {
    /// Its name.
    pub name: String,
    /// Root outputs after the last apply.
    pub outputs: std::collections::BTreeMap<String, OutputRecord>,
    /// The last applied history version.
    pub version: u64,
    /// When it was first applied.
    pub created_at: String,
    /// When it was last applied.
    pub updated_at: String,
}

/// Who holds an environment's lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    /// A unique lock id.
    pub id: String,
    /// The caller.
    pub who: String,
    /// What they are doing (`apply`, `destroy`).
    pub operation: String,
    /// Since when.
    pub since: String,
    /// The server boot that took it (locks of earlier boots are stale).
    pub boot_id: String,
}

/// One applied version of an environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// Its number, from 1.
    pub version: u64,
    /// When.
    pub time: String,
    /// Who.
    pub caller: String,
    /// `apply`, `destroy` or `rollback to N`.
    pub operation: String,
    /// `ok`, `partial` (some resources failed) or `failed`.
    pub status: String,
    /// Counts of what changed.
    pub summary: Summary,
    /// Errors, if any.
    #[serde(default)]
    pub errors: Vec<String>,
    /// The configuration applied (a serialized bundle), for rollback.
    pub bundle: serde_json::Value,
    /// The variables given on the command line (names only when `sealed` holds them).
    #[serde(default)]
    pub vars: Vec<(String, String)>,
    /// The `-var` values and the variable files of the bundle, encrypted with the
    /// environment's key (they may hold secrets); a rollback decrypts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

pub use veeps_wire::plan::Summary;

/// One entry of the audit log (the API's view of it is the entry itself).
pub use veeps_wire::AuditEntryView as AuditEntry;

/// What an audit entry records, before it is numbered and chained.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Who.
    pub who: String,
    /// From where.
    pub source: String,
    /// What.
    pub action: String,
    /// The result (HTTP status).
    pub result: u16,
}

/// Where events other than API calls (S3 writes, later logins and sessions) go into the
/// audit log: queued without waiting, and counted when dropped.
pub trait AuditSink: Send + Sync {
    /// Queues `record`.
    fn note(&self, record: AuditRecord);
}

/// The store.
pub struct Store {
    db: Database,
    /// Moves after every committed write (see [`Store::generation`]).
    generation: std::sync::atomic::AtomicU64,
}

fn key(env: &str, rest: &str) -> String {
    format!("{env}\u{0}{rest}")
}

/// One write of [`Store::kv_batch`].
#[derive(Debug, Clone)]
pub enum KvOp {
    /// Write a record.
    Put(String, Vec<u8>),
    /// Delete a record.
    Delete(String),
}

impl KvOp {
    /// A write of `v`, encoded as the store keeps records.
    pub fn put<T: Serialize>(key: impl Into<String>, v: &T) -> KvOp {
        KvOp::Put(key.into(), encode(v))
    }
}

fn decode<T: DeserializeOwned>(k: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
        key: k.replace('\0', "/"),
        err: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(RESOURCES)?;
            txn.open_table(ENVS)?;
            txn.open_table(LOCKS)?;
            txn.open_table(HISTORY)?;
            txn.open_table(AUDIT)?;
            txn.open_table(KEYS)?;
            txn.open_table(KV)?;
        }
        txn.commit()?;
        Ok(Store {
            db,
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A number that moves after every committed write. A value read after it was `g`
    /// is current for as long as it is still `g`: what caches of records check.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        txn.commit()?;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        k: &str,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        match t.get(k)? {
            Some(v) => Ok(Some(decode(k, v.value())?)),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, table: TableDefinition<&str, &[u8]>, k: &str, v: &T) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(k, encode(v).as_slice())?;
        self.commit(txn)?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        env: &str,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let lo = key(env, "");
        let hi = format!("{env}\u{1}");
        let mut out = vec![];
        for item in t.range(lo.as_str()..hi.as_str())? {
            let (k, v) = item?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Every recorded resource instance of `env`, by address.
    pub fn resources(&self, env: &str) -> Result<Vec<ResourceRecord>> {
        self.scan(RESOURCES, env)
    }

    /// One resource instance.
    pub fn resource(&self, env: &str, address: &str) -> Result<Option<ResourceRecord>> {
        self.get(RESOURCES, &key(env, address))
    }

    /// Records a resource instance.
    pub fn put_resource(&self, env: &str, r: &ResourceRecord) -> Result<()> {
        self.put(RESOURCES, &key(env, &r.address), r)
    }

    /// Moves resource instances to new addresses, and forgets others, in one transaction:
    /// all or none. A moved record keeps the address it was created under as its
    /// identity.
    pub fn move_resources(
        &self,
        env: &str,
        moves: &[(String, String)],
        forget: &[String],
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(RESOURCES)?;
            for (from, to) in moves {
                let old = t
                    .remove(key(env, from).as_str())?
                    .map(|v| v.value().to_vec());
                let Some(old) = old else { continue };
                let mut rec: ResourceRecord = decode(from, &old)?;
                rec.identity.get_or_insert_with(|| rec.address.clone());
                rec.address = to.clone();
                if rec.identity.as_deref() == Some(to.as_str()) {
                    rec.identity = None;
                }
                t.insert(key(env, to).as_str(), encode(&rec).as_slice())?;
            }
            for a in forget {
                t.remove(key(env, a).as_str())?;
            }
        }
        self.commit(txn)?;
        Ok(())
    }

    /// Forgets a resource instance.
    pub fn delete_resource(&self, env: &str, address: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(RESOURCES)?
            .remove(key(env, address).as_str())?;
        self.commit(txn)?;
        Ok(())
    }

    /// The environment's record.
    pub fn env(&self, env: &str) -> Result<Option<EnvRecord>> {
        self.get(ENVS, env)
    }

    /// Writes the environment's record.
    pub fn put_env(&self, r: &EnvRecord) -> Result<()> {
        self.put(ENVS, &r.name, r)
    }

    /// Every environment ever applied.
    pub fn envs(&self) -> Result<Vec<EnvRecord>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENVS)?;
        let mut out = vec![];
        for item in t.iter()? {
            let (k, v) = item?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Takes the environment's lock, or fails at once naming the holder.
    pub fn lock(&self, env: &str, info: &LockInfo) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(LOCKS)?;
            if let Some(v) = t.get(env)? {
                let holder: LockInfo = decode(env, v.value())?;
                return Err(StateError::Locked {
                    env: env.to_string(),
                    holder: Box::new(holder),
                });
            }
            t.insert(env, encode(info).as_slice())?;
        }
        self.commit(txn)?;
        Ok(())
    }

    /// Releases the lock `id` of `env` (if it still holds it).
    pub fn unlock(&self, env: &str, id: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(LOCKS)?;
            let held = match t.get(env)? {
                Some(v) => decode::<LockInfo>(env, v.value())?.id == id,
                None => false,
            };
            if held {
                t.remove(env)?;
            }
        }
        self.commit(txn)?;
        Ok(())
    }

    /// Removes the lock of `env` whoever holds it; returns what was removed.
    pub fn force_unlock(&self, env: &str) -> Result<Option<LockInfo>> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut t = txn.open_table(LOCKS)?;
            let r = t.remove(env)?;
            match r {
                Some(v) => Some(decode::<LockInfo>(env, v.value())?),
                None => None,
            }
        };
        self.commit(txn)?;
        Ok(removed)
    }

    /// The current lock of `env`.
    pub fn lock_info(&self, env: &str) -> Result<Option<LockInfo>> {
        self.get(LOCKS, env)
    }

    /// Releases every lock not taken by boot `boot_id` (their holder died with the server).
    pub fn release_stale_locks(&self, boot_id: &str) -> Result<Vec<(String, LockInfo)>> {
        let txn = self.db.begin_write()?;
        let mut released = vec![];
        {
            let mut t = txn.open_table(LOCKS)?;
            let mut stale = vec![];
            for item in t.iter()? {
                let (k, v) = item?;
                let info: LockInfo = decode(k.value(), v.value())?;
                if info.boot_id != boot_id {
                    stale.push((k.value().to_string(), info));
                }
            }
            for (k, info) in stale {
                t.remove(k.as_str())?;
                released.push((k, info));
            }
        }
        self.commit(txn)?;
        Ok(released)
    }

    /// Appends a history entry to `env`, numbering it. Returns the version.
    pub fn append_history(&self, env: &str, mut h: HistoryEntry) -> Result<u64> {
        let txn = self.db.begin_write()?;
        let version = {
            let mut t = txn.open_table(HISTORY)?;
            let lo = key(env, "");
            let hi = format!("{env}\u{1}");
            let last = t
                .range(lo.as_str()..hi.as_str())?
                .next_back()
                .transpose()?
                .map(|(_, v)| decode::<HistoryEntry>(env, v.value()))
                .transpose()?;
            let version = last.map(|l| l.version).unwrap_or(0) + 1;
            h.version = version;
            t.insert(
                key(env, &format!("{version:012}")).as_str(),
                encode(&h).as_slice(),
            )?;
            version
        };
        self.commit(txn)?;
        Ok(version)
    }

    /// Every history entry of `env`, oldest first.
    pub fn history(&self, env: &str) -> Result<Vec<HistoryEntry>> {
        self.scan(HISTORY, env)
    }

    /// History entry `version` of `env`.
    pub fn history_entry(&self, env: &str, version: u64) -> Result<Option<HistoryEntry>> {
        self.get(HISTORY, &key(env, &format!("{version:012}")))
    }

    /// Appends to the audit log, chaining hashes. Returns the entry.
    pub fn append_audit(
        &self,
        who: &str,
        source: &str,
        action: &str,
        result: u16,
    ) -> Result<AuditEntry> {
        let mut v = self.append_audit_batch(&[AuditRecord {
            who: who.into(),
            source: source.into(),
            action: action.into(),
            result,
        }])?;
        v.pop().ok_or_else(|| StateError::Corrupt {
            key: "audit".into(),
            err: "no entry written".into(),
        })
    }

    /// Appends several entries to the audit log in one transaction (one fsync), chaining
    /// hashes. Returns them.
    pub fn append_audit_batch(&self, records: &[AuditRecord]) -> Result<Vec<AuditEntry>> {
        let txn = self.db.begin_write()?;
        let mut out = Vec::with_capacity(records.len());
        {
            let mut t = txn.open_table(AUDIT)?;
            let last = t.last()?.map(|(k, v)| (k.value(), v.value().to_vec()));
            let (mut seq, mut prev_hash) = match last {
                Some((k, v)) => (k + 1, decode::<AuditEntry>("audit", &v)?.hash),
                None => (1, self.audit_anchor_in(&txn)?),
            };
            for r in records {
                let mut e = AuditEntry {
                    seq,
                    time: now(),
                    who: r.who.clone(),
                    source: r.source.clone(),
                    action: r.action.clone(),
                    result: r.result,
                    prev_hash: prev_hash.clone(),
                    hash: String::new(),
                };
                e.hash = audit_hash(&e);
                t.insert(seq, encode(&e).as_slice())?;
                prev_hash = e.hash.clone();
                seq += 1;
                out.push(e);
            }
        }
        self.commit(txn)?;
        Ok(out)
    }

    /// The hash the oldest kept audit entry chains from ("" when nothing was pruned).
    fn audit_anchor_in(&self, txn: &redb::WriteTransaction) -> Result<String> {
        let t = txn.open_table(KV)?;
        let v = t.get(AUDIT_ANCHOR)?.map(|v| v.value().to_vec());
        Ok(match v {
            Some(v) => decode::<String>("audit anchor", &v)?,
            None => String::new(),
        })
    }

    /// The entries retention would remove at `cutoff` (older than it): how many, and the
    /// number of the last one.
    pub fn audit_due(&self, cutoff: &str) -> Result<Option<(u64, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let (mut n, mut last) = (0u64, 0u64);
        for item in t.iter()? {
            let (k, v) = item?;
            let e: AuditEntry = decode("audit", v.value())?;
            if e.time.as_str() >= cutoff {
                break;
            }
            n += 1;
            last = k.value();
        }
        Ok((n > 0).then_some((n, last)))
    }

    /// Removes audit entries written before `cutoff` (RFC 3339), a batch at a time; the
    /// hash of the last one removed is kept, so the rest of the chain still verifies.
    /// Returns how many went.
    pub fn prune_audit(&self, cutoff: &str) -> Result<u64> {
        let mut removed = 0;
        loop {
            let txn = self.db.begin_write()?;
            let (n, last_hash) = {
                let mut t = txn.open_table(AUDIT)?;
                let mut doomed = vec![];
                for item in t.iter()?.take(10_000) {
                    let (k, v) = item?;
                    let e: AuditEntry = decode("audit", v.value())?;
                    if e.time.as_str() >= cutoff {
                        break;
                    }
                    doomed.push((k.value(), e.hash));
                }
                // The newest entry stays, so appends keep chaining from it.
                let newest = t.last()?.map(|(k, _)| k.value());
                if doomed.last().map(|(k, _)| *k) == newest {
                    doomed.pop();
                }
                for (k, _) in &doomed {
                    t.remove(*k)?;
                }
                (doomed.len(), doomed.last().map(|(_, h)| h.clone()))
            };
            if let Some(h) = last_hash {
                let mut kv = txn.open_table(KV)?;
                kv.insert(AUDIT_ANCHOR, encode(&h).as_slice())?;
            }
            self.commit(txn)?;
            removed += n as u64;
            if n < 10_000 {
                return Ok(removed);
            }
        }
    }

    /// The last `limit` audit entries, oldest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = vec![];
        for item in t.iter()?.rev().take(limit) {
            let (_, v) = item?;
            out.push(decode("audit", v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// Up to `limit` entries after entry `after`, oldest first.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = vec![];
        for item in t.range(after.saturating_add(1)..)?.take(limit) {
            let (_, v) = item?;
            out.push(decode("audit", v.value())?);
        }
        Ok(out)
    }

    /// Checks the audit log's hash chain (from the anchor left by pruning). Returns the
    /// number of entries, or the first bad one.
    pub fn verify_audit(&self) -> Result<std::result::Result<u64, u64>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let kv = txn.open_table(KV)?;
        let anchor = kv.get(AUDIT_ANCHOR)?.map(|v| v.value().to_vec());
        let mut prev = match anchor {
            Some(v) => decode::<String>("audit anchor", &v)?,
            None => String::new(),
        };
        let mut n = 0;
        for item in t.iter()? {
            let (_, v) = item?;
            let e: AuditEntry = decode("audit", v.value())?;
            if e.prev_hash != prev || audit_hash(&e) != e.hash {
                return Ok(Err(e.seq));
            }
            prev = e.hash;
            n += 1;
        }
        Ok(Ok(n))
    }

    /// A record of a part's own bookkeeping (like the network's address allocations).
    pub fn kv_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(KV, key)
    }

    /// Writes a bookkeeping record.
    pub fn kv_put<T: Serialize>(&self, key: &str, v: &T) -> Result<()> {
        self.put(KV, key, v)
    }

    /// Deletes a bookkeeping record.
    pub fn kv_delete(&self, key: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(KV)?.remove(key)?;
        self.commit(txn)?;
        Ok(())
    }

    /// Every bookkeeping record whose key starts with `prefix`.
    pub fn kv_scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(KV)?;
        let mut out = vec![];
        for item in t.range(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// At most `limit` records whose key starts with `prefix` and sorts after `after`
    /// (exclusive), in key order: a page read without loading the rest.
    pub fn kv_scan_page<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(KV)?;
        let mut out = vec![];
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        for item in t.range(start..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if after == Some(key) {
                continue;
            }
            out.push((key.to_string(), decode(key, v.value())?));
        }
        Ok(out)
    }

    /// Writes and deletes bookkeeping records in one transaction: all or none.
    pub fn kv_batch(&self, ops: Vec<KvOp>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(KV)?;
            for op in ops {
                match op {
                    KvOp::Put(k, v) => {
                        t.insert(k.as_str(), v.as_slice())?;
                    }
                    KvOp::Delete(k) => {
                        t.remove(k.as_str())?;
                    }
                }
            }
        }
        self.commit(txn)?;
        Ok(())
    }

    /// How many key blobs are stored (keys wrapped by the root key).
    pub fn key_blob_count(&self) -> Result<usize> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(KEYS)?;
        let mut n = 0;
        for item in t.iter()? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// A stored key blob.
    pub fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(KEYS)?;
        Ok(t.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Removes the key blobs whose names `which` picks; returns how many. What they
    /// protected cannot be read again.
    pub fn delete_key_blobs(&self, which: impl Fn(&str) -> bool) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let n = {
            let mut t = txn.open_table(KEYS)?;
            let names: Vec<String> = t
                .iter()?
                .filter_map(|i| i.ok())
                .map(|(k, _)| k.value().to_string())
                .filter(|k| which(k))
                .collect();
            for n in &names {
                t.remove(n.as_str())?;
            }
            names.len()
        };
        self.commit(txn)?;
        Ok(n)
    }

    /// Stores a key blob unless one exists; returns the one stored.
    pub fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut t = txn.open_table(KEYS)?;
            let existing = t.get(name)?.map(|v| v.value().to_vec());
            match existing {
                Some(b) => b,
                None => {
                    t.insert(name, blob)?;
                    blob.to_vec()
                }
            }
        };
        self.commit(txn)?;
        Ok(out)
    }
}

fn audit_hash(e: &AuditEntry) -> String {
    let mut h = sha2::Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(
        format!(
            "\n{}\n{}\n{}\n{}\n{}\n{}",
            e.seq, e.time, e.who, e.source, e.action, e.result
        )
        .as_bytes(),
    );
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.redb")).unwrap();
        (d, s)
    }

    #[test]
    fn resources_per_env() {
        let (_d, s) = store();
        let r = ResourceRecord {
            address: "random_id.x".into(),
            type_name: "random_id".into(),
            attrs: serde_json::json!({"hex": "ab"}),
            dependencies: vec![],
            status: ResourceStatus::Ready,
            create_before_destroy: false,
            schema_version: 1,
            updated_at: now(),
            identity: None,
        };
        s.put_resource("stage", &r).unwrap();
        s.put_resource(
            "prod",
            &ResourceRecord {
                address: "random_id.y".into(),
                ..r.clone()
            },
        )
        .unwrap();
        assert_eq!(s.resources("stage").unwrap(), vec![r.clone()]);
        assert_eq!(s.resources("stag").unwrap(), vec![]);
        s.delete_resource("stage", "random_id.x").unwrap();
        assert!(s.resource("stage", "random_id.x").unwrap().is_none());
    }

    #[test]
    fn moves_and_forgetting_are_one_transaction() {
        let (_d, s) = store();
        let r = |a: &str| ResourceRecord {
            address: a.into(),
            type_name: "random_id".into(),
            attrs: serde_json::json!({}),
            dependencies: vec![],
            status: ResourceStatus::Ready,
            create_before_destroy: false,
            schema_version: 1,
            updated_at: now(),
            identity: None,
        };
        for a in ["a.x", "a.y", "a.z"] {
            s.put_resource("e", &r(a)).unwrap();
        }
        let moves = [
            ("a.x".to_string(), "a.w".to_string()),
            ("a.gone".into(), "a.v".into()),
        ];
        s.move_resources("e", &moves, &["a.z".into()]).unwrap();
        let now: Vec<(String, Option<String>)> = s
            .resources("e")
            .unwrap()
            .into_iter()
            .map(|r| (r.address, r.identity))
            .collect();
        assert_eq!(
            now,
            [("a.w".into(), Some("a.x".into())), ("a.y".into(), None)]
        );
        // Moving back restores the plain record.
        s.move_resources("e", &[("a.w".into(), "a.x".into())], &[])
            .unwrap();
        assert_eq!(s.resource("e", "a.x").unwrap().unwrap().identity, None);
        // A record that cannot be read aborts the whole transaction.
        let bad = [
            ("a.y".to_string(), "a.q".to_string()),
            ("a.broken".into(), "a.r".into()),
        ];
        let txn = s.db.begin_write().unwrap();
        txn.open_table(RESOURCES)
            .unwrap()
            .insert(key("e", "a.broken").as_str(), b"not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert!(s.move_resources("e", &bad, &["a.x".into()]).is_err());
        assert!(s.resource("e", "a.y").unwrap().is_some());
        assert!(s.resource("e", "a.x").unwrap().is_some());
        assert!(s.resource("e", "a.q").unwrap().is_none());
    }

    #[test]
    fn locks_name_the_holder_and_stale_ones_go() {
        let (_d, s) = store();
        let info = LockInfo {
            id: "1".into(),
            who: "alice".into(),
            operation: "apply".into(),
            since: now(),
            boot_id: "b1".into(),
        };
        s.lock("stage", &info).unwrap();
        let err = s
            .lock(
                "stage",
                &LockInfo {
                    id: "2".into(),
                    ..info.clone()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("locked by alice"), "{err}");
        assert_eq!(s.release_stale_locks("b2").unwrap().len(), 1);
        s.lock("stage", &info).unwrap();
        s.unlock("stage", "1").unwrap();
        assert!(s.lock_info("stage").unwrap().is_none());
    }

    #[test]
    fn history_numbers_and_audit_chain() {
        let (_d, s) = store();
        let h = HistoryEntry {
            version: 0,
            time: now(),
            caller: "a".into(),
            operation: "apply".into(),
            status: "ok".into(),
            summary: Summary::default(),
            errors: vec![],
            bundle: serde_json::json!({}),
            vars: vec![],
            sealed: None,
        };
        assert_eq!(s.append_history("e", h.clone()).unwrap(), 1);
        assert_eq!(s.append_history("e", h.clone()).unwrap(), 2);
        assert_eq!(s.append_history("f", h).unwrap(), 1);
        assert_eq!(s.history("e").unwrap().len(), 2);
        s.append_audit("root", "127.0.0.1", "GET /v1/envs", 200)
            .unwrap();
        s.append_audit("anonymous", "127.0.0.1", "GET /v1/envs", 401)
            .unwrap();
        assert_eq!(s.verify_audit().unwrap(), Ok(2));
        assert_eq!(s.audit(1).unwrap()[0].result, 401);
    }

    #[test]
    fn batches_are_atomic_and_pages_are_bounded() {
        let (_d, s) = store();
        s.kv_batch(
            (0..10)
                .map(|i| KvOp::put(format!("p/{i:02}"), &i))
                .chain([KvOp::put("q/x", &99)])
                .collect(),
        )
        .unwrap();
        let page: Vec<(String, i32)> = s.kv_scan_page("p/", None, 3).unwrap();
        assert_eq!(page.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0, 1, 2]);
        let page: Vec<(String, i32)> = s.kv_scan_page("p/", Some("p/02"), 100).unwrap();
        assert_eq!(page.len(), 7);
        assert_eq!(page[0].1, 3);
        s.kv_batch(vec![KvOp::Delete("p/00".into()), KvOp::put("p/00b", &7)])
            .unwrap();
        let all: Vec<(String, i32)> = s.kv_scan("p/").unwrap();
        assert_eq!(all[0], ("p/00b".to_string(), 7));
    }
}
