//! The engine against the built-in resource types, with a real store and keys.

use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_engine::plan::{Action, Event};
use veeps_engine::{Engine, EngineError, Request};
use veeps_lang::config::Bundle;

struct Env {
    dir: tempfile::TempDir,
    engine: Arc<Engine>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(veeps_state::Store::open(&dir.path().join("state.redb")).unwrap());
    let kms = Arc::new(veeps_kms::Kms::open(dir.path(), store.clone()).unwrap());
    let mut reg = veeps_resource::Registry::new();
    veeps_builtins::register(&mut reg);
    let engine = Engine::new(
        dir.path().to_path_buf(),
        reg,
        store,
        kms,
        Default::default(),
        "boot".into(),
    );
    Env { dir, engine }
}

fn bundle(files: &[(&str, &str)]) -> Bundle {
    Bundle {
        root: "env".into(),
        client: Default::default(),
        files: files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn req(b: &Bundle) -> Request {
    Request {
        env: "test".into(),
        bundle: b.clone(),
        vars: vec![],
        caller: "tester".into(),
        operation: "apply".into(),
        plan_time: None,
    }
}

async fn apply(e: &Env, b: &Bundle) -> Vec<Event> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    e.engine.apply(req(b), false, None, tx).await.unwrap();
    let mut out = vec![];
    while let Ok(ev) = rx.try_recv() {
        out.push(ev);
    }
    out
}

fn complete(events: &[Event]) -> (String, veeps_state::Summary, Vec<String>) {
    for e in events {
        if let Event::Complete {
            status,
            summary,
            errors,
            ..
        } = e
        {
            return (status.clone(), *summary, errors.clone());
        }
    }
    panic!("no Complete event in {events:?}")
}

const MAIN: &str = r#"
variable "names" {
  type    = list(string)
  default = ["a", "b"]
}
locals {
  prefix = "veeps-${length(var.names)}"
}
resource "random_id" "one" {
  byte_length = 4
  prefix      = local.prefix
}
resource "random_id" "each" {
  for_each    = toset(var.names)
  byte_length = 2
  keepers     = { name = each.key, parent = random_id.one.hex }
}
resource "random_password" "db" {
  length  = 20
  special = false
}
module "child" {
  source = "./mod"
  count  = 2
  n      = count.index
}
output "one" {
  value = random_id.one.hex
}
output "child" {
  value = module.child[*].id
}
output "password" {
  value     = random_password.db.result
  sensitive = true
}
"#;

const MODULE: &str = r#"
variable "n" {
  type = number
}
resource "random_id" "x" {
  byte_length = 3 + var.n
}
output "id" {
  value = random_id.x.hex
}
"#;

#[tokio::test]
async fn apply_then_plan_is_empty_and_values_are_stable() {
    let e = env();
    let b = bundle(&[("env/main.hcl", MAIN), ("env/mod/main.hcl", MODULE)]);
    let plan = e.engine.plan(&req(&b), false).await.unwrap();
    assert_eq!(plan.summary.add, 6, "{}", plan.render());
    assert!(plan
        .render()
        .contains("Plan: 6 to add, 0 to change, 0 to destroy."));
    let ev = apply(&e, &b).await;
    let (status, summary, errors) = complete(&ev);
    assert_eq!(status, "ok", "{errors:?}");
    assert_eq!(summary.add, 6);
    let again = e.engine.plan(&req(&b), false).await.unwrap();
    assert!(again.is_empty(), "{}", again.render());
    let outs = e.engine.outputs("test").unwrap();
    let one = outs["one"].0.as_str().unwrap().to_string();
    assert!(one.starts_with("veeps-2"), "{one}");
    assert_eq!(outs["child"].0.as_list().unwrap().len(), 2);
    assert!(outs["password"].1, "sensitive");
    assert_eq!(outs["password"].0.as_str().unwrap().len(), 20);
    // The password is encrypted at rest: its plaintext is not in the store file.
    let pw = outs["password"].0.as_str().unwrap().to_string();
    drop(e.engine);
    let raw = std::fs::read(e.dir.path().join("state.redb")).unwrap();
    assert!(
        !raw.windows(pw.len()).any(|w| w == pw.as_bytes()),
        "plaintext password found in the store"
    );
}

/// An argument set to null is an argument not set, as in Terraform: its default applies,
/// and the next plan has nothing to change (a module passing an optional input through).
#[tokio::test]
async fn an_argument_set_to_null_takes_its_default() {
    let e = env();
    let file = e.dir.path().join("out.txt");
    let main = format!(
        "variable \"mode\" {{\n  type    = string\n  default = null\n}}\nresource \"local_file\" \"f\" {{\n  filename        = \"{}\"\n  content         = \"x\"\n  file_permission = var.mode\n}}\n",
        file.display()
    );
    let b = bundle(&[("env/main.hcl", &main)]);
    let (status, _, errors) = complete(&apply(&e, &b).await);
    assert_eq!(status, "ok", "{errors:?}");
    let again = e.engine.plan(&req(&b), false).await.unwrap();
    assert!(again.is_empty(), "{}", again.render());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

/// `terraform.workspace` is the environment's name (what a workspace is to veeps), in a
/// module too; `terraform {}` blocks are read.
#[tokio::test]
async fn terraform_workspace_is_the_environment() {
    let e = env();
    let main = r#"
terraform {
  required_version = ">= 1.0"
}
module "m" {
  source = "./m"
}
output "ws" {
  value = "app-${terraform.workspace}"
}
output "inner" {
  value = module.m.ws
}
"#;
    let module = "output \"ws\" {\n  value = terraform.workspace\n}\n";
    let b = bundle(&[("env/main.hcl", main), ("env/m/main.hcl", module)]);
    let (status, _, errors) = complete(&apply(&e, &b).await);
    assert_eq!(status, "ok", "{errors:?}");
    let outs = e.engine.outputs("test").unwrap();
    assert_eq!(outs["ws"].0.as_str(), Some("app-test"));
    assert_eq!(outs["inner"].0.as_str(), Some("test"));
}

/// A null passed to a module's variable is the value (Terraform's `nullable`, true by
/// default); with `nullable = false` the default stands in, and without one it is refused.
#[tokio::test]
async fn null_inputs_follow_nullable() {
    let e = env();
    let module = r#"
variable "open" {
  type    = string
  default = "d"
}
variable "closed" {
  type     = string
  default  = "d"
  nullable = false
}
output "open" {
  value = var.open == null ? "null" : var.open
}
output "closed" {
  value = var.closed
}
"#;
    let main = r#"
module "m" {
  source = "./m"
  open   = null
  closed = null
}
output "open" {
  value = module.m.open
}
output "closed" {
  value = module.m.closed
}
"#;
    let b = bundle(&[("env/main.hcl", main), ("env/m/main.hcl", module)]);
    let (status, _, errors) = complete(&apply(&e, &b).await);
    assert_eq!(status, "ok", "{errors:?}");
    let outs = e.engine.outputs("test").unwrap();
    assert_eq!(outs["open"].0.as_str(), Some("null"));
    assert_eq!(outs["closed"].0.as_str(), Some("d"));
    // No default and not nullable: a null is refused, naming the variable.
    let strict = module.replace(
        "  default  = \"d\"\n  nullable = false",
        "  nullable = false",
    );
    let b = bundle(&[("env/main.hcl", main), ("env/m/main.hcl", &strict)]);
    let err = e
        .engine
        .plan(&req(&b), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"closed\" may not be null"), "{err}");
}

#[tokio::test]
async fn changes_update_replace_and_destroy() {
    let e = env();
    let b = bundle(&[("env/main.hcl", MAIN), ("env/mod/main.hcl", MODULE)]);
    apply(&e, &b).await;
    let before = e.engine.outputs("test").unwrap()["one"].0.clone();
    // Changing a force-new attribute replaces, and its dependents' keepers change too.
    let changed = MAIN.replace("byte_length = 4", "byte_length = 5");
    let b2 = bundle(&[("env/main.hcl", &changed), ("env/mod/main.hcl", MODULE)]);
    let plan = e.engine.plan(&req(&b2), false).await.unwrap();
    let text = plan.render();
    assert!(
        text.contains("-/+ resource \"random_id\" \"one\""),
        "{text}"
    );
    assert!(text.contains("# forces replacement"), "{text}");
    let ev = apply(&e, &b2).await;
    assert_eq!(complete(&ev).0, "ok");
    assert_ne!(e.engine.outputs("test").unwrap()["one"].0, before);
    // Removing a resource destroys it.
    let fewer = changed.replace("default = [\"a\", \"b\"]", "default = [\"a\"]");
    let b3 = bundle(&[("env/main.hcl", &fewer), ("env/mod/main.hcl", MODULE)]);
    let plan = e.engine.plan(&req(&b3), false).await.unwrap();
    assert!(
        plan.changes
            .iter()
            .any(|c| c.address == "random_id.each[\"b\"]" && c.action == Action::Delete),
        "{}",
        plan.render()
    );
    apply(&e, &b3).await;
    assert!(e
        .engine
        .store
        .resource("test", "random_id.each[\"b\"]")
        .unwrap()
        .is_none());
    // Destroy removes everything.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    e.engine.apply(req(&b3), true, None, tx).await.unwrap();
    assert!(e.engine.store.resources("test").unwrap().is_empty());
}

#[tokio::test]
async fn drift_of_a_local_file_is_detected_and_repaired() {
    let e = env();
    let path = e.dir.path().join("out/hello.txt");
    let cfg = format!(
        "resource \"local_file\" \"f\" {{\n  filename = \"{}\"\n  content  = \"hello\"\n}}\n",
        path.display()
    );
    let b = bundle(&[("env/main.hcl", &cfg)]);
    apply(&e, &b).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    std::fs::write(&path, "tampered").unwrap();
    let plan = e.engine.plan(&req(&b), false).await.unwrap();
    assert_eq!(plan.drift.len(), 1, "{}", plan.render());
    assert!(plan.render().contains("has changed"), "{}", plan.render());
    assert_eq!(plan.changes[0].action, Action::Update);
    apply(&e, &b).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    std::fs::remove_file(&path).unwrap();
    let plan = e.engine.plan(&req(&b), false).await.unwrap();
    assert_eq!(plan.changes[0].action, Action::Create, "{}", plan.render());
    assert!(plan.render().contains("has been deleted"));
    apply(&e, &b).await;
    assert!(path.exists());
}

#[tokio::test]
async fn an_approved_plan_must_match() {
    let e = env();
    let b = bundle(&[(
        "env/main.hcl",
        "resource \"random_id\" \"x\" {\n  byte_length = 2\n}\n",
    )]);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = e
        .engine
        .apply(req(&b), false, Some("not-the-hash".into()), tx)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PlanChanged), "{err}");
    assert!(
        e.engine.store.lock_info("test").unwrap().is_none(),
        "the lock is released on error"
    );
}

