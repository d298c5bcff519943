//! Observability: metrics, logs, alarms and notifications.

pub mod gorilla;
pub mod tsdb;
