//! Conversion functions.

use super::*;

pub(super) fn tostring(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        convert(&a[0], &Type::String).map_err(|e| c.arg_err(0, e))?
    })
}

pub(super) fn tonumber(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        convert(&a[0], &Type::Number).map_err(|e| c.arg_err(0, e))?
    })
}

pub(super) fn tobool(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        convert(&a[0], &Type::Bool).map_err(|e| c.arg_err(0, e))?
    })
}

pub(super) fn tolist(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        convert(&a[0], &Type::List(Box::new(Type::Any))).map_err(|e| c.arg_err(0, e))?
    })
}

pub(super) fn toset(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        convert(&a[0], &Type::Set(Box::new(Type::Any))).map_err(|e| c.arg_err(0, e))?
    })
}

pub(super) fn tomap(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        convert(&a[0], &Type::Map(Box::new(Type::Any))).map_err(|e| c.arg_err(0, e))?
    })
}
