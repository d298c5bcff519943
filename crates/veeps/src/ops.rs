//! The commands.

use crate::envs::{load_env, load_tree, LoadedEnv};
use crate::{
    AlarmCmd, CaCmd, Cli, Command, Global, ImageCmd, KmsCmd, MetricsCmd, S3Cmd, StateCmd, VarArgs,
};
use serde_json::{json, Value as Json};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use veeps_api::client::{encode, Client, ClientError};
use veeps_api::RunRequest;
use veeps_wire::plan::{show, Event, Plan};

/// Runs a command; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    let g = cli.global.clone();
    let r = match cli.command {
        Command::Server {
            listen,
            smtp_relay,
            smtp_from,
            metrics_retention,
            log_retention_days,
            audit_retention_days,
            audit_export,
            audit_archive_days,
            api_tls,
            s3,
            dns,
        } => crate::up::server(&g, &listen, {
            let mut o = veeps_api::server::ServerOptions {
                smtp_relay,
                smtp_from,
                metrics_retention: Some(metrics_retention),
                log_retention_days: Some(log_retention_days),
                s3_listen: Some(s3.s3_listen.clone()),
                s3_website_listen: Some(s3.s3_website_listen.clone()),
                s3_lifecycle_day: s3.s3_lifecycle_day,
                s3_tls: s3.s3_tls,
                audit_retention_days: Some(audit_retention_days),
                audit_export,
                audit_archive_days: Some(audit_archive_days),
                api_tls: match api_tls.as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                },
                ..Default::default()
            };
            dns.apply(&mut o);
            s3.apply(&mut o);
            o
        }),
        Command::Metrics(MetricsCmd::List { env }) => metrics_list(&g, &env),
        Command::Metrics(MetricsCmd::Query {
            env,
            selector,
            since,
            period,
            stat,
        }) => metrics_query(&g, &env, &selector, &since, period, &stat),
        Command::Logs {
            env,
            source,
            follow,
            since,
            grep,
            limit,
        } => logs(
            &g,
            &env,
            source.as_deref().unwrap_or(""),
            follow,
            &since,
            grep.as_deref(),
            limit,
        ),
        Command::Alarms { env } => alarms(&g, &env),
        Command::Alarm(AlarmCmd::History { env, name }) => alarm_history(&g, &env, &name),
        Command::Deliveries { env, topic } => deliveries(&g, &env, &topic),
        Command::Ca(CaCmd::Cert) => ca_cert(&g),
        Command::Kms(KmsCmd::Encrypt { env, value }) => kms_encrypt(&g, &env, value),
        Command::Kms(KmsCmd::Decrypt { env, file }) => kms_decrypt(&g, &env, &file),
        Command::Kms(KmsCmd::ExportKey { env }) => kms_export(&g, &env),
        Command::Kms(KmsCmd::ImportKey { env, file }) => kms_import(&g, &env, &file),
        Command::Kms(KmsCmd::Describe { env }) => crate::iam::kms_key(&g, &env, "GET", ""),
        Command::Kms(KmsCmd::Rotate { env }) => crate::iam::kms_key(&g, &env, "POST", "/rotate"),
        Command::Kms(KmsCmd::CancelDeletion { env }) => {
            crate::iam::kms_key(&g, &env, "POST", "/cancel-deletion")
        }
        Command::Down => down(&g),
        Command::S3(S3Cmd::Credentials) => s3_credentials(&g),
        Command::S3(S3Cmd::Lifecycle { advance_days }) => s3_lifecycle(&g, advance_days),
        Command::Db(cmd) => crate::db::run(&g, cmd),
        Command::Cdn(cmd) => crate::cdn::run(&g, cmd),
        Command::Iam(cmd) => crate::iam::run(&g, cmd),
        Command::Login {
            user,
            code,
            duration,
        } => crate::iam::login(&g, &user, code, &duration),
        Command::Logout => crate::iam::logout(&g),
        Command::Bans => crate::iam::bans(&g),
        Command::Unban { address } => crate::iam::unban(&g, &address),
        Command::Whoami => crate::iam::whoami(&g),
        Command::Targets { env } => targets(&g, &env),
        Command::Image(ImageCmd::List) => image_list(&g),
        Command::Image(ImageCmd::Build {
            dir,
            name,
            run,
            keep,
            entrypoint,
            env,
            timeout,
            egress,
        }) => image_build(
            &g,
            &dir,
            &name,
            run,
            keep,
            &entrypoint,
            &env,
            timeout,
            egress,
        ),
        Command::Image(ImageCmd::Updates { env }) => image_updates(&g, &env),
        Command::Image(ImageCmd::Update { env, address }) => image_update(&g, &env, &address),
        Command::Instances { env, group } => instances(&g, &env, group.as_deref()),
        Command::Activity { env, group } => activity(&g, &env, &group),
        Command::Up {
            dir,
            listen,
            vars,
            no_wait,
            s3,
            dns,
        } => crate::up::up(&g, dir, &listen, &vars, no_wait, &s3, &dns),
        Command::Validate { dir, vars } => validate(&g, &dir, &vars),
        Command::Fmt {
            path,
            check,
            recursive,
        } => fmt(&g, &path, check, recursive),
        Command::Plan {
            dir,
            vars,
            destroy,
            detailed_exitcode,
        } => plan(&g, &dir, &vars, destroy, detailed_exitcode),
        Command::Apply {
            dir,
            vars,
            auto_approve,
        } => apply(&g, &dir, &vars, false, auto_approve),
        Command::Destroy {
            dir,
            vars,
            auto_approve,
        } => apply(&g, &dir, &vars, true, auto_approve),
        Command::Output { env, name } => output(&g, &env, name.as_deref()),
        Command::State(StateCmd::List { env }) => state_list(&g, &env),
        Command::State(StateCmd::Show { env, address }) => state_show(&g, &env, &address),
        Command::History { env } => history(&g, &env),
        Command::Rollback {
            env,
            to,
            auto_approve,
        } => rollback(&g, &env, to, auto_approve),
        Command::ForceUnlock { env } => force_unlock(&g, &env),
        Command::Audit {
            verify,
            anchor,
            from,
            seal,
            limit,
        } => {
            if seal {
                audit_seal(&g)
            } else if verify || !anchor.is_empty() || from.is_some() {
                audit_verify(&g, &anchor, from)
            } else {
                audit(&g, limit)
            }
        }
    };
    match r {
        Ok(code) => code,
        Err(msg) => {
            if g.json {
                println!("{}", json!({"error": msg}));
            } else {
                eprintln!("{}", msg.trim_end());
            }
            1
        }
    }
}

