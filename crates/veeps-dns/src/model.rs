//! Zones, records and health checks as the DNS service keeps them.

use serde::{Deserialize, Serialize};

/// A hosted zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZoneSpec {
    /// `Z` and a hash of its environment and address.
    pub id: String,
    /// The environment that declared it.
    pub env: String,
    /// Its apex, like `example.com`.
    pub name: String,
    /// The VPCs it is private to; empty: public.
    #[serde(default)]
    pub vpcs: Vec<String>,
    /// Who may transfer it (AXFR over TCP).
    #[serde(default)]
    pub allow_transfer: Vec<ipnet::IpNet>,
    /// Its name servers (the apex NS records; the first is the SOA's primary).
    pub name_servers: Vec<String>,
    /// The SOA serial: bumped by every change of the zone.
    pub serial: u32,
}

/// A routing policy's role in failover.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Failover {
    /// Answered while healthy.
    Primary,
    /// Answered while the primary is not.
    Secondary,
}

/// An alias: the addresses of a load balancer, followed as they change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alias {
    /// The target's id or ARN.
    pub target: String,
    /// An alias with no address counts as unhealthy.
    pub evaluate_target_health: bool,
}

/// A record set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordSpec {
    /// Its id.
    pub id: String,
    /// Its zone.
    pub zone_id: String,
    /// Its owner name, fully qualified.
    pub name: String,
    /// `A`, `AAAA`, `CNAME`, `TXT`, `MX`, `SRV`, `CAA` or `NS`.
    pub rtype: String,
    /// Seconds it may be cached.
    pub ttl: u32,
    /// Its values, as Route 53 takes them.
    #[serde(default)]
    pub values: Vec<String>,
    /// Or an alias.
    #[serde(default)]
    pub alias: Option<Alias>,
    /// Tells record sets of one name and type apart.
    #[serde(default)]
    pub set_identifier: Option<String>,
    /// Weighted routing.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Failover routing.
    #[serde(default)]
    pub failover: Option<Failover>,
    /// Answered only while this check passes.
    #[serde(default)]
    pub health_check_id: Option<String>,
}

/// A health check, probed from the host as Route 53's checkers probe from the internet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckSpec {
    /// Its id.
    pub id: String,
    /// The environment that declared it.
    pub env: String,
    /// `HTTP`, `HTTPS` or `TCP`.
    pub kind: String,
    /// The address or name probed.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path (HTTP, HTTPS).
    pub path: String,
    /// Seconds between probes.
    pub interval_secs: u64,
    /// Consecutive results that change its status.
    pub failure_threshold: u32,
}
