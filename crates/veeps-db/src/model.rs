//! What a cluster is: its declared spec, its recorded nodes and endpoints, and the
//! PostgreSQL configuration veeps writes for each node.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// A cluster as declared by `db_cluster` (secrets kept apart, sealed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterSpec {
    /// Its environment.
    pub env: String,
    /// Its name (unique in the environment).
    pub name: String,
    /// PostgreSQL major version (15 is what this host has).
    pub engine_version: String,
    /// Writer plus readers.
    pub instance_count: u32,
    /// CPUs per node.
    pub cpu: f64,
    /// MiB of memory per node.
    pub memory_mb: u64,
    /// Subnets nodes are spread over.
    pub subnets: Vec<String>,
    /// Security groups of nodes and endpoints.
    pub security_groups: Vec<String>,
    /// The database created at first start.
    pub database_name: String,
    /// The superuser's name.
    pub master_username: String,
    /// The port of nodes and endpoints.
    pub port: u16,
    /// Days base backups and WAL are kept (0: no backups).
    pub backup_retention_days: u32,
    /// `HH:MM-HH:MM` (UTC) in which the daily base backup is taken.
    pub backup_window: String,
    /// Replicas that confirm a commit before it is acknowledged.
    pub synchronous_replicas: u32,
    /// Settings for `postgresql.conf`.
    pub parameters: BTreeMap<String, String>,
    /// Restore into this cluster at creation.
    pub restore: Option<Restore>,
    /// DNS names clients connect by (on the nodes' certificates, so `verify-full` holds).
    #[serde(default)]
    pub dns_names: Vec<String>,
}

/// Where a new cluster's data comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Restore {
    /// A snapshot (base backup) by name, as `veeps db backups` lists them.
    pub snapshot: Option<String>,
    /// A cluster (`ENV/NAME` or `NAME` in the same environment) to restore from...
    pub source_cluster: Option<String>,
    /// ...as it was at this time (RFC 3339; latest when `None`).
    pub to_time: Option<String>,
}

/// A node's role.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes.
    Writer,
    /// A hot standby streaming from the writer.
    Reader,
}

/// A node as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRec {
    /// Its name (`CLUSTER-N`).
    pub name: String,
    /// Its subnet.
    pub subnet: String,
    /// Its role.
    pub role: Role,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
}

/// A cluster as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterRec {
    /// The declared spec.
    pub spec: ClusterSpec,
    /// The `veeps` internal security group letting nodes and endpoints talk.
    pub internal_sg: String,
    /// Nodes, by name.
    pub nodes: Vec<NodeRec>,
    /// The writer endpoint's address and namespace.
    pub writer_ep: (Ipv4Addr, String),
    /// The reader endpoint's address and namespace.
    pub reader_ep: (Ipv4Addr, String),
    /// The master password and the replication password, sealed by KMS.
    pub secrets: Vec<u8>,
    /// Whether the cluster was initialised (the first writer ran initdb or a restore).
    pub initialised: bool,
    /// The writer confirms commits alone (since a failover or switchover) until enough
    /// readers have everything it wrote; while set, no reader may be promoted by a
    /// failover (one that lacks a confirmed commit could be).
    #[serde(default)]
    pub sync_relaxed: bool,
}

impl ClusterRec {
    /// The current writer, if one is recorded.
    pub fn writer(&self) -> Option<&NodeRec> {
        self.nodes.iter().find(|n| n.role == Role::Writer)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeRec> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Passwords, sealed together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    /// The superuser's password.
    pub master: String,
    /// `veeps_replicator`'s password.
    pub replication: String,
}

/// The role replicas connect as.
pub const REPLICATOR: &str = "veeps_replicator";

/// Settings veeps owns: a `parameters` entry may not change them.
pub const RESERVED: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "hba_file",
    "data_directory",
    "wal_level",
    "hot_standby",
    "archive_mode",
    "archive_command",
    "restore_command",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "wal_log_hints",
    "cluster_name",
];

