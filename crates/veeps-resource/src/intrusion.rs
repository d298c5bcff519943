//! The contract between listeners and intrusion detection: a listener reports each failed
//! authentication and asks whether a client is banned; the ban part decides.

use ipnet::IpNet;
use std::net::IpAddr;

/// Failure reports and ban answers.
pub trait Intrusion: Send + Sync {
    /// A client at `ip` failed to authenticate to `source` (`api`, `s3`...).
    fn failed(&self, source: &'static str, ip: IpAddr);
    /// The same for a listener of environment `env` (a balancer's): only that
    /// environment's policies count it.
    fn failed_in(&self, source: &'static str, env: &str, ip: IpAddr) {
        let _ = env;
        self.failed(source, ip)
    }
    /// Whether `ip` is banned now.
    fn banned(&self, ip: IpAddr) -> bool;
    /// The address groups banned now (see [`group`]), with a number that changes whenever
    /// they do (for listeners in other processes, which are sent the list when it changes).
    fn banned_groups(&self) -> (u64, Vec<IpNet>) {
        (self.ban_generation(), vec![])
    }
    /// The number [`Intrusion::banned_groups`] gives, alone (cheap).
    fn ban_generation(&self) -> u64 {
        0
    }
}

/// A client's address as counted: an IPv4-mapped IPv6 address is its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address group a client is counted and banned by: an IPv4 address (IPv4-mapped IPv6
/// included), or an IPv6 address's /64.
pub fn group(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpNet::from(IpAddr::V4(v4)),
            None => ipnet::Ipv6Net::new(v6, 64)
                .map(|n| IpNet::V6(n.trunc()))
                .unwrap_or_else(|_| IpNet::from(ip)),
        },
        IpAddr::V4(_) => IpNet::from(ip),
    }
}