type R = Result<i32, String>;

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("veeps");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/veeps")
}

/// The data directory in use.
pub fn data_dir(g: &Global) -> PathBuf {
    g.data_dir.clone().unwrap_or_else(default_data_dir)
}

fn caller() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// A client for the server the global options name.
/// The server's URL (`--server`, `VEEPS_ADDR`, or the default).
pub fn server_url(g: &Global) -> String {
    let url = g
        .server
        .clone()
        .unwrap_or_else(|| format!("http://{}", veeps_api::DEFAULT_LISTEN));
    if url.starts_with("http://") || url.starts_with("https://") {
        url
    } else {
        format!("http://{url}")
    }
}

/// A client of the server, with the first token found: `VEEPS_TOKEN`, the session of
/// `veeps login` for this server, or the root token in the data directory.
pub fn client(g: &Global) -> Result<Client, String> {
    let url = server_url(g);
    let token = match std::env::var("VEEPS_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| crate::iam::session_for(&url))
    {
        Some(t) => t.trim().to_string(),
        None => {
            let p = veeps_api::server::token_path(&data_dir(g));
            std::fs::read_to_string(&p).map(|t| t.trim().to_string()).map_err(|e| format!("no API token: set VEEPS_TOKEN, or point --data-dir / VEEPS_DATA_DIR at the server's data directory ({} : {e})", p.display()))?
        }
    };
    client_with(g, &url, &token)
}

/// A client of `url` with `token`; an `https://` server is trusted through veeps' CA
/// (`VEEPS_CA_FILE`, or the data directory's `pki/ca.crt`).
pub fn client_with(g: &Global, url: &str, token: &str) -> Result<Client, String> {
    if !url.starts_with("https://") {
        return Ok(Client::new(url, token, &caller()));
    }
    let path = std::env::var_os("VEEPS_CA_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir(g).join("pki").join("ca.crt"));
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{url} serves TLS: its CA certificate is needed ({}: {e}); set VEEPS_CA_FILE to a copy of the server's DATA_DIR/pki/ca.crt",
            path.display()
        )
    })?;
    Client::with_ca(url, token, &caller(), &pem).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn api_err(e: ClientError) -> String {
    e.to_string()
}

/// The environments under `dir`, each with the `-var-file`s of `v` added to its bundle
/// (so history keeps them and a rollback applies them again).
pub(crate) fn load_envs(dir: &Path, v: &VarArgs) -> Result<Vec<LoadedEnv>, String> {
    let mut envs = load_tree(dir)?;
    let mut files = vec![];
    for (i, f) in v.var_files.iter().enumerate() {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("-var-file {}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let suffix = if name.ends_with(".tfvars") {
            ""
        } else {
            ".tfvars"
        };
        files.push((
            format!("{}{i:03}-{name}{suffix}", veeps_wire::plan::VAR_FILE_PREFIX),
            text,
        ));
    }
    for e in &mut envs {
        for (name, text) in &files {
            let path = format!("{}/{name}", e.bundle.root);
            e.bundle.files.insert(path, text.clone());
        }
    }
    Ok(envs)
}