/// A value as `postgresql.conf` reads it: single-quoted, with backslashes and quotes
/// escaped (PostgreSQL reads `\\` and `''` inside quotes), so no value can end its quotes.
pub fn quote_setting(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Checks `parameters`: well-formed, known names, not veeps' own, values without line
/// breaks or control characters; returns what is wrong with each.
pub fn check_parameters(p: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let known = crate::pg::known_settings();
    let mut out = vec![];
    for (k, v) in p {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            out.push((
                k.clone(),
                format!("{k:?} is not a setting name (letters, digits, _ and .)"),
            ));
            continue;
        }
        if v.chars().any(|c| c.is_control()) {
            out.push((
                k.clone(),
                format!("the value of {k} holds a line break or a control character"),
            ));
            continue;
        }
        if RESERVED.contains(&k.as_str()) {
            out.push((
                k.clone(),
                format!("{k} is set by veeps (it runs replication, TLS and the endpoints)"),
            ));
        } else if !known.is_empty() && !known.contains_key(k) {
            let hint = known
                .keys()
                .min_by_key(|c| strsim_distance(c, k))
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
            out.push((
                k.clone(),
                format!("PostgreSQL 15 has no setting named {k}{hint}"),
            ));
        }
    }
    out
}

fn strsim_distance(a: &str, b: &str) -> usize {
    // Levenshtein distance, for suggestions.
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where a node replicates from (readers only).
pub struct Upstream<'a> {
    /// The writer's address.
    pub host: Ipv4Addr,
    /// The slot kept for this node on the writer.
    pub slot: &'a str,
}

