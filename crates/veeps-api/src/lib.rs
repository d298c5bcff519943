//! The control plane's HTTP API.
//!
//! [`server`] serves it: every call needs the root token (or, later, an IAM token) and is
//! recorded in the audit log, including refused ones. [`client`] is what the CLI uses.

pub mod audit;
pub mod client;
mod compute_api;
mod db_api;
mod obs_api;
pub use obs_api::parse_duration_ms;
pub mod server;

use serde::{Deserialize, Serialize};
use veeps_lang::config::Bundle;

/// The default address of the API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

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