pub(crate) fn parse_vars(v: &VarArgs) -> Result<Vec<(String, String)>, String> {
    v.vars
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| format!("-var \"{s}\": expected NAME=VALUE"))
        })
        .collect()
}

fn validate(g: &Global, dir: &Path, vars: &VarArgs) -> R {
    let envs = load_envs(dir, vars)?;
    let vars = parse_vars(vars)?;
    let registry = std::sync::Arc::new(veeps_api::server::registry());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut failed = false;
    let mut report = vec![];
    for e in envs {
        match rt.block_on(veeps_engine::validate(
            registry.clone(),
            e.bundle.clone(),
            &vars,
        )) {
            Ok(()) => report.push(json!({"env": e.name, "valid": true, "diagnostics": []})),
            Err(d) => {
                failed = true;
                if !g.json {
                    eprintln!("{d}\n");
                }
                report.push(json!({"env": e.name, "valid": false, "diagnostics": veeps_api::DiagnosticJson::from_diags(&d)}));
            }
        }
    }
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else if !failed {
        println!("Success! The configuration is valid.");
    }
    Ok(if failed { 1 } else { 0 })
}

fn fmt(g: &Global, path: &Path, check: bool, recursive: bool) -> R {
    let mut files = vec![];
    collect_fmt_files(path, recursive, true, &mut files);
    let mut changed = vec![];
    let mut errors = vec![];
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match veeps_lang::fmt::format_source(&text) {
            Some(out) if out != text => {
                if !check {
                    std::fs::write(&f, &out).map_err(|e| format!("{}: {e}", f.display()))?;
                }
                changed.push(f.display().to_string());
            }
            Some(_) => {}
            None => {
                let file = std::sync::Arc::new(veeps_lang::diag::SourceFile {
                    path: f.display().to_string(),
                    text,
                });
                if let Err(d) = veeps_lang::config::parse_file(&file) {
                    errors.push(d.to_string());
                }
            }
        }
    }
    if g.json {
        println!("{}", json!({"files": changed, "errors": errors}));
    } else {
        for c in &changed {
            println!("{c}");
        }
        for e in &errors {
            eprintln!("{e}\n");
        }
    }
    Ok(if !errors.is_empty() {
        1
    } else if check && !changed.is_empty() {
        3
    } else {
        0
    })
}

fn collect_fmt_files(p: &Path, recursive: bool, _top: bool, out: &mut Vec<PathBuf>) {
    if p.is_file() {
        out.push(p.to_path_buf());
        return;
    }
    let Ok(rd) = std::fs::read_dir(p) else { return };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for e in entries {
        let name = e
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if e.is_dir() {
            if recursive {
                collect_fmt_files(&e, recursive, false, out);
            }
        } else if name.ends_with(".hcl") || name.ends_with(".tf") || name.ends_with(".tfvars") {
            out.push(e);
        }
    }
}

fn run_request(e: &LoadedEnv, vars: &[(String, String)], destroy: bool) -> RunRequest {
    RunRequest {
        bundle: Some(e.bundle.clone()),
        vars: vars.to_vec(),
        destroy,
        from_version: None,
        plan_hash: None,
        plan_time: None,
    }
}

fn get_plan(c: &Client, env: &str, req: &RunRequest) -> Result<Plan, String> {
    let v = c
        .post(&format!("/v1/envs/{env}/plan"), req)
        .map_err(api_err)?;
    serde_json::from_value(v).map_err(|e| format!("unexpected plan from the server: {e}"))
}

fn plan(g: &Global, dir: &Path, vars: &VarArgs, destroy: bool, detailed: bool) -> R {
    let envs = load_envs(dir, vars)?;
    let vars = parse_vars(vars)?;
    let c = client(g)?;
    let multi = envs.len() > 1;
    let mut any = false;
    let mut plans = vec![];
    for e in &envs {
        let p = get_plan(&c, &e.name, &run_request(e, &vars, destroy))?;
        any |= !p.is_empty();
        if g.json {
            plans.push(serde_json::to_value(&p).unwrap_or_default());
        } else {
            if multi {
                println!("=== environment {} ({})\n", e.name, e.dir.display());
            }
            println!("{}", p.render());
        }
    }
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&if multi {
                Json::Array(plans)
            } else {
                plans.pop().unwrap_or_default()
            })
            .unwrap_or_default()
        );
    }
    Ok(if detailed && any { 2 } else { 0 })
}

