//! The wire contract of veeps' API: the bodies the server's handlers send and the client
//! reads, as one set of serde types. A handler returns one of these (never an ad hoc
//! `json!`), and the CLI reads fields by name through them, so a renamed field is a
//! compile error on both sides instead of an empty column. `--json` prints them as they
//! are. Errors are [`ApiError`] with the HTTP status that goes with them.

pub mod ban;
pub mod iam;
pub mod plan;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veeps_lang::config::Bundle;

/// A plan or apply request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRequest {
    /// The configuration (omitted when `from_version` is given).
    #[serde(default)]
    pub bundle: Option<Bundle>,
    /// `-var` values.
    #[serde(default)]
    pub vars: Vec<(String, String)>,
    /// Plan or apply destruction.
    #[serde(default)]
    pub destroy: bool,
    /// Use the configuration recorded as this history version (rollback).
    #[serde(default)]
    pub from_version: Option<u64>,
    /// Apply only if the plan still has this hash (the one the user approved).
    #[serde(default)]
    pub plan_hash: Option<String>,
    /// The approved plan's time: what `plantimestamp()` is during its apply.
    #[serde(default)]
    pub plan_time: Option<String>,
}

/// An error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// One line.
    pub error: String,
    /// Configuration diagnostics, rendered with source excerpts.
    #[serde(default)]
    pub text: Option<String>,
    /// Configuration diagnostics as data.
    #[serde(default)]
    pub diagnostics: Vec<DiagnosticJson>,
}

/// A diagnostic as data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosticJson {
    /// What is wrong.
    pub summary: String,
    /// `file:line:col`.
    pub position: Option<String>,
    /// Why and what to do.
    pub detail: Option<String>,
}

impl DiagnosticJson {
    /// Converts diagnostics.
    pub fn from_diags(d: &veeps_lang::Diagnostics) -> Vec<DiagnosticJson> {
        d.0.iter()
            .map(|d| DiagnosticJson {
                summary: d.summary.clone(),
                position: d.position(),
                detail: d.detail.clone(),
            })
            .collect()
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The server's version.
    pub version: String,
    /// This run of the server.
    pub boot_id: String,
    /// Its data directory.
    pub data_dir: String,
}

/// One environment, in `GET /v1/envs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvSummary {
    /// Its name.
    pub name: String,
    /// Its last applied version.
    pub version: u64,
    /// When.
    pub updated_at: String,
}

/// One recorded resource, in `GET /v1/envs/ENV/state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceSummary {
    /// Its address.
    pub address: String,
    /// Its type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `ready`, `creating` (a create may not have finished) or `tainted`.
    pub status: String,
    /// When it last changed.
    pub updated_at: String,
    /// Addresses it depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// One resource with its attributes (sensitive ones masked), `GET /v1/envs/ENV/resource`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceDetail {
    /// What the listing shows.
    #[serde(flatten)]
    pub summary: ResourceSummary,
    /// Attribute values by name.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// One output, in `GET /v1/envs/ENV/outputs` (a map by name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputValue {
    /// The value; `{"$sensitive": true}` for a sensitive one unless revealed.
    pub value: serde_json::Value,
    /// Declared `sensitive = true`.
    pub sensitive: bool,
}

/// Counts of what an apply changed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ChangeCounts {
    /// Created.
    pub add: u64,
    /// Updated in place.
    pub change: u64,
    /// Destroyed.
    pub destroy: u64,
}

/// One applied version, in `GET /v1/envs/ENV/history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryRow {
    /// Its number, from 1.
    pub version: u64,
    /// When.
    pub time: String,
    /// Who.
    pub caller: String,
    /// `apply`, `destroy` or `rollback to N`.
    pub operation: String,
    /// `ok`, `partial` or `failed`.
    pub status: String,
    /// What changed.
    pub summary: ChangeCounts,
    /// Errors, if any.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// `GET /v1/audit/verify`: the chain holds (`ok`, with its length) or breaks at an entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditCheck {
    /// Whether every entry chains to the one before.
    pub ok: bool,
    /// Entries checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// The first entry whose hash does not chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_entry: Option<u64>,
}

/// `GET /v1/s3/credentials`: the root S3 key pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// `POST /v1/s3/lifecycle/run`'s request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LifecycleRun {
    /// Apply the rules as if this many lifecycle days had passed.
    #[serde(default)]
    pub advance_days: u32,
}

/// What a lifecycle pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LifecycleReport {
    /// Current versions expired.
    pub expired: u64,
    /// Noncurrent versions removed.
    pub noncurrent_removed: u64,
    /// Expired delete markers removed.
    pub markers_removed: u64,
    /// Versions moved to another storage class.
    pub transitioned: u64,
    /// Incomplete multipart uploads aborted.
    pub aborted: u64,
}