async fn errors_of(files: &[(&str, &str)]) -> String {
    let e = env();
    let b = bundle(files);
    match e.engine.plan(&req(&b), false).await {
        Err(EngineError::Config(d)) => d.to_string(),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(p) => panic!("expected an error, got a plan:\n{}", p.render()),
    }
}

#[tokio::test]
async fn bad_input_names_file_line_and_column() {
    let t = errors_of(&[(
        "env/main.hcl",
        "resource \"random_idd\" \"x\" {\n  byte_length = 2\n}\n",
    )])
    .await;
    assert!(
        t.contains("env/main.hcl:1:10") && t.contains("Did you mean \"random_id\""),
        "{t}"
    );
    let t = errors_of(&[(
        "env/main.hcl",
        "resource \"random_id\" \"x\" {\n  byte_lenght = 2\n}\n",
    )])
    .await;
    assert!(
        t.contains("env/main.hcl:2:3") && t.contains("Did you mean \"byte_length\""),
        "{t}"
    );
    let t = errors_of(&[(
        "env/main.hcl",
        "resource \"random_id\" \"x\" {\n  byte_length = \"many\"\n}\n",
    )])
    .await;
    assert!(
        t.contains("env/main.hcl:2:17") && t.contains("a number is required"),
        "{t}"
    );
    let t = errors_of(&[(
        "env/main.hcl",
        "locals {\n  a = local.b\n  b = local.c\n  c = local.a\n}\n",
    )])
    .await;
    assert!(
        t.contains("dependency cycle")
            && t.contains("local.a")
            && t.contains("local.b")
            && t.contains("local.c"),
        "{t}"
    );
    let t = errors_of(&[("env/main.hcl", "output \"x\" {\n  value = var.nope\n}\n")]).await;
    assert!(
        t.contains("env/main.hcl:2:11") && t.contains("undeclared input variable \"nope\""),
        "{t}"
    );
    let t = errors_of(&[("env/main.hcl", "variable \"need\" {\n  type = string\n}\n")]).await;
    assert!(
        t.contains("env/main.hcl:1:1") && t.contains("no value for required variable \"need\""),
        "{t}"
    );
    let t = errors_of(&[(
        "env/main.hcl",
        "variable \"n\" {\n  default = 3\n  validation {\n    condition     = var.n > 5\n    error_message = \"n must be above 5.\"\n  }\n}\n",
    )])
    .await;
    assert!(
        t.contains("env/main.hcl:4:21") && t.contains("n must be above 5."),
        "{t}"
    );
    let t = errors_of(&[("env/main.hcl", "resource \"random_id\" \"x\" {\n")]).await;
    assert!(
        t.contains("env/main.hcl:") && t.contains("invalid HCL syntax"),
        "{t}"
    );
    let t = errors_of(&[("env/main.hcl", "resource \"random_id\" \"x\" {\n}\n")]).await;
    assert!(
        t.contains("missing required argument \"byte_length\""),
        "{t}"
    );
    let t = errors_of(&[("env/main.hcl", "output \"p\" {\n  value = random_password.p.result\n}\nresource \"random_password\" \"p\" {\n  length = 8\n}\n")]).await;
    assert!(t.contains("sensitive = true"), "{t}");
}