fn confirm(what: &str) -> bool {
    print!("\nDo you want to {what}?\n  veeps will perform the actions described above.\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == "yes"
}

/// Prints one apply event as text; returns the final status when the apply is complete.
pub fn print_event(ev: &Event, prefix: &str) -> Option<Result<(), String>> {
    match ev {
        Event::Start { address, action } => println!("{prefix}{address}: {}...", action.verb().0),
        Event::Progress {
            address,
            action,
            elapsed,
        } => println!(
            "{prefix}{address}: Still {}... [{}s elapsed]",
            action.verb().0.to_lowercase(),
            *elapsed as u64
        ),
        Event::Done {
            address,
            action,
            elapsed,
            id,
        } => {
            let id = id
                .as_ref()
                .map(|i| format!(" [id={i}]"))
                .unwrap_or_default();
            println!(
                "{prefix}{address}: {} complete after {}{id}",
                action.verb().1,
                human(*elapsed)
            );
        }
        Event::Failed {
            address,
            action,
            error,
        } => eprintln!("{prefix}{address}: {} failed: {error}", action.verb().1),
        Event::Complete {
            status,
            summary,
            errors,
            outputs,
            version,
        } => {
            if status == "ok" {
                println!("\n{prefix}Apply complete! Resources: {} added, {} changed, {} destroyed. (version {version})", summary.add, summary.change, summary.destroy);
            } else {
                eprintln!("\n{prefix}Apply {}: {} added, {} changed, {} destroyed (version {version}). Errors:", if status == "partial" { "partly failed" } else { "failed" }, summary.add, summary.change, summary.destroy);
                for e in errors {
                    eprintln!("  {e}");
                }
            }
            if !outputs.is_empty() {
                println!("\nOutputs:\n");
                for (k, v) in outputs {
                    println!("{k} = {}", show(v));
                }
            }
            return Some(if status == "ok" {
                Ok(())
            } else {
                Err(format!("apply {status}"))
            });
        }
        Event::Error { message } => return Some(Err(message.clone())),
    }
    None
}

fn human(secs: f64) -> String {
    if secs < 60.0 {
        format!("{}s", secs.round() as u64)
    } else {
        format!("{}m{}s", (secs / 60.0) as u64, (secs % 60.0).round() as u64)
    }
}

fn stream_apply(g: &Global, c: &Client, env: &str, req: &RunRequest) -> Result<(), String> {
    let mut result: Option<Result<(), String>> = None;
    let mut events = vec![];
    c.post_stream(&format!("/v1/envs/{env}/apply"), req, |line| {
        if g.json {
            events.push(line.clone());
        }
        if let Ok(ev) = serde_json::from_value::<Event>(line) {
            let r = if g.json {
                match &ev {
                    Event::Complete { status, .. } => Some(if status == "ok" {
                        Ok(())
                    } else {
                        Err(format!("apply {status}"))
                    }),
                    Event::Error { message } => Some(Err(message.clone())),
                    _ => None,
                }
            } else {
                print_event(&ev, "")
            };
            if r.is_some() {
                result = r;
            }
        }
    })
    .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
    }
    result.unwrap_or_else(|| Err("the server closed the connection before the apply finished; it keeps running there: see `veeps history` and `veeps state list`".into()))
}

fn apply(g: &Global, dir: &Path, vars: &VarArgs, destroy: bool, auto: bool) -> R {
    let mut envs = load_envs(dir, vars)?;
    let vars = parse_vars(vars)?;
    if destroy {
        envs.reverse();
    }
    let c = client(g)?;
    let multi = envs.len() > 1;
    for e in &envs {
        if multi && !g.json {
            println!("=== environment {} ({})\n", e.name, e.dir.display());
        }
        let mut req = run_request(e, &vars, destroy);
        let p = get_plan(&c, &e.name, &req)?;
        if p.is_empty() {
            if g.json {
                println!("{}", json!({"env": e.name, "changes": false}));
            } else {
                println!("{}", p.render());
            }
            continue;
        }
        if !g.json {
            println!("{}", p.render());
        }
        if !auto
            && !confirm(if destroy {
                "destroy all resources"
            } else {
                "perform these actions"
            })
        {
            eprintln!("\nApply cancelled.");
            return Ok(1);
        }
        req.plan_hash = Some(p.hash.clone());
        req.plan_time = Some(p.time.clone());
        if !g.json {
            println!();
        }
        stream_apply(g, &c, &e.name, &req)?;
    }
    Ok(0)
}

fn env_name_of(arg: &str) -> Result<String, String> {
    let p = Path::new(arg);
    if p.is_dir() {
        return load_env(p).map(|e| e.name).map_err(|d| d.to_string());
    }
    Ok(arg.to_string())
}

