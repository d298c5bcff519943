//! Object changes, pure: a block's body decoded against its type's schema, computed
//! attributes unknown until apply, configuration merged over prior state, the diff that
//! decides an action, and masking of sensitive values.

use super::*;

/// Evaluates a block body against a schema: every settable attribute (null or default when
/// unset), nested blocks as objects or lists. Reports unknown, missing, computed-only and
/// mistyped attributes at their position.
pub fn decode_body(
    schema: &Schema,
    body: &BodyConfig,
    scope: &dyn Scope,
) -> Result<Value, Diagnostics> {
    let mut out = BTreeMap::new();
    let mut diags = Diagnostics::default();
    for (name, a) in &body.attrs {
        let Some(s) = schema.get(name) else {
            let mut names: Vec<&str> = schema
                .attrs
                .iter()
                .filter(|a| a.settable())
                .map(|a| a.name)
                .collect();
            names.extend(schema.blocks.iter().map(|b| b.name));
            let hint = if schema.get_block(name).is_some() {
                format!(" \"{name}\" is a block: write `{name} {{ ... }}`.")
            } else {
                did_you_mean(name, names.iter().copied())
            };
            diags.push(
                Diagnostic::at(&a.loc, format!("unsupported argument \"{name}\".{hint}"))
                    .with_detail(format!("Arguments here: {}.", names.join(", "))),
            );
            continue;
        };
        if s.mode == AttrMode::Computed {
            diags.push(Diagnostic::at(
                &a.loc,
                format!("\"{name}\" is computed by veeps and cannot be set"),
            ));
            continue;
        }
        match eval(&a.expr, scope) {
            Ok(v) => match convert(&v, &s.ty) {
                // Set to null is not set (as in Terraform): the default, if any.
                Ok(Value::Null) => {
                    out.insert(name.clone(), s.default.clone().unwrap_or(Value::Null));
                }
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err(msg) => diags.push(Diagnostic::at(
                    &a.expr.loc(),
                    format!("invalid value for \"{name}\": {msg}"),
                )),
            },
            Err(d) => diags.push(d),
        }
    }
    for s in &schema.attrs {
        if out.contains_key(s.name) || body.attrs.contains_key(s.name) {
            continue;
        }
        match s.mode {
            AttrMode::Required => diags.push(
                Diagnostic::at(
                    &body.loc,
                    format!("missing required argument \"{}\"", s.name),
                )
                .with_detail(format!(
                    "Add `{} = ...` ({}).",
                    s.name,
                    if s.description.is_empty() {
                        s.ty.to_string()
                    } else {
                        s.description.to_string()
                    }
                )),
            ),
            AttrMode::Optional | AttrMode::OptionalComputed => {
                out.insert(s.name.to_string(), s.default.clone().unwrap_or(Value::Null));
            }
            AttrMode::Computed => {}
        }
    }
    let mut blocks: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for b in &body.blocks {
        let Some(bs) = schema.get_block(&b.type_name) else {
            let names: Vec<&str> = schema.blocks.iter().map(|b| b.name).collect();
            let hint = if schema.get(&b.type_name).is_some() {
                format!(
                    " \"{}\" is an argument: write `{} = ...`.",
                    b.type_name, b.type_name
                )
            } else {
                did_you_mean(&b.type_name, names.iter().copied())
            };
            diags.push(Diagnostic::at(
                &b.loc,
                format!("unsupported block type \"{}\".{hint}", b.type_name),
            ));
            continue;
        };
        match decode_body(&bs.schema, &b.body, scope) {
            Ok(v) => blocks.entry(bs.name).or_default().push(v),
            Err(d) => diags.0.extend(d.0),
        }
    }
    for bs in &schema.blocks {
        let items = blocks.remove(bs.name).unwrap_or_default();
        if items.len() < bs.min_items {
            diags.push(Diagnostic::at(
                &body.loc,
                format!(
                    "at least {} \"{}\" block{} required",
                    bs.min_items,
                    bs.name,
                    if bs.min_items == 1 { " is" } else { "s are" }
                ),
            ));
        }
        let v = match bs.nesting {
            Nesting::Single => {
                if items.len() > 1 {
                    diags.push(Diagnostic::at(
                        &body.loc,
                        format!("only one \"{}\" block is allowed", bs.name),
                    ));
                }
                items.into_iter().next().unwrap_or(Value::Null)
            }
            Nesting::List => Value::List(items),
        };
        out.insert(bs.name.to_string(), v);
    }
    diags.into_result()?;
    Ok(Value::Object(out))
}

