//! IAM end to end: users, groups, policies and the password policy declared in
//! configuration; `veeps login` and the session it keeps; denials naming the action and
//! the resource; a user's S3 key authorised by the user's own policies through the AWS CLI.

use veeps_testkit::*;

const CONFIG: &str = r#"
resource "iam_password_policy" "p" {
  minimum_password_length      = 16
  require_uppercase_characters = true
  require_lowercase_characters = true
  require_numbers              = true
  require_symbols              = true
  password_reuse_prevention    = 5
}

resource "iam_policy" "dev" {
  name = "dev"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["env:Get*", "env:List*", "env:Plan"], Resource = "*" },
      { Effect = "Allow", Action = "s3:*", Resource = ["arn:aws:s3:::dana-data", "arn:aws:s3:::dana-data/*"] },
      { Effect = "Deny", Action = "s3:DeleteObject", Resource = "arn:aws:s3:::dana-data/keep/*" },
    ]
  })
}

resource "iam_group" "developers" {
  name     = "developers"
  policies = [iam_policy.dev.name]
}

resource "iam_group" "full_access" {
  name     = "full-access"
  policies = ["AdministratorAccess"]
}

resource "iam_user" "dana" {
  name   = "dana"
  groups = [iam_group.developers.name]
}

resource "iam_user" "ada" {
  name = "ada"
}

resource "iam_group_membership" "admins" {
  name  = "admins"
  group = iam_group.full_access.name
  users = [iam_user.ada.name]
}

resource "access_key" "dana" {
  user = iam_user.dana.name
}

resource "bucket" "dana" {
  bucket        = "dana-data"
  force_destroy = true
}

resource "bucket" "other" {
  bucket        = "other-data"
  force_destroy = true
}

output "dana_key" {
  value = access_key.dana.id
}

output "dana_secret" {
  value     = access_key.dana.secret
  sensitive = true
}
"#;

#[test]
fn users_declared_in_configuration_log_in_and_are_held_to_their_policies() {
    let v = Veeps::start();
    v.write("env/main.hcl", CONFIG);
    v.ok(&["apply", "env", "--auto-approve"]);
    // What is read back is what was declared (optional lists left out included).
    v.write("env/extra.hcl", "resource \"iam_group\" \"empty\" {\n  name = \"empty\"\n}\nresource \"iam_user\" \"bare\" {\n  name = \"bare\"\n}\nresource \"ban_policy\" \"b\" {\n  name = \"b\"\n  jail {\n    source = \"api\"\n  }\n}\n");
    v.ok(&["apply", "env", "--auto-approve"]);
    assert!(v.ok(&["plan", "env"]).contains("No changes."));
    let o = v.ok(&["iam", "users"]);
    assert!(
        o.contains("dana") && o.contains("developers") && o.contains("dev"),
        "{o}"
    );
    assert!(
        o.contains("ada") && o.contains("AdministratorAccess"),
        "{o}"
    );

    // The password policy is the reference's.
    let weak = v
        .cmd(&["iam", "password", "dana"])
        .env("VEEPS_PASSWORD", "short")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&weak.stderr);
    assert!(
        !weak.status.success() && err.contains("the password policy needs at least 16 characters"),
        "{err}"
    );
    let pw = "Dana-Password-2026!";
    let set = v
        .cmd(&["iam", "password", "dana"])
        .env("VEEPS_PASSWORD", pw)
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );

    // `veeps login` keeps a session that later commands use.
    let login = v
        .cmd(&["login", "dana"])
        .env("VEEPS_PASSWORD", pw)
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert!(String::from_utf8_lossy(&login.stdout).starts_with("logged in as dana until"));
    assert!(v
        .ok(&["whoami"])
        .starts_with("dana (arn:aws:iam:::user/dana)"));
    // Reading state is allowed; applying is not, and says what and where.
    v.ok(&["state", "list", "env"]);
    v.write(
        "env/more.hcl",
        "resource \"random_id\" \"x\" {\n  byte_length = 4\n}\n",
    );
    let o = v.expect(&["apply", "env", "--auto-approve"], 1);
    assert!(
        o.contains("user/dana may not env:Apply on arn:veeps:env:env:environment"),
        "{o}"
    );
    let o = v.expect(&["iam", "users"], 1);
    assert!(o.contains("iam:ListUsers on *"), "{o}");
    v.ok(&["logout"]);
    assert!(v.ok(&["whoami"]).starts_with("root"));

    // An MFA device through the CLI: created, enabled with two consecutive codes, then
    // every login needs a code.
    let o = v.ok(&["iam", "mfa", "create", "dana"]);
    let secret = o
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .and_then(veeps_iam::totp::unbase32)
        .expect("the secret is printed");
    assert!(o.contains("otpauth://totp/veeps:dana?secret="), "{o}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = |t: u64| veeps_iam::totp::code_at(&secret, t);
    v.ok(&["iam", "mfa", "enable", "dana", &code(now - 30), &code(now)]);
    let o = v
        .cmd(&["login", "dana"])
        .env("VEEPS_PASSWORD", pw)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("give its current code (--code)"));
    let login = v
        .cmd(&[
            "login",
            "dana",
            "--code",
            &code(now + 30),
            "--duration",
            "10m",
        ])
        .env("VEEPS_PASSWORD", pw)
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert!(String::from_utf8_lossy(&login.stdout).starts_with("logged in as dana (with MFA)"));
    assert!(v.ok(&["whoami"]).contains("with MFA"));
    v.ok(&["logout"]);

    // The simulator answers the same as the evaluator.
    assert_eq!(
        v.ok(&[
            "iam",
            "simulate",
            "dana",
            "env:GetState",
            "arn:veeps:env:prod:environment"
        ])
        .trim(),
        "allowed"
    );
    let o = v.expect(
        &[
            "iam",
            "simulate",
            "dana",
            "env:Apply",
            "arn:veeps:env:prod:environment",
        ],
        1,
    );
    assert!(o.contains("denied: no policy attached"), "{o}");

    // Dana's S3 key may do what her policy allows, through the AWS CLI.
    let out = |n: &str| v.ok(&["output", "env", n]).trim().to_string();
    let dana = Aws {
        id: out("dana_key"),
        secret: out("dana_secret"),
        ..Aws::new(&v)
    };
    let f = v.work.join("f.txt");
    std::fs::write(&f, "dana's").unwrap();
    let f = f.to_str().unwrap();
    dana.ok(&["s3", "cp", f, "s3://dana-data/keep/a.txt"]);
    assert!(dana
        .ok(&["s3", "ls", "s3://dana-data/keep/"])
        .contains("a.txt"));
    dana.fails(&["s3", "rm", "s3://dana-data/keep/a.txt"], "AccessDenied");
    dana.fails(&["s3", "cp", f, "s3://other-data/a.txt"], "AccessDenied");

    // IAM names are global: another environment cannot declare dana.
    v.write(
        "other/main.hcl",
        "resource \"iam_user\" \"d\" {\n  name = \"dana\"\n}\n",
    );
    let o = v.expect(&["apply", "other", "--auto-approve"], 1);
    assert!(o.contains("user dana is managed by environment env"), "{o}");

    // A key removed from the configuration stops working at once.
    v.write("env/main.hcl", &CONFIG.replace("resource \"access_key\" \"dana\" {\n  user = iam_user.dana.name\n}\n", "").replace("output \"dana_key\" {\n  value = access_key.dana.id\n}\n", "").replace("output \"dana_secret\" {\n  value     = access_key.dana.secret\n  sensitive = true\n}\n", ""));
    v.ok(&["apply", "env", "--auto-approve"]);
    dana.fails(&["s3", "ls", "s3://dana-data/"], "InvalidAccessKeyId");
}

