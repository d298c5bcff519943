//! The CDN: distributions in front of origins (a bucket's website, a balancer, any HTTP
//! server), and the edge that serves them from its cache.
//!
//! - [`policy`]: what the edge decides without I/O (freshness, path patterns, validators,
//!   ranges, content codings).
//! - [`cache`]: answers kept whole in memory and on disk, within bounds, across restarts.
//! - [`edge`]: the request path, from `Host` to the cache to the origin.
//! - [`model`]: the distributions as the edge serves them.
//! - [`plane`]: the edge as a process of its own (`veeps cdn-plane DIR`).
//! - [`service`]: the control plane (distributions in the store, the data plane kept in
//!   step); [`resources`]: the `cdn_distribution` type; [`http`]: invalidations.

pub mod cache;
pub mod edge;
pub mod http;
pub mod model;
pub mod part;
pub mod plane;
pub mod policy;
pub mod resources;
pub mod service;