/// `config` with every computed attribute not set in it marked unknown.
pub(crate) fn with_unknown_computed(schema: &Schema, config: &Value) -> Value {
    let mut o = config.as_object().cloned().unwrap_or_default();
    for a in &schema.attrs {
        if a.is_computed() && o.get(a.name).is_none_or(Value::is_null) {
            o.insert(a.name.to_string(), Value::Unknown);
        }
    }
    Value::Object(o)
}

pub(crate) fn merge(prior: &Value, config: &Value) -> Value {
    let mut o = prior.as_object().cloned().unwrap_or_default();
    if let Some(c) = config.as_object() {
        for (k, v) in c {
            o.insert(k.clone(), v.clone());
        }
    }
    Value::Object(o)
}

/// Compares configuration with prior state. Returns the configuration to apply (with
/// ignored and unset optional-computed attributes taken from the prior state), whether
/// anything changed, and the attributes whose change forces replacement.
pub(crate) fn diff(
    schema: &Schema,
    lifecycle: &Lifecycle,
    prior: &Value,
    config: &Value,
) -> (Value, bool, Vec<String>) {
    let ignore_all = lifecycle.ignore_changes.iter().any(|i| i == "*");
    let mut cfg = config.as_object().cloned().unwrap_or_default();
    let mut changed = false;
    let mut forces = vec![];
    for a in &schema.attrs {
        if !a.settable() {
            continue;
        }
        let old = prior.get(a.name).cloned().unwrap_or(Value::Null);
        let new = cfg.get(a.name).cloned().unwrap_or(Value::Null);
        let ignored = ignore_all || lifecycle.ignore_changes.iter().any(|i| i == a.name);
        if ignored || (new.is_null() && a.mode == AttrMode::OptionalComputed) {
            cfg.insert(a.name.to_string(), old);
            continue;
        }
        if new != old || new.has_unknown() {
            changed = true;
            if a.force_new {
                forces.push(a.name.to_string());
            }
        }
    }
    for b in &schema.blocks {
        let old = prior.get(b.name).cloned().unwrap_or(Value::Null);
        let new = cfg.get(b.name).cloned().unwrap_or(Value::Null);
        if ignore_all || lifecycle.ignore_changes.iter().any(|i| i == b.name) {
            cfg.insert(b.name.to_string(), old);
            continue;
        }
        let empty = |v: &Value| v.is_null() || v.as_list().is_some_and(Vec::is_empty);
        if (new != old && !(empty(&new) && empty(&old))) || new.has_unknown() {
            changed = true;
            if b.force_new {
                forces.push(b.name.to_string());
            }
        }
    }
    (Value::Object(cfg), changed, forces)
}