#[tokio::test]
async fn prevent_destroy_blocks_plans_that_destroy() {
    let e = env();
    let cfg = "resource \"random_id\" \"x\" {\n  byte_length = 2\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n";
    let b = bundle(&[("env/main.hcl", cfg)]);
    apply(&e, &b).await;
    let b2 = bundle(&[("env/main.hcl", &cfg.replace("= 2", "= 3"))]);
    let err = e
        .engine
        .plan(&req(&b2), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("prevent_destroy"), "{err}");
    let err = e.engine.plan(&req(&b), true).await.unwrap_err().to_string();
    assert!(err.contains("prevent_destroy"), "{err}");
}

#[tokio::test]
async fn functions_and_expressions() {
    let e = env();
    let cfg = r#"
locals {
  vpc      = "10.0.0.0/18"
  subnets  = [for i in range(3) : cidrsubnet(local.vpc, 6, i)]
  gw       = cidrhost(local.subnets[0], 1)
  tags     = merge({ env = "prod" }, { team = "ops" })
  joined   = join(",", concat(["a"], split("-", "b-c")))
  looked   = lookup(local.tags, "team", "none")
  fallback = try(local.tags.nope, "default")
  json     = jsondecode(jsonencode({ a = [1, 2] }))
  fmt      = format("%s-%03d", "web", 7)
  first    = coalesce("", "x")
  kv       = { for k, v in local.tags : upper(k) => v if k != "team" }
  num      = tonumber("42") + length(keys(local.tags))
  cond     = length(local.subnets) > 2 ? "many" : "few"
  tmpl     = "%{for s in local.subnets}${s};%{endfor}"
}
output "all" {
  value = [local.subnets, local.gw, local.joined, local.looked, local.fallback, local.json.a[1], local.fmt, local.first, local.kv, local.num, local.cond, element(values(local.tags), 1), local.tmpl]
}
"#;
    let b = bundle(&[("env/main.hcl", cfg)]);
    apply(&e, &b).await;
    let v = e.engine.outputs("test").unwrap()["all"].0.to_string();
    assert_eq!(
        v,
        r#"[["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"], "10.0.0.1", "a,b,c", "ops", "default", 2, "web-007", "x", {ENV = "prod"}, 44, "many", "ops", "10.0.0.0/24;10.0.1.0/24;10.0.2.0/24;"]"#
    );
}

