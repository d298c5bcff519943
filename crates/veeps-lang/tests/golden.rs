//! Terraform's own answers: every output of `tests/golden/functions.tf`, evaluated by
//! Terraform 1.11.4 into `functions.json` (`tests/golden/regenerate.sh`), must evaluate to
//! the same value in veeps, except those listed in `known-differences.txt` (which must
//! still differ, so the list stays true).

use std::sync::Arc;
use veeps_lang::config::{load_config, Bundle, ModuleConfig};
use veeps_lang::diag::{Diagnostic, Loc};
use veeps_lang::eval::{eval, Scope};
use veeps_lang::value::Value;

/// What the outputs may refer to: the file's locals, and files beside it.
struct Golden<'a> {
    module: &'a ModuleConfig,
    dir: std::path::PathBuf,
}

impl Scope for Golden<'_> {
    fn resolve(&self, root: &str, names: &[&str], loc: &Loc) -> Result<(Value, usize), Diagnostic> {
        match (root, names.first()) {
            ("local", Some(name)) => match self.module.locals.get(*name) {
                Some(l) => Ok((eval(&l.expr, self)?, 1)),
                None => Err(Diagnostic::at(loc, format!("no local {name}"))),
            },
            _ => Err(Diagnostic::at(loc, format!("no {root} here"))),
        }
    }
    fn read_file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(path)).ok()
    }
}

/// Numbers compared as numbers (`4` and `4.0` are one value).
fn normal(j: &serde_json::Value) -> serde_json::Value {
    match j {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
        serde_json::Value::Array(a) => a.iter().map(normal).collect(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), normal(v))).collect(),
        other => other.clone(),
    }
}

#[test]
fn functions_answer_as_terraform_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let tf = std::fs::read_to_string(dir.join("functions.tf")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("functions.json")).unwrap())
            .unwrap();
    let hello = std::fs::read_to_string(dir.join("hello.txt")).unwrap();
    let bundle = Bundle {
        root: ".".into(),
        files: [
            ("functions.tf".to_string(), tf),
            ("hello.txt".to_string(), hello),
        ]
        .into(),
    };
    let config = load_config(Arc::new(bundle)).unwrap();
    let module = config.modules.values().next().unwrap();
    let scope = Golden {
        module,
        dir: dir.clone(),
    };
    let known: std::collections::BTreeSet<String> =
        std::fs::read_to_string(dir.join("known-differences.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
    let mut wrong = vec![];
    let outputs = want.as_object().unwrap();
    assert_eq!(
        module.outputs.len(),
        outputs.len(),
        "functions.json is stale: regenerate it"
    );
    for (name, answer) in outputs {
        let out = &module.outputs[name];
        let got = match eval(&out.value, &scope) {
            Ok(v) => normal(&v.to_json()),
            Err(d) => serde_json::json!(format!("error: {}", d.summary)),
        };
        let expected = normal(&answer["value"]);
        match (got == expected, known.contains(name)) {
            (false, false) => wrong.push(format!("{name}: veeps {got}, terraform {expected}")),
            (true, true) => wrong.push(format!(
                "{name} now agrees with Terraform: take it off known-differences.txt"
            )),
            _ => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
