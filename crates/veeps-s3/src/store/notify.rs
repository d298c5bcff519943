//! Bucket notifications: a bucket's rules name the function to tell of which changes
//! (`s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`...) under which prefix and suffix. An
//! event is written in the same transaction as the change it tells of (S3's event format,
//! one record), so no committed change goes untold; whoever delivers events (functions'
//! queue) takes them from the store and removes each once it holds it itself.

use super::*;
use veeps_state::KvOp;

pub(super) const K_RULES: &str = "s3/notify/";
const K_EVENT: &str = "s3/event/";
/// Rules per bucket.
pub const MAX_RULES: usize = 100;

/// One notification rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotifyRule {
    /// Its id (`configurationId` in the events).
    pub id: String,
    /// The function told.
    pub function: String,
    /// Event patterns, like `s3:ObjectCreated:*`.
    pub events: Vec<String>,
    /// Only keys starting with this.
    pub prefix: String,
    /// Only keys ending with this.
    pub suffix: String,
}

/// An event waiting to be delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingEvent {
    /// The function to tell.
    pub function: String,
    /// The event, in S3's format (`{"Records": [...]}`).
    pub event: serde_json::Value,
}

/// The event names veeps emits.
pub const EVENT_NAMES: &[&str] = &[
    "ObjectCreated:Put",
    "ObjectRemoved:Delete",
    "ObjectRemoved:DeleteMarkerCreated",
];

/// Checks an event pattern: `s3:ObjectCreated:*`, `s3:ObjectRemoved:*`, or a name.
pub fn check_pattern(p: &str) -> Result<(), String> {
    let ok = match p.strip_prefix("s3:") {
        Some("ObjectCreated:*") | Some("ObjectRemoved:*") | Some("*") => true,
        Some(name) => {
            EVENT_NAMES.contains(&name)
                || [
                    "ObjectCreated:Post",
                    "ObjectCreated:Copy",
                    "ObjectCreated:CompleteMultipartUpload",
                ]
                .contains(&name)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{p}\" is not an S3 event; use s3:ObjectCreated:*, s3:ObjectRemoved:*, or one of s3:{}",
            EVENT_NAMES.join(", s3:")
        ))
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    let p = pattern.strip_prefix("s3:").unwrap_or(pattern);
    match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    }
}

/// A key as S3 writes it in events: URL-encoded, spaces as `+`.
fn event_key(k: &str) -> String {
    let mut out = String::new();
    for b in k.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl ObjectStore {
    /// Sets a bucket's rules (none: removes them).
    pub fn set_notifications(&self, bucket: &str, rules: &[NotifyRule]) -> Result<(), StoreError> {
        self.bucket(bucket)?;
        if rules.len() > MAX_RULES {
            return Err(StoreError::InvalidArgument(format!(
                "{} notification rules; a bucket has at most {MAX_RULES}",
                rules.len()
            )));
        }
        for r in rules {
            for e in &r.events {
                check_pattern(e).map_err(StoreError::InvalidArgument)?;
            }
        }
        let k = format!("{K_RULES}{bucket}");
        if rules.is_empty() {
            self.store.kv_delete(&k).map_err(internal)
        } else {
            self.store.kv_put(&k, &rules.to_vec()).map_err(internal)
        }
    }

    /// A bucket's rules.
    pub fn notifications(&self, bucket: &str) -> Vec<NotifyRule> {
        self.store
            .kv_get(&format!("{K_RULES}{bucket}"))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The writes of the events a change to `meta` (named `name`) causes, for the change's
    /// own transaction.
    pub(super) fn event_ops(
        &self,
        bucket: &str,
        name: &str,
        key: &str,
        meta: Option<&ObjectMeta>,
    ) -> Vec<KvOp> {
        let rules = self.notifications(bucket);
        if rules.is_empty() {
            return vec![];
        }
        let now = now_ms();
        let mut out = vec![];
        for r in rules {
            if !key.starts_with(&r.prefix)
                || !key.ends_with(&r.suffix)
                || !r.events.iter().any(|p| matches(p, name))
            {
                continue;
            }
            let time = time::OffsetDateTime::from_unix_timestamp_nanos(now as i128 * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            let mut object = serde_json::json!({
                "key": event_key(key),
                "sequencer": format!("{:016X}", now as u64 * 1000 + (rand::random::<u16>() % 1000) as u64),
            });
            if let Some(m) = meta.filter(|m| !m.delete_marker) {
                object["size"] = m.size.into();
                object["eTag"] = m.etag.trim_matches('"').into();
            }
            if let Some(m) = meta.filter(|m| m.versioned) {
                object["versionId"] = m.version_label().into();
            }
            let event = serde_json::json!({"Records": [{
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": time,
                "eventName": name,
                "userIdentity": {"principalId": "veeps"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": r.id,
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "veeps"},
                        "arn": format!("arn:aws:s3:::{bucket}"),
                    },
                    "object": object,
                },
            }]});
            let k = format!(
                "{K_EVENT}{now:016}-{}",
                hex::encode(rand::random::<[u8; 8]>())
            );
            out.push(KvOp::put(
                k,
                &PendingEvent {
                    function: r.function.clone(),
                    event,
                },
            ));
        }
        out
    }

    /// Events waiting to be delivered, oldest first (at most `limit`).
    pub fn pending_events(&self, limit: usize) -> Vec<(String, PendingEvent)> {
        self.store
            .kv_scan_page::<PendingEvent>(K_EVENT, None, limit)
            .unwrap_or_default()
    }

    /// An event is delivered (its deliverer holds it now).
    pub fn event_delivered(&self, key: &str) {
        if key.starts_with(K_EVENT) {
            let _ = self.store.kv_delete(key);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_match_as_s3_matches_them() {
        assert!(super::matches("s3:ObjectCreated:*", "ObjectCreated:Put"));
        assert!(!super::matches(
            "s3:ObjectCreated:*",
            "ObjectRemoved:Delete"
        ));
        assert!(super::matches(
            "s3:ObjectRemoved:Delete",
            "ObjectRemoved:Delete"
        ));
        assert!(!super::matches(
            "s3:ObjectRemoved:Delete",
            "ObjectRemoved:DeleteMarkerCreated"
        ));
        assert!(super::check_pattern("s3:ObjectCreated:*").is_ok());
        assert!(super::check_pattern("ObjectCreated:*").is_err());
        assert!(super::check_pattern("s3:ObjectEaten:*").is_err());
        assert_eq!(super::event_key("a b/ü+.jpg"), "a+b/%C3%BC%2B.jpg");
    }
}
