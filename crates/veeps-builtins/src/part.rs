//! The built-in resource types as a part of veeps.

use veeps_resource::{Part, Registry};

/// Resource types that need no other part.
pub struct Builtins;

impl Part for Builtins {
    fn name(&self) -> &'static str {
        "builtins"
    }

    fn register(&self, r: &mut Registry) {
        crate::register(r);
    }
}
