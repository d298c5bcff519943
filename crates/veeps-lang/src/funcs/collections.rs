//! Collections functions.

use super::*;

pub(super) fn alltrue(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let mut bools = Vec::new();
        for v in c.list(0)? {
            bools.push(
                convert(&v, &Type::Bool)
                    .ok()
                    .and_then(|v| v.as_bool())
                    .ok_or_else(|| c.arg_err(0, "a list of bools is required"))?,
            );
        }
        Value::Bool(if c.name == "alltrue" {
            bools.iter().all(|b| *b)
        } else {
            bools.iter().any(|b| *b)
        })
    })
}

pub(super) fn length(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 1)?;
        match &a[0] {
            Value::Unknown => Value::Unknown,
            Value::String(s) => Value::from(
                unicode_segmentation::UnicodeSegmentation::graphemes(s.as_str(), true).count()
                    as i64,
            ),
            Value::List(l) => Value::from(l.len() as i64),
            Value::Object(o) => Value::from(o.len() as i64),
            v => {
                return Err(c.arg_err(
                    0,
                    format!("a string, list or map is required, got {}", v.type_name()),
                ))
            }
        }
    })
}

pub(super) fn element(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let l = c.list(0)?;
        if l.is_empty() {
            return Err(c.arg_err(0, "cannot use element() with an empty list"));
        }
        let i = c.int(1)?;
        if i < 0 {
            return Err(c.arg_err(1, "the index must not be negative"));
        }
        l[i as usize % l.len()].clone()
    })
}

pub(super) fn index(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(2, 2)?;
        let l = c.list(0)?;
        match l.iter().position(|v| v == &a[1]) {
            Some(i) => Value::from(i as i64),
            None => return Err(c.err(format!("the list does not contain {}", a[1]))),
        }
    })
}

pub(super) fn contains(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(2, 2)?;
        Value::Bool(c.list(0)?.contains(&a[1]))
    })
}

pub(super) fn lookup(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(2, 3)?;
        let m = c.obj(0)?;
        let k = c.str(1)?;
        match m.get(&k) {
            Some(v) => v.clone(),
            None if a.len() == 3 => a[2].clone(),
            None => {
                return Err(c.arg_err(
                    1,
                    format!("the map has no key \"{k}\" and no default was given"),
                ))
            }
        }
    })
}

pub(super) fn merge(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        let mut out = BTreeMap::new();
        for (i, v) in a.iter().enumerate() {
            match v {
                Value::Null => {}
                Value::Unknown => return Ok(Value::Unknown),
                Value::Object(o) => out.extend(o.clone()),
                v => {
                    return Err(c.arg_err(
                        i,
                        format!("a map or object is required, got {}", v.type_name()),
                    ))
                }
            }
        }
        Value::Object(out)
    })
}

pub(super) fn concat(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        let mut out = Vec::new();
        for (i, v) in a.iter().enumerate() {
            match v {
                Value::Unknown => return Ok(Value::Unknown),
                Value::List(l) => out.extend(l.clone()),
                v => return Err(c.arg_err(i, format!("a list is required, got {}", v.type_name()))),
            }
        }
        Value::List(out)
    })
}

pub(super) fn flatten(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        fn flat(v: &[Value], out: &mut Vec<Value>) {
            for x in v {
                match x {
                    Value::List(l) => flat(l, out),
                    x => out.push(x.clone()),
                }
            }
        }
        let mut out = Vec::new();
        flat(&c.list(0)?, &mut out);
        Value::List(out)
    })
}

pub(super) fn distinct(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let mut out: Vec<Value> = Vec::new();
        for v in c.list(0)? {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Value::List(out)
    })
}

pub(super) fn compact(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::List(
            c.list(0)?
                .into_iter()
                .filter(|v| !v.is_null() && v.as_str() != Some(""))
                .collect(),
        )
    })
}

pub(super) fn reverse(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::List(c.list(0)?.into_iter().rev().collect())
    })
}

pub(super) fn sort(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let mut s = c.strings(0)?;
        s.sort();
        Value::List(s.into_iter().map(Value::String).collect())
    })
}

pub(super) fn slice(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(3, 3)?;
        let l = c.list(0)?;
        let (s, e) = (c.int(1)?, c.int(2)?);
        if s < 0 || e < s || e as usize > l.len() {
            return Err(c.err(format!(
                "the range {s}..{e} is not within a list of {} elements",
                l.len()
            )));
        }
        Value::List(l[s as usize..e as usize].to_vec())
    })
}

pub(super) fn one(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        let l = c.list(0)?;
        match l.len() {
            0 => Value::Null,
            1 => l[0].clone(),
            n => {
                return Err(c.arg_err(
                    0,
                    format!("a list of at most one element is required, got {n}"),
                ))
            }
        }
    })
}

pub(super) fn setunion(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, usize::MAX)?;
        let mut out: Vec<Value> = Vec::new();
        for i in 0..a.len() {
            for v in c.list(i)? {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        Value::List(set_of(out))
    })
}

pub(super) fn keys(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::List(c.obj(0)?.into_keys().map(Value::String).collect())
    })
}

pub(super) fn values(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(1, 1)?;
        Value::List(c.obj(0)?.into_values().collect())
    })
}

pub(super) fn zipmap(c: &Call) -> Result<Value, Diagnostic> {
    Ok({
        c.arity(2, 2)?;
        let k = c.strings(0)?;
        let v = c.list(1)?;
        if k.len() != v.len() {
            return Err(c.err(format!(
                "the lists must have the same length ({} keys, {} values)",
                k.len(),
                v.len()
            )));
        }
        Value::Object(k.into_iter().zip(v).collect())
    })
}

