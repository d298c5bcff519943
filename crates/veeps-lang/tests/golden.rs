//! Terraform's own answers: every output of `tests/golden/functions.tf`, evaluated by
//! Terraform 1.11.4 into `functions.json` and written digit for digit into `functions.exact`
//! (`tests/golden/regenerate.sh`), must evaluate to the same value in veeps, except those listed in `known-differences.txt` (which must
//! still differ, so the list stays true).

use std::sync::Arc;
use veeps_lang::config::{load_config, Bundle, ModuleConfig};
use veeps_lang::diag::{Diagnostic, Loc};
use veeps_lang::eval::{eval, Scope};
use veeps_lang::value::Value;

/// What the outputs may refer to: the file's locals, and files beside it.
struct Golden<'a> {
    module: &'a ModuleConfig,
    bundle: &'a Bundle,
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
        self.bundle.files.get(path).cloned()
    }
    fn bundle(&self) -> Option<&Bundle> {
        Some(self.bundle)
    }
}

/// A value on one line as `canonical.py` writes Terraform's: numbers digit for digit as
/// Terraform prints them, object keys sorted.
fn canonical(v: &Value) -> String {
    match v {
        Value::Null | Value::Unknown => "null".into(),
        Value::Bool(b) => b.to_string(),
        // As an output, after Terraform's plan carried it.
        Value::Number(n) => n.settled().text(),
        Value::String(s) => serde_json::to_string(s).unwrap(),
        Value::List(l) => format!(
            "[{}]",
            l.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), canonical(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[test]
fn functions_answer_as_terraform_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let tf = std::fs::read_to_string(dir.join("functions.tf")).unwrap();

    let mut files: std::collections::BTreeMap<String, String> =
        [("functions.tf".to_string(), tf)].into();
    // The fixtures beside it, as the CLI would bundle them.
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "txt" || x == "md") {
                let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
                files.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let bundle = Arc::new(Bundle {
        root: ".".into(),
        client: Default::default(),
        files,
    });
    let config = load_config(bundle.clone()).unwrap();
    let module = config.modules.values().next().unwrap();
    let scope = Golden {
        module,
        bundle: &bundle,
    };
    let known: std::collections::BTreeSet<String> =
        std::fs::read_to_string(dir.join("known-differences.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
    let mut wrong = vec![];
    let exact: std::collections::BTreeMap<String, String> =
        std::fs::read_to_string(dir.join("functions.exact"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(
        module.outputs.len(),
        exact.len(),
        "functions.exact is stale: regenerate it"
    );
    for name in exact.keys() {
        let out = &module.outputs[name];
        let got = match eval(&out.value, &scope) {
            Ok(v) => canonical(&v),
            Err(d) => format!("error: {}", d.summary),
        };
        let expected = &exact[name];
        match (&got == expected, known.contains(name)) {
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

/// Every expression of `tests/golden/errors.txt` is one Terraform refuses
/// (`errors.json` holds its error, from `regenerate-errors.sh`): veeps refuses it too, with
/// an error at the expression, and never panics.
#[test]
fn what_terraform_refuses_veeps_refuses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let answers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("errors.json")).unwrap()).unwrap();
    let cases: Vec<(String, String)> = std::fs::read_to_string(dir.join("errors.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (n, e) = l.split_once(' ').unwrap();
            (n.to_string(), e.to_string())
        })
        .collect();
    assert_eq!(
        cases.len(),
        answers.len(),
        "errors.json is stale: regenerate it"
    );
    let mut accepted = vec![];
    for (name, expr) in &cases {
        assert!(
            answers.contains_key(name),
            "{name} has no answer: regenerate errors.json"
        );
        let text = format!("output \"x\" {{\n  value = {expr}\n}}\n");
        let bundle = Arc::new(Bundle {
            root: ".".into(),
            client: Default::default(),
            files: [("main.tf".to_string(), text)].into(),
        });
        let config = match load_config(bundle.clone()) {
            Ok(c) => c,
            Err(_) => continue,
        };
        let module = config.modules.values().next().unwrap();
        let scope = Golden {
            module,
            bundle: &bundle,
        };
        match eval(&module.outputs["x"].value, &scope) {
            Ok(v) => accepted.push(format!(
                "{name}: {expr} = {v} (terraform: {})",
                answers[name]
            )),
            Err(d) => assert!(
                d.position().is_some_and(|p| p.starts_with("main.tf:2:")),
                "{name}: the error is not placed: {d:?}"
            ),
        }
    }
    assert!(
        accepted.is_empty(),
        "{} accepted where Terraform refuses:\n{}",
        accepted.len(),
        accepted.join("\n")
    );
}
