//! End-to-end tests: a real `veeps server` on a free port, driven through the `veeps` CLI.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use veeps_testkit::*;

const APP: &str = r#"
environment "app" {}

variable "replicas" {
  type    = number
  default = 2
  validation {
    condition     = var.replicas >= 1 && var.replicas <= 10
    error_message = "replicas must be between 1 and 10."
  }
}

variable "team" {
  type = string
}

resource "random_id" "suffix" {
  byte_length = 4
}

resource "random_id" "replica" {
  count       = var.replicas
  byte_length = 2
  prefix      = "${var.team}-${random_id.suffix.hex}-"
}

resource "random_password" "db" {
  length  = 24
  special = false
}

output "names" {
  value = random_id.replica[*].hex
}

output "db_password" {
  value     = random_password.db.result
  sensitive = true
}
"#;

#[test]
fn apply_then_plan_shows_no_changes() {
    let v = Veeps::start();
    v.write("app/main.hcl", APP);
    v.write("app/terraform.tfvars", "team = \"web\"\n");
    let plan = v.expect(&["plan", "app", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Plan: 4 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    let out = v.ok(&["apply", "app", "--auto-approve"]);
    assert!(
        out.contains("Apply complete! Resources: 4 added, 0 changed, 0 destroyed."),
        "{out}"
    );
    assert!(
        out.contains("random_id.suffix: Creation complete after"),
        "{out}"
    );
    assert!(out.contains("db_password = (sensitive value)"), "{out}");
    let plan = v.expect(&["plan", "app", "--detailed-exitcode"], 0);
    assert!(plan.contains("No changes."), "{plan}");
    // Outputs as JSON for scripts reveal values; the text listing masks them.
    let json: serde_json::Value =
        serde_json::from_str(&v.ok(&["output", "app", "--json"])).unwrap();
    let names = json["names"]["value"].as_array().unwrap();
    assert_eq!(names.len(), 2);
    assert!(names[0].as_str().unwrap().starts_with("web-"));
    assert_eq!(json["db_password"]["value"].as_str().unwrap().len(), 24);
    assert!(v
        .ok(&["output", "app"])
        .contains("db_password = (sensitive value)"));
    let show = v.ok(&["state", "show", "app", "random_password.db"]);
    assert!(
        show.contains("result") && show.contains("(sensitive value)"),
        "{show}"
    );
    // -var overrides the tfvars file and grows the group.
    let out = v.ok(&["apply", "app", "--auto-approve", "-v", "replicas=3"]);
    assert!(out.contains("1 added, 0 changed, 0 destroyed"), "{out}");
    assert!(v.state("app").contains("random_id.replica[2]"));
    let hist = v.ok(&["history", "app"]);
    assert!(
        hist.contains("apply") && hist.lines().count() >= 3,
        "{hist}"
    );
    // plan --json is machine-readable.
    let j: serde_json::Value =
        serde_json::from_str(&v.ok(&["plan", "app", "--json", "-v", "replicas=3"])).unwrap();
    assert_eq!(j["summary"]["add"], 0);
}

#[test]
fn modules_from_a_local_git_repository_at_a_tag() {
    let v = Veeps::start();
    let repo = v.work.join("modules-repo");
    std::fs::create_dir_all(repo.join("naming")).unwrap();
    std::fs::write(repo.join("naming/main.hcl"), "variable \"prefix\" {\n  type = string\n}\nresource \"random_id\" \"n\" {\n  byte_length = 3\n  prefix      = \"${var.prefix}-v1-\"\n}\noutput \"name\" {\n  value = random_id.n.hex\n}\n").unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "v1"]);
    git(&["tag", "v1.0.0"]);
    // A later commit the tag must not see.
    std::fs::write(repo.join("naming/main.hcl"), "this is not valid {{{").unwrap();
    git(&["commit", "-qam", "broken"]);
    v.write(
        "env/main.hcl",
        &format!("module \"naming\" {{\n  source = \"git::file://{}//naming?ref=v1.0.0\"\n  prefix = \"svc\"\n}}\noutput \"name\" {{\n  value = module.naming.name\n}}\n", repo.display()),
    );
    let out = v.ok(&["apply", "env", "--auto-approve"]);
    assert!(
        out.contains("module.naming.random_id.n: Creation complete"),
        "{out}"
    );
    let name = v.ok(&["output", "env", "name"]);
    assert!(name.trim().starts_with("svc-v1-"), "{name}");
    // A tag that does not exist is a clear error.
    v.write("bad/main.hcl", &format!("module \"naming\" {{\n  source = \"git::file://{}//naming?ref=v9.9.9\"\n  prefix = \"x\"\n}}\n", repo.display()));
    let err = v.expect(&["plan", "bad"], 1);
    assert!(
        err.contains("bad/main.hcl:2:12") && err.contains("v9.9.9"),
        "{err}"
    );
    // Issue "Trust what exists", item 25: a git module naming an absolute path read this
    // machine's directory into the bundle; a URL or ref starting with "-" reached git as
    // an option.
    let secret_dir = v.work.join("local-secrets");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(
        secret_dir.join("main.hcl"),
        "output \"leak\" {\n  value = \"local file read\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("naming/main.hcl"),
        format!(
            "module \"inner\" {{\n  source = \"{}\"\n}}\n",
            secret_dir.display()
        ),
    )
    .unwrap();
    git(&["commit", "-qam", "escape"]);
    git(&["tag", "v2.0.0"]);
    v.write(
        "esc/main.hcl",
        &format!(
            "module \"naming\" {{\n  source = \"git::file://{}//naming?ref=v2.0.0\"\n}}\n",
            repo.display()
        ),
    );
    let err = v.expect(&["plan", "esc"], 1);
    assert!(err.contains("own repository"), "{err}");
    v.write(
        "opt/main.hcl",
        "module \"m\" {\n  source = \"git::--upload-pack=touch /tmp/pwned//x?ref=v1\"\n}\n",
    );
    let err = v.expect(&["plan", "opt"], 1);
    assert!(
        err.contains("opt/main.hcl:2") && err.contains("option"),
        "{err}"
    );
}

