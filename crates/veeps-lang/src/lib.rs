//! The veeps configuration language: HCL in Terraform's syntax.
//!
//! [`loader`] reads an environment and its modules from disk into a [`config::Bundle`];
//! [`config`] parses a bundle into modules of blocks; [`eval`] evaluates expressions against
//! a scope, with values that may be unknown until apply; [`funcs`] are the built-in
//! functions; [`fmt`] is the canonical layout. Every error is a [`diag::Diagnostic`] that
//! names `file:line:col`.

pub mod config;
pub mod diag;
pub mod eval;
pub mod fmt;
pub mod funcs;
pub mod loader;
pub mod number;
pub mod value;

pub use config::{Bundle, Config};
pub use diag::{Diagnostic, Diagnostics, Loc};
pub use eval::{Expr, Scope};
pub use number::Number;
pub use value::{Type, Value};
