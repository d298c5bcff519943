//! `veeps server` and `veeps up`.

use crate::ops::{data_dir, print_event};
use crate::{Global, VarArgs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veeps_engine::Request;

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `veeps server`.
pub fn server(
    g: &Global,
    listen: &str,
    opts: veeps_api::server::ServerOptions,
) -> Result<i32, String> {
    let dir = data_dir(g);
    let rt = runtime()?;
    rt.block_on(async {
        let state = veeps_api::server::open_with(&dir, opts).map_err(|e| e.to_string())?;
        eprintln!(
            "veeps server: API on http://{listen}, data in {}, root token in {}",
            dir.display(),
            veeps_api::server::token_path(&dir).display()
        );
        // Ending `veeps server` (or its crash, or its replacement) leaves what serves traffic
        // running; `veeps down` stops it.
        veeps_api::server::serve(state, listen, async {
            shutdown_signal().await;
            veeps_resource::Shutdown::ControlPlane
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!("shut down cleanly");
        Ok(0)
    })
}

/// Where the bundled example lives: beside the working directory, or beside the binary.
fn bundled_example() -> Option<PathBuf> {
    let rel = Path::new("examples/veeps-hosting/live");
    if rel.is_dir() {
        return Some(rel.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|a| a.join(rel))
        .find(|p| p.is_dir())
}

/// `veeps up`.
pub fn up(
    g: &Global,
    dir: Option<PathBuf>,
    listen: &str,
    vars: &VarArgs,
    no_wait: bool,
    s3: &crate::S3Args,
    dns: &crate::DnsArgs,
) -> Result<i32, String> {
    let s3_listen = s3.s3_listen.as_str();
    let started = Instant::now();
    let dir = match dir {
        Some(d) => d,
        None => bundled_example().ok_or("cannot find the bundled example (examples/veeps-hosting/live); run from the veeps checkout or give a directory")?,
    };
    let envs = crate::ops::load_envs(&dir, vars)?;
    let vars = crate::ops::parse_vars(vars)?;
    let data = data_dir(g);
    let rt = runtime()?;
    rt.block_on(async move {
        let mut opts = veeps_api::server::ServerOptions {
            s3_listen: Some(s3_listen.to_string()),
            s3_website_listen: Some(s3.s3_website_listen.clone()),
            s3_lifecycle_day: s3.s3_lifecycle_day,
            s3_tls: s3.s3_tls,
            ..Default::default()
        };
        dns.apply(&mut opts);
        s3.apply(&mut opts);
        let state = veeps_api::server::open_with(&data, opts).map_err(|e| e.to_string())?;
        let engine = state.engine.clone();
        let net = state.net.clone();
        let ca_pem = state.ca_pem.clone();
        // The secret is not printed (output ends up in service logs): `veeps s3 credentials`.
        let s3_id = state.s3_auth.root().0.to_string();
        let iam = state.iam.clone();
        let dns = state.dns.clone();
        let cdn = state.cdn.clone();
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e} (is another veeps running? stop it, or pass --listen)"))?;
        state.reconcile().await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Ctrl-C from here on stops everything cleanly, whatever is in progress.
        let (sig_tx, mut sig_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = sig_tx.send(true);
        });
        let server = tokio::spawn(veeps_api::server::serve_listener(state, listener, async {
            let _ = stop_rx.await;
            // `veeps up` runs everything in the foreground: ending it stops everything.
            veeps_resource::Shutdown::Everything
        }));
        println!("veeps is starting: data in {}\n", data.display());
        let mut failed = vec![];
        for e in &envs {
            if e.reads.iter().any(|r| failed.contains(r)) {
                eprintln!("[{}] skipped: it reads outputs of an environment that failed", e.name);
                failed.push(e.name.clone());
                continue;
            }
            let req = Request { env: e.name.clone(), bundle: e.bundle.clone(), vars: vars.clone(), caller: "veeps up".into(), operation: "apply".into(), plan_time: None };
            let plan = match engine.plan(&req, false).await {
                Ok(p) => p,
                Err(err) => {
                    eprintln!("[{}] cannot plan:\n{err}", e.name);
                    failed.push(e.name.clone());
                    continue;
                }
            };
            if plan.is_empty() {
                println!("[{}] up to date ({})", e.name, e.dir.display());
                continue;
            }
            println!("[{}] applying {} ({} to add, {} to change, {} to destroy)", e.name, e.dir.display(), plan.summary.add, plan.summary.change, plan.summary.destroy);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let prefix = format!("[{}] ", e.name);
            let printer = tokio::spawn(async move {
                let mut ok = true;
                while let Some(ev) = rx.recv().await {
                    if let veeps_wire::plan::Event::Complete { .. } = ev {
                        if let Some(Err(_)) = print_event(&ev, &prefix) {
                            ok = false;
                        }
                        continue;
                    }
                    if let Some(Err(_)) = print_event(&ev, &prefix) {
                        ok = false;
                    }
                }
                ok
            });
            let r = engine.apply(req, false, Some(plan.hash), tx).await;
            let ok = printer.await.unwrap_or(false);
            if let Err(err) = r {
                eprintln!("[{}] apply failed:\n{err}", e.name);
                failed.push(e.name.clone());
            } else if !ok {
                failed.push(e.name.clone());
            }
        }
        println!("\nveeps is up in {:.1}s.\n", started.elapsed().as_secs_f64());
        // Each environment may name a URL whose answer proves the whole path works
        // (an output named `check_url`): wait for it and report when it first answered.
        let checks: Vec<(String, String)> = envs
            .iter()
            .filter_map(|e| {
                let outs = engine.outputs(&e.name).ok()?;
                let (v, _) = outs.into_iter().find(|(k, _)| k == "check_url")?.1;
                Some((e.name.clone(), v.as_str()?.to_string()))
            })
            .collect();
        for (env, url) in checks {
            let ca = ca_pem.clone();
            let u = url.clone();
            let quit = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let q = quit.clone();
            let check = tokio::task::spawn_blocking(move || first_answer(&u, &ca, Duration::from_secs(60), &q));
            let mut sig = sig_rx.clone();
            let ok = tokio::select! {
                r = check => r.unwrap_or(Err("the check did not run".into())),
                _ = sig.wait_for(|s| *s) => {
                    quit.store(true, std::sync::atomic::Ordering::SeqCst);
                    Err("stopped".into())
                }
            };
            match ok {
                Ok(body) => println!(
                    "  [{env}] first successful end-to-end request {:.1}s after start: {url} -> {}",
                    started.elapsed().as_secs_f64(),
                    body.trim()
                ),
                Err(e) => {
                    eprintln!("  [{env}] {url} did not answer: {e}");
                    failed.push(env);
                }
            }
        }
        // The API serves TLS (veeps' CA) when it listens beyond loopback.
        let scheme = match listen.parse::<std::net::SocketAddr>() {
            Ok(a) if !a.ip().is_loopback() => "https",
            _ => "http",
        };
        println!("  API:          {scheme}://{listen}   (token: {})", veeps_api::server::token_path(&data).display());
        println!("  CLI:          export VEEPS_ADDR={scheme}://{listen} VEEPS_DATA_DIR={}", data.display());
        let s3_host = s3_listen.replace("0.0.0.0", "127.0.0.1");
        println!("  S3:           http://{s3_host}   (AWS_ACCESS_KEY_ID={s3_id}; the secret: `veeps s3 credentials`)");
        let users: Vec<String> = iam.users().unwrap_or_default().into_iter().map(|u| u.name).collect();
        if let Some(first) = users.first() {
            println!("  IAM users:    {}   (give one a password: `veeps iam password {first}`; then `veeps login {first}`, and `veeps iam mfa create {first}`)", users.join(", "));
        }
        match dns.public_addr() {
            Some(a) => println!("  DNS:          {a} (UDP and TCP)   (dig @{} -p {} NAME; zones: dns_zone)", a.ip().to_string().replace("0.0.0.0", "127.0.0.1"), a.port()),
            None => println!("  DNS:          off   (--dns-listen)"),
        }
        let web = s3.s3_website_listen.replace("0.0.0.0", "127.0.0.1");
        println!("  Websites:     http://{web}/BUCKET/   (or http://BUCKET.s3-website.localhost:PORT/)");
        let (cdn_http, cdn_https) = cdn.addrs();
        let ca = data.join("pki").join("ca.crt");
        for d in cdn.list() {
            let name = d.dist.aliases.first().unwrap_or(&d.dist.domain).clone();
            match (cdn_https, cdn_http) {
                (Some(a), _) => println!("  CDN:          https://{name}:{}/   (curl --resolve {name}:{}:127.0.0.1 --cacert {} https://{name}:{}/)", a.port(), a.port(), ca.display(), a.port()),
                (None, Some(a)) => println!("  CDN:          http://{name}:{}/   (curl --resolve {name}:{}:127.0.0.1 http://{name}:{}/)", a.port(), a.port(), a.port()),
                (None, None) => println!("  CDN:          off   (--cdn-listen, --cdn-tls-listen)"),
            }
        }
        for e in &envs {
            if let Ok(outs) = engine.outputs(&e.name) {
                if outs.is_empty() {
                    continue;
                }
                println!("\n  [{}]", e.name);
                for (k, (v, sensitive)) in outs {
                    println!("    {k} = {}", if sensitive { "(sensitive value)".to_string() } else { v.to_string() });
                }
            }
        }
        if !failed.is_empty() {
            eprintln!("\nThese environments did not converge: {}. Fix them and run `veeps up` again.", failed.join(", "));
        }
        if no_wait {
            let _ = stop_tx.send(());
        } else {
            println!("\nveeps is running. Press Ctrl-C to stop (state is kept; `veeps up` resumes).");
            let _ = sig_rx.wait_for(|s| *s).await;
            println!("\nStopping...");
            let _ = stop_tx.send(());
        }
        let _ = server.await;
        // Instances and databases stopped with the server; the namespaces go too. The
        // records stay: `veeps up` recreates everything as it was.
        net.stop_all().await;
        println!("veeps stopped cleanly.");
        Ok(if failed.is_empty() { 0 } else { 1 })
    })
}

/// GETs `url` (trusting veeps' CA) until it answers 200, for up to `limit`.
fn first_answer(
    url: &str,
    ca_pem: &str,
    limit: Duration,
    quit: &std::sync::atomic::AtomicBool,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .timeout(Duration::from_secs(5))
        .build();
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline && !quit.load(std::sync::atomic::Ordering::SeqCst) {
        match agent.get(url).call() {
            Ok(r) => return Ok(r.into_string().unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}