fn output(g: &Global, env: &str, name: Option<&str>) -> R {
    let env = env_name_of(env)?;
    let c = client(g)?;
    let reveal = g.json || name.is_some();
    let outs: std::collections::BTreeMap<String, veeps_wire::OutputValue> = c
        .get_as(&format!(
            "/v1/envs/{env}/outputs{}",
            if reveal { "?reveal=true" } else { "" }
        ))
        .map_err(api_err)?;
    match name {
        Some(n) => {
            let o = outs.get(n).ok_or_else(|| {
                format!(
                    "environment \"{env}\" has no output \"{n}\"; it has: {}",
                    outs.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            match (&o.value, g.json) {
                (v, true) => println!("{v}"),
                (Json::String(s), false) => println!("{s}"),
                (v, false) => println!("{}", show(v)),
            }
        }
        None if g.json => println!(
            "{}",
            serde_json::to_string_pretty(&outs).unwrap_or_default()
        ),
        None => {
            for (k, o) in outs {
                println!("{k} = {}", show(&o.value));
            }
        }
    }
    Ok(0)
}

fn state_list(g: &Global, env: &str) -> R {
    let c = client(g)?;
    let rows: Vec<veeps_wire::ResourceSummary> = c
        .get_as(&format!("/v1/envs/{env}/state"))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        for r in rows {
            let status = if r.status == "ready" {
                String::new()
            } else {
                format!("  ({})", r.status)
            };
            println!("{}{status}", r.address);
        }
    }
    Ok(0)
}

fn state_show(g: &Global, env: &str, address: &str) -> R {
    let c = client(g)?;
    let v: veeps_wire::ResourceDetail = c
        .get_as(&format!(
            "/v1/envs/{env}/resource?address={}",
            encode(address)
        ))
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    let tail = veeps_wire::plan::address_tail(address);
    let (ty, name) = tail.split_once('.').unwrap_or((tail, ""));
    println!("# {address}:");
    println!(
        "resource \"{ty}\" \"{}\" {{",
        name.split('[').next().unwrap_or(name)
    );
    let attrs = v.attributes;
    let width = attrs.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, a) in attrs {
        if !a.is_null() {
            println!("    {k:width$} = {}", show(&a));
        }
    }
    println!("}}");
    Ok(0)
}

fn history(g: &Global, env: &str) -> R {
    let c = client(g)?;
    let rows: Vec<veeps_wire::HistoryRow> = c
        .get_as(&format!("/v1/envs/{env}/history"))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    if rows.is_empty() {
        println!("Environment \"{env}\" has never been applied.");
        return Ok(0);
    }
    println!(
        "{:>7}  {:<20}  {:<28}  {:<16}  {:<7}  CHANGES",
        "VERSION", "TIME", "CALLER", "OPERATION", "STATUS"
    );
    for h in rows {
        let s = h.summary;
        println!(
            "{:>7}  {:<20}  {:<28}  {:<16}  {:<7}  +{} ~{} -{}",
            h.version,
            h.time.chars().take(19).collect::<String>(),
            h.caller,
            h.operation,
            h.status,
            s.add,
            s.change,
            s.destroy
        );
    }
    Ok(0)
}

fn rollback(g: &Global, env: &str, to: u64, auto: bool) -> R {
    let c = client(g)?;
    let mut req = RunRequest {
        from_version: Some(to),
        ..Default::default()
    };
    let p = get_plan(&c, env, &req)?;
    if !g.json {
        println!(
            "Rolling \"{env}\" back to the configuration of version {to}.\n\n{}",
            p.render()
        );
    }
    if p.is_empty() {
        return Ok(0);
    }
    if !auto && !confirm("roll back") {
        eprintln!("\nRollback cancelled.");
        return Ok(1);
    }
    req.plan_hash = Some(p.hash);
    req.plan_time = Some(p.time);
    stream_apply(g, &c, env, &req)?;
    Ok(0)
}

fn force_unlock(g: &Global, env: &str) -> R {
    let v: veeps_wire::LockState = client(g)?
        .delete_as(&format!("/v1/envs/{env}/lock"))
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else if let Some(l) = v.removed {
        println!(
            "Removed the lock of \"{env}\" held by {} ({}, since {}).",
            l.who, l.operation, l.since
        );
    }
    Ok(0)
}

/// Digests in `paths`: files, or directories of `digest-*.json`.
fn anchors(paths: &[PathBuf]) -> Result<Vec<veeps_wire::AuditDigest>, String> {
    let mut files = vec![];
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("digest-") && n.ends_with(".json"))
                })
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: not an audit digest ({e})", f.display()))
        })
        .collect()
}