const KEYS: &str = r#"
resource "iam_group" "key_admins" {
  name     = "key-admins"
  policies = ["AdministratorAccess"]
}
resource "iam_group" "key_users" {
  name     = "key-users"
  policies = ["AdministratorAccess"]
}
resource "iam_user" "kai" {
  name   = "kai"
  groups = [iam_group.key_admins.name]
}
resource "iam_user" "kim" {
  name   = "kim"
  groups = [iam_group.key_users.name]
}
resource "kms_key" "main" {
  description             = "the environment's key"
  administrators          = [iam_group.key_admins.name]
  users                   = [iam_group.key_users.name]
  enable_key_rotation     = true
  rotation_period_in_days = 90
  deletion_window_in_days = 7
}
"#;

#[test]
fn a_kms_key_says_who_uses_and_who_administers_it_rotates_and_waits_before_deletion() {
    let v = Veeps::start();
    v.write("env/main.hcl", KEYS);
    v.ok(&["apply", "env", "--auto-approve"]);
    assert!(v.ok(&["plan", "env"]).contains("No changes."));
    let token = |user: &str| {
        v.ok(&["iam", "token", "create", user, "--ttl", "1h"])
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let (kai, kim) = (token("kai"), token("kim"));
    let as_user = |t: &str, args: &[&str]| {
        let o = v.cmd(args).env("VEEPS_TOKEN", t).output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    // The key's users encrypt; its administrators (with the same IAM rights) do not.
    let (ok, sealed) = as_user(&kim, &["kms", "encrypt", "env", "--value", "hunter2"]);
    assert!(ok && sealed.starts_with("kmscrypt::"), "{sealed}");
    let (ok, o) = as_user(&kai, &["kms", "encrypt", "env", "--value", "x"]);
    assert!(
        !ok && o.contains("the kms_key of environment env does not list any of the user's groups"),
        "{o}"
    );
    // Its administrators rotate; its users do not.
    let (ok, o) = as_user(&kim, &["kms", "rotate", "env"]);
    assert!(!ok && o.contains("kms:RotateKeyOnDemand"), "{o}");
    let (ok, o) = as_user(&kai, &["kms", "rotate", "env"]);
    assert!(ok && o.contains("key of env: version 1"), "{o}");
    assert!(o.contains("rotation:       every 90 days"), "{o}");
    // The value sealed with version 0 still opens.
    v.write("secret.txt", &format!("password = \"{}\"\n", sealed.trim()));
    let (ok, o) = as_user(&kim, &["kms", "decrypt", "env", "secret.txt"]);
    assert!(ok && o.contains("password = \"hunter2\""), "{o}");

    // Removed from the configuration: scheduled for deletion, unusable (root included)
    // until cancelled.
    v.write(
        "env/main.hcl",
        &KEYS[..KEYS.find("resource \"kms_key\"").unwrap()],
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let o = v.ok(&["kms", "describe", "env"]);
    assert!(o.contains("SCHEDULED FOR DELETION"), "{o}");
    let o = v.expect(&["kms", "encrypt", "env", "--value", "x"], 1);
    assert!(o.contains("scheduled for deletion"), "{o}");
    v.ok(&["kms", "cancel-deletion", "env"]);
    assert!(v
        .ok(&["kms", "encrypt", "env", "--value", "x"])
        .starts_with("kmscrypt::"));
}

const ROLE: &str = r#"
resource "iam_policy" "reader" {
  name = "reader"
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["s3:GetObject", "s3:ListBucket"], Resource = ["arn:aws:s3:::role-data", "arn:aws:s3:::role-data/*"] }]
  })
}
resource "iam_role" "app" {
  name     = "app"
  policies = [iam_policy.reader.name]
}
resource "bucket" "data" {
  bucket        = "role-data"
  force_destroy = true
}
resource "bucket_object" "o" {
  bucket  = bucket.data.bucket
  key     = "hello.txt"
  content = "hello from the role"
}
"#;

