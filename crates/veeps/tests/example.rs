//! The bundled example end to end: `veeps up` on the whole example, the full path (public
//! balancer, frontend group, internal balancer, backend group, database) answering on the
//! stage balancer's fixed host port, a rolling deploy of a new frontend image under
//! continuous requests with none failing, and a clean stop on Ctrl-C.

mod common;
use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let bins = Path::new(BIN).parent().unwrap();
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

fn curl(url: &str, ca: &Path) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--noproxy", "*", "--max-time", "10", "-f", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
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
    let start = |log: &Path| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&data)
            .arg("up")
            .arg(example.join("live"))
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .args(["--s3-listen", &format!("127.0.0.1:{s3}")])
            .args(["--s3-website-listen", &format!("127.0.0.1:{web}")])
            .current_dir(tmp.path())
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
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
        let mut c = Command::new(BIN);
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
    assert_eq!(
        curl(&format!("{FRONT}/service/db"), &ca),
        (true, "2".into())
    );
    assert_eq!(
        curl(&format!("{FRONT}/service"), &ca),
        (true, "Hello from stage".into())
    );
    assert!(
        !curl(&format!("{FRONT}/nothing"), &ca).0,
        "404 for unknown paths"
    );
    assert_eq!(
        curl("https://127.0.0.1:9443/sample-app-frontend/service", &ca),
        (true, "Hello from prod".into())
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
                let (good, body) = curl(&format!("{FRONT}/greeting"), &ca);
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
    assert_eq!(
        curl(&format!("{FRONT}/service/db"), &ca),
        (true, "2".into())
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
    assert_eq!(
        curl(&format!("{FRONT}/service/db"), &ca),
        (true, "2".into())
    );
    up.interrupt();
}
