//! `count` and `for_each`: how many instances a block expands to and under which keys,
//! bounded by the server's `VEEPS_MAX_INSTANCES`.

use super::*;

/// Instances one resource or module block may expand to (`count`, `for_each`); the
/// environment variable `VEEPS_MAX_INSTANCES` of the server changes it.
pub const DEFAULT_MAX_INSTANCES: usize = 10_000;

pub(crate) fn max_instances() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("VEEPS_MAX_INSTANCES")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_INSTANCES)
    })
}

pub(crate) fn too_many(e: &Expr, what: &str, n: f64) -> Diagnostic {
    Diagnostic::at(
        &e.loc(),
        format!(
            "{what} asks for {n} instances; a block may have at most {} (the server's VEEPS_MAX_INSTANCES)",
            max_instances()
        ),
    )
    .with_detail("Split the resources over several blocks or modules, or raise the limit.")
}

pub(crate) fn expansion(
    count: Option<&Expr>,
    for_each: Option<&Expr>,
    scope: &dyn Scope,
) -> Result<Expansion, Diagnostic> {
    let expanded = expansion_unbounded(count, for_each, scope)?;
    match (&expanded, count.or(for_each)) {
        (Expansion::Count(n), Some(e)) if *n > max_instances() => {
            Err(too_many(e, "count", *n as f64))
        }
        (Expansion::Each(keys), Some(e)) if keys.len() > max_instances() => {
            Err(too_many(e, "for_each", keys.len() as f64))
        }
        _ => Ok(expanded),
    }
}

pub(crate) fn expansion_unbounded(
    count: Option<&Expr>,
    for_each: Option<&Expr>,
    scope: &dyn Scope,
) -> Result<Expansion, Diagnostic> {
    if let Some(c) = count {
        return match eval(c, scope)? {
            Value::Number(n) if n.is_integer() && !n.is_negative() => match n.to_i64() {
                Some(i) if i as u64 <= max_instances() as u64 => Ok(Expansion::Count(i as usize)),
                _ => Err(too_many(c, "count", n.to_f64())),
            },
            Value::Unknown => Err(Diagnostic::at(&c.loc(), "the count value depends on values that cannot be known until apply")
                .with_detail("Use a value known at plan time (variables, locals, or attributes of resources that already exist).")),
            Value::String(s) if s.parse::<usize>().is_ok() => Ok(Expansion::Count(s.parse().unwrap_or(0))),
            v => Err(Diagnostic::at(&c.loc(), format!("count must be a whole number of zero or more, got {v}"))),
        };
    }
    if let Some(f) = for_each {
        return match eval(f, scope)? {
            Value::Object(o) => Ok(Expansion::Each(o.into_iter().collect())),
            Value::List(l) => {
                let mut keys: Vec<(String, Value)> = vec![];
                for v in l {
                    match v {
                        Value::String(s) => {
                            if !keys.iter().any(|(k, _)| k == &s) {
                                keys.push((s.clone(), Value::String(s)));
                            }
                        }
                        Value::Unknown => {
                            return Err(Diagnostic::at(
                                &f.loc(),
                                "the for_each value has elements that cannot be known until apply",
                            ))
                        }
                        other => {
                            return Err(Diagnostic::at(
                                &f.loc(),
                                format!(
                                    "for_each over a list needs strings, found a {}",
                                    other.type_name()
                                ),
                            ))
                        }
                    }
                }
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Expansion::Each(keys))
            }
            Value::Unknown => Err(Diagnostic::at(
                &f.loc(),
                "the for_each value depends on values that cannot be known until apply",
            )),
            v => Err(Diagnostic::at(
                &f.loc(),
                format!(
                    "for_each needs a map or a set of strings, got {}",
                    v.type_name()
                ),
            )),
        };
    }
    Ok(Expansion::Single)
}
