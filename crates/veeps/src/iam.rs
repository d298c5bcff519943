//! `veeps login`, `logout`, `whoami` and `veeps iam`: users' sessions and credentials;
//! `veeps bans` and `unban`.

use crate::ops::{api_err, client, fmt_ts, server_url};
use crate::Global;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use veeps_api::client::encode;
use veeps_wire::iam::*;

type R = Result<i32, String>;

/// `veeps iam`.
#[derive(Subcommand)]
pub enum IamCmd {
    /// Every user, its groups, policies and credentials
    Users,
    /// One user
    User {
        /// The user
        name: String,
    },
    /// Set a user's password (read from VEEPS_PASSWORD or standard input)
    Password {
        /// The user
        name: String,
    },
    /// Change your own password (VEEPS_PASSWORD holds the current one, VEEPS_NEW_PASSWORD
    /// the new; or two lines of standard input)
    ChangePassword,
    /// Manage a user's MFA device
    #[command(subcommand)]
    Mfa(MfaCmd),
    /// Manage a user's API tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Refuse (or accept again) the root token
    RootToken {
        /// `disable` or `enable`
        #[arg(value_parser = ["disable", "enable"])]
        what: String,
    },
    /// Temporary credentials of a role, for the AWS CLI and SDKs (`--format process` is
    /// what a `credential_process` line prints, so SDKs renew them themselves)
    AssumeRole {
        /// The role
        name: String,
        /// How long they last (15m up to the role's max_session_duration)
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Who asks, for the audit trail
        #[arg(long, default_value = "")]
        session_name: String,
        /// `env` (export lines), `json` (STS's Credentials) or `process`
        #[arg(long, default_value = "env", value_parser = ["env", "json", "process"])]
        format: String,
    },
    /// Would USER be allowed ACTION on RESOURCE?
    Simulate {
        /// The user
        user: String,
        /// Like env:Apply
        action: String,
        /// Like arn:veeps:env:prod:environment
        resource: String,
        /// As a session with MFA
        #[arg(long)]
        mfa: bool,
    },
}

/// `veeps iam mfa`.
#[derive(Subcommand)]
pub enum MfaCmd {
    /// Create a TOTP device: prints its secret, otpauth:// URI and recovery codes (once)
    Create {
        /// The user
        name: String,
    },
    /// Enable the device with two consecutive codes from the authenticator
    Enable {
        /// The user
        name: String,
        /// A code
        code1: String,
        /// The next code
        code2: String,
    },
    /// Remove the device
    Remove {
        /// The user
        name: String,
    },
}

/// `veeps iam token`.
#[derive(Subcommand)]
pub enum TokenCmd {
    /// Issue a token (printed once)
    Create {
        /// The user
        name: String,
        /// How long it is good for (like 30d; at most 90d)
        #[arg(long, default_value = "1d")]
        ttl: String,
        /// Limit it to these action patterns (like env:Get*); repeatable
        #[arg(long)]
        scope: Vec<String>,
        /// What it is for
        #[arg(long, default_value = "")]
        description: String,
    },
    /// A user's tokens (never their secrets)
    List {
        /// The user
        name: String,
    },
    /// Revoke a token
    Delete {
        /// The user
        name: String,
        /// The token's id
        id: String,
    },
}

/// What `veeps login` keeps: the session token of one server.
#[derive(Serialize, Deserialize)]
struct Session {
    server: String,
    user: String,
    token: String,
    expires: i64,
}

/// Where the session is kept: `VEEPS_SESSION`, else `$XDG_CONFIG_HOME/veeps/session.json`
/// (`~/.config/veeps/session.json`).
fn session_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VEEPS_SESSION") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("veeps").join("session.json"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The token of the session for `server`, if one is kept and has not expired.
pub fn session_for(server: &str) -> Option<String> {
    let text = std::fs::read_to_string(session_path()?).ok()?;
    let s: Session = serde_json::from_str(&text).ok()?;
    (s.server == server && s.expires > now()).then_some(s.token)
}

fn seconds(s: &str) -> Result<i64, String> {
    veeps_obs::parse_duration_ms(s)
        .map(|ms| ms / 1000)
        .map_err(|e| format!("{s}: {e}"))
}

/// A line of standard input, or the variable's value.
fn secret(var: &str, what: &str) -> Result<String, String> {
    if let Ok(v) = std::env::var(var) {
        return Ok(v);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading {what} from standard input: {e}"))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        return Err(format!(
            "no {what}: set {var} or write it on standard input"
        ));
    }
    Ok(line)
}

/// `veeps login USER`.
pub fn login(g: &Global, user: &str, code: Option<String>, duration: &str) -> R {
    let url = server_url(g);
    let password = secret("VEEPS_PASSWORD", "password")?;
    let c = crate::ops::client_with(g, &url, "")?;
    let t: NewToken = c
        .post_as(
            "/v1/iam/login",
            &LoginRequest {
                user: user.into(),
                password,
                code,
                duration_seconds: Some(seconds(duration)?),
            },
        )
        .map_err(api_err)?;
    let path = session_path().ok_or("no place for the session: set VEEPS_SESSION or HOME")?;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let s = Session {
        server: url,
        user: user.into(),
        token: t.token,
        expires: t.info.expires,
    };
    veeps_kms::write_private(
        &path,
        serde_json::to_string(&s).unwrap_or_default().as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "logged in as {user}{} until {}; the session is in {}",
        if t.info.mfa { " (with MFA)" } else { "" },
        fmt_ts(t.info.expires * 1000),
        path.display()
    );
    Ok(0)
}