fn audit_verify(g: &Global, paths: &[PathBuf], from: Option<String>) -> R {
    let check = veeps_wire::TrailCheck {
        anchors: anchors(paths)?,
        from,
    };
    let r: veeps_wire::TrailReport = client(g)?
        .post_as("/v1/audit/trail", &check)
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    match &r.problem {
        None => {
            if !g.json {
                println!(
                    "The audit log is intact: {} entries, hash chain verified; {} signed digests, sealed through entry {}{}.",
                    r.entries,
                    r.digests,
                    r.sealed_through,
                    if check.anchors.is_empty() {
                        " (no exported digest given: only as safe as the data directory)".to_string()
                    } else {
                        format!(", matching the exported copies through entry {}", r.anchored_through)
                    }
                );
            }
            Ok(0)
        }
        Some(p) => Err(format!(
            "the audit log was altered: {p}{}",
            r.first_bad_entry
                .map(|n| format!(" (first bad entry: {n})"))
                .unwrap_or_default()
        )),
    }
}

fn audit_seal(g: &Global) -> R {
    let s: veeps_wire::Sealed = client(g)?
        .post_as("/v1/audit/seal", &serde_json::json!({}))
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
        return Ok(0);
    }
    for a in &s.archived {
        println!("Archived sealed entries to {a}.");
    }
    match (&s.digest, &s.exported) {
        (None, _) => println!("Nothing to seal: every entry is in a digest already."),
        (Some(d), Some(p)) => println!(
            "Sealed entries {} to {} in digest {} ({p}).",
            d.from_entry, d.to_entry, d.seq
        ),
        (Some(d), None) => println!(
            "Sealed entries {} to {} in digest {} (not exported: see the server's log).",
            d.from_entry, d.to_entry, d.seq
        ),
    }
    Ok(0)
}

fn audit(g: &Global, limit: usize) -> R {
    let c = client(g)?;
    let v: Vec<veeps_wire::AuditEntryView> = c
        .get_as(&format!("/v1/audit?limit={limit}"))
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for e in v {
            println!(
                "{:>6}  {}  {:<24}  {:<15}  {:<40}  {}",
                e.seq, e.time, e.who, e.source, e.action, e.result
            );
        }
    }
    Ok(0)
}

fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn metrics_list(g: &Global, env: &str) -> R {
    let list: Vec<veeps_wire::MetricName> = client(g)?
        .get_as(&format!("/v1/envs/{env}/metrics"))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(0);
    }
    for s in list {
        println!("{}{{{}}}", s.name, labels(&s.labels));
    }
    Ok(0)
}

fn metrics_query(g: &Global, env: &str, selector: &str, since: &str, period: u64, stat: &str) -> R {
    let series: Vec<veeps_wire::MetricSeries> = client(g)?
        .get_as(&format!(
            "/v1/envs/{env}/metrics/query?q={}&since={}&period={period}&stat={}",
            encode(selector),
            encode(since),
            encode(stat)
        ))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&series).unwrap_or_default()
        );
        return Ok(0);
    }
    if series.is_empty() {
        println!("No series match {selector} in \"{env}\".");
    }
    for s in series {
        println!(
            "{}{{{}}}  ({stat} per {period}s)",
            s.name,
            labels(&s.labels)
        );
        for (ts, v) in s.points {
            println!("  {}  {v}", fmt_ts(ts));
        }
    }
    Ok(0)
}

/// An RFC 3339 timestamp of milliseconds since the epoch.
pub(crate) fn fmt_ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (d, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[allow(clippy::too_many_arguments)]
fn logs(
    g: &Global,
    env: &str,
    source: &str,
    follow: bool,
    since: &str,
    grep: Option<&str>,
    limit: usize,
) -> R {
    let c = client(g)?;
    veeps_api::parse_duration_ms(since)?;
    let path = format!(
        "/v1/envs/{env}/logs?source={}&since={}&limit={limit}&follow={follow}{}",
        encode(source),
        encode(since),
        grep.map(|g| format!("&grep={}", encode(g)))
            .unwrap_or_default()
    );
    let print = |l: &veeps_wire::LogLine| {
        if g.json {
            println!("{}", serde_json::to_string(l).unwrap_or_default());
        } else {
            println!(
                "{} {}/{} {}: {}",
                fmt_ts(l.ts),
                l.group,
                l.source,
                l.stream,
                l.text
            );
        }
        let _ = std::io::stdout().flush();
    };
    if follow {
        c.get_stream(&path, |l| {
            if let Ok(l) = serde_json::from_value::<veeps_wire::LogLine>(l) {
                print(&l)
            }
        })
        .map_err(api_err)?;
    } else {
        let lines: Vec<veeps_wire::LogLine> = c.get_as(&path).map_err(api_err)?;
        for l in &lines {
            print(l);
        }
    }
    Ok(0)
}

fn alarms(g: &Global, env: &str) -> R {
    let rows: Vec<veeps_wire::AlarmView> = client(g)?
        .get_as(&format!("/v1/envs/{env}/alarms"))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    if rows.is_empty() {
        println!("No alarms in \"{env}\".");
    }
    for a in rows {
        println!("{:<18} {:<40} {}", a.state, a.name, a.reason);
    }
    Ok(0)
}

fn alarm_history(g: &Global, env: &str, name: &str) -> R {
    let v: veeps_wire::AlarmView = client(g)?
        .get_as(&format!("/v1/envs/{env}/alarms/{}", encode(name)))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v.history).unwrap_or_default()
        );
        return Ok(0);
    }
    println!("{} is {} ({})", name, v.state, v.reason);
    for t in v.history {
        println!("  {}  {} -> {}  {}", t.time, t.from, t.to, t.reason);
    }
    Ok(0)
}

