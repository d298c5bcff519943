//! Lifecycle rules: expiry of current and noncurrent versions, transition markers (the
//! storage class an object reports after N days), removal of expired delete markers and of
//! abandoned multipart uploads. [`ObjectStore::run_lifecycle`] applies them; the server
//! runs it by itself, with a day length tests may shorten.

use crate::store::{ObjectStore, StoreError};
use serde::{Deserialize, Serialize};

/// Storage classes a transition may name.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// A transition: after `days`, the object reports `storage_class`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Transition {
    /// Days after the object was written.
    pub days: u32,
    /// One of [`STORAGE_CLASSES`].
    pub storage_class: String,
}

/// One lifecycle rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rule {
    /// Its id.
    pub id: String,
    /// Keys it applies to.
    pub prefix: String,
    /// Off rules are kept but not applied.
    pub enabled: bool,
    /// Current versions expire this many days after they were written.
    pub expiration_days: Option<u32>,
    /// Noncurrent versions are removed this many days after they stopped being current.
    pub noncurrent_expiration_days: Option<u32>,
    /// Transitions, any order.
    pub transitions: Vec<Transition>,
    /// Multipart uploads are aborted this many days after they started.
    pub abort_incomplete_days: Option<u32>,
    /// Only objects larger than this many bytes.
    #[serde(default)]
    pub size_greater_than: Option<u64>,
    /// Only objects smaller than this many bytes.
    #[serde(default)]
    pub size_less_than: Option<u64>,
    /// This many of the newest noncurrent versions are kept whatever their age.
    #[serde(default)]
    pub newer_noncurrent_versions: Option<u32>,
    /// Delete markers with no versions behind them are removed.
    #[serde(default)]
    pub expired_object_delete_marker: bool,
}

impl Rule {
    /// Whether an object of `size` bytes passes the rule's size filters.
    pub fn size_matches(&self, size: u64) -> bool {
        self.size_greater_than.is_none_or(|g| size > g)
            && self.size_less_than.is_none_or(|l| size < l)
    }
}

impl Rule {
    /// Checks a rule; the message says what to change.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 255 {
            return Err("a rule's id is 1 to 255 characters long".into());
        }
        if self.expiration_days == Some(0) || self.noncurrent_expiration_days == Some(0) {
            return Err(format!(
                "rule {}: expiry is at least 1 day after the object was written",
                self.id
            ));
        }
        for t in &self.transitions {
            if !STORAGE_CLASSES.contains(&t.storage_class.as_str()) {
                return Err(format!(
                    "rule {}: unknown storage class {:?} (one of {})",
                    self.id,
                    t.storage_class,
                    STORAGE_CLASSES.join(", ")
                ));
            }
            if self.expiration_days.is_some_and(|e| e <= t.days) {
                return Err(format!(
                    "rule {}: the transition to {} after {} days comes after the expiry",
                    self.id, t.storage_class, t.days
                ));
            }
        }
        if let (Some(g), Some(l)) = (self.size_greater_than, self.size_less_than) {
            if g >= l {
                return Err(format!(
                    "rule {}: the size filter is empty (greater than {g} and less than {l} bytes)",
                    self.id
                ));
            }
        }
        if self.newer_noncurrent_versions == Some(0) || self.newer_noncurrent_versions > Some(100) {
            return Err(format!(
                "rule {}: newer noncurrent versions is 1 to 100",
                self.id
            ));
        }
        if self.newer_noncurrent_versions.is_some() && self.noncurrent_expiration_days.is_none() {
            return Err(format!(
                "rule {}: newer noncurrent versions goes with a noncurrent version expiration",
                self.id
            ));
        }
        if self.expiration_days.is_none()
            && self.noncurrent_expiration_days.is_none()
            && self.transitions.is_empty()
            && self.abort_incomplete_days.is_none()
            && !self.expired_object_delete_marker
        {
            return Err(format!(
                "rule {}: give an expiration, a noncurrent expiration, a transition or an abort of incomplete uploads",
                self.id
            ));
        }
        Ok(())
    }
}

/// What a lifecycle run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Current versions expired.
    pub expired: u64,
    /// Noncurrent versions removed.
    pub noncurrent_removed: u64,
    /// Delete markers removed (nothing left behind them).
    pub markers_removed: u64,
    /// Objects whose storage class changed.
    pub transitioned: u64,
    /// Multipart uploads aborted.
    pub aborted: u64,
}

impl ObjectStore {
    /// Applies every bucket's enabled rules as of `now_ms`, a day lasting `day_ms`.
    pub fn run_lifecycle(&self, now_ms: i64, day_ms: i64) -> Result<Report, StoreError> {
        let mut rep = Report::default();
        for b in self.buckets()? {
            for rule in b.lifecycle.iter().filter(|r| r.enabled) {
                self.apply_rule(&b.name, rule, now_ms, day_ms, &mut rep)?;
            }
        }
        self.forget_old_completions(now_ms)?;
        Ok(rep)
    }