#[test]
fn a_role_hands_out_temporary_credentials_that_s3_honours_with_their_token() {
    let v = Veeps::start();
    v.write("env/main.hcl", ROLE);
    v.ok(&["apply", "env", "--auto-approve"]);
    assert!(v.ok(&["plan", "env"]).contains("No changes."));
    let out = v.ok(&[
        "iam",
        "assume-role",
        "app",
        "--duration",
        "15m",
        "--session-name",
        "ci",
    ]);
    let var = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    let (id, secret, token) = (
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
        var("AWS_SESSION_TOKEN"),
    );
    assert!(id.starts_with("ASIA"));
    let aws = |args: &[&str], token: Option<&str>| {
        let mut c = std::process::Command::new("aws");
        c.arg("--endpoint-url")
            .arg(format!("http://127.0.0.1:{}", v.s3_port))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_SESSION_TOKEN");
        if let Some(t) = token {
            c.env("AWS_SESSION_TOKEN", t);
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    // What the role's policy allows, with the session token.
    let (ok, body) = aws(&["s3", "cp", "s3://role-data/hello.txt", "-"], Some(&token));
    assert!(ok && body.contains("hello from the role"), "{body}");
    // Nothing else: writing is denied; without the token (or with another) nothing works.
    let f = v.work.join("w.txt");
    std::fs::write(&f, "x").unwrap();
    let (ok, o) = aws(
        &["s3", "cp", f.to_str().unwrap(), "s3://role-data/w.txt"],
        Some(&token),
    );
    assert!(!ok && o.contains("AccessDenied"), "{o}");
    // (GetObject: a HEAD's error has no body to name its code.)
    let (ok, o) = aws(
        &[
            "s3api",
            "get-object",
            "--bucket",
            "role-data",
            "--key",
            "hello.txt",
            "/dev/null",
        ],
        None,
    );
    assert!(!ok && o.contains("InvalidToken"), "{o}");
    let (ok, o) = aws(
        &[
            "s3api",
            "get-object",
            "--bucket",
            "role-data",
            "--key",
            "hello.txt",
            "/dev/null",
        ],
        Some("0000"),
    );
    assert!(!ok && o.contains("InvalidToken"), "{o}");
    // The credential_process shape SDKs renew from; sessions are bounded by the role.
    let p: serde_json::Value =
        serde_json::from_str(&v.ok(&["iam", "assume-role", "app", "--format", "process"])).unwrap();
    assert_eq!(p["Version"], 1);
    assert!(p["SessionToken"].as_str().is_some_and(|t| !t.is_empty()));
    let o = v.expect(&["iam", "assume-role", "app", "--duration", "2h"], 1);
    assert!(o.contains("lasts 900 to 3600 seconds"), "{o}");
    // The role gone, its sessions end.
    v.write("env/main.hcl", &ROLE.replace("resource \"iam_role\" \"app\" {\n  name     = \"app\"\n  policies = [iam_policy.reader.name]\n}\n", ""));
    v.ok(&["apply", "env", "--auto-approve"]);
    let (ok, o) = aws(
        &[
            "s3api",
            "get-object",
            "--bucket",
            "role-data",
            "--key",
            "hello.txt",
            "/dev/null",
        ],
        Some(&token),
    );
    assert!(!ok && o.contains("InvalidAccessKeyId"), "{o}");
}