/// Thousands of corrupted configurations: every one gets an answer, none a panic.
#[tokio::test]
async fn no_input_makes_the_engine_panic() {
    let mut reg = veeps_resource::Registry::new();
    veeps_builtins::register(&mut reg);
    let reg = Arc::new(reg);
    let base = format!("{MAIN}\nlocals {{\n  c = cidrsubnet(\"::/0\", 0, 0)\n  h = cidrhost(\"::/0\", 5)\n  s = substr(\"abc\", 1, 9223372036854775807)\n  f = format(\"%99999999999999d\", 1)\n  r = range(0, 1e12)\n}}\n");
    let inserts = [
        "}",
        "{",
        "\"",
        "${",
        "[*]",
        "..",
        "var.",
        "(",
        ")",
        "= =",
        "%{",
        "\n",
        "count.index",
        "each.key",
        "module.",
        "null",
        "[",
        "]",
        "?",
        ":",
        "...",
        "for x in",
        "-1",
        "1e400",
        "\\",
    ];
    let mut mutants: Vec<String> = vec![];
    let bytes = base.as_bytes();
    for i in (0..bytes.len()).step_by(2) {
        mutants.push(String::from_utf8_lossy(&bytes[..i]).to_string());
        let mut d = bytes.to_vec();
        d.remove(i);
        mutants.push(String::from_utf8_lossy(&d).to_string());
        let ins = inserts[i % inserts.len()];
        mutants.push(format!(
            "{}{ins}{}",
            String::from_utf8_lossy(&bytes[..i]),
            String::from_utf8_lossy(&bytes[i..])
        ));
    }
    assert!(mutants.len() > 1000, "{}", mutants.len());
    for m in &mutants {
        let b = bundle(&[("env/main.hcl", m), ("env/mod/main.hcl", MODULE)]);
        if let Err(d) = veeps_engine::validate(reg.clone(), b, &[]).await {
            let t = d.to_string();
            assert!(
                !t.contains("internal error"),
                "a task panicked on:\n{m}\n{t}"
            );
            assert!(d.0.iter().all(|x| !x.summary.is_empty()));
        }
    }
}

/// Issue "Trust what exists", item 17: `count = 1e13` made plan try an 880 TB allocation
/// and aborted the server. Expansions and the work of expressions are bounded, with an
/// error that names the limit.
#[tokio::test]
async fn huge_counts_and_expressions_are_errors_not_aborts() {
    for (src, says) in [
        (
            "resource \"random_id\" \"x\" {\n  count       = 1e13\n  byte_length = 4\n}\n",
            "at most 10000",
        ),
        (
            "resource \"random_id\" \"x\" {\n  for_each    = toset([for i in range(20000) : tostring(i)])\n  byte_length = 4\n}\n",
            "at most 10000",
        ),
        (
            "locals {\n  big = [for i in range(100000) : [for j in range(100000) : j]]\n}\noutput \"n\" {\n  value = length(local.big)\n}\n",
            "steps of for",
        ),
        (
            "locals {\n  a = join(\"\", [for i in range(600000) : \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"])\n  b = \"${local.a}${local.a}\"\n}\noutput \"n\" {\n  value = length(local.b)\n}\n",
            "grows past",
        ),
        (
            "module \"m\" {\n  source = \"./m\"\n  count  = 100001\n}\n",
            "at most 10000",
        ),
    ] {
        let out = errors_of(&[("env/main.hcl", src), ("env/m/main.hcl", "")]).await;
        assert!(out.contains(says) && out.contains("main.hcl:"), "{src}\n{out}");
    }
}