    fn apply_rule(
        &self,
        bucket: &str,
        rule: &Rule,
        now: i64,
        day: i64,
        rep: &mut Report,
    ) -> Result<(), StoreError> {
        let due = |since: i64, days: u32| since + days as i64 * day <= now;
        let mut after: Option<String> = None;
        loop {
            let page = self.walk_all(bucket, &rule.prefix, after.as_deref(), 500)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for cur in page {
                let key = cur.key.clone();
                if let Some(days) = rule.noncurrent_expiration_days {
                    let keep = rule.newer_noncurrent_versions.unwrap_or(0) as usize;
                    // Newest first: the first `keep` stay whatever their age.
                    for (_, m) in self.noncurrent(bucket, &key)?.into_iter().skip(keep) {
                        if m.delete_marker || !rule.size_matches(m.size) {
                            continue;
                        }
                        if due(m.noncurrent_ms, days) {
                            self.delete_version(bucket, &key, &m.version_label())?;
                            rep.noncurrent_removed += 1;
                        }
                    }
                }
                if cur.delete_marker {
                    if (rule.noncurrent_expiration_days.is_some()
                        || rule.expiration_days.is_some()
                        || rule.expired_object_delete_marker)
                        && self.noncurrent(bucket, &key)?.is_empty()
                    {
                        self.delete_version(bucket, &key, &cur.version_label())?;
                        rep.markers_removed += 1;
                    }
                    continue;
                }
                if !rule.size_matches(cur.size) {
                    continue;
                }
                if rule
                    .expiration_days
                    .is_some_and(|d| due(cur.last_modified_ms, d))
                {
                    let cond = crate::store::WriteIf::Version(cur.version_id.clone());
                    match self.delete_if(bucket, &key, &cond) {
                        Ok(_) => rep.expired += 1,
                        // Written again since it was read: the new object is not due.
                        Err(StoreError::PreconditionFailed(_)) => {}
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                let class = rule
                    .transitions
                    .iter()
                    .filter(|t| due(cur.last_modified_ms, t.days))
                    .max_by_key(|t| t.days)
                    .map(|t| t.storage_class.clone());
                if class.is_some() && class != cur.storage_class {
                    let mut m = cur.clone();
                    m.storage_class = class;
                    self.rewrite(bucket, None, &m)?;
                    rep.transitioned += 1;
                }
            }
        }
        if let Some(days) = rule.abort_incomplete_days {
            for u in self.uploads(bucket)? {
                if u.key.starts_with(&rule.prefix) && due(u.initiated_ms, days) {
                    self.abort(bucket, &u.id)?;
                    rep.aborted += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_checked() {
        let ok = Rule {
            id: "logs".into(),
            prefix: "logs/".into(),
            enabled: true,
            expiration_days: Some(30),
            transitions: vec![Transition {
                days: 7,
                storage_class: "GLACIER".into(),
            }],
            ..Default::default()
        };
        ok.check().unwrap();
        let mut bad = ok.clone();
        bad.transitions[0].storage_class = "COLD".into();
        assert!(bad.check().unwrap_err().contains("unknown storage class"));
        let mut bad = ok.clone();
        bad.transitions[0].days = 40;
        assert!(bad.check().is_err());
        let bad = Rule {
            id: "x".into(),
            ..Default::default()
        };
        assert!(bad.check().is_err());
    }

    /// Issue "Trust what exists", item 11: a rule for large `logs/` objects expired every
    /// object, and a rule keeping the newest noncurrent versions removed them. Filters and
    /// counts apply as S3 applies them.
    #[test]
    fn size_filters_and_newer_noncurrent_versions_hold() {
        use crate::store::{ObjectStore, PutOptions, Versioning};
        use std::sync::Arc;
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(veeps_state::Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(veeps_kms::Kms::open(d.path(), store.clone()).unwrap());
        let s = ObjectStore::open(d.path(), store, kms).unwrap();
        s.create_bucket("life", "prod").unwrap();
        s.set_versioning("life", Versioning::Enabled).unwrap();
        let put = |k: &str, n: usize| {
            s.put("life", k, &vec![b'x'; n][..], PutOptions::default())
                .unwrap()
        };
        put("logs/small", 10);
        put("logs/big", 2000);
        put("other/big", 2000);
        for i in 0..5 {
            put("keep/v", 100 + i);
        }
        let rules = vec![
            Rule {
                id: "big-logs".into(),
                prefix: "logs/".into(),
                enabled: true,
                expiration_days: Some(1),
                size_greater_than: Some(1000),
                ..Default::default()
            },
            Rule {
                id: "versions".into(),
                prefix: "keep/".into(),
                enabled: true,
                noncurrent_expiration_days: Some(1),
                newer_noncurrent_versions: Some(2),
                ..Default::default()
            },
        ];
        for r in &rules {
            r.check().unwrap();
        }
        s.configure("life", |b| {
            b.lifecycle = rules.clone();
            Ok(())
        })
        .unwrap();
        let day = 1000;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let rep = s.run_lifecycle(now + 5 * day, day).unwrap();
        assert_eq!((rep.expired, rep.noncurrent_removed), (1, 2), "{rep:?}");
        assert!(s.head("life", "logs/small").is_ok());
        assert!(s.head("life", "logs/big").is_err());
        assert!(s.head("life", "other/big").is_ok());
        assert_eq!(s.noncurrent("life", "keep/v").unwrap().len(), 2);
        let bad = Rule {
            id: "empty".into(),
            enabled: true,
            expiration_days: Some(1),
            size_greater_than: Some(10),
            size_less_than: Some(5),
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().contains("size filter"));
    }
}