/// A built image (`GET /v1/images`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageView {
    /// `img-` and a content hash.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Builds of that name so far.
    pub version: u64,
    /// What runs.
    pub entrypoint: Vec<String>,
    /// Bytes.
    pub size: u64,
    /// When it was built (RFC 3339).
    pub created: String,
}

/// An image that rebuilds itself (`GET /v1/envs/{env}/image-updates`), and how its last
/// run went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageUpdateView {
    /// The `image` resource's address.
    pub address: String,
    /// The image's name.
    pub name: String,
    /// When it rebuilds (cron, UTC).
    pub schedule: String,
    /// What its builds may connect to.
    pub egress: Vec<String>,
    /// When the last run finished (RFC 3339), if one has.
    pub last_at: Option<String>,
    /// `unchanged`, `updated` or `failed`.
    pub result: Option<String>,
    /// What happened.
    pub detail: Option<String>,
    /// The image its inputs stand for now.
    pub image_id: Option<String>,
    /// When the last new version was made (RFC 3339), if one was.
    #[serde(default)]
    pub last_update_at: Option<String>,
    /// What that update did.
    #[serde(default)]
    pub last_update: Option<String>,
}

/// An auto scaling group and its instances (`GET /v1/envs/{env}/instances`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupView {
    /// `asg-...`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Instances it wants.
    pub desired: u32,
    /// Bounds.
    pub min_size: u32,
    /// Bounds.
    pub max_size: u32,
    /// The image its template runs.
    pub image_id: String,
    /// Its instances.
    pub instances: Vec<InstanceView>,
}

/// One instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceView {
    /// `i-` and 8 hex digits.
    pub id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its address.
    pub address: String,
    /// The template fingerprint it runs.
    pub fingerprint: String,
    /// The image it runs.
    pub image_id: String,
    /// When it started (ms since the epoch).
    pub launched_ms: i64,
    /// `Pending`, `InService` or `Terminating`.
    pub lifecycle: String,
    /// Its supervisor's (shim's) process id.
    pub pid: u32,
    /// Consecutive failed health checks.
    pub failures: u32,
}

/// Something that happened to a group (`GET /v1/envs/{env}/groups/{name}/activity`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActivityView {
    /// When (RFC 3339).
    pub time: String,
    /// What.
    pub description: String,
    /// Why.
    pub cause: String,
}

/// A balancer's target group and its targets as the balancer sees them
/// (`GET /v1/envs/{env}/targets`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetGroupView {
    /// The balancer's name.
    pub load_balancer: String,
    /// The group's name.
    pub target_group: String,
    /// The group's id.
    pub target_group_id: String,
    /// Its targets.
    pub targets: Vec<TargetView>,
}

/// One target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetView {
    /// `ADDRESS:PORT`.
    pub target: String,
    /// `healthy`, `unhealthy` or `draining`.
    pub state: String,
    /// Requests it serves now.
    pub in_flight: usize,
}

/// A database cluster's state (`GET /v1/envs/{env}/db/{name}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbStatus {
    /// The cluster.
    pub cluster: String,
    /// Its environment.
    pub env: String,
    /// The writer endpoint, `ADDRESS:PORT`.
    pub endpoint: String,
    /// The reader endpoint, `ADDRESS:PORT`.
    pub reader_endpoint: String,
    /// Where the writer endpoint leads now.
    pub writer_targets: Vec<String>,
    /// Where the reader endpoint leads now.
    pub reader_targets: Vec<String>,
    /// Its nodes.
    pub nodes: Vec<DbNode>,
    /// What a commit waits for: `off` (the writer alone, as declared), `on` (as many
    /// readers as declared), `relaxed` (the writer alone until its readers catch up after
    /// a failover; no failover meanwhile).
    #[serde(default)]
    pub synchronous: String,
}

/// One database node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbNode {
    /// Its name.
    pub name: String,
    /// `writer` or `reader`.
    pub role: String,
    /// Its address.
    pub address: String,
    /// Its subnet.
    pub subnet: String,
    /// Serving in its role.
    pub healthy: bool,
    /// Replication lag behind the writer.
    pub lag_bytes: i64,
    /// The same, in seconds.
    pub lag_seconds: f64,
    /// The postmaster's process id, when it runs.
    pub pid: Option<u32>,
}

