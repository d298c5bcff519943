//! The control plane's HTTP API.
//!
//! [`server`] serves it: every call needs the root token (or, later, an IAM token) and is
//! recorded in the audit log, including refused ones. [`client`] is what the CLI uses.

pub mod audit;
pub mod client;
pub use veeps_obs::parse_duration_ms;
pub mod server;

/// The default address of the API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

pub use veeps_wire::{ApiError, DiagnosticJson, RunRequest};
