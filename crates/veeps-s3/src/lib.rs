//! Object storage: the store behind veeps' S3 API.
//!
//! [`store`] keeps buckets and objects: metadata in the state store, bodies encrypted with a
//! data key per object, crash-safe. The S3 REST API (over `s3s`) builds on it.

pub mod access;
pub mod api;
pub mod http;
pub mod lifecycle;
pub mod part;
pub mod resources;
pub mod stats;
pub mod store;
pub mod website;