/// Something that happened to a cluster (`GET .../events`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbEvent {
    /// When (ms since the epoch).
    pub ts: i64,
    /// `created`, `failover`, `switchover`, `rebuilt`, `restarted`, `error`...
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// A base backup or snapshot (`GET .../backups`, `POST .../backups`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbBackup {
    /// Its name.
    pub name: String,
    /// When it finished (ms since the epoch).
    pub time_ms: i64,
    /// Bytes.
    pub size: u64,
    /// `automated` or `manual`.
    pub kind: String,
}

/// Body of `POST .../failover`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbFailover {
    /// The node to promote (the most caught-up reader when absent).
    #[serde(default)]
    pub to: Option<String>,
}

/// Body of `POST .../backups`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbSnapshot {
    /// The snapshot's name.
    #[serde(default)]
    pub name: Option<String>,
}

/// Body of `POST .../restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbRestore {
    /// The cluster to restore into.
    #[serde(default)]
    pub new_cluster: Option<String>,
    /// A point in time (RFC 3339).
    #[serde(default)]
    pub to_time: Option<String>,
    /// A snapshot's name.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// A restored cluster (reply to `POST .../restore`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbRestored {
    /// Its name.
    pub cluster: String,
    /// Its writer endpoint.
    pub endpoint: String,
    /// Its reader endpoint.
    pub reader_endpoint: String,
}

/// A message answering an operation (`{"message": ...}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Done {
    /// What was done.
    pub message: String,
}

/// Where and how an operator's `psql` connects (`GET .../psql`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PsqlTarget {
    /// The namespace to run it in (the host's when empty).
    pub netns: String,
    /// Its environment (`PGHOST`, `PGPASSWORD`...).
    pub env: BTreeMap<String, String>,
}

/// One log line (`GET /v1/envs/{env}/logs`, one per NDJSON line when following).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// When, in ms since the epoch.
    pub ts: i64,
    /// The environment (`system` for the server and host).
    pub env: String,
    /// The log group (like an auto scaling group's name, or `server`).
    pub group: String,
    /// Where it came from within the group (an instance, a component).
    pub source: String,
    /// `stdout`, `stderr`, `access`, `log`...
    pub stream: String,
    /// The text.
    pub text: String,
}

/// A metric series' identity (`GET /v1/envs/{env}/metrics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricName {
    /// The metric.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A series' values per period (`GET /v1/envs/{env}/metrics/query`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricSeries {
    /// The metric.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `(period start in ms, value)`, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// An alarm and its history (`GET /v1/envs/{env}/alarms[/{name}]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlarmView {
    /// Its environment.
    pub env: String,
    /// Its name.
    pub name: String,
    /// Its definition, as declared.
    pub spec: serde_json::Value,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// Why.
    pub reason: String,
    /// When it was last evaluated (ms since the epoch).
    pub evaluated_at: i64,
    /// State changes, newest last.
    pub history: Vec<AlarmTransition>,
}

/// One change of an alarm's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlarmTransition {
    /// When (RFC 3339).
    pub time: String,
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// One delivery of a topic's message (`GET /v1/envs/{env}/topics/{name}/deliveries`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeliveryView {
    /// Its sequence number within the topic.
    pub seq: u64,
    /// When the message was published.
    pub time: String,
    /// The subscriber.
    pub subscription: SubscriptionView,
    /// The subject.
    pub subject: String,
    /// `delivered`, `failed` or `pending`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: Option<String>,
}

/// A topic's subscriber.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionView {
    /// `webhook`, `email` or `slack`.
    pub protocol: String,
    /// A URL or an email address.
    pub endpoint: String,
}

/// An environment's lock (`GET /v1/envs/{env}/lock`: `{"lock": null}` when free;
/// `DELETE`: `{"removed": ...}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockView {
    /// A unique lock id.
    pub id: String,
    /// The caller.
    pub who: String,
    /// What they are doing (`apply`, `destroy`).
    pub operation: String,
    /// Since when.
    pub since: String,
}

/// The answer about an environment's lock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockState {
    /// The lock held now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockView>,
    /// The lock a force-unlock removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<LockView>,
}