#[test]
fn a_second_apply_on_a_locked_environment_fails_at_once_naming_the_holder() {
    let v = Veeps::start();
    v.write(
        "slow/main.hcl",
        "resource \"time_sleep\" \"wait\" {\n  create_duration = \"4s\"\n}\n",
    );
    let mut first = v
        .cmd(&["apply", "slow", "--auto-approve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = v.ok(&["state", "list", "slow"]);
        if s.contains("time_sleep.wait") {
            break;
        }
        assert!(Instant::now() < deadline, "the first apply never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let err = v.expect(&["apply", "slow", "--auto-approve"], 1);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the second apply waited"
    );
    assert!(
        err.contains("is locked by root") && err.contains("apply"),
        "{err}"
    );
    assert!(first.wait().unwrap().success());
    // force-unlock removes a lock whoever holds it.
    v.write("slow/main.hcl", "resource \"time_sleep\" \"wait\" {\n  create_duration = \"3s\"\n  triggers = { v = \"2\" }\n}\n");
    let mut second = v
        .cmd(&["apply", "slow", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let out = v.ok(&["force-unlock", "slow"]);
    assert!(out.contains("Removed the lock"), "{out}");
    second.wait().unwrap();
    v.expect(&["force-unlock", "slow"], 1);
}

#[test]
fn drift_made_outside_veeps_shows_in_plan_and_apply_repairs_it() {
    let v = Veeps::start();
    let file = v.work.join("generated/app.conf");
    v.write("cfg/main.hcl", &format!("resource \"local_file\" \"conf\" {{\n  filename = \"{}\"\n  content  = \"port = 8080\\n\"\n}}\n", file.display()));
    v.ok(&["apply", "cfg", "--auto-approve"]);
    v.expect(&["plan", "cfg", "--detailed-exitcode"], 0);
    std::fs::write(&file, "port = 9999\n").unwrap();
    let plan = v.expect(&["plan", "cfg", "--detailed-exitcode"], 2);
    assert!(
        plan.contains("Objects have changed outside of veeps"),
        "{plan}"
    );
    assert!(plan.contains("local_file.conf has changed"), "{plan}");
    assert!(plan.contains("will be updated in place"), "{plan}");
    v.ok(&["apply", "cfg", "--auto-approve"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "port = 8080\n");
}

#[test]
fn rollback_returns_to_a_recorded_version() {
    let v = Veeps::start();
    let cfg = |len: u32| {
        format!("resource \"random_id\" \"x\" {{\n  byte_length = {len}\n}}\noutput \"hex\" {{\n  value = random_id.x.hex\n}}\n")
    };
    v.write("e/main.hcl", &cfg(2));
    v.ok(&["apply", "e", "--auto-approve"]);
    v.write("e/main.hcl", &cfg(6));
    v.ok(&["apply", "e", "--auto-approve"]);
    assert_eq!(v.ok(&["output", "e", "hex"]).trim().len(), 12);
    let out = v.ok(&["rollback", "e", "--to", "1", "--auto-approve"]);
    assert!(out.contains("byte_length = 6 -> 2"), "{out}");
    assert_eq!(v.ok(&["output", "e", "hex"]).trim().len(), 4);
    let hist = v.ok(&["history", "e"]);
    assert!(hist.contains("rollback to 1"), "{hist}");
    v.expect(&["rollback", "e", "--to", "42", "--auto-approve"], 1);
}

#[test]
fn bad_input_gets_file_line_col_and_leaves_state_untouched() {
    let v = Veeps::start();
    v.write(
        "e/main.hcl",
        "resource \"random_id\" \"x\" {\n  byte_length = 2\n}\n",
    );
    v.ok(&["apply", "e", "--auto-approve"]);
    let before = v.state("e");
    let hex_before = v.ok(&["state", "show", "e", "random_id.x"]);
    let cases: &[(&str, &[&str])] = &[
        ("resource \"random_id\" \"x\" {\n  byte_length = \n}\n", &["e/main.hcl:2:", "invalid HCL syntax"]),
        ("resource \"randm_id\" \"x\" {\n  byte_length = 2\n}\n", &["e/main.hcl:1:10", "unknown resource type \"randm_id\"", "Did you mean \"random_id\""]),
        ("resource \"random_id\" \"x\" {\n  bytelength = 2\n}\n", &["e/main.hcl:2:3", "Did you mean \"byte_length\""]),
        ("resource \"random_id\" \"x\" {\n  byte_length = [1]\n}\n", &["e/main.hcl:2:17", "a number is required"]),
        ("locals {\n  a = local.b\n  b = local.a\n}\nresource \"random_id\" \"x\" {\n  byte_length = 2\n}\n", &["dependency cycle", "local.a", "local.b"]),
        ("resource \"random_id\" \"x\" {\n  byte_length = var.size\n}\n", &["e/main.hcl:2:17", "undeclared input variable \"size\""]),
        ("variable \"size\" {\n  type = number\n}\nresource \"random_id\" \"x\" {\n  byte_length = var.size\n}\n", &["e/main.hcl:1:1", "no value for required variable \"size\""]),
        (
            "variable \"size\" {\n  default = 0\n  validation {\n    condition     = var.size > 0\n    error_message = \"size must be positive.\"\n  }\n}\nresource \"random_id\" \"x\" {\n  byte_length = 2\n}\n",
            &["e/main.hcl:4:21", "size must be positive."],
        ),
    ];
    for (cfg, wants) in cases {
        v.write("e/main.hcl", cfg);
        for cmd in [&["plan", "e"][..], &["apply", "e", "--auto-approve"][..]] {
            let out = v.expect(cmd, 1);
            for w in *wants {
                assert!(
                    out.contains(w),
                    "{cmd:?} on\n{cfg}\nmissing {w:?} in:\n{out}"
                );
            }
            assert!(!out.contains("panicked"), "{out}");
        }
        // As `terraform validate`, validate needs no values for root variables.
        if wants[1].starts_with("no value for required variable") {
            v.ok(&["validate", "e"]);
            continue;
        }
        let validate = v.expect(&["validate", "e"], 1);
        assert!(
            validate.contains(wants[0])
                || cfg.contains("var.size\n}\n") && !cfg.contains("validation"),
            "validate:\n{validate}"
        );
    }
    assert_eq!(v.state("e"), before);
    assert_eq!(v.ok(&["state", "show", "e", "random_id.x"]), hex_before);
    assert_eq!(
        v.ok(&["history", "e"]).lines().count(),
        2,
        "no history entry for failed runs"
    );
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const MANY: &str = r#"
resource "random_id" "fast" {
  count       = 5
  byte_length = 4
}
resource "time_sleep" "slow" {
  count           = 4
  create_duration = "${1 + count.index}s"
  triggers        = { after = random_id.fast[count.index].hex }
}
resource "random_id" "last" {
  count       = 4
  byte_length = 4
  keepers     = { slow = time_sleep.slow[count.index].id }
}
"#;

#[test]
fn kill_9_of_the_server_during_apply_loses_nothing_and_reapply_converges() {
    let mut v = Veeps::start();
    v.write("e/main.hcl", MANY);
    let mut apply = v
        .cmd(&["apply", "e", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("some resources to be recorded", || {
        v.state("e").contains("time_sleep.slow[0]")
    });
    std::thread::sleep(Duration::from_millis(300));
    v.kill9();
    let _ = apply.wait();
    v.boot();
    let recorded = v.state("e");
    assert!(recorded.contains("random_id.fast[4]"), "{recorded}");
    let fast_before = v.ok(&["state", "show", "e", "random_id.fast[0]"]);
    // The lock of the dead server is released; the next apply finishes the work.
    let out = v.ok(&["apply", "e", "--auto-approve"]);
    assert!(out.contains("Apply complete!"), "{out}");
    v.expect(&["plan", "e", "--detailed-exitcode"], 0);
    let after = v.state("e");
    for i in 0..4 {
        assert!(after.contains(&format!("random_id.last[{i}]")), "{after}");
    }
    assert!(!after.contains("creating"), "{after}");
    assert_eq!(
        v.ok(&["state", "show", "e", "random_id.fast[0]"]),
        fast_before,
        "recorded resources are kept, not recreated"
    );
}

#[test]
fn kill_9_of_the_cli_during_apply_lets_the_server_finish() {
    let v = Veeps::start();
    v.write("e/main.hcl", MANY);
    let mut apply = v
        .cmd(&["apply", "e", "--auto-approve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the apply to start", || {
        v.state("e").contains("random_id.fast")
    });
    apply.kill().unwrap();
    let _ = apply.wait();
    wait_for("the server to finish the apply", || {
        v.ok(&["history", "e"]).contains(" ok ")
    });
    v.expect(&["plan", "e", "--detailed-exitcode"], 0);
}

#[test]
fn calls_without_a_valid_token_get_401_and_are_audited() {
    let v = Veeps::start();
    let mut c = v.cmd(&["state", "list", "e"]);
    c.env("VEEPS_TOKEN", "wrong");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("valid API token"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(v.data.join("root.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The audit log is written in batches: the refusal is there once its batch is.
    wait_for("the refused call in the audit log", || {
        let audit = v.ok(&["audit"]);
        audit.contains("invalid-token") && audit.contains("401")
    });
    assert!(v.ok(&["audit", "--verify"]).contains("intact"));
}

/// Issue "Security baseline", audit trail: digests are signed and exported outside the data
/// directory, the public key beside them, and `veeps audit --verify --anchor DIR` checks
/// the log against them. (Tampering, removal, reordering and truncation are each shown to
/// be found by veeps-state's trail tests, which can write the store directly.)
#[test]
fn signed_digests_are_exported_and_the_log_verifies_against_them() {
    let export = tempfile::tempdir().unwrap();
    let dir = export.path().display().to_string();
    let v = Veeps::start_with(&[], &["--audit-export", &dir]);
    v.ok(&["state", "list", "e"]);
    let sealed = v.ok(&["audit", "--seal"]);
    assert!(sealed.contains("in digest 1"), "{sealed}");
    let digest = export.path().join("digest-000001.json");
    let pubkey = std::fs::read_to_string(export.path().join("audit.pub")).unwrap();
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&digest).unwrap()).unwrap();
    assert_eq!(d["public_key"].as_str().unwrap(), pubkey.trim());
    assert_eq!(d["from_entry"], 1);
    // The key that signs them stays in the data directory, readable by root only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(v.data.join("audit.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    v.ok(&["state", "list", "e"]);
    let out = v.ok(&["audit", "--verify", "--anchor", &dir]);
    assert!(
        out.contains("intact") && out.contains("1 signed digests"),
        "{out}"
    );
    // A forged anchor (another digest number claimed) is reported, and the command fails.
    let mut forged = d.clone();
    forged["seq"] = serde_json::json!(7);
    let bad = export.path().join("forged.json");
    std::fs::write(&bad, forged.to_string()).unwrap();
    let out = v.expect(
        &["audit", "--verify", "--anchor", &bad.display().to_string()],
        1,
    );
    assert!(
        out.contains("altered") && out.contains("anchor digest 7"),
        "{out}"
    );
    // From a time on: everything since is checked; a time that is not one is refused.
    let out = v.ok(&[
        "audit",
        "--verify",
        "--from",
        "2000-01-01T00:00:00+02:00",
        "--anchor",
        &dir,
    ]);
    assert!(out.contains("intact"), "{out}");
    let out = v.expect(&["audit", "--verify", "--from", "yesterday"], 1);
    assert!(out.contains("not an RFC 3339 time"), "{out}");
}

#[test]
fn fmt_and_validate_work_offline() {
    let v = Veeps::start();
    v.write(
        "e/main.hcl",
        "resource \"random_id\" \"x\" {\nbyte_length=2\n      prefix = \"a\"\n}\n",
    );
    let out = v.expect(&["fmt", "e", "--check"], 3);
    assert!(out.contains("main.hcl"), "{out}");
    v.ok(&["fmt", "e"]);
    assert_eq!(
        std::fs::read_to_string(v.work.join("e/main.hcl")).unwrap(),
        "resource \"random_id\" \"x\" {\n  byte_length = 2\n  prefix      = \"a\"\n}\n"
    );
    v.ok(&["fmt", "e", "--check"]);
    // validate needs no server.
    let mut c = v.cmd(&["validate", "e"]);
    c.env("VEEPS_ADDR", "http://127.0.0.1:1");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Success!"));
}

#[test]
fn environments_read_each_others_outputs_and_apply_in_dependency_order() {
    let v = Veeps::start();
    v.write("live/stage/main.hcl", "data \"environment\" \"mgmt\" {\n  name = \"mgmt\"\n}\nresource \"random_id\" \"app\" {\n  byte_length = 2\n  prefix      = \"${data.environment.mgmt.outputs.domain}-\"\n}\noutput \"app\" {\n  value = random_id.app.hex\n}\n");
    v.write(
        "live/mgmt/main.hcl",
        "output \"domain\" {\n  value = \"veeps.test\"\n}\n",
    );
    let out = v.ok(&["apply", "live", "--auto-approve"]);
    let m = out.find("=== environment mgmt").unwrap();
    let s = out.find("=== environment stage").unwrap();
    assert!(m < s, "mgmt must be applied first:\n{out}");
    assert!(v.ok(&["output", "stage", "app"]).starts_with("veeps.test-"));
    v.expect(&["plan", "live", "--detailed-exitcode"], 0);
}

#[test]
fn up_applies_a_tree_and_resumes_without_recreating() {
    let v = Veeps::start();
    let port = free_port();
    v.write("tree/one/main.hcl", "resource \"random_id\" \"a\" {\n  byte_length = 2\n}\noutput \"a\" {\n  value = random_id.a.hex\n}\n");
    let data2 = v.work.join("updata");
    let run = || {
        let o = Command::new(bin())
            .args([
                "up",
                "tree",
                "--no-wait",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data2)
            .current_dir(&v.work)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        text
    };
    let first = run();
    assert!(
        first.contains("[one] random_id.a: Creation complete") && first.contains("veeps is up"),
        "{first}"
    );
    let a = first
        .lines()
        .find(|l| l.trim_start().starts_with("a = "))
        .unwrap()
        .to_string();
    // Issue "Trust what exists", item 26: the root S3 secret is not printed (output ends
    // up in service logs); the command that reveals it is.
    assert!(
        !first.contains("AWS_SECRET_ACCESS_KEY=") && first.contains("veeps s3 credentials"),
        "{first}"
    );
    let second = run();
    assert!(second.contains("[one] up to date"), "{second}");
    assert!(second.contains(&a), "same value after restart:\n{second}");
    let _ = Path::new(&data2);
}

/// Issue "Trust what exists", item 29: `-var NAME=VALUE` as Terraform spells it (it was
/// parsed as `-v ar`), `-var-file`, and only `terraform.tfvars` and `*.auto.tfvars` loaded
/// by themselves (a `prod.tfvars` beside `dev.tfvars` used to be applied silently); a
/// usage error exits 64, never 2 ("changes" under --detailed-exitcode).
#[test]
fn variables_as_terraform_takes_them() {
    let v = Veeps::start();
    v.write(
        "env/main.hcl",
        "variable \"n\" {\n  type = number\n}\noutput \"n\" {\n  value = var.n\n}\n",
    );
    v.write("env/dev.tfvars", "n = 1\n");
    v.write("env/prod.tfvars", "n = 2\n");
    let out = |args: &[&str]| {
        let mut a = vec!["apply", "env", "--auto-approve"];
        a.extend_from_slice(args);
        v.ok(&a);
        v.ok(&["output", "env", "n"]).trim().to_string()
    };
    // Neither dev.tfvars nor prod.tfvars loads by itself: n is unset.
    let o = v.expect(&["plan", "env"], 1);
    assert!(o.contains("\"n\"") && o.contains("-var"), "{o}");
    v.write("env/terraform.tfvars", "n = 3\n");
    assert_eq!(out(&[]), "3");
    v.write("env/x.auto.tfvars", "n = 4\n");
    assert_eq!(out(&[]), "4");
    let prod = v.work.join("env/prod.tfvars");
    assert_eq!(out(&["-var-file", prod.to_str().unwrap()]), "2");
    assert_eq!(
        out(&["-var-file", prod.to_str().unwrap(), "-var", "n=5"]),
        "5"
    );
    assert_eq!(out(&["-var=n=6"]), "6");
    assert_eq!(out(&["-v", "n=7"]), "7");
    assert_eq!(out(&["--var", "n=8"]), "8");
    // Rolling back to the -var-file apply applies its file again.
    v.ok(&["rollback", "env", "--to", "3", "--auto-approve"]);
    assert_eq!(v.ok(&["output", "env", "n"]).trim(), "2");
    // Usage errors have their own exit code.
    let o = v.expect(
        &["plan", "env", "--detailed-exitcode", "--no-such-flag"],
        64,
    );
    assert!(o.contains("--no-such-flag"), "{o}");
    assert_eq!(
        v.run(&["plan", "env", "-var", "n=9", "-detailed-exitcode"])
            .status
            .code(),
        Some(2)
    );
}

/// Issue "Trust what exists", item 24: `--data-dir` pointing at an existing directory
/// chmodded it to 0700 (only a directory veeps creates is made private), and a missing
/// `root.key` was silently regenerated while the state held keys wrapped by the old one.
#[test]
fn the_data_directory_and_root_key_are_treated_with_care() {
    use std::os::unix::fs::PermissionsExt;
    let mut v = Veeps::start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&v.data), 0o700);
    v.write(
        "env/main.hcl",
        "resource \"random_password\" \"p\" {\n  length = 8\n}\n",
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    v.kill9();
    std::fs::set_permissions(&v.data, std::fs::Permissions::from_mode(0o750)).unwrap();
    v.boot();
    assert_eq!(mode(&v.data), 0o750);
    v.kill9();
    std::fs::remove_file(v.data.join("root.key")).unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--s3-listen",
            "127.0.0.1:0",
        ])
        .args(["--s3-website-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&v.data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("restore root.key"),
        "{err}"
    );
    assert!(!v.data.join("root.key").exists());
}

/// Issue "Security baseline", KMS: an environment's key travels with a passphrase, so the
/// `kmscrypt::` values committed for it open on another machine; a wrong passphrase, or an
/// environment that has a key of its own there already, is refused.
#[test]
fn an_environments_key_moves_to_another_machine() {
    let a = Veeps::start();
    let b = Veeps::start();
    let sealed = a.ok(&["kms", "encrypt", "prod", "--value", "travelling secret"]);
    let run = |v: &Veeps, args: &[&str], pass: &str| {
        let mut c = v.cmd(args);
        c.env("VEEPS_KMS_PASSPHRASE", pass);
        c.output().unwrap()
    };
    let out = run(
        &a,
        &["kms", "export-key", "prod"],
        "a long enough passphrase",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(key.starts_with("veeps-key::"), "{key}");
    b.write("prod.key", &key);
    b.write("sealed.txt", &sealed);
    let file = b.work.join("prod.key").display().to_string();
    let wrong = run(
        &b,
        &["kms", "import-key", "prod", &file],
        "not the passphrase!",
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("passphrase is wrong"));
    let ok = run(
        &b,
        &["kms", "import-key", "prod", &file],
        "a long enough passphrase",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let opened = b.ok(&[
        "kms",
        "decrypt",
        "prod",
        &b.work.join("sealed.txt").display().to_string(),
    ]);
    assert_eq!(opened.trim(), "travelling secret");
    // An environment with a key of its own keeps it.
    b.ok(&["kms", "encrypt", "stage", "--value", "x"]);
    let out = run(
        &a,
        &["kms", "export-key", "stage"],
        "a long enough passphrase",
    );
    b.write("stage.key", &String::from_utf8_lossy(&out.stdout));
    let refused = run(
        &b,
        &[
            "kms",
            "import-key",
            "stage",
            &b.work.join("stage.key").display().to_string(),
        ],
        "a long enough passphrase",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("has a key of its own"));
}

/// Issue "Security baseline": the API can serve TLS with a certificate from veeps' CA
/// (on by default off loopback; `--api-tls on` here), and the CLI trusts that CA.
#[test]
fn the_api_serves_tls_from_veeps_ca_and_the_cli_trusts_it() {
    let v = Veeps::start_with(&[], &["--api-tls", "on"]);
    let https = format!("https://127.0.0.1:{}", v.port);
    let ca = v.data.join("pki").join("ca.crt");
    let ca = ca.to_str().unwrap();
    let o = v
        .cmd(&["state", "list", "e"])
        .env("VEEPS_ADDR", &https)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A client trusting the CA gets answers (401 without a token); one that does not, or
    // that speaks plain HTTP, gets none.
    assert_eq!(curl(&["--cacert", ca, &format!("{https}/v1/envs")]).0, 401);
    assert_eq!(curl(&[&format!("{https}/v1/envs")]).0, 0);
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{}/v1/envs", v.port)]).0,
        0
    );
    // A CA file named explicitly.
    let o = v
        .cmd(&["state", "list", "e"])
        .env("VEEPS_ADDR", &https)
        .env("VEEPS_CA_FILE", "/nonexistent/ca.crt")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("set VEEPS_CA_FILE"));
}

/// Issue "Security baseline", audit retention: sealed entries past the archive age are
/// copied, in order and once, to the reserved bucket `veeps-audit`.
#[test]
fn sealed_audit_entries_are_archived_to_a_bucket() {
    let v = Veeps::start_with(&[], &["--audit-archive-days", "0"]);
    v.ok(&["state", "list", "e"]);
    let out = v.ok(&["audit", "--seal"]);
    let archived = out
        .lines()
        .find_map(|l| l.strip_prefix("Archived sealed entries to "))
        .map(|l| l.trim_end_matches('.').to_string())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        archived.starts_with("s3://veeps-audit/audit/"),
        "{archived}"
    );
    let aws = Aws::new(&v);
    let body = aws.ok(&["s3", "cp", &archived, "-"]);
    assert!(body.contains("GET /v1/envs/e/state"), "{body}");
    // Once: the next seal archives only what is new.
    v.ok(&["state", "list", "e"]);
    let out = v.ok(&["audit", "--seal"]);
    let next = out
        .lines()
        .find_map(|l| l.strip_prefix("Archived sealed entries to "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_ne!(next.trim_end_matches('.'), archived);
    assert!(v.ok(&["audit", "--verify"]).contains("intact"));
}

/// The bundled example takes one variable, in every environment, that moves its public
/// certificates from veeps' CA to an ACME CA (checked offline; issuance itself is in
/// tests/acme.rs).
#[test]
fn the_example_switches_to_acme_with_one_variable() {
    let live =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/veeps-hosting/live");
    for extra in [
        vec![],
        vec!["-var", "acme_directory=https://127.0.0.1:14000/dir"],
    ] {
        let o = Command::new(bin())
            .arg("validate")
            .arg(&live)
            .args(&extra)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{extra:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