pub(super) fn range(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    Ok({
        c.arity(1, 3)?;
        use crate::number::Number;
        let one = Number::from_i64(1);
        let (start, end, step) = match a.len() {
            1 => {
                let end = c.num(0)?;
                let step = if end.is_negative() { one.neg() } else { one };
                (Number::from_i64(0), end, step)
            }
            // Counting down when the end is below the start, as Terraform does.
            2 => {
                let (a, b) = (c.num(0)?, c.num(1)?);
                let step = if b < a { one.neg() } else { one };
                (a, b, step)
            }
            _ => (c.num(0)?, c.num(1)?, c.num(2)?),
        };
        if step.is_zero() {
            return Err(c.err("the step must not be zero"));
        }
        let up = !step.is_negative();
        // Refuse an over-long range before making any of it.
        let n = end
            .sub(&start)
            .and_then(|d| d.div(&step))
            .map(|q| q.to_f64())
            .unwrap_or(f64::INFINITY);
        if n > 1_048_576.0 {
            return Err(c.err("the range has more than 1048576 elements"));
        }
        let mut out = Vec::new();
        let mut x = start;
        while (up && x < end) || (!up && x > end) {
            out.push(Value::Number(x.clone()));
            x = x.add(&step).map_err(|e| c.err(e.to_string()))?;
            if out.len() > 1_048_576 {
                return Err(c.err("the range has more than 1048576 elements"));
            }
        }
        Value::List(out)
    })
}

pub(super) fn coalesce(c: &Call) -> Result<Value, Diagnostic> {
    for v in &c.args {
        match v {
            Value::Unknown => return Ok(Value::Unknown),
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            v => return Ok(v.clone()),
        }
    }
    Err(c.err("no non-null, non-empty argument"))
}

pub(super) fn coalescelist(c: &Call) -> Result<Value, Diagnostic> {
    let a = &c.args;
    c.arity(1, usize::MAX)?;
    Ok({
        for (i, _) in a.iter().enumerate() {
            let l = c.list(i)?;
            if !l.is_empty() {
                return Ok(Value::List(l));
            }
        }
        Value::List(vec![])
    })
}

/// A set's elements in Terraform's order: strings lexically, numbers numerically, others
/// as they came; without duplicates.
pub(super) fn set_of(mut v: Vec<Value>) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::with_capacity(v.len());
    v.retain(|x| {
        let new = !seen.contains(x);
        if new {
            seen.push(x.clone());
        }
        new
    });
    crate::value::order_set(&mut v);
    v
}

pub(super) fn setintersection(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, usize::MAX)?;
    let mut out = c.list(0)?;
    for i in 1..c.args.len() {
        let other = c.list(i)?;
        out.retain(|v| other.contains(v));
    }
    Ok(Value::List(set_of(out)))
}

pub(super) fn setsubtract(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let other = c.list(1)?;
    let mut out = c.list(0)?;
    out.retain(|v| !other.contains(v));
    Ok(Value::List(set_of(out)))
}

/// Every combination of one element from each argument, in order.
pub(super) fn setproduct(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, usize::MAX)?;
    let mut out: Vec<Vec<Value>> = vec![vec![]];
    for i in 0..c.args.len() {
        let l = c.list(i)?;
        if out.len().saturating_mul(l.len()) > 100_000 {
            return Err(c.err("the product would have more than 100000 elements"));
        }
        out = out
            .iter()
            .flat_map(|prefix| {
                l.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect();
    }
    Ok(Value::List(out.into_iter().map(Value::List).collect()))
}

/// `transpose(map of lists of strings)`: each string becomes a key listing the keys that
/// held it.
pub(super) fn transpose(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(1, 1)?;
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (k, v) in c.obj(0)? {
        let Value::List(items) = v else {
            return Err(c.arg_err(0, "a map of lists of strings is required"));
        };
        for item in items {
            match convert(&item, &Type::String) {
                Ok(Value::String(s)) => out.entry(s).or_default().push(Value::String(k.clone())),
                _ => return Err(c.arg_err(0, "a map of lists of strings is required")),
            }
        }
    }
    Ok(Value::Object(
        out.into_iter().map(|(k, v)| (k, Value::List(v))).collect(),
    ))
}

/// `matchkeys(values, keys, searchset)`: the values whose key (same index) is in the set.
pub(super) fn matchkeys(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(3, 3)?;
    let (values, keys, search) = (c.list(0)?, c.list(1)?, c.list(2)?);
    if values.len() != keys.len() {
        return Err(c.err("the values and keys lists must be the same length"));
    }
    Ok(Value::List(
        values
            .into_iter()
            .zip(keys)
            .filter(|(_, k)| search.contains(k))
            .map(|(v, _)| v)
            .collect(),
    ))
}

/// `chunklist(list, size)`: lists of at most `size` elements (0: the whole list as one).
pub(super) fn chunklist(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let l = c.list(0)?;
    let size = c.int(1)?;
    if size < 0 {
        return Err(c.arg_err(1, "the size must be 0 or more"));
    }
    if size == 0 {
        return Ok(Value::List(vec![Value::List(l)]));
    }
    Ok(Value::List(
        l.chunks(size as usize)
            .map(|ch| Value::List(ch.to_vec()))
            .collect(),
    ))
}