/// `veeps logout`.
pub fn logout(g: &Global) -> R {
    let url = server_url(g);
    let Some(token) = session_for(&url) else {
        println!("no session for {url}");
        return Ok(0);
    };
    let r = crate::ops::client_with(g, &url, &token)?.post_empty("/v1/iam/logout", &());
    if let Some(p) = session_path() {
        let _ = std::fs::remove_file(p);
    }
    r.map_err(api_err)?;
    println!("logged out");
    Ok(0)
}

/// `veeps whoami`.
pub fn whoami(g: &Global) -> R {
    let i: Identity = client(g)?.get_as("/v1/iam/whoami").map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&i).unwrap_or_default());
        return Ok(0);
    }
    print!("{} ({})", i.user, i.arn);
    if i.mfa {
        print!(", with MFA");
    }
    if let Some(e) = i.expires {
        print!(", until {}", fmt_ts(e * 1000));
    }
    println!();
    Ok(0)
}

/// `veeps kms describe|rotate|cancel-deletion ENV`.
pub fn kms_key(g: &Global, env: &str, method: &str, tail: &str) -> R {
    let c = client(g)?;
    let path = format!("/v1/kms/{}{tail}", encode(env));
    let k: KmsKeyInfo = match method {
        "GET" => c.get_as(&path),
        _ => c.post_as(&path, &()),
    }
    .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&k).unwrap_or_default());
        return Ok(0);
    }
    println!("key of {}: version {}", k.env, k.current_version);
    for (i, t) in k.rotated.iter().enumerate() {
        println!("  version {} since {}", i + 1, fmt_ts(t * 1000));
    }
    match &k.policy {
        None => println!("no kms_key declares it: IAM policies alone decide who uses it"),
        Some(p) => {
            let list = |v: &Vec<String>| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(", ")
                }
            };
            println!(
                "administrators: {}
users:          {}",
                list(&p.administrators),
                list(&p.users)
            );
            match p.rotation_period_in_days {
                Some(d) => println!("rotation:       every {d} days"),
                None => println!(
                    "rotation:       off (veeps kms rotate {} rotates now)",
                    k.env
                ),
            }
            if let Some(at) = p.pending_deletion_until {
                println!(
                    "SCHEDULED FOR DELETION at {}: `veeps kms cancel-deletion {}` keeps it",
                    fmt_ts(at * 1000),
                    k.env
                );
            }
        }
    }
    Ok(0)
}

/// `veeps bans`.
pub fn bans(g: &Global) -> R {
    let list: Vec<veeps_wire::ban::BanInfo> = client(g)?.get_as("/v1/bans").map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(0);
    }
    if list.is_empty() {
        println!("no address is banned");
    }
    for b in list {
        println!(
            "{:<24} until {}  jail {}  ban #{}{}",
            b.address,
            fmt_ts(b.until * 1000),
            b.jail,
            b.offences,
            if b.kernel {
                ""
            } else {
                "  (refused by the listeners; nftables is not in use)"
            }
        );
    }
    Ok(0)
}

/// `veeps unban ADDRESS`.
pub fn unban(g: &Global, address: &str) -> R {
    client(g)?
        .delete_empty(&format!("/v1/bans/{}", encode(address)))
        .map_err(api_err)?;
    println!("{address} is no longer banned");
    Ok(0)
}

fn user_path(name: &str) -> String {
    format!("/v1/iam/users/{}", encode(name))
}

fn print_user(u: &UserInfo) {
    println!(
        "{:<20} groups: {}  policies: {}  password: {}  mfa: {}",
        u.name,
        if u.groups.is_empty() {
            "-".into()
        } else {
            u.groups.join(",")
        },
        if u.policies.is_empty() {
            "-".into()
        } else {
            u.policies.join(",")
        },
        if u.password { "yes" } else { "no" },
        if u.mfa { "yes" } else { "no" },
    );
}