/// Issue "Trust what exists", items 19 and 20: a secret placed in an attribute the schema
/// does not mark (a sensitive variable, `random_password.result`, through a local, a
/// module input or `sensitive()`) reached state in plaintext, `-var` values stayed in
/// history; and a value shaped `{"$sensitive" = "..."}` made the environment impossible
/// to plan. Everything derived from a secret is encrypted, and user data cannot pass for
/// ciphertext.
#[tokio::test]
async fn secrets_never_reach_state_or_history_in_plaintext() {
    let e = env();
    let dir = e.dir.path().join("out");
    let f = |n: &str| dir.join(n).display().to_string();
    let cfg = format!(
        r#"
variable "pw" {{
  type      = string
  sensitive = true
}}
resource "random_password" "p" {{
  length = 20
}}
locals {{
  url = "postgres://app:${{random_password.p.result}}@db/app"
}}
resource "local_file" "a" {{
  filename = "{a}"
  content  = local.url
}}
resource "local_file" "b" {{
  filename = "{b}"
  content  = var.pw
}}
resource "local_file" "c" {{
  filename = "{c}"
  content  = sensitive("hidden-literal")
}}
module "m" {{
  source = "./m"
  secret = var.pw
  path   = "{d}"
}}
resource "time_sleep" "t" {{
  create_duration = "0s"
  triggers        = {{ "$sensitive" = "not ciphertext", "$$x" = "kept" }}
}}
output "triggers" {{
  value = time_sleep.t.triggers
}}
"#,
        a = f("a"),
        b = f("b"),
        c = f("c"),
        d = f("d"),
    );
    let module = "variable \"secret\" {}\nvariable \"path\" {}\nresource \"local_file\" \"d\" {\n  filename = var.path\n  content  = \"k=${var.secret}\"\n}\n";
    let b = bundle(&[("env/main.hcl", &cfg), ("env/m/main.hcl", module)]);
    let mut r = req(&b);
    r.vars = vec![("pw".into(), "var-secret-123".into())];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    e.engine.apply(r.clone(), false, None, tx).await.unwrap();
    let mut events = vec![];
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    assert_eq!(complete(&events).0, "ok", "{:?}", complete(&events).2);
    let password = std::fs::read_to_string(dir.join("a")).unwrap();
    let password = password
        .trim_start_matches("postgres://app:")
        .trim_end_matches("@db/app");
    assert_eq!(password.len(), 20);
    let mut raw = String::new();
    for rec in e.engine.store.resources("test").unwrap() {
        raw.push_str(&rec.attrs.to_string());
    }
    let history = serde_json::to_string(&e.engine.store.history("test").unwrap()).unwrap();
    for secret in [password, "var-secret-123", "hidden-literal"] {
        assert!(!raw.contains(secret), "{secret} in state: {raw}");
    }
    // (A literal written in the configuration is in its source, as in Terraform.)
    for secret in [password, "var-secret-123"] {
        assert!(!history.contains(secret), "{secret} in history: {history}");
    }
    // `state show` masks what derives from a secret.
    let (_, shown) = e.engine.show("test", "local_file.a").unwrap().unwrap();
    assert!(!shown.to_plan_json().to_string().contains(password));
    // The user's "$sensitive" object round-trips as data; plan and destroy work.
    let outs = e.engine.outputs("test").unwrap();
    assert_eq!(
        outs["triggers"].0.to_json(),
        serde_json::json!({"$sensitive": "not ciphertext", "$$x": "kept"})
    );
    let plan = e.engine.plan(&r, false).await.unwrap();
    assert!(
        plan.changes.iter().all(|c| c.action == Action::NoOp),
        "{}",
        plan.render()
    );
    let (bundle_back, vars_back) = e
        .engine
        .history_inputs("test", &e.engine.store.history("test").unwrap()[0])
        .unwrap();
    assert_eq!(vars_back, r.vars);
    assert_eq!(bundle_back.files.len(), 2);
    let plan = e.engine.plan(&r, true).await.unwrap();
    assert!(
        plan.changes.iter().all(|c| c.action == Action::Delete),
        "{}",
        plan.render()
    );
}

/// A `kmscrypt::` value is a secret wherever it flows: written in configuration, or given
/// to a root variable in a `.tfvars` file.
#[tokio::test]
async fn kmscrypt_values_are_sensitive_from_configuration_and_tfvars() {
    let t = errors_of(&[(
        "env/main.hcl",
        "locals {\n  k = \"kmscrypt::abc\"\n}\noutput \"o\" {\n  value = local.k\n}\n",
    )])
    .await;
    assert!(
        t.contains("sensitive = true") && t.contains("kmscrypt"),
        "{t}"
    );
    let t = errors_of(&[
        (
            "env/main.hcl",
            "variable \"k\" {}\noutput \"o\" {\n  value = var.k\n}\n",
        ),
        ("env/terraform.tfvars", "k = \"kmscrypt::abc\"\n"),
    ])
    .await;
    assert!(t.contains("sensitive = true") && t.contains("var.k"), "{t}");
}