fn deliveries(g: &Global, env: &str, topic: &str) -> R {
    let rows: Vec<veeps_wire::DeliveryView> = client(g)?
        .get_as(&format!(
            "/v1/envs/{env}/topics/{}/deliveries",
            encode(topic)
        ))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    for d in rows {
        println!(
            "{}  {:<9} {:<8} {:<40} attempts={} {}",
            d.time,
            d.status,
            d.subscription.protocol,
            d.subscription.endpoint,
            d.attempts,
            d.error.unwrap_or_default()
        );
    }
    Ok(0)
}

fn image_list(g: &Global) -> R {
    let rows: Vec<veeps_wire::ImageView> = client(g)?.get_as("/v1/images").map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    if rows.is_empty() {
        println!("No images yet.");
    }
    for i in rows {
        println!(
            "{:<24} {:<24} v{:<4} {:>10} B  {}",
            i.id, i.name, i.version, i.size, i.created
        );
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn image_build(
    g: &Global,
    dir: &std::path::Path,
    name: &str,
    run: Vec<String>,
    keep: Vec<String>,
    entrypoint: &str,
    env: &[String],
    timeout: u64,
    egress: Vec<String>,
) -> R {
    let source = std::fs::canonicalize(dir)
        .map_err(|e| format!("{}: {e} (give the source directory)", dir.display()))?;
    let mut vars = serde_json::Map::new();
    for kv in env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env {kv}: write NAME=VALUE"))?;
        vars.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let entry: Vec<String> = entrypoint.split_whitespace().map(String::from).collect();
    if entry.is_empty() {
        return Err("--entrypoint: give the command that starts an instance".into());
    }
    let body = serde_json::json!({
        "name": name, "source": source, "build": run, "files": keep,
        "entrypoint": entry, "env": vars, "timeout_secs": timeout, "egress": egress,
    });
    let v: veeps_wire::ImageView = client(g)?.post_as("/v1/images", &body).map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{} ({} version {})", v.id, v.name, v.version);
    }
    Ok(0)
}

fn print_update(u: &veeps_wire::ImageUpdateView) {
    println!(
        "{:<24} {:<16} {:<16} {}",
        u.address,
        u.name,
        u.schedule,
        if u.egress.is_empty() {
            "no network".to_string()
        } else {
            u.egress.join(", ")
        }
    );
    match (&u.last_at, &u.result) {
        (Some(at), Some(r)) => println!(
            "  last run {at}: {r}: {}",
            u.detail.as_deref().unwrap_or("")
        ),
        _ => println!("  not run yet"),
    }
    if let (Some(at), Some(d)) = (&u.last_update_at, &u.last_update) {
        println!("  last update {at}: {d}");
    }
}

fn image_updates(g: &Global, env: &str) -> R {
    let rows: Vec<veeps_wire::ImageUpdateView> = client(g)?
        .get_as(&format!("/v1/envs/{}/image-updates", encode(env)))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    if rows.is_empty() {
        println!("No image of {env} has auto_update.");
    }
    for u in &rows {
        print_update(u);
    }
    Ok(0)
}

fn image_update(g: &Global, env: &str, address: &str) -> R {
    let u: veeps_wire::ImageUpdateView = client(g)?
        .post_as(
            &format!("/v1/envs/{}/image-updates/{}", encode(env), encode(address)),
            &serde_json::json!({}),
        )
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&u).unwrap_or_default());
    } else {
        print_update(&u);
    }
    Ok(if u.result.as_deref() == Some("failed") {
        1
    } else {
        0
    })
}

fn instances(g: &Global, env: &str, group: Option<&str>) -> R {
    let path = match group {
        Some(gr) => format!("/v1/envs/{env}/instances?group={}", encode(gr)),
        None => format!("/v1/envs/{env}/instances"),
    };
    let groups: Vec<veeps_wire::GroupView> = client(g)?.get_as(&path).map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        );
        return Ok(0);
    }
    if groups.is_empty() {
        println!("No auto scaling groups in \"{env}\".");
    }
    for gr in groups {
        println!(
            "{}  desired {} (min {}, max {})  image {}",
            gr.name, gr.desired, gr.min_size, gr.max_size, gr.image_id
        );
        for i in gr.instances {
            println!(
                "  {:<12} {:<12} {:<16} {:<18} {}",
                i.id, i.lifecycle, i.address, i.image_id, i.subnet_id
            );
        }
    }
    Ok(0)
}