/// One audit log entry (`GET /v1/audit`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditEntryView {
    /// Its sequence number, from 1.
    pub seq: u64,
    /// When.
    pub time: String,
    /// Who (a token name, or `anonymous`).
    pub who: String,
    /// From where.
    pub source: String,
    /// What (method and path).
    pub action: String,
    /// The HTTP status.
    pub result: u16,
    /// The hash of the previous entry.
    pub prev_hash: String,
    /// The hash of this entry.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shape is what clients already parse: these strings are the contract.
    #[test]
    fn bodies_keep_their_field_names() {
        let check = |v: serde_json::Value, want: &str| {
            assert_eq!(serde_json::to_string(&v).unwrap(), want);
        };
        let r = ResourceDetail {
            summary: ResourceSummary {
                address: "random_id.x".into(),
                type_name: "random_id".into(),
                status: "ready".into(),
                updated_at: "t".into(),
                dependencies: vec![],
            },
            attributes: [("hex".to_string(), serde_json::json!("ab"))].into(),
        };
        check(
            serde_json::to_value(&r).unwrap(),
            r#"{"address":"random_id.x","type":"random_id","status":"ready","updated_at":"t","dependencies":[],"attributes":{"hex":"ab"}}"#,
        );
        let back: ResourceDetail =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        check(
            serde_json::to_value(AuditCheck {
                ok: false,
                entries: None,
                first_bad_entry: Some(7),
            })
            .unwrap(),
            r#"{"ok":false,"first_bad_entry":7}"#,
        );
        check(
            serde_json::to_value(HistoryRow {
                version: 2,
                time: "t".into(),
                caller: "c".into(),
                operation: "apply".into(),
                status: "ok".into(),
                summary: ChangeCounts {
                    add: 1,
                    change: 0,
                    destroy: 3,
                },
                errors: vec![],
            })
            .unwrap(),
            r#"{"version":2,"time":"t","caller":"c","operation":"apply","status":"ok","summary":{"add":1,"change":0,"destroy":3},"errors":[]}"#,
        );
        check(
            serde_json::to_value(InstanceView {
                id: "i-1".into(),
                lifecycle: "InService".into(),
                pid: 7,
                ..Default::default()
            })
            .unwrap(),
            r#"{"id":"i-1","subnet_id":"","address":"","fingerprint":"","image_id":"","launched_ms":0,"lifecycle":"InService","pid":7,"failures":0}"#,
        );
        check(
            serde_json::to_value(TargetGroupView {
                load_balancer: "web".into(),
                target_group: "app".into(),
                target_group_id: "tg-1".into(),
                targets: vec![TargetView {
                    target: "10.0.0.5:80".into(),
                    state: "healthy".into(),
                    in_flight: 1,
                }],
            })
            .unwrap(),
            r#"{"load_balancer":"web","target_group":"app","target_group_id":"tg-1","targets":[{"target":"10.0.0.5:80","state":"healthy","in_flight":1}]}"#,
        );
    }
}

/// A value to encrypt (`POST /v1/kms/{env}/encrypt`) or decrypt (`.../decrypt`), and the
/// answer: a `kmscrypt::` value, or the plaintext.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KmsValue {
    /// The plaintext, or the `kmscrypt::` value.
    pub value: String,
}

/// A signed digest of the audit entries `from_entry..=to_entry`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditDigest {
    /// Its number, from 1.
    pub seq: u64,
    /// The first entry it covers.
    pub from_entry: u64,
    /// The last entry it covers.
    pub to_entry: u64,
    /// That last entry's hash (the chain ties it to every earlier entry).
    pub last_entry_hash: String,
    /// The hash of the previous digest ("" for the first).
    pub prev_digest: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// The public key that verifies it (hex).
    pub public_key: String,
    /// The Ed25519 signature of everything above (hex).
    pub signature: String,
}

/// What checking the trail found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailReport {
    /// Entries kept and checked.
    pub entries: u64,
    /// Digests kept and checked.
    pub digests: u64,
    /// The last entry a digest seals (0: none yet).
    pub sealed_through: u64,
    /// The newest anchor given (0: none).
    pub anchored_through: u64,
    /// The first problem found, naming what is wrong (`None`: intact).
    pub problem: Option<String>,
    /// The entry the problem is at, when it is at one.
    pub first_bad_entry: Option<u64>,
}

/// `POST /v1/audit/trail`: the digests kept elsewhere to check the trail against.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrailCheck {
    /// Exported digests (anchors); the newest one's public key is trusted.
    pub anchors: Vec<AuditDigest>,
    /// Check only entries and digests from this time on (RFC 3339).
    #[serde(default)]
    pub from: Option<String>,
}

/// `POST /v1/audit/seal`: the digest made, if there was anything new to seal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// The digest.
    pub digest: Option<AuditDigest>,
    /// Where its copy was written.
    pub exported: Option<String>,
    /// Objects of the `veeps-audit` bucket that sealed entries past the archive age went
    /// to (`audit/DATE/entries-FROM-TO.jsonl`).
    #[serde(default)]
    pub archived: Vec<String>,
}

/// `POST /v1/kms/{env}/export-key` (with `key` empty) and `.../import-key`: an environment's
/// key sealed with a passphrase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KmsKey {
    /// The passphrase sealing the key.
    pub passphrase: String,
    /// The exported key (`veeps-key::...`); empty when asking for one.
    #[serde(default)]
    pub key: String,
}
