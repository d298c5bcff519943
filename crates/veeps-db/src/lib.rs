//! Databases: PostgreSQL clusters run by veeps as their operator.
//!
//! A `db_cluster` is a writer and readers, each a real `postgres` (PostgreSQL 15) run as an
//! unprivileged system user in its own endpoint namespace in the cluster's subnets, readers
//! streaming from the writer through replication slots, TLS on every connection with a
//! certificate from veeps' CA. The writer endpoint is an address that moves to the current
//! writer (announced by gratuitous ARP); the reader endpoint is a lean TCP proxy in a
//! namespace of its own spreading connections over readers. [`service::Dbs`] supervises them:
//! automatic failover with fencing, switchover, rebuilds, resizing, rolling restarts,
//! backups into object storage and point-in-time restore ([`backup`]).

pub mod backup;
pub mod http;
pub mod model;
pub mod part;
pub mod pg;
pub mod proxy;
pub mod resources;
pub mod service;

pub use service::Dbs;

/// Test hook: when the server's `VEEPS_FAILPOINT` names `name`, the process dies here at
/// once (as a `kill -9` would), so tests can prove a crash at that point loses nothing.
pub fn failpoint(name: &str) {
    if std::env::var("VEEPS_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint reached; aborting");
        std::process::abort();
    }
}