fn activity(g: &Global, env: &str, group: &str) -> R {
    let rows: Vec<veeps_wire::ActivityView> = client(g)?
        .get_as(&format!("/v1/envs/{env}/groups/{}/activity", encode(group)))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(0);
    }
    for a in rows {
        println!("{}  {}\n    cause: {}", a.time, a.description, a.cause);
    }
    Ok(0)
}

fn down(g: &Global) -> R {
    let c = client(g)?;
    c.post("/v1/system/down", &serde_json::json!({}))
        .map_err(api_err)?;
    eprintln!("veeps is stopping everything it runs...");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if c.get_text("/v1/status").is_err() {
            eprintln!("veeps stopped");
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err("the server is still answering after 120 s; see its log".into())
}

fn kms_encrypt(g: &Global, env: &str, value: Option<String>) -> R {
    let value = match value {
        Some(v) => v,
        None => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| format!("reading the secret from standard input: {e}"))?;
            // `echo secret | veeps kms encrypt` means the secret, not its newline.
            s.strip_suffix('\n').map(String::from).unwrap_or(s)
        }
    };
    let v: veeps_wire::KmsValue = client(g)?
        .post_as(
            &format!("/v1/kms/{}/encrypt", encode(env)),
            &veeps_wire::KmsValue { value },
        )
        .map_err(api_err)?;
    println!("{}", v.value);
    Ok(0)
}

/// The passphrase: `VEEPS_KMS_PASSPHRASE`, or the first line of standard input.
fn passphrase() -> Result<String, String> {
    if let Ok(p) = std::env::var("VEEPS_KMS_PASSPHRASE") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the passphrase from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn kms_export(g: &Global, env: &str) -> R {
    let v: veeps_wire::KmsValue = client(g)?
        .post_as(
            &format!("/v1/kms/{}/export-key", encode(env)),
            &veeps_wire::KmsKey {
                passphrase: passphrase()?,
                key: String::new(),
            },
        )
        .map_err(api_err)?;
    println!("{}", v.value);
    Ok(0)
}

fn kms_import(g: &Global, env: &str, file: &Path) -> R {
    let key = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let v: veeps_wire::KmsValue = client(g)?
        .post_as(
            &format!("/v1/kms/{}/import-key", encode(env)),
            &veeps_wire::KmsKey {
                passphrase: passphrase()?,
                key,
            },
        )
        .map_err(api_err)?;
    println!("{}", v.value);
    Ok(0)
}

fn kms_decrypt(g: &Global, env: &str, file: &Path) -> R {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("reading standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    let c = client(g)?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("kmscrypt::") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = "kmscrypt::".len()
            + tail["kmscrypt::".len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(tail.len() - "kmscrypt::".len());
        let v: veeps_wire::KmsValue = c
            .post_as(
                &format!("/v1/kms/{}/decrypt", encode(env)),
                &veeps_wire::KmsValue {
                    value: tail[..end].to_string(),
                },
            )
            .map_err(api_err)?;
        out.push_str(&v.value);
        rest = &tail[end..];
    }
    out.push_str(rest);
    print!("{out}");
    Ok(0)
}

fn ca_cert(g: &Global) -> R {
    let pem = client(g)?.get_text("/v1/ca").map_err(api_err)?;
    print!("{pem}");
    Ok(0)
}

fn s3_credentials(g: &Global) -> R {
    let v: veeps_wire::S3Credentials = client(g)?.get_as("/v1/s3/credentials").map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else {
        println!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}",
            v.access_key_id, v.secret_access_key
        );
    }
    Ok(0)
}

fn s3_lifecycle(g: &Global, advance_days: u32) -> R {
    let v: veeps_wire::LifecycleReport = client(g)?
        .post_as(
            "/v1/s3/lifecycle/run",
            &veeps_wire::LifecycleRun { advance_days },
        )
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else {
        println!(
            "expired {}, noncurrent versions removed {}, delete markers removed {}, transitioned {}, uploads aborted {}",
            v.expired, v.noncurrent_removed, v.markers_removed, v.transitioned, v.aborted
        );
    }
    Ok(0)
}

fn targets(g: &Global, env: &str) -> R {
    let groups: Vec<veeps_wire::TargetGroupView> = client(g)?
        .get_as(&format!("/v1/envs/{env}/targets"))
        .map_err(api_err)?;
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        );
        return Ok(0);
    }
    for tg in groups {
        println!("{} -> {}", tg.load_balancer, tg.target_group);
        for t in tg.targets {
            println!(
                "  {:<22} {:<10} in flight {}",
                t.target, t.state, t.in_flight
            );
        }
    }
    Ok(0)
}