#[tokio::test]
async fn moved_blocks_rename_state_without_replacing_anything() {
    let e = env();
    let before = r#"
resource "random_id" "old" {
  count       = 2
  byte_length = 4
}
module "child" {
  source = "./mod"
  n      = 1
}
output "ids" {
  value = [random_id.old[*].hex, module.child.id]
}
"#;
    let b = bundle(&[("env/main.hcl", before), ("env/mod/main.hcl", MODULE)]);
    apply(&e, &b).await;
    let ids = e.engine.outputs("test").unwrap()["ids"].0.clone();
    let after = r#"
resource "random_id" "new" {
  count       = 2
  byte_length = 4
}
module "kid" {
  source = "./mod"
  n      = 1
}
moved {
  from = random_id.old
  to   = random_id.new
}
moved {
  from = module.child
  to   = module.kid
}
output "ids" {
  value = [random_id.new[*].hex, module.kid.id]
}
"#;
    let b2 = bundle(&[("env/main.hcl", after), ("env/mod/main.hcl", MODULE)]);
    let plan = e.engine.plan(&req(&b2), false).await.unwrap();
    assert!(plan.changes.is_empty(), "{}", plan.render());
    let moved: Vec<(&str, &str)> = plan
        .moved
        .iter()
        .map(|m| (m.from.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(
        moved,
        [
            ("module.child.random_id.x", "module.kid.random_id.x"),
            ("random_id.old[0]", "random_id.new[0]"),
            ("random_id.old[1]", "random_id.new[1]")
        ]
    );
    assert!(plan
        .render()
        .contains("# random_id.old[0] has moved to random_id.new[0]"));
    let (status, summary, errors) = complete(&apply(&e, &b2).await);
    assert_eq!(
        (status.as_str(), summary.add + summary.destroy),
        ("ok", 0),
        "{errors:?}"
    );
    assert_eq!(e.engine.outputs("test").unwrap()["ids"].0, ids);
    // The record remembers the address its object was made under.
    let rec = e
        .engine
        .store
        .resource("test", "random_id.new[1]")
        .unwrap()
        .unwrap();
    assert_eq!(rec.identity.as_deref(), Some("random_id.old[1]"));
    assert!(e
        .engine
        .store
        .resource("test", "random_id.old[1]")
        .unwrap()
        .is_none());
    // Moved once: the block stays harmlessly, and the next plan is empty.
    assert!(e.engine.plan(&req(&b2), false).await.unwrap().is_empty());
    // A move to an address already taken is left undone, with a warning.
    let clash = after
        .replace("module \"kid\"", "module \"child\"")
        .replace("module.kid.id", "module.child.id")
        + "moved {\n  from = module.child\n  to   = module.kid\n}\n";
    let clash = clash.replacen(
        "moved {\n  from = module.child\n  to   = module.kid\n}\n",
        "",
        1,
    );
    let b3 = bundle(&[("env/main.hcl", &clash), ("env/mod/main.hcl", MODULE)]);
    let plan = e.engine.plan(&req(&b3), false).await.unwrap();
    assert!(plan.moved.is_empty(), "{}", plan.render());
    // A move between types is refused where it is written.
    let bad = after.replace("to   = random_id.new", "to   = random_password.new");
    let err = e
        .engine
        .plan(
            &req(&bundle(&[
                ("env/main.hcl", &bad),
                ("env/mod/main.hcl", MODULE),
            ])),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("env/main.hcl:") && err.contains("keeps its resource type"),
        "{err}"
    );
}

#[tokio::test]
async fn removed_blocks_forget_and_import_blocks_claim_nothing_new() {
    let e = env();
    let cfg = "resource \"random_id\" \"x\" {\n  byte_length = 2\n}\nresource \"random_id\" \"y\" {\n  byte_length = 2\n}\n";
    let b = bundle(&[("env/main.hcl", cfg)]);
    apply(&e, &b).await;
    // Importing what veeps already manages does nothing.
    let imp = format!("{cfg}import {{\n  to = random_id.x\n  id = \"abc\"\n}}\n");
    assert!(e
        .engine
        .plan(&req(&bundle(&[("env/main.hcl", &imp)])), false)
        .await
        .unwrap()
        .is_empty());
    // Importing anything else is refused with the reason.
    let imp = format!("{cfg}resource \"random_id\" \"z\" {{\n  byte_length = 2\n}}\nimport {{\n  to = random_id.z\n  id = \"abc\"\n}}\n");
    let err = e
        .engine
        .plan(&req(&bundle(&[("env/main.hcl", &imp)])), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("env/main.hcl:10:1") && err.contains("cannot import"),
        "{err}"
    );
    // `removed` while the resource is still declared is an error.
    let still = format!("{cfg}removed {{\n  from = random_id.y\n}}\n");
    let err = e
        .engine
        .plan(&req(&bundle(&[("env/main.hcl", &still)])), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("still declared"), "{err}");
    // Forgotten, not destroyed.
    let gone = "resource \"random_id\" \"x\" {\n  byte_length = 2\n}\nremoved {\n  from = random_id.y\n  lifecycle {\n    destroy = false\n  }\n}\n";
    let b2 = bundle(&[("env/main.hcl", gone)]);
    let plan = e.engine.plan(&req(&b2), false).await.unwrap();
    assert!(plan.changes.is_empty(), "{}", plan.render());
    assert_eq!(plan.forgotten, ["random_id.y"]);
    assert!(plan
        .render()
        .contains("random_id.y will no longer be managed by veeps"));
    let (status, summary, _) = complete(&apply(&e, &b2).await);
    assert_eq!((status.as_str(), summary.destroy), ("ok", 0));
    assert!(e
        .engine
        .store
        .resource("test", "random_id.y")
        .unwrap()
        .is_none());
    assert!(e
        .engine
        .store
        .resource("test", "random_id.x")
        .unwrap()
        .is_some());
    // With destroy left at true, removal is an ordinary destroy.
    let b3 = bundle(&[("env/main.hcl", "removed {\n  from = random_id.x\n}\n")]);
    let plan = e.engine.plan(&req(&b3), false).await.unwrap();
    assert_eq!(plan.summary.destroy, 1, "{}", plan.render());
}

#[tokio::test]
async fn conditions_stop_plans_and_checks_warn() {
    let e = env();
    let cfg = r#"
variable "n" {
  type    = number
  default = 2
}
resource "random_id" "x" {
  count       = var.n
  byte_length = 4
  lifecycle {
    precondition {
      condition     = var.n < 3
      error_message = "at most two, not ${var.n}."
    }
    postcondition {
      condition     = length(self.hex) == 8 || self.hex == null
      error_message = "hex of ${self.byte_length} bytes is ${length(self.hex)} long."
    }
  }
}
output "first" {
  value = random_id.x[0].hex
  precondition {
    condition     = var.n > 0
    error_message = "need one."
  }
}
check "sizes" {
  assert {
    condition     = var.n == 2
    error_message = "expected two ids."
  }
}
"#;
    let b = bundle(&[("env/main.hcl", cfg)]);
    let plan = e.engine.plan(&req(&b), false).await.unwrap();
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let (status, _, errors) = complete(&apply(&e, &b).await);
    assert_eq!(status, "ok", "{errors:?}");
    let with = |n: &str| {
        let mut r = req(&b);
        r.vars = vec![("n".into(), n.into())];
        r
    };
    let err = e
        .engine
        .plan(&with("3"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("env/main.hcl:11:23") && err.contains("at most two, not 3."),
        "{err}"
    );
    // A failed check is a warning: the plan goes on.
    let plan = e.engine.plan(&with("1"), false).await.unwrap();
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.warnings[0].contains("expected two ids.")
            && plan.warnings[0].contains("env/main.hcl:29:21"),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.render().contains("Warning: check assertion failed"),
        "{}",
        plan.render()
    );
    let err = e
        .engine
        .plan(&with("0"), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("need one."), "{err}");
    // A postcondition is checked on the applied object.
    let bad = cfg.replace("length(self.hex) == 8", "length(self.hex) == 6");
    let err = e
        .engine
        .plan(&req(&bundle(&[("env/main.hcl", &bad)])), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("hex of 4 bytes is 8 long."), "{err}");
    // `self` outside a postcondition is refused.
    let bad = cfg.replace("var.n < 3", "self.hex != \"\"");
    let err = e
        .engine
        .plan(&req(&bundle(&[("env/main.hcl", &bad)])), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("self"), "{err}");
}

#[tokio::test]
async fn numbers_are_terraform_numbers_and_settle_in_state() {
    let e = env();
    let cfg = "output \"n\" {\n  value = [0.1 + 0.2, 1 / 3, 2 / 3 * 3, 9007199254740993 + 0, 7 % -3]\n}\n";
    let b = bundle(&[("env/main.hcl", cfg)]);
    apply(&e, &b).await;
    assert_eq!(
        e.engine.outputs("test").unwrap()["n"].0.to_string(),
        "[0.3, 0.3333333333333333, 2, 9007199254740993, 1]"
    );
    // What state holds is what the next plan computes: no change shown forever after.
    assert!(e.engine.plan(&req(&b), false).await.unwrap().is_empty());
}

#[tokio::test]
async fn timestamp_and_uuid_are_known_only_at_apply() {
    let e = env();
    let cfg = "resource \"random_id\" \"x\" {\n  byte_length = 2\n  keepers = { at = timestamp(), id = uuid() }\n}\noutput \"at\" {\n  value = random_id.x.keepers.at\n}\n";
    let b = bundle(&[("env/main.hcl", cfg)]);
    let plan = e.engine.plan(&req(&b), false).await.unwrap();
    assert!(
        plan.render().contains("(known after apply)"),
        "{}",
        plan.render()
    );
    // An approved plan stays the plan: the values only come to be during apply.
    let again = e.engine.plan(&req(&b), false).await.unwrap();
    assert_eq!(plan.hash, again.hash);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    e.engine
        .apply(req(&b), false, Some(plan.hash), tx)
        .await
        .unwrap();
    let mut events = vec![];
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    assert_eq!(complete(&events).0, "ok");
    let at = e.engine.outputs("test").unwrap()["at"].0.to_string();
    assert!(at.starts_with("\"20") && at.ends_with("Z\""), "{at}");
}

#[tokio::test]
async fn validate_needs_no_values_for_root_variables() {
    let mut reg = veeps_resource::Registry::new();
    veeps_builtins::register(&mut reg);
    let reg = Arc::new(reg);
    let cfg = "variable \"n\" {\n  type = number\n  validation {\n    condition     = var.n > 0\n    error_message = \"positive.\"\n  }\n}\nresource \"random_id\" \"x\" {\n  byte_length = var.n\n}\n";
    let b = bundle(&[("env/main.hcl", cfg)]);
    veeps_engine::validate(reg.clone(), b.clone(), &[])
        .await
        .unwrap();
    // A plan still needs the value.
    let e = env();
    let err = e
        .engine
        .plan(&req(&b), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no value for required variable \"n\""),
        "{err}"
    );
    // And a value given is still checked.
    let err = veeps_engine::validate(reg, b, &[("n".into(), "0".into())])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive."), "{err}");
}

#[tokio::test]
async fn relative_paths_are_the_root_modules_directory() {
    let e = env();
    let cfg = "output \"x\" {\n  value = [file(\"data/a.txt\"), file(\"${path.module}/data/a.txt\"), fileset(\"data\", \"*.txt\"), templatefile(\"data/t.tpl\", { n = 2 })]\n}\n";
    let b = bundle(&[
        ("env/main.hcl", cfg),
        ("env/data/a.txt", "A"),
        ("env/data/t.tpl", "n=${n}"),
    ]);
    apply(&e, &b).await;
    assert_eq!(
        e.engine.outputs("test").unwrap()["x"].0.to_string(),
        "[\"A\", \"A\", [\"a.txt\"], \"n=2\"]"
    );
}

#[tokio::test]
async fn plantimestamp_is_the_plans_time_in_its_apply() {
    let e = env();
    let b = bundle(&[(
        "env/main.hcl",
        "output \"pt\" {\n  value = plantimestamp()\n}\n",
    )]);
    let plan = e.engine.plan(&req(&b), false).await.unwrap();
    assert!(
        plan.time.ends_with('Z') && plan.time.len() == 20,
        "{}",
        plan.time
    );
    // The apply of a plan made earlier sees that plan's time, so it is the same plan.
    let mut r = req(&b);
    r.plan_time = Some("2020-01-02T03:04:05Z".into());
    let earlier = e.engine.plan(&r, false).await.unwrap();
    assert_eq!(earlier.time, "2020-01-02T03:04:05Z");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    e.engine
        .apply(r, false, Some(earlier.hash), tx)
        .await
        .unwrap();
    assert_eq!(
        e.engine.outputs("test").unwrap()["pt"].0.to_string(),
        "\"2020-01-02T03:04:05Z\""
    );
}

#[tokio::test]
async fn issensitive_knows_what_is_sensitive() {
    let e = env();
    let cfg = r#"
variable "secret" {
  type      = string
  default   = "x"
  sensitive = true
}
resource "random_password" "p" {
  length = 8
}
locals {
  derived = "${var.secret}-y"
}
output "marks" {
  value = [issensitive(var.secret), issensitive(local.derived), issensitive(random_password.p.result), issensitive(random_password.p.id), issensitive(nonsensitive(var.secret)), issensitive("plain"), issensitive(nonsensitive(sensitive("z"))), issensitive(upper(sensitive("z")))]
}
# Unmarked by nonsensitive(), a value needs no `sensitive = true` to be an output.
output "unmarked" {
  value = nonsensitive(sensitive("open"))
}
"#;
    let b = bundle(&[("env/main.hcl", cfg)]);
    apply(&e, &b).await;
    let out = e.engine.outputs("test").unwrap();
    assert_eq!(
        out["marks"].0.to_string(),
        "[true, true, true, false, false, false, false, true]"
    );
    assert_eq!(out["unmarked"].0.to_string(), "\"open\"");
    // Still marked, it does.
    let cfg = cfg.replace(
        "nonsensitive(sensitive(\"open\"))",
        "upper(sensitive(\"open\"))",
    );
    let b = bundle(&[("env/main.hcl", &cfg)]);
    let err = e
        .engine
        .plan(&req(&b), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refers to sensitive values"), "{err}");
}
