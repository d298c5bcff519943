//! Marks functions.

use super::*;

pub(super) fn sensitive(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        a[0].clone()
    })
}

/// `ephemeralasnull(v)`: veeps has no ephemeral values, so every value is itself.
pub(super) fn ephemeralasnull(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    Ok(c.args[0].clone())
}
