//! The audit trail you can prove, as CloudTrail's digests do it: every so often the entries
//! written since the last digest are sealed in a digest (the hash of the last entry, which
//! the hash chain ties to every earlier one, and the hash of the previous digest), signed
//! with an Ed25519 key. Copies of the digests kept where whoever can write the data
//! directory cannot (an operator's machine, a bucket with object lock) are the anchors:
//! [`Store::verify_trail`] checks the stored entries and digests against them, so a changed,
//! deleted, reordered or truncated entry up to the newest anchor is found, and named.
//!
//! What no anchor covers yet (entries after the newest exported digest) is only as safe as
//! the data directory: someone holding the signing key could rewrite it unseen.

use crate::{decode, encode, Result, Store, AUDIT, AUDIT_ANCHOR, KV};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sha2::Digest as _;
use std::path::Path;
pub use veeps_wire::{AuditDigest, TrailReport};

const DIGESTS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_digests");

/// What a digest's signature and hash are made of.
pub trait DigestExt {
    /// The bytes the signature covers: every field but the signature, in order.
    fn signed_bytes(&self) -> Vec<u8>;
    /// Its hash, which the next digest chains from.
    fn hash(&self) -> String;
    /// True if its signature is valid for `public_key` (hex).
    fn signed_by(&self, public_key: &str) -> bool;
}

