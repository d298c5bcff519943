//! Marks functions.

use super::*;

pub(super) fn sensitive(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        a[0].clone()
    })
}
