//! `moved`, `removed` and `import` blocks: objects state knew under one address that now
//! live under another, leave veeps' care without being destroyed, or are claimed.

use crate::{EngineError, Prior};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use veeps_lang::config::{address_kind, split_address, AddressKind, Config, ModuleConfig};
use veeps_lang::diag::{Diagnostic, Diagnostics};
use veeps_wire::plan::Moved;

/// Every module of the configuration with the module-call names leading to it.
fn module_paths(config: &Config) -> Vec<(Vec<String>, Arc<ModuleConfig>)> {
    let mut out = vec![];
    let mut stack = vec![(vec![], config.root_module().clone(), 0usize)];
    while let Some((path, m, depth)) = stack.pop() {
        // A module that calls itself is refused by the graph; stop here too.
        if depth < 32 {
            for call in m.module_calls.values() {
                if let Some(child) = config.modules.get(&call.source.dir()) {
                    let mut p = path.clone();
                    p.push(call.name.clone());
                    stack.push((p, child.clone(), depth + 1));
                }
            }
        }
        out.push((path, m));
    }
    out
}

fn join(parts: &[(String, String)]) -> String {
    parts
        .iter()
        .map(|(n, k)| format!("{n}{k}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// When `address` lies in an instance of the module at `path`: that instance's prefix
/// (`module.net["a"].`) and the address within it.
fn in_module(address: &str, path: &[String]) -> Option<(String, String)> {
    let parts = split_address(address);
    let mut i = 0;
    let mut prefix = String::new();
    for name in path {
        let (m, n) = (parts.get(i)?, parts.get(i + 1)?);
        if m.0 != "module" || !m.1.is_empty() || &n.0 != name {
            return None;
        }
        prefix.push_str(&format!("module.{}{}.", n.0, n.1));
        i += 2;
    }
    let rest = &parts[i..];
    if rest.len() < 2 {
        return None;
    }
    Some((prefix, join(rest)))
}

/// The address `rel` (within one module instance, like `module.a["x"].random_id.b[0]`
/// or `random_id.b[0]`) takes when `from` moves to `to`.
pub(crate) fn moved_address(rel: &str, from: &str, to: &str) -> Option<String> {
    if rel == from {
        return Some(to.to_string());
    }
    let (f, r, t) = (split_address(from), split_address(rel), split_address(to));
    let n = f.len();
    if r.len() < n || r[..n - 1] != f[..n - 1] || r[n - 1].0 != f[n - 1].0 {
        return None;
    }
    let module = address_kind(from) == AddressKind::Module;
    let rest = if r.len() > n {
        format!(".{}", join(&r[n..]))
    } else {
        String::new()
    };
    if f[n - 1].1.is_empty() {
        // `from` without a key: every instance, keys kept (when `to` has none either).
        if !module && r.len() != n {
            return None;
        }
        let key = &r[n - 1].1;
        if !key.is_empty() && !t[t.len() - 1].1.is_empty() {
            return None;
        }
        Some(format!("{to}{key}{rest}"))
    } else if module && r[n - 1].1 == f[n - 1].1 && r.len() > n {
        Some(format!("{to}{rest}"))
    } else {
        None
    }
}

/// What `moved` and `removed` blocks do to the recorded state.
#[derive(Debug, Default)]
pub(crate) struct Refactor {
    /// Moves made.
    pub moved: Vec<Moved>,
    /// Instances forgotten.
    pub forgotten: Vec<String>,
    /// Moves that could not be made.
    pub warnings: Vec<String>,
}

/// Moves `prior`'s records as the configuration's `moved` blocks say, and refuses
/// contradictions (a move between resource types).
pub(crate) fn apply_moves(config: &Config, prior: &mut Prior) -> Result<Refactor, EngineError> {
    let mut out = Refactor::default();
    let mut diags = Diagnostics::default();
    let modules: Vec<_> = module_paths(config)
        .into_iter()
        .filter(|(_, m)| !m.moved.is_empty())
        .collect();
    for (_, m) in &modules {
        for mv in &m.moved {
            let ty = |a: &str| {
                let p = split_address(a);
                p[p.len() - 2].0.clone()
            };
            if address_kind(&mv.from) == AddressKind::Resource && ty(&mv.from) != ty(&mv.to) {
                diags.push(Diagnostic::at(
                    &mv.loc,
                    format!(
                        "cannot move {} to {}: an object keeps its resource type",
                        mv.from, mv.to
                    ),
                ));
            }
        }
    }
    diags.into_result()?;
    let mut renames: BTreeMap<String, String> = BTreeMap::new();
    for address in prior.records.keys() {
        let (base, deposed) = match address.strip_suffix("#deposed") {
            Some(b) => (b, "#deposed"),
            None => (address.as_str(), ""),
        };
        // Outer modules' moves first, then those of the modules it now lies in.
        let mut now = base.to_string();
        for (path, m) in &modules {
            let Some((prefix, mut rel)) = in_module(&now, path) else {
                continue;
            };
            for mv in &m.moved {
                if let Some(n) = moved_address(&rel, &mv.from, &mv.to) {
                    rel = n;
                }
            }
            now = format!("{prefix}{rel}");
        }
        if now != base {
            renames.insert(address.clone(), format!("{now}{deposed}"));
        }
    }
    let staying: BTreeSet<&String> = prior
        .records
        .keys()
        .filter(|a| !renames.contains_key(*a))
        .collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut moves = vec![];
    for (from, to) in renames {
        if staying.contains(&to) || !taken.insert(to.clone()) {
            out.warnings.push(format!(
                "{from} was not moved to {to}: an object is already recorded there (remove the `moved` block, or the object at {to})"
            ));
            continue;
        }
        moves.push((from, to));
    }
    for (from, to) in moves {
        if let Some(mut rec) = prior.records.remove(&from) {
            rec.record.identity.get_or_insert_with(|| from.clone());
            rec.record.address = to.clone();
            if rec.record.identity.as_deref() == Some(to.as_str()) {
                rec.record.identity = None;
            }
            prior.records.insert(to.clone(), rec);
        }
        out.moved.push(Moved { from, to });
    }
    Ok(out)
}

/// Of the recorded instances no longer in the configuration (`orphans`), those that a
/// `removed { lifecycle { destroy = false } }` block says to forget; and errors for
/// `removed` blocks whose resource is still declared and `import` blocks veeps cannot
/// carry out.
pub(crate) fn removed_and_imports(
    config: &Config,
    prior: &Prior,
    orphans: &[String],
) -> Result<Vec<String>, EngineError> {
    let mut diags = Diagnostics::default();
    let mut forget = vec![];
    for (path, m) in module_paths(config) {
        for r in &m.removed {
            let parts = split_address(&r.from);
            let declared = match address_kind(&r.from) {
                AddressKind::Module => parts.len() == 2 && m.module_calls.contains_key(&parts[1].0),
                AddressKind::Resource => parts.len() == 2 && m.resources.contains_key(&r.from),
            };
            if declared {
                diags.push(
                    Diagnostic::at(&r.loc, format!("{} is removed but still declared", r.from))
                        .with_detail(
                            "Remove its block from the configuration, or this `removed` block.",
                        ),
                );
                continue;
            }
            if r.destroy {
                continue;
            }
            for a in orphans {
                let base = a.strip_suffix("#deposed").unwrap_or(a);
                let Some((_, rel)) = in_module(base, &path) else {
                    continue;
                };
                if moved_address(&rel, &r.from, &r.from).is_some() {
                    forget.push(a.clone());
                }
            }
        }
    }
    let root = config.root_module();
    for i in &root.imports {
        if prior.records.contains_key(&i.to) {
            continue;
        }
        let parts = split_address(&i.to);
        let resource = join(&parts[parts.len().saturating_sub(2)..]);
        let key = resource.split('[').next().unwrap_or(&resource).to_string();
        if parts.len() != 2 || !root.resources.contains_key(&key) {
            diags.push(Diagnostic::at(
                &i.loc,
                format!("import target {} is not declared in the root module", i.to),
            ));
        } else {
            diags.push(
                Diagnostic::at(
                    &i.loc,
                    format!("veeps cannot import an object into {}: it manages only objects it made", i.to),
                )
                .with_detail("Remove the `import` block and let veeps create the object; an `import` block for an object veeps already manages is accepted and does nothing."),
            );
        }
    }
    for m in config.modules.values() {
        if m.dir != root.dir {
            if let Some(i) = m.imports.first() {
                diags.push(Diagnostic::at(
                    &i.loc,
                    "`import` blocks belong in the root module",
                ));
            }
        }
    }
    diags.into_result()?;
    forget.sort();
    forget.dedup();
    Ok(forget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_move_as_terraform_moves_them() {
        let cases = [
            (
                "random_id.a",
                "random_id.a",
                "random_id.b",
                Some("random_id.b"),
            ),
            (
                "random_id.a[0]",
                "random_id.a",
                "random_id.b",
                Some("random_id.b[0]"),
            ),
            (
                r#"random_id.a["k"]"#,
                "random_id.a",
                "random_id.b",
                Some(r#"random_id.b["k"]"#),
            ),
            (
                "random_id.a",
                "random_id.a",
                "random_id.a[0]",
                Some("random_id.a[0]"),
            ),
            ("random_id.a[1]", "random_id.a", "random_id.a[0]", None),
            (
                "random_id.a[0]",
                "random_id.a[0]",
                r#"random_id.a["x"]"#,
                Some(r#"random_id.a["x"]"#),
            ),
            ("random_id.a[1]", "random_id.a[0]", "random_id.b", None),
            ("random_id.ab", "random_id.a", "random_id.b", None),
            (
                "module.x.random_id.a",
                "module.x",
                "module.y",
                Some("module.y.random_id.a"),
            ),
            (
                r#"module.x["k"].random_id.a[2]"#,
                "module.x",
                "module.y",
                Some(r#"module.y["k"].random_id.a[2]"#),
            ),
            (
                r#"module.x["k"].random_id.a"#,
                r#"module.x["k"]"#,
                "module.z",
                Some("module.z.random_id.a"),
            ),
            (
                r#"module.x["j"].random_id.a"#,
                r#"module.x["k"]"#,
                "module.z",
                None,
            ),
            ("module.x.random_id.a", "random_id.a", "random_id.b", None),
        ];
        for (rel, from, to, want) in cases {
            assert_eq!(
                moved_address(rel, from, to).as_deref(),
                want,
                "{rel} under {from} -> {to}"
            );
        }
    }

    #[test]
    fn module_prefixes_are_found() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            in_module(r#"module.a["x"].module.b.random_id.c[0]"#, &p(&["a", "b"])),
            Some((r#"module.a["x"].module.b."#.into(), "random_id.c[0]".into()))
        );
        assert_eq!(
            in_module("module.a.random_id.c", &p(&[])),
            Some((String::new(), "module.a.random_id.c".into()))
        );
        assert_eq!(
            in_module("random_id.c", &p(&[])),
            Some((String::new(), "random_id.c".into()))
        );
        assert_eq!(in_module("module.a.random_id.c", &p(&["b"])), None);
    }
}