impl DigestExt for AuditDigest {
    fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "veeps audit digest\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.seq,
            self.from_entry,
            self.to_entry,
            self.last_entry_hash,
            self.prev_digest,
            self.created,
            self.public_key
        )
        .into_bytes()
    }

    fn hash(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(self.signed_bytes());
        h.update(self.signature.as_bytes());
        hex::encode(h.finalize())
    }

    fn signed_by(&self, public_key: &str) -> bool {
        let Some(key) = hex::decode(public_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        else {
            return false;
        };
        let Some(sig) = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        key.verify(
            &self.signed_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .is_ok()
    }
}

/// The key that signs digests, kept in the data directory (`audit.key`, 0600).
pub struct TrailKey(SigningKey);

impl TrailKey {
    /// Loads the key at `path`, or makes one there.
    pub fn load_or_create(path: &Path) -> std::io::Result<TrailKey> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let seed = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not an audit signing key", path.display()),
                    )
                })?;
            return Ok(TrailKey(SigningKey::from_bytes(&seed)));
        }
        let mut seed = [0u8; 32];
        getrandom(&mut seed)?;
        let key = SigningKey::from_bytes(&seed);
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(hex::encode(seed).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(TrailKey(key))
    }

    /// The public key (hex).
    pub fn public_key(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

impl Store {
    /// Seals the entries written since the last digest in a new digest signed with `key`.
    /// `None` when there is nothing new.
    pub fn seal_audit(&self, key: &TrailKey) -> Result<Option<AuditDigest>> {
        let txn = self.db.begin_write()?;
        let d = {
            let entries = txn.open_table(AUDIT)?;
            let mut digests = txn.open_table(DIGESTS)?;
            let last = digests
                .last()?
                .map(|(_, v)| decode::<AuditDigest>("audit digest", v.value()))
                .transpose()?;
            let Some((to, last_hash)) = entries
                .last()?
                .map(|(k, v)| {
                    decode::<crate::AuditEntry>("audit", v.value()).map(|e| (k.value(), e.hash))
                })
                .transpose()?
            else {
                return Ok(None);
            };
            let from = last.as_ref().map(|d| d.to_entry + 1).unwrap_or(1);
            if to < from {
                return Ok(None);
            }
            let mut d = AuditDigest {
                seq: last.as_ref().map(|d| d.seq + 1).unwrap_or(1),
                from_entry: from,
                to_entry: to,
                last_entry_hash: last_hash,
                prev_digest: last.as_ref().map(DigestExt::hash).unwrap_or_default(),
                created: crate::now(),
                public_key: key.public_key(),
                signature: String::new(),
            };
            d.signature = hex::encode(key.0.sign(&d.signed_bytes()).to_bytes());
            digests.insert(d.seq, encode(&d).as_slice())?;
            d
        };
        txn.commit()?;
        Ok(Some(d))
    }

    /// Every stored digest, oldest first.
    pub fn audit_digests(&self) -> Result<Vec<AuditDigest>> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(DIGESTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![];
        for item in t.iter()? {
            out.push(decode("audit digest", item?.1.value())?);
        }
        Ok(out)
    }

    /// Checks the trail: the entries' hash chain, the digests' chain and signatures, every
    /// digest against the entries it seals, and the stored digests against `anchors`
    /// (copies kept elsewhere; the newest one's public key is the one trusted).
    pub fn verify_trail(&self, anchors: &[AuditDigest], from: Option<&str>) -> Result<TrailReport> {
        // From a time on: the digests made since, the entries written since, the first of
        // each trusted as the start of its chain.
        let digests: Vec<AuditDigest> = self
            .audit_digests()?
            .into_iter()
            .filter(|d| from.is_none_or(|f| d.created.as_str() >= f))
            .collect();
        let anchors: Vec<AuditDigest> = anchors
            .iter()
            .filter(|a| from.is_none_or(|f| a.created.as_str() >= f))
            .cloned()
            .collect();
        let anchors = anchors.as_slice();
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let kv = txn.open_table(KV)?;
        let mut report = TrailReport {
            entries: 0,
            digests: digests.len() as u64,
            sealed_through: digests.last().map(|d| d.to_entry).unwrap_or(0),
            anchored_through: anchors.iter().map(|a| a.to_entry).max().unwrap_or(0),
            problem: None,
            first_bad_entry: None,
        };
        let fail = |mut r: TrailReport, what: String, entry: Option<u64>| {
            r.problem = Some(what);
            r.first_bad_entry = entry;
            Ok(r)
        };
        // The key: the newest anchor's, or (without anchors) the one digests carry.
        let trusted = anchors
            .iter()
            .max_by_key(|a| a.seq)
            .map(|a| a.public_key.clone())
            .or_else(|| digests.first().map(|d| d.public_key.clone()));
        for a in anchors {
            if !trusted.as_deref().is_some_and(|k| a.signed_by(k)) {
                return fail(
                    report,
                    format!("anchor digest {} is not signed by the trusted key", a.seq),
                    None,
                );
            }
            match digests.iter().find(|d| d.seq == a.seq) {
                None => {
                    return fail(
                        report,
                        format!(
                            "digest {} (entries {} to {}) is missing: entries were removed after it was exported",
                            a.seq, a.from_entry, a.to_entry
                        ),
                        Some(a.from_entry),
                    )
                }
                Some(d) if d != a => {
                    return fail(
                        report,
                        format!("digest {} differs from its exported copy: it was rewritten", a.seq),
                        Some(a.from_entry),
                    )
                }
                Some(_) => {}
            }
        }
        let first = digests.first().map(|d| d.seq).unwrap_or(1);
        let mut prev = match (from, digests.first()) {
            (Some(_), Some(d)) => d.prev_digest.clone(),
            _ => String::new(),
        };
        for (i, d) in digests.iter().enumerate() {
            if d.seq != first + i as u64 || d.prev_digest != prev {
                return fail(
                    report,
                    format!("digest {} does not follow digest {}", d.seq, d.seq - 1),
                    Some(d.from_entry),
                );
            }
            if !trusted.as_deref().is_some_and(|k| d.signed_by(k)) {
                return fail(
                    report,
                    format!("digest {} has no valid signature of the trusted key", d.seq),
                    Some(d.from_entry),
                );
            }
            prev = d.hash();
        }
        // The entries, along their chain; each digest's last entry must be the one sealed.
        let anchor = kv.get(AUDIT_ANCHOR)?.map(|v| v.value().to_vec());
        let mut chain = match anchor {
            Some(v) => decode::<String>("audit anchor", &v)?,
            None => String::new(),
        };
        let mut expected: Option<u64> = None;
        let mut sealed = digests.iter().peekable();
        let mut started = from.is_none();
        for item in t.iter()? {
            let (k, v) = item?;
            let e: crate::AuditEntry = decode("audit", v.value())?;
            if !started {
                if from.is_some_and(|f| e.time.as_str() < f) {
                    continue;
                }
                started = true;
                chain = e.prev_hash.clone();
            }
            if expected.is_some_and(|n| n != k.value()) || e.seq != k.value() {
                return fail(
                    report,
                    format!("entry {} is missing", expected.unwrap_or(k.value())),
                    expected,
                );
            }
            if e.prev_hash != chain || crate::audit_hash(&e) != e.hash {
                return fail(
                    report,
                    format!("entry {} was changed, removed or moved", e.seq),
                    Some(e.seq),
                );
            }
            // Digests that end before the oldest kept entry sealed what retention removed.
            while sealed.peek().is_some_and(|d| d.to_entry < e.seq) {
                sealed.next();
            }
            if let Some(d) = sealed.peek().filter(|d| d.to_entry == e.seq) {
                if d.last_entry_hash != e.hash {
                    return fail(
                        report,
                        format!(
                            "entries up to {} differ from what digest {} sealed",
                            e.seq, d.seq
                        ),
                        Some(d.from_entry),
                    );
                }
                sealed.next();
            }
            chain = e.hash;
            expected = Some(e.seq + 1);
            report.entries += 1;
        }
        if let Some(d) = sealed.next() {
            return fail(
                report,
                format!(
                    "the log ends before entry {}, which digest {} sealed: it was truncated",
                    d.to_entry, d.seq
                ),
                Some(expected.unwrap_or(d.from_entry)),
            );
        }
        if report.anchored_through > report.sealed_through {
            return fail(
                report.clone(),
                "the stored digests end before the exported ones".into(),
                Some(report.sealed_through + 1),
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store, TrailKey) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.redb")).unwrap();
        let k = TrailKey::load_or_create(&d.path().join("audit.key")).unwrap();
        (d, s, k)
    }

    fn append(s: &Store, n: usize, what: &str) {
        for i in 0..n {
            s.append_audit("root", "127.0.0.1", &format!("{what} {i}"), 200)
                .unwrap();
        }
    }

    /// Rewrites entry `seq` with `f`, and (when `rechain`) every later hash, as someone
    /// who can write the data directory would to hide it.
    fn tamper(s: &Store, seq: u64, rechain: bool, f: impl Fn(&mut crate::AuditEntry)) {
        let txn = s.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(AUDIT).unwrap();
            let all: Vec<crate::AuditEntry> = t
                .iter()
                .unwrap()
                .map(|i| decode("audit", i.unwrap().1.value()).unwrap())
                .collect();
            let mut prev = String::new();
            for mut e in all {
                if e.seq == seq {
                    f(&mut e);
                }
                if rechain && e.seq >= seq {
                    e.prev_hash = prev.clone();
                    e.hash = crate::audit_hash(&e);
                }
                prev = e.hash.clone();
                t.insert(e.seq, encode(&e).as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn an_intact_trail_verifies_against_its_exported_digests() {
        let (_d, s, k) = store();
        append(&s, 5, "GET /v1/envs");
        let d1 = s.seal_audit(&k).unwrap().unwrap();
        assert_eq!((d1.from_entry, d1.to_entry), (1, 5));
        assert!(s.seal_audit(&k).unwrap().is_none(), "nothing new to seal");
        append(&s, 3, "POST /v1/envs/prod/apply");
        let d2 = s.seal_audit(&k).unwrap().unwrap();
        assert_eq!((d2.seq, d2.from_entry, d2.to_entry), (2, 6, 8));
        assert_eq!(d2.prev_digest, d1.hash());
        append(&s, 2, "GET /v1/status");
        let r = s.verify_trail(&[d1, d2], None).unwrap();
        assert_eq!(r.problem, None);
        assert_eq!((r.entries, r.digests, r.sealed_through), (10, 2, 8));
    }

    #[test]
    fn a_changed_entry_is_found_even_with_its_chain_recomputed() {
        let (_d, s, k) = store();
        append(&s, 6, "GET /v1/envs");
        let d = s.seal_audit(&k).unwrap().unwrap();
        tamper(&s, 3, false, |e| e.action = "GET /v1/nothing".into());
        let r = s.verify_trail(std::slice::from_ref(&d), None).unwrap();
        assert_eq!(r.first_bad_entry, Some(3), "{r:?}");
        tamper(&s, 3, true, |_| {});
        let r = s.verify_trail(std::slice::from_ref(&d), None).unwrap();
        assert!(r.problem.unwrap().contains("digest 1 sealed"));
    }

    #[test]
    fn retention_leaves_a_signed_checkpoint_and_the_rest_still_verifies() {
        let (_d, s, k) = store();
        append(&s, 5, "old call");
        let d1 = s.seal_audit(&k).unwrap().unwrap();
        let cutoff = "9999-01-01T00:00:00Z";
        assert_eq!(s.audit_due(cutoff).unwrap(), Some((5, 5)));
        // What the server does: the checkpoint goes in the chain and is sealed, then the
        // old entries go.
        let c = s
            .append_audit(
                "veeps",
                "",
                "audit retention: 5 entries up to #5 removed",
                200,
            )
            .unwrap();
        let d2 = s.seal_audit(&k).unwrap().unwrap();
        assert_eq!((d2.from_entry, d2.to_entry), (6, 6));
        assert_eq!(s.prune_audit(cutoff).unwrap(), 5);
        let left = s.audit(10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].hash, c.hash);
        append(&s, 2, "new call");
        let r = s.verify_trail(&[d1, d2], None).unwrap();
        assert_eq!(r.problem, None, "{r:?}");
    }

    #[test]
    fn verifying_from_a_time_checks_what_came_after_and_still_finds_changes_there() {
        let (_d, s, k) = store();
        append(&s, 3, "before");
        s.seal_audit(&k).unwrap().unwrap();
        // Entries before the start are beyond repair (say, restored from an old backup).
        tamper(&s, 2, false, |e| e.action = "rewritten".into());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let from = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        append(&s, 3, "after");
        let d2 = s.seal_audit(&k).unwrap().unwrap();
        assert!(s.verify_trail(&[], None).unwrap().problem.is_some());
        let r = s
            .verify_trail(std::slice::from_ref(&d2), Some(&from))
            .unwrap();
        assert_eq!((r.problem.clone(), r.entries), (None, 3), "{r:?}");
        tamper(&s, 5, false, |e| e.action = "rewritten".into());
        let r = s
            .verify_trail(std::slice::from_ref(&d2), Some(&from))
            .unwrap();
        assert_eq!(r.first_bad_entry, Some(5), "{r:?}");
    }

    #[test]
    fn reordered_entries_are_found() {
        let (_d, s, k) = store();
        append(&s, 4, "call");
        let d = s.seal_audit(&k).unwrap().unwrap();
        let (a, b) = {
            let all = s.audit(10).unwrap();
            (all[1].clone(), all[2].clone())
        };
        tamper(&s, 2, false, |e| e.action = b.action.clone());
        tamper(&s, 3, false, |e| e.action = a.action.clone());
        let r = s.verify_trail(&[d], None).unwrap();
        assert_eq!(r.first_bad_entry, Some(2), "{r:?}");
    }

    #[test]
    fn dropping_the_newest_hour_is_found_by_the_exported_digest() {
        let (_d, s, k) = store();
        append(&s, 3, "old");
        let d1 = s.seal_audit(&k).unwrap().unwrap();
        append(&s, 3, "new");
        let d2 = s.seal_audit(&k).unwrap().unwrap();
        // Entries 4-6 and their digest go, as a careful intruder would remove them.
        let txn = s.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(AUDIT).unwrap();
            for seq in 4..=6u64 {
                t.remove(seq).unwrap();
            }
            let mut dt = txn.open_table(DIGESTS).unwrap();
            dt.remove(2u64).unwrap();
        }
        txn.commit().unwrap();
        // Without the exported copy nothing shows; with it, the removal does.
        assert_eq!(
            s.verify_trail(std::slice::from_ref(&d1), None)
                .unwrap()
                .problem,
            None
        );
        let r = s.verify_trail(&[d1, d2], None).unwrap();
        assert!(r.problem.as_deref().unwrap().contains("digest 2"), "{r:?}");
        assert_eq!(r.first_bad_entry, Some(4));
    }

    #[test]
    fn truncation_and_forged_digests_are_found() {
        let (d, s, k) = store();
        append(&s, 4, "call");
        let d1 = s.seal_audit(&k).unwrap().unwrap();
        // The last sealed entry removed (the digest kept): truncated.
        let txn = s.db.begin_write().unwrap();
        txn.open_table(AUDIT).unwrap().remove(4u64).unwrap();
        txn.commit().unwrap();
        let r = s.verify_trail(std::slice::from_ref(&d1), None).unwrap();
        assert!(r.problem.unwrap().contains("truncated"));
        // A digest signed with another key is not trusted.
        let other = TrailKey::load_or_create(&d.path().join("other.key")).unwrap();
        let mut forged = d1.clone();
        forged.public_key = other.public_key();
        forged.signature = hex::encode(other.0.sign(&forged.signed_bytes()).to_bytes());
        assert!(!forged.signed_by(&d1.public_key));
        assert!(forged.signed_by(&other.public_key()));
    }
}
