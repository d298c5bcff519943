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
        if self.expiration_days.is_none()
            && self.noncurrent_expiration_days.is_none()
            && self.transitions.is_empty()
            && self.abort_incomplete_days.is_none()
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
                    for (_, m) in self.noncurrent(bucket, &key)? {
                        if due(m.noncurrent_ms, days) {
                            self.delete_version(bucket, &key, &m.version_label())?;
                            rep.noncurrent_removed += 1;
                        }
                    }
                }
                if cur.delete_marker {
                    if (rule.noncurrent_expiration_days.is_some() || rule.expiration_days.is_some())
                        && self.noncurrent(bucket, &key)?.is_empty()
                    {
                        self.delete_version(bucket, &key, &cur.version_label())?;
                        rep.markers_removed += 1;
                    }
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
}
