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
    // Block types some of whose blocks come from a for_each not known yet.
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    for b in &body.blocks {
        if let Some(it) = b.dynamic_iterator() {
            dynamic(schema, b, &it, scope, &mut blocks, &mut unknown, &mut diags);
            continue;
        }
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
        if unknown.contains(bs.name) {
            out.insert(bs.name.to_string(), Value::Unknown);
            continue;
        }
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

/// A `dynamic "NAME"` block: its `content` once per element of `for_each`, with the
/// iterator (`NAME`, or `iterator`'s name) holding the element's `key` and `value`.
fn dynamic<'s>(
    schema: &'s Schema,
    b: &veeps_lang::config::BlockConfig,
    iterator: &str,
    scope: &dyn Scope,
    blocks: &mut BTreeMap<&'s str, Vec<Value>>,
    unknown: &mut BTreeSet<&'s str>,
    diags: &mut Diagnostics,
) {
    let Some(name) = b.labels.first() else {
        diags.push(Diagnostic::at(
            &b.loc,
            "a `dynamic` block names the block type it makes: dynamic \"ingress\" { ... }",
        ));
        return;
    };
    let Some(bs) = schema.get_block(name) else {
        let names: Vec<&str> = schema.blocks.iter().map(|b| b.name).collect();
        diags.push(Diagnostic::at(
            &b.loc,
            format!(
                "dynamic \"{name}\": there is no \"{name}\" block type here.{}",
                did_you_mean(name, names.iter().copied())
            ),
        ));
        return;
    };
    for (k, a) in &b.body.attrs {
        if !matches!(k.as_str(), "for_each" | "iterator" | "labels") {
            diags.push(Diagnostic::at(
                &a.loc,
                format!("unsupported argument \"{k}\" in `dynamic` (it takes for_each, iterator, labels and a content block)"),
            ));
        }
    }
    let contents: Vec<_> = b
        .body
        .blocks
        .iter()
        .filter(|c| c.type_name == "content")
        .collect();
    if let Some(other) = b.body.blocks.iter().find(|c| c.type_name != "content") {
        diags.push(Diagnostic::at(
            &other.loc,
            format!(
                "unsupported block type \"{}\" in `dynamic`: put blocks inside its content block",
                other.type_name
            ),
        ));
    }
    let [content] = contents.as_slice() else {
        diags.push(Diagnostic::at(
            &b.loc,
            format!(
                "a `dynamic` block has one `content` block ({} here)",
                contents.len()
            ),
        ));
        return;
    };
    let Some(fe) = b.body.attrs.get("for_each") else {
        diags.push(Diagnostic::at(
            &b.loc,
            "a `dynamic` block needs `for_each`, the collection to make blocks from",
        ));
        return;
    };
    let collection = match eval(&fe.expr, scope) {
        Ok(v) => v,
        Err(d) => {
            diags.push(d);
            return;
        }
    };
    let items: Vec<(Value, Value)> = match collection {
        Value::Unknown => {
            unknown.insert(bs.name);
            return;
        }
        Value::Null => {
            diags.push(Diagnostic::at(
                &fe.expr.loc(),
                "for_each of a dynamic block is null: give a list, set or map (an empty one for no block)",
            ));
            return;
        }
        // Over a set, as Terraform: the key is the element itself.
        Value::List(l) if fe.expr.makes_set(scope) => {
            l.into_iter().map(|v| (v.clone(), v)).collect()
        }
        Value::List(l) => l
            .into_iter()
            .enumerate()
            .map(|(i, v)| (Value::from(i as i64), v))
            .collect(),
        Value::Object(o) => o.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
        other => {
            diags.push(Diagnostic::at(
                &fe.expr.loc(),
                format!(
                    "for_each of a dynamic block must be a list, set or map, got {}",
                    other.type_name()
                ),
            ));
            return;
        }
    };
    for (key, value) in items {
        let inner = Iterator_ {
            outer: scope,
            name: iterator,
            key,
            value,
        };
        match decode_body(&bs.schema, &content.body, &inner) {
            Ok(v) => blocks.entry(bs.name).or_default().push(v),
            Err(d) => diags.0.extend(d.0),
        }
    }
}

/// A dynamic block's iterator in scope, over the scope around it.
struct Iterator_<'a> {
    outer: &'a dyn Scope,
    name: &'a str,
    key: Value,
    value: Value,
}

