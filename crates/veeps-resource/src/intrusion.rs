//! The contract between listeners and intrusion detection: a listener reports each failed
//! authentication and asks whether a client is banned; the ban part decides.

use std::net::IpAddr;

/// Failure reports and ban answers.
pub trait Intrusion: Send + Sync {
    /// A client at `ip` failed to authenticate to `source` (`api`, `s3`...).
    fn failed(&self, source: &'static str, ip: IpAddr);
    /// Whether `ip` is banned now.
    fn banned(&self, ip: IpAddr) -> bool;
}