/// Runs a `veeps iam` command.
pub fn run(g: &Global, cmd: IamCmd) -> R {
    let c = client(g)?;
    let json = |v: &dyn erased::Json| {
        println!("{}", v.pretty());
    };
    match cmd {
        IamCmd::Users => {
            let list: Vec<UserInfo> = c.get_as("/v1/iam/users").map_err(api_err)?;
            if g.json {
                json(&list);
            } else {
                list.iter().for_each(print_user);
            }
        }
        IamCmd::User { name } => {
            let u: UserInfo = c.get_as(&user_path(&name)).map_err(api_err)?;
            if g.json {
                json(&u);
            } else {
                print_user(&u);
            }
        }
        IamCmd::Password { name } => {
            let password = secret("VEEPS_PASSWORD", "password")?;
            c.post_empty(
                &format!("{}/password", user_path(&name)),
                &PasswordRequest {
                    password,
                    current: None,
                },
            )
            .map_err(api_err)?;
            println!("{name}'s password is set");
        }
        IamCmd::ChangePassword => {
            let current = secret("VEEPS_PASSWORD", "current password")?;
            let password = secret("VEEPS_NEW_PASSWORD", "new password")?;
            c.post_empty(
                "/v1/iam/password",
                &PasswordRequest {
                    password,
                    current: Some(current),
                },
            )
            .map_err(api_err)?;
            println!("your password is changed");
        }
        IamCmd::Mfa(MfaCmd::Create { name }) => {
            let d: MfaDevice = c
                .post_as(&format!("{}/mfa", user_path(&name)), &())
                .map_err(api_err)?;
            if g.json {
                json(&d);
            } else {
                println!(
                    "secret: {}\nuri:    {}\nrecovery codes (each works once; keep them apart):",
                    d.secret, d.uri
                );
                for r in &d.recovery_codes {
                    println!("  {r}");
                }
                println!(
                    "Enable it with two consecutive codes: veeps iam mfa enable {name} CODE1 CODE2"
                );
            }
        }
        IamCmd::Mfa(MfaCmd::Enable { name, code1, code2 }) => {
            c.post_empty(
                &format!("{}/mfa/enable", user_path(&name)),
                &MfaEnable { code1, code2 },
            )
            .map_err(api_err)?;
            println!("{name}'s MFA device is enabled: logins now need its code");
        }
        IamCmd::Mfa(MfaCmd::Remove { name }) => {
            c.delete_empty(&format!("{}/mfa", user_path(&name)))
                .map_err(api_err)?;
            println!("{name}'s MFA device is removed");
        }
        IamCmd::Token(TokenCmd::Create {
            name,
            ttl,
            scope,
            description,
        }) => {
            let t: NewToken = c
                .post_as(
                    &format!("{}/tokens", user_path(&name)),
                    &TokenRequest {
                        ttl_seconds: Some(seconds(&ttl)?),
                        scope,
                        description,
                    },
                )
                .map_err(api_err)?;
            if g.json {
                json(&t);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "token {} of {name}, good until {}; it is shown once",
                    t.info.id,
                    fmt_ts(t.info.expires * 1000)
                );
            }
        }
        IamCmd::Token(TokenCmd::List { name }) => {
            let list: Vec<TokenInfo> = c
                .get_as(&format!("{}/tokens", user_path(&name)))
                .map_err(api_err)?;
            if g.json {
                json(&list);
            } else {
                for t in list {
                    println!(
                        "{}  {:<8} until {}  scope: {}  {}",
                        t.id,
                        t.kind,
                        fmt_ts(t.expires * 1000),
                        if t.scope.is_empty() {
                            "-".into()
                        } else {
                            t.scope.join(",")
                        },
                        t.description
                    );
                }
            }
        }
        IamCmd::Token(TokenCmd::Delete { name, id }) => {
            c.delete_empty(&format!("{}/tokens/{}", user_path(&name), encode(&id)))
                .map_err(api_err)?;
            println!("token {id} is revoked");
        }
        IamCmd::RootToken { what } => {
            let disabled = what == "disable";
            c.post_empty("/v1/iam/root-token", &RootToken { disabled })
                .map_err(api_err)?;
            println!(
                "the root token is {}",
                if disabled { "disabled" } else { "enabled" }
            );
        }
        IamCmd::AssumeRole {
            name,
            duration,
            session_name,
            format,
        } => {
            let c: RoleCredentials = c
                .post_as(
                    &format!("/v1/iam/roles/{}/assume", encode(&name)),
                    &AssumeRole {
                        duration_seconds: Some(seconds(&duration)?),
                        session_name,
                    },
                )
                .map_err(api_err)?;
            match format.as_str() {
                "json" => json(&c),
                "process" => println!(
                    "{}",
                    serde_json::json!({
                        "Version": 1,
                        "AccessKeyId": c.access_key_id,
                        "SecretAccessKey": c.secret_access_key,
                        "SessionToken": c.session_token,
                        "Expiration": c.expiration,
                    })
                ),
                _ => println!(
                    "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_SESSION_TOKEN={}\n# until {}",
                    c.access_key_id, c.secret_access_key, c.session_token, c.expiration
                ),
            }
        }
        IamCmd::Simulate {
            user,
            action,
            resource,
            mfa,
        } => {
            let r: SimulateReply = c
                .post_as(
                    "/v1/iam/simulate",
                    &SimulateRequest {
                        user,
                        action,
                        resource,
                        mfa,
                    },
                )
                .map_err(api_err)?;
            match r.reason {
                None => println!("allowed"),
                Some(why) => {
                    println!("denied: {why}");
                    return Ok(1);
                }
            }
        }
    }
    Ok(0)
}

mod erased {
    /// Anything printable as pretty JSON.
    pub trait Json {
        fn pretty(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default()
        }
    }
}
