//! The contract between DNS aliases and what they point at (load balancers today): a
//! target named by its id, ARN or current address, and the addresses it has now.

use std::net::IpAddr;

/// Targets DNS aliases may point at.
pub trait AliasTargets: Send + Sync {
    /// The stable id of the target named `name` (its id, ARN or current address), if any.
    fn resolve(&self, name: &str) -> Option<String>;
    /// The addresses the target `id` has now (none when it is gone).
    fn addresses(&self, id: &str) -> Vec<IpAddr>;
}
