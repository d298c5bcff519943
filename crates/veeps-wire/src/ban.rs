//! Intrusion detection's answers.

use serde::{Deserialize, Serialize};

/// A ban in force (`GET /v1/bans`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BanInfo {
    /// The address, or the /64 of an IPv6 address.
    pub address: String,
    /// The jail that banned it (`ENV/POLICY/SOURCE`).
    pub jail: String,
    /// Banned at (unix seconds).
    pub since: i64,
    /// Banned until (unix seconds).
    pub until: i64,
    /// How many times this address has been banned.
    pub offences: u32,
    /// Whether the kernel drops its packets (else only the listeners refuse it).
    pub kernel: bool,
}
