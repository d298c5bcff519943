//! The bundled example end to end: `veeps up` on the whole example, the full path (public
//! balancer, frontend group, internal balancer, backend group, database) answering on the
//! stage balancer's fixed host port, a rolling deploy of a new frontend image under
//! continuous requests with none failing; the data plane outliving the control plane
//! (kill -9 of veeps and an upgrade to another build under continuous requests through
//! stage's and prod's balancers down to prod's database, none failing, everything adopted
//! as it was; kill -9 of one instance failing no more than the requests in flight); and a
//! clean stop on Ctrl-C.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veeps_testkit::*;

const FRONT: &str = "https://127.0.0.1:8443/sample-app-frontend";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The apps' programs, built beside veeps (`./run test` builds the whole workspace).
fn stage_apps(dir: &Path) {
    let bins = Path::new(bin()).parent().unwrap();
    for app in ["sample-app-frontend", "sample-app-backend"] {
        let src = bins.join(app);
        assert!(
            src.exists(),
            "{} is missing: build the workspace first (`./run test` does)",
            src.display()
        );
        std::fs::create_dir_all(dir.join(app)).unwrap();
        std::fs::copy(&src, dir.join(app).join(app)).unwrap();
    }
    // The example's Rust function, as `./run up` stages it.
    let echo = bins.join("sample-fn-echo");
    assert!(
        echo.exists(),
        "{} is missing: build the workspace first",
        echo.display()
    );
    std::fs::create_dir_all(dir.join("sample-fn-echo")).unwrap();
    std::fs::copy(&echo, dir.join("sample-fn-echo").join("bootstrap")).unwrap();
    // The example function's code, as `./run up` stages it.
    let code = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/veeps-hosting/functions/s3-image-processing");
    copy_dir(&code, &dir.join("s3-image-processing"));
}

/// `veeps up`, killed and cleaned up even when the test fails.
struct Up {
    child: Option<Child>,
    data: PathBuf,
    log: PathBuf,
}

impl Up {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ctrl-C, and waits for it to exit.
    fn interrupt(&mut self) {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "veeps up did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        cleanup_host_for(&self.data);
    }
}

/// Continuous requests from a few threads, each waiting for its answer before the next:
/// counts answers and failures, and the longest time without any answer.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<std::sync::Mutex<Vec<String>>>,
    last_ok_ms: Arc<AtomicU64>,
    gap_ms: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    t0: Instant,
}

impl Load {
    fn start(urls: &[String], ca: &Path, threads: usize) -> Load {
        let t0 = Instant::now();
        let mut l = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            bad: Arc::default(),
            last_ok_ms: Arc::default(),
            gap_ms: Arc::default(),
            threads: vec![],
            t0,
        };
        for i in 0..threads {
            let (stop, ok, bad) = (l.stop.clone(), l.ok.clone(), l.bad.clone());
            let (last, gap) = (l.last_ok_ms.clone(), l.gap_ms.clone());
            let (urls, ca) = (urls.to_vec(), ca.to_path_buf());
            l.threads.push(std::thread::spawn(move || {
                let mut n = i;
                while !stop.load(Ordering::SeqCst) {
                    let url = &urls[n % urls.len()];
                    n += 1;
                    let (good, body) = get(url, &ca);
                    if good {
                        ok.fetch_add(1, Ordering::SeqCst);
                        let now = t0.elapsed().as_millis() as u64;
                        let prev = last.swap(now, Ordering::SeqCst);
                        gap.fetch_max(now.saturating_sub(prev), Ordering::SeqCst);
                    } else {
                        let at = t0.elapsed().as_millis();
                        bad.lock().unwrap().push(format!("{at} ms {url}: {body}"));
                    }
                }
            }));
        }
        l
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn failed(&self) -> Vec<String> {
        self.bad.lock().unwrap().clone()
    }

    /// Waits for `n` more answers.
    fn wait_answers(&self, what: &str, n: u64) {
        let target = self.ok() + n;
        wait_until(what, 60, || self.ok() >= target);
    }

