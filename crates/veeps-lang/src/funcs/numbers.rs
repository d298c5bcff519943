//! Numbers functions.

use super::*;

pub(super) fn abs(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::Number(c.num(0)?.abs())
    })
}

pub(super) fn ceil(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::Number(c.num(0)?.ceil())
    })
}

pub(super) fn floor(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::Number(c.num(0)?.floor())
    })
}

pub(super) fn max(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, usize::MAX)?;
        let mut nums = Vec::new();
        for i in 0..a.len() {
            nums.push(c.num(i)?);
        }
        let r = if c.name == "max" {
            nums.iter().cloned().fold(f64::MIN, f64::max)
        } else {
            nums.iter().cloned().fold(f64::MAX, f64::min)
        };
        Value::Number(r)
    })
}

pub(super) fn sum(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let mut s = 0.0;
        for v in c.list(0)? {
            s += convert(&v, &Type::Number)
                .ok()
                .and_then(|v| v.as_f64())
                .ok_or_else(|| c.arg_err(0, "a list of numbers is required"))?;
        }
        Value::Number(s)
    })
}
