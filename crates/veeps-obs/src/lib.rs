//! Observability: metrics, logs, alarms and notifications.
//!
//! [`tsdb`] is the embedded time-series store ([`codec`]: decimal or Gorilla blocks; a write-ahead log,
//! blocks, downsampling and retention like CloudWatch's); [`logs`] the log store;
//! [`collect`] the collectors; [`alarm`] CloudWatch's alarm semantics; [`topics`] the
//! notification deliveries; [`service::Obs`] ties them together with background loops;
//! [`spool`] keeps the lines of producers that outlive the control plane;
//! [`resources`] are the `alarm`, `topic` and `log_group` resource types.

pub mod alarm;
pub mod codec;
pub mod collect;
pub mod gorilla;
pub mod http;
pub mod layer;
pub mod logs;
pub mod part;
pub mod resources;
pub mod service;
pub mod spool;
pub mod topics;
pub mod tsdb;

pub use service::Obs;

/// Parses `30s`, `10m`, `1h`, `2d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration like 30s, 10m, 1h or 2d"))?;
    let mult = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "\"{s}\": unknown unit \"{unit}\" (use s, m, h or d)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("\"{s}\" is too long"))
}