    /// Starts measuring the longest gap afresh.
    fn reset_gap(&self) {
        self.gap_ms.store(0, Ordering::SeqCst);
        self.last_ok_ms
            .store(self.t0.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    fn gap(&self) -> u64 {
        self.gap_ms.load(Ordering::SeqCst)
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.bad.lock().unwrap().clone(),
        )
    }
}

/// The processes a process started.
fn children(pid: u64) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// GET `url` trusting `ca`: whether it answered 2xx or 3xx, and the body.
fn get(url: &str, ca: &Path) -> (bool, String) {
    let (code, body) = curl(&["--cacert", &ca.to_string_lossy(), url]);
    ((200..400).contains(&code), body)
}

#[test]
fn the_example_serves_end_to_end_and_deploys_without_failed_requests() {
    require_root("the example");
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/veeps-hosting");
    let example = tmp.path().join("veeps-hosting");
    copy_dir(&root, &example);
    let apps = tmp.path().join("apps");
    stage_apps(&apps);
    for env in ["prod", "stage"] {
        let f = example.join(format!("live/{env}/main.hcl"));
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("app_dir = \"target/sample-apps\""));
        let text = text.replace(
            "app_dir = \"target/sample-apps\"",
            &format!("app_dir = \"{}\"", apps.display()),
        );
        std::fs::write(&f, &text).unwrap();
    }
    let stage_file = example.join("live/stage/main.hcl");
    let stage = std::fs::read_to_string(&stage_file).unwrap();

