//! Load balancers with ALB semantics, and veeps' certificate authority.
//!
//! [`model`] is what is declared; [`matching`] evaluates rules; [`proxy`] is the data
//! plane (hyper and rustls); [`targets`] keeps target groups' health; [`service`] places
//! balancers and applies changes without restarting listeners; [`ca`] issues
//! certificates; [`resources`] are the resource types.

pub mod ca;
pub mod matching;
pub mod model;
pub mod proxy;
pub mod resources;
pub mod service;
pub mod targets;
