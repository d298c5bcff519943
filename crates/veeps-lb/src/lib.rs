//! Load balancers with ALB semantics.
//!
//! [`model`] is what is declared; [`matching`] evaluates rules; [`proxy`] serves requests
//! (hyper and rustls); [`targets`] keeps target groups' health; [`plane`] is a balancer's
//! data plane, a process of its own that outlives the control plane ([`plane_client`] talks
//! to it); [`service`] places balancers, runs their planes and applies changes without
//! restarting listeners; [`resources`] are the
//! resource types; [`auth`] is Basic authentication in front of an action, and the plane's
//! side of intrusion detection. Certificates come from `veeps-pki`.

pub mod auth;
pub mod http;
pub mod matching;
pub mod model;
pub mod part;
pub mod plane;
pub mod plane_client;
pub mod proxy;
pub mod resources;
pub mod service;
pub mod targets;
