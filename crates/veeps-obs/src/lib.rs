//! Observability: metrics, logs, alarms and notifications.
//!
//! [`tsdb`] is the embedded time-series store (Gorilla compression, write-ahead log,
//! blocks, downsampling and retention like CloudWatch's); [`logs`] the log store;
//! [`collect`] the collectors; [`alarm`] CloudWatch's alarm semantics; [`topics`] the
//! notification deliveries; [`service::Obs`] ties them together with background loops;
//! [`resources`] are the `alarm`, `topic` and `log_group` resource types.

pub mod alarm;
pub mod codec;
pub mod collect;
pub mod gorilla;
pub mod layer;
pub mod logs;
pub mod resources;
pub mod service;
pub mod topics;
pub mod tsdb;

pub use service::Obs;