    let data = tmp.path().join("data");
    let (api, s3, web) = (free_port(), free_port(), free_port());
    let (cdn, cdn_tls) = (free_port(), free_port());
    let start_with = |bin: &Path, log: &Path| {
        spawn_retrying(
            Command::new(bin)
                .arg("--data-dir")
                .arg(&data)
                .arg("up")
                .arg(example.join("live"))
                .args(["--listen", &format!("127.0.0.1:{api}")])
                .args(["--s3-listen", &format!("127.0.0.1:{s3}")])
                .args(["--s3-website-listen", &format!("127.0.0.1:{web}")])
                .args(["--cdn-listen", &format!("127.0.0.1:{cdn}")])
                .args(["--cdn-tls-listen", &format!("127.0.0.1:{cdn_tls}")])
                .current_dir(tmp.path())
                .stdout(std::fs::File::create(log).unwrap())
                .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
                .env("VEEPS_LOG", "info"),
        )
    };
    let start = |log: &Path| start_with(Path::new(bin()), log);
    let log = tmp.path().join("up.log");
    let mut up = Up {
        child: Some(start(&log)),
        data: data.clone(),
        log,
    };
    let started = Instant::now();
    wait_until("veeps up's end-to-end check", 180, || {
        let l = up.log();
        assert!(
            !l.contains("did not answer") && !l.contains("did not converge"),
            "{l}"
        );
        l.matches("first successful end-to-end request").count() == 2
    });
    eprintln!(
        "veeps up: whole example serving end to end after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let env = |c: &mut Command| {
        c.env("VEEPS_ADDR", format!("http://127.0.0.1:{api}"))
            .env("VEEPS_DATA_DIR", &data);
    };
    let veeps = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args);
        env(&mut c);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "veeps {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, veeps(&["ca", "cert"])).unwrap();
    assert_eq!(get(&format!("{FRONT}/service/db"), &ca), (true, "2".into()));
    assert_eq!(
        get(&format!("{FRONT}/service"), &ca),
        (true, "Hello from stage".into())
    );
    assert!(
        !get(&format!("{FRONT}/nothing"), &ca).0,
        "404 for unknown paths"
    );
    assert_eq!(
        get("https://127.0.0.1:9443/sample-app-frontend/service", &ca),
        (true, "Hello from prod".into())
    );

    // The static site through the CDN, under its own name and certificate; plain HTTP is
    // redirected there.
    let resolve = format!("static.veeps-hosting.test:{cdn_tls}:127.0.0.1");
    let (code, body) = curl(&[
        "--cacert",
        &ca.to_string_lossy(),
        "--resolve",
        &resolve,
        &format!("https://static.veeps-hosting.test:{cdn_tls}/"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("served by veeps' CDN"), "{body}");
    let (code, body) = curl(&[
        "--cacert",
        &ca.to_string_lossy(),
        "--resolve",
        &resolve,
        &format!("https://static.veeps-hosting.test:{cdn_tls}/missing.html"),
    ]);
    assert_eq!(code, 404);
    assert!(body.contains("Not found"), "{body}");
    assert!(up
        .log()
        .contains("CDN:          https://static.veeps-hosting.test"));

    // The Rust function behind the public balancer's path; behind Basic authentication
    // at /ops/.
    let (ok, body) = get("https://127.0.0.1:8443/hello-function/hi?q=1", &ca);
    assert!(ok, "{body}");
    let ops = veeps(&["output", "stage", "ops_password"]);
    let (code, _) = curl(&[
        "--cacert",
        &ca.to_string_lossy(),
        "https://127.0.0.1:8443/ops/hi",
    ]);
    assert_eq!(code, 401);
    let (code, body) = curl(&[
        "--cacert",
        &ca.to_string_lossy(),
        "-u",
        &format!("ops:{}", ops.trim()),
        "https://127.0.0.1:8443/ops/hi",
    ]);
    assert_eq!(code, 200, "{body}");
    // The example function, invoked with the AWS CLI: the image in its bucket,
    // base64-encoded, read as its role.
    let aws = Aws::root_of(&data, api, s3);
    let out = tmp.path().join("image.json");
    let mut args = vec![
        "lambda",
        "invoke",
        "--function-name",
        "s3-image-processing-stage",
        "--payload",
        r#"{"s3_bucket":"veeps-images-stage","image_filename":"veeps.gif"}"#,
    ];
    args.extend_from_slice(raw_payloads());
    args.push(out.to_str().unwrap());
    let meta = aws.ok(&args);
    assert!(!meta.contains("FunctionError"), "{meta}");
    let answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(
        answer["body"], "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==",
        "{answer}"
    );

    // A new frontend image, deployed by a rolling refresh while requests keep coming.
    let apps2 = tmp.path().join("apps2");
    stage_apps(&apps2);
    std::fs::write(apps2.join("sample-app-frontend/RELEASE"), "2\n").unwrap();
    let marker = "  app_dir                  = local.app_dir\n";
    assert!(stage.contains(marker), "the apps block changed shape");
    let stage2 = stage.replace(
        marker,
        &format!(
            "{marker}  frontend_app_dir         = \"{}\"\n",
            apps2.display()
        ),
    );
    std::fs::write(&stage_file, &stage2).unwrap();
    let before = veeps(&["instances", "stage"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let hammer = {
        let (stop, ok, bad, ca) = (stop.clone(), ok.clone(), bad.clone(), ca.clone());
        std::thread::spawn(move || {
            let mut last = String::new();
            while !stop.load(Ordering::SeqCst) {
                let (good, body) = get(&format!("{FRONT}/greeting"), &ca);
                if good {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    bad.fetch_add(1, Ordering::SeqCst);
                    last = body;
                }
            }
            last
        })
    };
    veeps(&[
        "apply",
        example.join("live/stage").to_str().unwrap(),
        "--auto-approve",
    ]);
    let old_image = before
        .lines()
        .find(|l| l.starts_with("sample-app-frontend"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    wait_until("every frontend instance on the new image", 180, || {
        let now = veeps(&["instances", "stage"]);
        let front: Vec<&str> = now
            .lines()
            .skip_while(|l| !l.starts_with("sample-app-frontend"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        front.len() == 2
            && front
                .iter()
                .all(|l| l.contains("InService") && !l.contains(&old_image))
    });
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let last = hammer.join().unwrap();
    let (ok, bad) = (ok.load(Ordering::SeqCst), bad.load(Ordering::SeqCst));
    eprintln!("rolling deploy: {ok} requests answered, {bad} failed");
    assert!(ok > 20, "too few requests went through ({ok})");
    assert_eq!(bad, 0, "requests failed during the deploy (last: {last})");
    assert_eq!(get(&format!("{FRONT}/service/db"), &ca), (true, "2".into()));

    // The data plane outlives the control plane. Under continuous requests through
    // stage's public balancer and prod's (frontend, internal balancer, backend, prod's
    // database endpoint), kill -9 of veeps: nothing fails, and a new veeps adopts every
    // balancer, instance and database node as it is.
    let instances = |env: &str| -> Vec<(String, u64)> {
        let all: serde_json::Value =
            serde_json::from_str(&veeps(&["instances", env, "--json"])).unwrap();
        let mut out: Vec<(String, u64)> = all
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["instances"].as_array().unwrap().clone())
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["pid"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let prod_db = "https://127.0.0.1:9443/sample-app-frontend/service/db".to_string();
    let load = Load::start(&[format!("{FRONT}/greeting"), prod_db.clone()], &ca, 4);
    load.wait_answers("requests before the kill", 50);
    let (stage_before, prod_before) = (instances("stage"), instances("prod"));
    let planes = plane_pids(&data);
    assert_eq!(planes.len(), 4, "{planes:?}");
    let db_pids = || -> Vec<u64> {
        let v: serde_json::Value =
            serde_json::from_str(&veeps(&["db", "status", "prod", "prod-db", "--json"])).unwrap();
        let mut p: Vec<u64> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["pid"].as_u64())
            .collect();
        p.sort();
        p
    };
    let db_before = db_pids();
    assert_eq!(db_before.len(), 2, "prod's database nodes: {db_before:?}");
    load.reset_gap();
    let mut child = up.child.take().unwrap();
    let killed_at = load.t0.elapsed().as_millis();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    load.wait_answers("requests while veeps is down", 100);
    eprintln!(
        "veeps down for {} ms of answers so far",
        load.t0.elapsed().as_millis() - killed_at
    );
    assert!(!get(&format!("{FRONT}/nothing-while-veeps-is-away"), &ca).0);
    up.log = tmp.path().join("up-after-kill.log");
    up.child = Some(start(&up.log));
    wait_until("veeps up after kill -9", 180, || {
        up.log()
            .matches("first successful end-to-end request")
            .count()
            == 2
    });
    load.wait_answers("requests after the restart", 50);
    assert!(
        load.failed().is_empty(),
        "requests failed across kill -9 of veeps (killed at {killed_at} ms): {:?}\n{}\n{}",
        load.failed(),
        veeps(&["db", "events", "prod", "prod-db"]),
        std::fs::read_to_string(data.join("../up-after-kill.err")).unwrap_or_default()
    );
    eprintln!(
        "kill -9 of the control plane: 0 failed requests, longest gap {} ms",
        load.gap()
    );
    assert_eq!(
        instances("stage"),
        stage_before,
        "stage's instances were not adopted"
    );
    assert_eq!(
        instances("prod"),
        prod_before,
        "prod's instances were not adopted"
    );
    assert_eq!(
        plane_pids(&data),
        planes,
        "the balancers were restarted, not adopted"
    );
    assert_eq!(
        db_pids(),
        db_before,
        "the database nodes were restarted, not adopted"
    );
    wait_until(
        "the line written while veeps was away, in the logs",
        20,
        || {
            veeps(&["logs", "stage", "sample-app-frontend", "--since", "10m"])
                .contains("nothing-while-veeps-is-away")
        },
    );

    // An upgrade: veeps comes back as another build; each balancer's data plane hands its
    // listening sockets to a process of that build and drains. Nothing fails.
    load.reset_gap();
    let mut child = up.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let next = tmp.path().join("veeps-next");
    std::fs::copy(bin(), &next).unwrap();
    up.log = tmp.path().join("up-upgraded.log");
    up.child = Some(start_with(&next, &up.log));
    wait_until("veeps up as another build", 180, || {
        up.log()
            .matches("first successful end-to-end request")
            .count()
            == 2
    });
    wait_until("every balancer on the new build", 30, || {
        let now = plane_pids(&data);
        now.len() == 4 && now.iter().all(|p| !p.is_empty() && !planes.contains(p))
    });
    load.wait_answers("requests after the upgrade", 50);
    assert!(
        load.failed().is_empty(),
        "requests failed across the upgrade: {:?}",
        load.failed()
    );
    eprintln!(
        "upgrade of the control and data planes: 0 failed requests, longest gap {} ms",
        load.gap()
    );
    let (ok_so_far, _) = load.stop();

    // kill -9 of one frontend instance's application under continuous requests: no more
    // fail than the requests in flight on it (each thread has at most one in flight).
    let threads = 8;
    let load = Load::start(&[format!("{FRONT}/greeting")], &ca, threads);
    load.wait_answers("requests before the instance kill", 50);
    load.reset_gap();
    let all: serde_json::Value = serde_json::from_str(&veeps(&[
        "instances",
        "stage",
        "--group",
        "sample-app-frontend",
        "--json",
    ]))
    .unwrap();
    let shim = all[0]["instances"][0]["pid"].as_u64().unwrap();
    let init = children(shim)[0];
    let app = children(init)[0];
    Command::new("kill")
        .args(["-9", &app.to_string()])
        .status()
        .unwrap();
    load.wait_answers("requests after the instance kill", 200);
    let gap = load.gap();
    let (ok, failed) = load.stop();
    eprintln!(
        "kill -9 of an instance at {threads} connections: {} failed of {}, longest gap {gap} ms ({ok_so_far} answered before)",
        failed.len(),
        ok + failed.len() as u64
    );
    assert!(
        failed.len() <= threads,
        "more requests failed than were in flight: {failed:?}"
    );

    // Ctrl-C: everything stops, the namespaces go, the state stays.
    up.interrupt();
    let mut l = String::new();
    std::fs::File::open(&up.log)
        .unwrap()
        .read_to_string(&mut l)
        .unwrap();
    assert!(l.contains("veeps stopped cleanly"), "{l}");
    let prefix = veeps_net::prefix_for(&data);
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains(&prefix),
        "namespaces left after Ctrl-C"
    );
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        // cgroups v2 at the top, v1 under each controller.
        .flat_map(|c| {
            let below = std::fs::read_dir(c.path()).into_iter().flatten().flatten();
            std::iter::once(c.path()).chain(below.map(|e| e.path()))
        })
        .map(|p| p.display().to_string())
        .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(&prefix)))
        .collect();
    assert!(cgroups.is_empty(), "cgroups left after Ctrl-C: {cgroups:?}");
    // The balancers' data planes stop with it (gone, or zombies of whoever adopted them).
    for p in plane_pids(&data) {
        assert!(
            process_gone(&p),
            "a balancer's data plane ({p}) outlived Ctrl-C of veeps up"
        );
    }
    assert!(data.join("state.redb").exists());

    // Again: everything comes back as it was, nothing to create, no image rebuilt, the
    // databases not initialised again.
    up.log = tmp.path().join("up2.log");
    up.child = Some(start(&up.log));
    wait_until("veeps up again", 180, || {
        up.log()
            .matches("first successful end-to-end request")
            .count()
            == 2
    });
    let l = up.log();
    for env in ["mgmt", "stage", "prod"] {
        assert!(l.contains(&format!("[{env}] up to date")), "{l}");
    }
    assert_eq!(get(&format!("{FRONT}/service/db"), &ca), (true, "2".into()));
    up.interrupt();
}
