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
        let max = c.name == "max";
        let mut best = nums[0].clone();
        for n in &nums[1..] {
            if (max && *n > best) || (!max && *n < best) {
                best = n.clone();
            }
        }
        Value::Number(best)
    })
}

pub(super) fn sum(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let l = c.list(0)?;
        if l.is_empty() {
            return Err(c.arg_err(0, "cannot sum an empty list"));
        }
        let mut s: Option<crate::number::Number> = None;
        for v in l {
            let n = convert(&v, &Type::Number)
                .ok()
                .and_then(|v| v.as_number().cloned())
                .ok_or_else(|| c.arg_err(0, "a list of numbers is required"))?;
            s = Some(match s {
                None => n,
                Some(acc) => acc.add(&n).map_err(|e| c.err(e.to_string()))?,
            });
        }
        Value::Number(s.unwrap_or_else(crate::number::Number::zero))
    })
}

pub(super) fn signum(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    Ok(Value::from(c.int(0)?.signum()))
}

pub(super) fn pow(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    Ok(Value::number(c.f64(0)?.powf(c.f64(1)?)))
}

pub(super) fn log(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    Ok(Value::number(c.f64(0)?.ln() / c.f64(1)?.ln()))
}

/// `parseint(s, base)`, bases 2 to 62 as Terraform's (Go's big.Int): digits, then `a`-`z`,
/// then `A`-`Z`; up to base 36 letters of either case are the same digit.
pub(super) fn parseint(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let s = c.str(0)?;
    let base = c.int(1)?;
    if !(2..=62).contains(&base) {
        return Err(c.arg_err(1, format!("the base must be from 2 to 62, got {base}")));
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(&s)),
    };
    if digits.is_empty() {
        return Err(c.arg_err(0, format!("cannot parse {s:?} as a base {base} integer")));
    }
    let mut n = num_bigint::BigInt::from(0);
    for ch in digits.chars() {
        let d = match ch {
            '0'..='9' => ch as i64 - '0' as i64,
            'a'..='z' => ch as i64 - 'a' as i64 + 10,
            'A'..='Z' if base <= 36 => ch as i64 - 'A' as i64 + 10,
            'A'..='Z' => ch as i64 - 'A' as i64 + 36,
            _ => base,
        };
        if d >= base {
            return Err(c.arg_err(0, format!("cannot parse {s:?} as a base {base} integer")));
        }
        n = n * base + d;
    }
    Ok(Value::Number(crate::number::Number::from_bigint(&if neg {
        -n
    } else {
        n
    })))
}