/// `postgresql.conf` for a node.
pub fn postgresql_conf(
    spec: &ClusterSpec,
    node: &NodeRec,
    readers: &[String],
    upstream: Option<Upstream<'_>>,
    secrets: &Secrets,
    archive: bool,
) -> String {
    use crate::pg::{SOCKETS, SPOOL, TLS};
    let mut c = String::new();
    let q = |s: &str| quote_setting(s);
    let shared = (spec.memory_mb / 4).clamp(16, 8192);
    let _ = writeln!(
        c,
        "# Written by veeps for {}/{} ({}); edits are overwritten. Set `parameters` instead.",
        spec.env, spec.name, node.name
    );
    let _ = writeln!(
        c,
        "cluster_name = {}",
        q(&format!("{}-{}", spec.name, node.name))
    );
    // Its own address and, while it is the writer, the writer endpoint's: the namespace
    // holds nothing else.
    let _ = writeln!(c, "listen_addresses = '*'");
    let _ = writeln!(c, "port = {}", spec.port);
    let _ = writeln!(c, "unix_socket_directories = {}", q(SOCKETS));
    let _ = writeln!(c, "ssl = on");
    let _ = writeln!(c, "ssl_cert_file = {}", q(&format!("{TLS}/server.crt")));
    let _ = writeln!(c, "ssl_key_file = {}", q(&format!("{TLS}/server.key")));
    let _ = writeln!(c, "ssl_ca_file = {}", q(&format!("{TLS}/ca.crt")));
    let _ = writeln!(c, "password_encryption = scram-sha-256");
    let _ = writeln!(c, "wal_level = replica");
    let _ = writeln!(c, "wal_log_hints = on");
    let _ = writeln!(c, "max_wal_senders = 16");
    let _ = writeln!(c, "max_replication_slots = 16");
    let _ = writeln!(c, "hot_standby = on");
    let _ = writeln!(c, "hot_standby_feedback = on");
    let _ = writeln!(c, "wal_keep_size = '256MB'");
    let _ = writeln!(c, "shared_buffers = '{shared}MB'");
    let _ = writeln!(c, "logging_collector = off");
    let _ = writeln!(c, "log_line_prefix = '%m [%p] %q%u@%d '");
    let _ = writeln!(c, "log_connections = off");
    let _ = writeln!(c, "dynamic_shared_memory_type = posix");
    if archive {
        let _ = writeln!(c, "archive_mode = always");
        let _ = writeln!(
            c,
            "archive_command = 'test ! -f {SPOOL}/%f && cp %p {SPOOL}/%f.part && mv {SPOOL}/%f.part {SPOOL}/%f'"
        );
    } else {
        let _ = writeln!(c, "archive_mode = off");
    }
    let _ = writeln!(c, "recovery_target_timeline = 'latest'");
    if let Some(u) = upstream {
        let conninfo = format!(
            "host={} port={} user={REPLICATOR} password={} application_name={} sslmode=require",
            u.host, spec.port, secrets.replication, node.name
        );
        let _ = writeln!(c, "primary_conninfo = {}", q(&conninfo));
        let _ = writeln!(c, "primary_slot_name = {}", q(u.slot));
    }
    let sync = spec.synchronous_replicas.min(readers.len() as u32);
    if node.role == Role::Writer && sync > 0 {
        let _ = writeln!(
            c,
            "synchronous_standby_names = {}",
            q(&format!(
                "ANY {sync} ({})",
                readers
                    .iter()
                    .map(|r| format!("\"{r}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        );
        let _ = writeln!(c, "synchronous_commit = on");
    }
    for (k, v) in &spec.parameters {
        let _ = writeln!(c, "{k} = {}", q(v));
    }
    c
}

/// `pg_hba.conf`: the local socket (veeps, as operator), replication between nodes, and
/// TLS connections from the endpoints and the security groups' sources only.
pub fn pg_hba(nodes: &[Ipv4Addr], endpoints: &[Ipv4Addr], sources: &[Ipv4Net]) -> String {
    let mut c = String::from(
        "# Written by veeps; edits are overwritten.\n\
         local all all trust\n\
         local replication all trust\n",
    );
    for n in nodes {
        let _ = writeln!(c, "hostssl replication {REPLICATOR} {n}/32 scram-sha-256");
        let _ = writeln!(c, "hostssl all all {n}/32 scram-sha-256");
    }
    for e in endpoints {
        let _ = writeln!(c, "hostssl all all {e}/32 scram-sha-256");
    }
    for s in sources {
        let _ = writeln!(c, "hostssl all all {s} scram-sha-256");
    }
    c
}

/// A node's slot name on the writer.
pub fn slot(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_against_postgresql() {
        let p: BTreeMap<String, String> = [
            ("work_mem".to_string(), "8MB".to_string()),
            ("wrok_mem".to_string(), "8MB".to_string()),
            ("port".to_string(), "1".to_string()),
        ]
        .into();
        let bad = check_parameters(&p);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad
            .iter()
            .any(|(k, m)| k == "port" && m.contains("set by veeps")));
        if !crate::pg::known_settings().is_empty() {
            assert!(bad
                .iter()
                .any(|(k, m)| k == "wrok_mem" && m.contains("work_mem")));
        }
    }

    /// Issue "Trust what exists", item 23: a value with a newline or a backslash could
    /// add lines to `postgresql.conf` (say, `archive_command`). Such values are refused,
    /// and quoting holds for the rest.
    #[test]
    fn hostile_parameters_cannot_inject_settings() {
        let p: BTreeMap<String, String> = [
            (
                "work_mem".to_string(),
                "8MB'\narchive_command = 'touch /tmp/x".to_string(),
            ),
            ("search_path\nport".to_string(), "1".to_string()),
            (
                "search_path".to_string(),
                "ends with a backslash \\".to_string(),
            ),
        ]
        .into();
        let bad = check_parameters(&p);
        assert!(
            bad.iter()
                .any(|(k, m)| k == "work_mem" && m.contains("line break")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|(k, m)| k.contains('\n') && m.contains("setting name")),
            "{bad:?}"
        );
        assert!(!bad.iter().any(|(k, _)| k == "search_path"), "{bad:?}");
        // What is accepted stays one quoted value on one line.
        assert_eq!(quote_setting("a\\'; port = 1"), "'a\\\\''; port = 1'");
        assert_eq!(quote_setting("ends \\"), "'ends \\\\'");
    }

    #[test]
    fn hba_admits_only_tls_from_known_sources() {
        let h = pg_hba(
            &["10.0.1.5".parse().unwrap()],
            &["10.0.1.9".parse().unwrap()],
            &["10.0.2.0/24".parse().unwrap()],
        );
        assert!(h.contains("hostssl replication veeps_replicator 10.0.1.5/32"));
        assert!(h.contains("hostssl all all 10.0.2.0/24 scram-sha-256"));
        assert!(!h.lines().any(|l| l.starts_with("host ")));
    }
}