/// Whether expression text calls `sensitive(...)` (not `nonsensitive(...)`).
pub(crate) fn calls_sensitive(text: &str) -> bool {
    text.match_indices("sensitive(").any(|(i, _)| {
        let before = &text[..i];
        !before.ends_with("non")
            && !before
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

pub(crate) fn mask(v: &Value, masked: &BTreeSet<String>) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    if masked.contains(k) && !v.is_null() && !v.is_unknown() {
                        (
                            k.clone(),
                            Value::Object([("$sensitive".to_string(), Value::Bool(true))].into()),
                        )
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect(),
        ),
        v => v.clone(),
    }
}

/// Masks values for display.
pub(crate) fn mask_value(v: &Value) -> Value {
    if v.is_null() {
        v.clone()
    } else {
        Value::Object([("$sensitive".to_string(), Value::Bool(true))].into())
    }
}

#[cfg(test)]
mod tests {
    //! Plan diffs, data-driven: prior state and configuration in, what apply would do out.
    //! `UPDATE_EXPECT=1 cargo test -p veeps-engine objects` rewrites them after a
    //! deliberate change.
    use super::*;
    use expect_test::{expect, Expect};
    use veeps_resource::{AttrSchema, BlockSchema, Nesting};

    fn schema() -> Schema {
        Schema::new()
            .attr(AttrSchema::required("name", Type::String))
            .attr(AttrSchema::optional("size", Type::Number).force_new())
            .attr(AttrSchema::optional_computed("zone", Type::String))
            .attr(AttrSchema::computed("id", Type::String))
            .block(BlockSchema::new(
                "rule",
                Nesting::List,
                Schema::new().attr(AttrSchema::required("port", Type::Number)),
            ))
    }

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn rules(ports: &[f64]) -> Value {
        Value::List(
            ports
                .iter()
                .map(|p| obj(&[("port", Value::Number(*p))]))
                .collect(),
        )
    }

    /// The prior state every case starts from.
    fn prior() -> Value {
        obj(&[
            ("name", Value::string("web")),
            ("size", Value::Number(2.0)),
            ("zone", Value::string("a")),
            ("id", Value::string("i-1")),
            ("rule", rules(&[80.0])),
        ])
    }

    fn check(config: Value, ignore: &[&str], want: Expect) {
        let lifecycle = Lifecycle {
            ignore_changes: ignore.iter().map(|s| s.to_string()).collect(),
            ..Lifecycle::default()
        };
        let (applied, changed, forces) = diff(&schema(), &lifecycle, &prior(), &config);
        want.assert_eq(&format!(
            "changed={changed} replace={forces:?}\napply {applied}"
        ));
    }

    fn config(name: &str, size: f64, zone: Value, ports: &[f64]) -> Value {
        obj(&[
            ("name", Value::string(name)),
            ("size", Value::Number(size)),
            ("zone", zone),
            ("rule", rules(ports)),
        ])
    }

    #[test]
    fn nothing_changes_when_configuration_matches_state() {
        check(
            config("web", 2.0, Value::string("a"), &[80.0]),
            &[],
            expect![[r#"
                changed=false replace=[]
                apply {name = "web", rule = [{port = 80}], size = 2, zone = "a"}"#]],
        );
    }

    #[test]
    fn an_unset_optional_computed_attribute_keeps_its_prior_value() {
        check(
            config("web", 2.0, Value::Null, &[80.0]),
            &[],
            expect![[r#"
            changed=false replace=[]
            apply {name = "web", rule = [{port = 80}], size = 2, zone = "a"}"#]],
        );
    }

    #[test]
    fn in_place_and_forcing_changes() {
        check(
            config("api", 2.0, Value::string("a"), &[80.0]),
            &[],
            expect![[r#"
                changed=true replace=[]
                apply {name = "api", rule = [{port = 80}], size = 2, zone = "a"}"#]],
        );
        check(
            config("web", 3.0, Value::string("a"), &[80.0]),
            &[],
            expect![[r#"
                changed=true replace=["size"]
                apply {name = "web", rule = [{port = 80}], size = 3, zone = "a"}"#]],
        );
        check(
            config("web", 2.0, Value::string("a"), &[80.0, 443.0]),
            &[],
            expect![[r#"
                changed=true replace=[]
                apply {name = "web", rule = [{port = 80}, {port = 443}], size = 2, zone = "a"}"#]],
        );
        check(
            config("web", 2.0, Value::Unknown, &[80.0]),
            &[],
            expect![[r#"
                changed=true replace=[]
                apply {name = "web", rule = [{port = 80}], size = 2, zone = (known after apply)}"#]],
        );
    }

    #[test]
    fn ignored_changes_take_the_prior_value() {
        check(
            config("api", 3.0, Value::string("a"), &[80.0]),
            &["size"],
            expect![[r#"
                changed=true replace=[]
                apply {name = "api", rule = [{port = 80}], size = 2, zone = "a"}"#]],
        );
        check(
            config("api", 3.0, Value::string("b"), &[443.0]),
            &["*"],
            expect![[r#"
                changed=false replace=[]
                apply {name = "web", rule = [{port = 80}], size = 2, zone = "a"}"#]],
        );
    }
}
