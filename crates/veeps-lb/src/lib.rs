//! Load balancers with ALB semantics.
//!
//! [`model`] is what is declared; [`matching`] evaluates rules; [`proxy`] is the data
//! plane (hyper and rustls); [`targets`] keeps target groups' health; [`service`] places
//! balancers and applies changes without restarting listeners; [`resources`] are the
//! resource types. Certificates come from `veeps-pki`.

pub mod http;
pub mod matching;
pub mod model;
pub mod part;
pub mod proxy;
pub mod resources;
pub mod service;
pub mod targets;