impl Scope for Iterator_<'_> {
    fn resolve(&self, root: &str, names: &[&str], loc: &Loc) -> Result<(Value, usize), Diagnostic> {
        if root != self.name {
            return self.outer.resolve(root, names, loc);
        }
        match names.first() {
            Some(&"key") => Ok((self.key.clone(), 1)),
            Some(&"value") => Ok((self.value.clone(), 1)),
            _ => Err(Diagnostic::at(
                loc,
                format!("the iterator \"{root}\" has \"key\" and \"value\""),
            )),
        }
    }
    fn read_file(&self, path: &str) -> Option<String> {
        self.outer.read_file(path)
    }
    fn bundle(&self) -> Option<&veeps_lang::config::Bundle> {
        self.outer.bundle()
    }
    fn applying(&self) -> bool {
        self.outer.applying()
    }
    fn plan_time(&self) -> Option<&str> {
        self.outer.plan_time()
    }
    fn var_type(&self, name: &str) -> Option<veeps_lang::value::Type> {
        self.outer.var_type(name)
    }
    fn is_sensitive(&self, e: &veeps_lang::eval::Expr) -> bool {
        self.outer.is_sensitive(e)
    }
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

    /// `var.NAME` from a map; everything else unknown.
    struct Vars(BTreeMap<String, Value>);

    impl Scope for Vars {
        fn resolve(
            &self,
            root: &str,
            names: &[&str],
            loc: &Loc,
        ) -> Result<(Value, usize), Diagnostic> {
            match (root, names.first()) {
                ("var", Some(n)) => Ok((self.0.get(*n).cloned().unwrap_or(Value::Unknown), 1)),
                _ => Err(Diagnostic::at(loc, format!("unknown reference {root}"))),
            }
        }
        fn read_file(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn body_of(hcl: &str) -> BodyConfig {
        let b = veeps_lang::config::Bundle {
            root: "e".into(),
            client: Default::default(),
            files: [("e/main.hcl".to_string(), hcl.to_string())].into(),
        };
        let c = veeps_lang::config::load_config(Arc::new(b)).unwrap();
        c.root_module().resources["thing.t"].body.clone()
    }

    #[test]
    fn dynamic_blocks_make_one_block_per_element() {
        let vars = Vars(
            [
                (
                    "ports".to_string(),
                    Value::List(vec![Value::from(80i64), Value::from(443i64)]),
                ),
                (
                    "named".to_string(),
                    obj(&[("a", Value::from(1i64)), ("b", Value::from(2i64))]),
                ),
                ("later".to_string(), Value::Unknown),
            ]
            .into(),
        );
        let decode = |hcl: &str| decode_body(&schema(), &body_of(hcl), &vars);
        let v = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  rule {\n    port = 1\n  }\n  dynamic \"rule\" {\n    for_each = var.ports\n    content {\n      port = rule.value + rule.key\n    }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(v.get("rule"), Some(&rules(&[1.0, 80.0, 444.0])));
        // A map, with a named iterator.
        let v = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  dynamic \"rule\" {\n    for_each = var.named\n    iterator = r\n    content {\n      port = r.value * 10\n    }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(v.get("rule"), Some(&rules(&[10.0, 20.0])));
        // A set: the key is the element, as in Terraform.
        let v = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  dynamic \"rule\" {\n    for_each = toset([443, 80])\n    content {\n      port = rule.key + 1\n    }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(v.get("rule"), Some(&rules(&[81.0, 444.0])));
        // Not known yet: the blocks are unknown until it is.
        let v = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  dynamic \"rule\" {\n    for_each = var.later\n    content {\n      port = 1\n    }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(v.get("rule"), Some(&Value::Unknown));
        // Errors name the place and what to do.
        let e = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  dynamic \"rules\" {\n    for_each = var.ports\n    content {\n      port = 1\n    }\n  }\n}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("e/main.hcl:3:") && e.contains("Did you mean \"rule\""),
            "{e}"
        );
        let e = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  dynamic \"rule\" {\n    for_each = var.ports\n  }\n}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("one `content` block"), "{e}");
        let e = decode(
            "resource \"thing\" \"t\" {\n  name = \"x\"\n  dynamic \"rule\" {\n    for_each = var.ports\n    content {\n      port = rule.nope\n    }\n  }\n}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has \"key\" and \"value\""), "{e}");
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
                .map(|p| obj(&[("port", Value::number(*p))]))
                .collect(),
        )
    }

    /// The prior state every case starts from.
    fn prior() -> Value {
        obj(&[
            ("name", Value::string("web")),
            ("size", Value::from(2i64)),
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
            ("size", Value::number(size)),
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
