//! Images, launch templates and auto scaling groups on the real kernel: instances are real
//! processes in their own namespaces and cgroups, driven through `veeps apply`. Needs root
//! (CI runs as root); each test uses its own address range.

use std::process::Command;
use std::time::{Duration, Instant};
use veeps_testkit::*;

/// The test app: an HTTP server on HOST:PORT with /health, /burn/SECS (CPU), /hog
/// (memory), and / answering its instance id and VERSION; it refuses to start when
/// VERSION is "broken".
const APP: &str = r#"
import http.server, os, sys, time
if os.environ.get("VERSION") == "broken":
    print("refusing to start: broken version", flush=True)
    sys.exit(3)
HOST, PORT = os.environ["HOST"], int(os.environ["PORT"])
hog = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"OK"
        elif self.path.startswith("/burn/"):
            end = time.time() + float(self.path[6:])
            while time.time() < end:
                pass
            body = b"burnt"
        elif self.path.startswith("/say/"):
            print(self.path[5:], flush=True)
            body = b"said"
        elif self.path == "/hog":
            while True:
                hog.append(bytearray(16 * 1024 * 1024))
        else:
            body = (os.environ["VEEPS_INSTANCE_ID"] + " " + os.environ.get("VERSION", "")).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print(f"listening on {HOST}:{PORT} as uid {os.getuid()} in {os.environ['VEEPS_VPC_NAME']}", flush=True)
http.server.ThreadingHTTPServer((HOST, PORT), H).serve_forever()
"#;

fn require_root_and_python() {
    require_root("compute tests");
    assert!(
        Command::new("python3").arg("-V").output().is_ok(),
        "compute tests need python3 for their test app"
    );
}

/// A VPC with two private-app subnets, the app's image and launch template, and a group.
fn config(octet: u8, version: &str, group_extra: &str, extra: &str) -> String {
    format!(
        r#"
{vpc}
resource "security_group" "app" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol    = "tcp"
    from_port   = 8080
    to_port     = 8080
    cidr_blocks = ["10.{octet}.0.0/18"]
  }}
}}
resource "image" "app" {{
  name       = "app"
  source     = "app"
  build      = ["python3 -m py_compile app.py"]
  entrypoint = ["python3", "app.py"]
}}
resource "launch_template" "app" {{
  name              = "app"
  image_id          = image.app.id
  cpu               = 0.25
  memory            = 96
  port              = 8080
  health_check_path = "/health"
  environment       = {{ VERSION = "{version}" }}
}}
resource "autoscaling_group" "app" {{
  name                      = "app"
  launch_template           = launch_template.app.id
  launch_template_version   = launch_template.app.latest_version
  subnets                   = [subnet.a.id, subnet.b.id]
  security_groups           = [security_group.app.id]
  health_check_type         = "lb"
  health_check_grace_period = 10
{group_extra}
}}
{extra}
"#,
        vpc = vpc(
            &format!("c{octet}"),
            octet,
            18,
            &[("a", 16, "private-app"), ("b", 17, "private-app")]
        )
    )
}

fn start() -> Veeps {
    require_root_and_python();
    // The server resolves image sources against its working directory: the test's.
    let v = Veeps::start();
    v.write("app/app.py", APP);
    v
}

fn group(v: &Veeps) -> serde_json::Value {
    let out = v.ok(&["instances", "env", "--group", "app", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    all[0].clone()
}

fn in_service(g: &serde_json::Value) -> Vec<serde_json::Value> {
    g["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["lifecycle"] == "InService")
        .cloned()
        .collect()
}

/// GET from inside the instance's own network namespace.
fn get(inst: &serde_json::Value, path: &str) -> String {
    let pid = inst["pid"].as_u64().unwrap().to_string();
    let ns = Command::new("ip")
        .args(["netns", "identify", &pid])
        .output()
        .unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout).trim().to_string();
    assert!(!ns.is_empty(), "instance {} has no namespace", inst["id"]);
    let url = format!("http://{}:8080{path}", inst["address"].as_str().unwrap());
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "curl", "-s", "-m", "10", &url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Processes in this server's instance cgroups.
/// Instances with processes (each is a cgroup holding its shim, init and application).
fn instance_processes(v: &Veeps) -> usize {
    let prefix = veeps_net::prefix_for(&v.data);
    let dir = std::path::Path::new("/sys/fs/cgroup/pids").join(&prefix);
    let dir = if dir.exists() {
        dir
    } else {
        std::path::Path::new("/sys/fs/cgroup").join(&prefix)
    };
    let mut n = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
        let count = procs.lines().count();
        assert!(
            count == 0 || count == 3,
            "an instance holds {count} processes, not its shim, init and application"
        );
        n += usize::from(count > 0);
    }
    n
}

#[test]
fn a_group_replaces_dead_and_oom_killed_instances_and_survives_a_restart() {
    let mut v = start();
    v.write(
        "env/main.hcl",
        &config(
            81,
            "v1",
            "  min_size = 1\n  max_size = 5\n  desired_capacity = 3",
            "",
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let g = group(&v);
    let up = in_service(&g);
    assert_eq!(up.len(), 3, "{g}");
    // Spread over both subnets.
    let subnets: std::collections::BTreeSet<_> =
        up.iter().map(|i| i["subnet_id"].to_string()).collect();
    assert_eq!(subnets.len(), 2, "{g}");
    // Confined: an unprivileged user, no new privileges, its own cgroup and namespace.
    // The recorded pid is the shim's (root, outside the instance's reach); the application
    // is its grandchild (the shim, the instance's init, the application).
    let mut pid = up[0]["pid"].as_u64().unwrap();
    for _ in 0..2 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        pid = children.split_whitespace().next().unwrap().parse().unwrap();
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().any(|f| f == "0"), "{uid}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        mounts.lines().any(|l| l.contains("/image ro,")),
        "the image is not mounted read-only:\n{mounts}"
    );
    assert!(get(&up[0], "/").contains("v1"));
    // In service, its own CPU limit holds (the launch boost is over): 0.25 of a CPU.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cpu_cg = cgroups
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            ctl.split(',').any(|c| c == "cpu").then(|| path.to_string())
        })
        .unwrap_or_default();
    let v1 = format!("/sys/fs/cgroup/cpu{cpu_cg}/cpu.cfs_quota_us");
    let v2 = format!("/sys/fs/cgroup{cpu_cg}/cpu.max");
    let quota = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap();
    assert_eq!(quota.split_whitespace().next(), Some("25000"), "{cgroups}");
    // Its output is in the log store, under the group and instance.
    wait_until("the instance's first line in the logs", 10, || {
        v.ok(&["logs", "env", "app", "--since", "5m"])
            .contains("listening on 10.81.")
    });
    // kill -9 one instance: a replacement is healthy within seconds.
    let victim = up[0]["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait_until("a replacement", 15, || {
        let g = group(&v);
        let up = in_service(&g);
        up.len() == 3 && up.iter().all(|i| i["id"] != victim.as_str())
    });
    eprintln!("replaced a killed instance in {:?}", t.elapsed());
    let act = v.ok(&["activity", "env", "app"]);
    assert!(
        act.contains(&format!("Terminating instance {victim}")),
        "{act}"
    );
    assert!(act.contains("exited"), "{act}");
    // A memory hog is killed by its cgroup, and replaced.
    let hog = in_service(&group(&v))[0].clone();
    let _ = get(&hog, "/hog");
    wait_until("the memory hog's replacement", 20, || {
        let g = group(&v);
        let up = in_service(&g);
        up.len() == 3 && up.iter().all(|i| i["id"] != hog["id"])
    });
    let act = v.ok(&["activity", "env", "app"]);
    assert!(act.contains("memory limit"), "{act}");
    // kill -9 of the server: the instances keep running (their shims hold them), what
    // they write meanwhile is kept, and the restarted server adopts them: the same
    // instances and processes, no copy.
    let before: Vec<(String, u64)> = in_service(&group(&v))
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    let first = in_service(&group(&v))[0].clone();
    v.kill9();
    assert_eq!(get(&first, "/say/written-while-veeps-was-away"), "said");
    v.boot();
    wait_until("the group after a restart", 20, || {
        in_service(&group(&v)).len() == 3
    });
    let after: Vec<(String, u64)> = in_service(&group(&v))
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(before, after, "the instances were not adopted as they were");
    wait_until("the line written while veeps was away", 10, || {
        v.ok(&["logs", "env", "app", "--since", "5m"])
            .contains("written-while-veeps-was-away")
    });
    assert_eq!(instance_processes(&v), 3, "two copies of an instance run");
    v.ok(&["plan", "env", "--detailed-exitcode"]);
    // Instance metrics reach the metrics store.
    wait_until("instance metrics", 30, || {
        v.ok(&["metrics", "list", "env"])
            .contains("instance_memory_bytes{env=\"env\",group=\"app\"")
    });
    // Destroy stops everything.
    v.ok(&["destroy", "env", "--auto-approve"]);
    assert_eq!(instance_processes(&v), 0);
    let prefix = veeps_net::prefix_for(&v.data);
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory/{prefix}")).exists());
}

#[test]
fn a_rollout_keeps_the_minimum_healthy_and_a_broken_version_rolls_back() {
    let v = start();
    let group_cfg = "  min_size = 1\n  max_size = 5\n  desired_capacity = 3\n  instance_refresh {\n    min_healthy_percentage = 66\n    timeout = 30\n  }";
    v.write("env/main.hcl", &config(82, "v1", group_cfg, ""));
    v.ok(&["apply", "env", "--auto-approve"]);
    assert_eq!(in_service(&group(&v)).len(), 3);
    // Watch the in-service count through the whole rollout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let (port, data) = (v.port, v.data.clone());
        std::thread::spawn(move || {
            let token = std::fs::read_to_string(data.join("root.token")).unwrap();
            let mut lowest = usize::MAX;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = ureq::get(&format!("http://127.0.0.1:{port}/v1/envs/env/instances"))
                    .set("authorization", &format!("Bearer {}", token.trim()))
                    .call()
                {
                    let g: serde_json::Value = r.into_json().unwrap();
                    lowest = lowest.min(in_service(&g[0]).len());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            lowest
        })
    };
    v.write("env/main.hcl", &config(82, "v2", group_cfg, ""));
    let out = v.ok(&["apply", "env", "--auto-approve"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lowest = watcher.join().unwrap();
    assert!(
        lowest >= 2,
        "in service fell to {lowest} during the rollout (minimum 2):\n{out}"
    );
    let up = in_service(&group(&v));
    assert_eq!(up.len(), 3);
    for i in &up {
        assert!(get(i, "/").ends_with(" v2"), "{i} does not run v2");
    }
    // The desired count survives a deploy.
    let act = v.ok(&["activity", "env", "app"]);
    assert!(act.contains("Finished the rollout"), "{act}");
    // A version that cannot start is rolled back; the old instances keep serving.
    v.write("env/main.hcl", &config(82, "broken", group_cfg, ""));
    let out = v.expect(&["apply", "env", "--auto-approve"], 1);
    assert!(out.contains("rolled back"), "{out}");
    let up = in_service(&group(&v));
    assert_eq!(up.len(), 3);
    for i in &up {
        assert!(
            get(i, "/").ends_with(" v2"),
            "{i} does not run v2 after the rollback"
        );
    }
    let logs = v.ok(&["logs", "env", "app", "--since", "5m", "--grep", "refusing"]);
    assert!(logs.contains("refusing to start"), "{logs}");
}

#[test]
fn policies_scale_by_cpu_by_alarm_and_by_schedule() {
    let v = start();
    let policies = r#"
resource "scaling_policy" "cpu" {
  name                      = "cpu"
  autoscaling_group_id      = autoscaling_group.app.id
  policy_type               = "TargetTrackingScaling"
  target_value              = 50
  estimated_instance_warmup = 0
  cooldown                  = 3
}
"#;
    v.write(
        "env/main.hcl",
        &config(
            83,
            "v1",
            "  min_size = 1\n  max_size = 3\n  desired_capacity = 1",
            policies,
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let first = in_service(&group(&v))[0].clone();
    // Burn CPU for 12 s in the only instance: target tracking scales out.
    let burner = {
        let i = first.clone();
        std::thread::spawn(move || get(&i, "/burn/12"))
    };
    wait_until("a scale-out", 20, || {
        group(&v)["desired"].as_u64() >= Some(2)
    });
    burner.join().unwrap();
    // Idle again: back in to the minimum after the cooldown.
    wait_until("a scale-in", 30, || {
        group(&v)["desired"].as_u64() == Some(1)
    });
    let act = v.ok(&["activity", "env", "app"]);
    assert!(act.contains("policy cpu: average CPU"), "{act}");

    // A step policy driven by an alarm, and a scheduled action (every 2 seconds).
    let more = r#"
resource "scaling_policy" "step" {
  name                 = "step"
  autoscaling_group_id = autoscaling_group.app.id
  policy_type          = "StepScaling"
  adjustment_type      = "ChangeInCapacity"
  scaling_adjustment   = 1
  cooldown             = 60
}
resource "alarm" "queue" {
  name                = "queue-deep"
  metric              = "queue_depth"
  period              = 10
  comparison_operator = "GreaterThanThreshold"
  threshold           = 10
  alarm_actions       = [scaling_policy.step.id]
}
"#;
    v.write(
        "env/main.hcl",
        &config(
            83,
            "v1",
            "  min_size = 1\n  max_size = 3\n  desired_capacity = 1",
            more,
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let token = std::fs::read_to_string(v.data.join("root.token")).unwrap();
    wait_until("the alarm's scale-out", 40, || {
        let _ = ureq::post(&format!("http://127.0.0.1:{}/v1/envs/env/metrics", v.port))
            .set("authorization", &format!("Bearer {}", token.trim()))
            .send_json(serde_json::json!({"samples": [{"name": "queue_depth", "value": 100.0}]}));
        group(&v)["desired"].as_u64() == Some(2)
    });
    let act = v.ok(&["activity", "env", "app"]);
    assert!(act.contains("alarm queue-deep went off"), "{act}");
    wait_until("the new instance", 20, || in_service(&group(&v)).len() == 2);

    let scheduled = r#"
resource "scaling_policy" "night" {
  name                 = "night"
  autoscaling_group_id = autoscaling_group.app.id
  policy_type          = "ScheduledAction"
  recurrence           = "*/2 * * * * *"
  desired_capacity     = 3
}
"#;
    v.write(
        "env/main.hcl",
        &config(
            83,
            "v1",
            "  min_size = 1\n  max_size = 3\n  desired_capacity = 1",
            scheduled,
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    wait_until("the scheduled action", 10, || {
        group(&v)["desired"].as_u64() == Some(3)
    });
    let act = v.ok(&["activity", "env", "app"]);
    assert!(act.contains("scheduled action night"), "{act}");
}

#[test]
fn images_build_once_fail_with_their_log_and_bad_declarations_name_their_position() {
    let v = start();
    // `veeps image build`: the same inputs give the same id and no rebuild.
    let a = v.ok(&[
        "image",
        "build",
        "app",
        "tool",
        "--run",
        "python3 -m py_compile app.py",
        "--entrypoint",
        "python3 app.py",
    ]);
    let b = v.ok(&[
        "image",
        "build",
        "app",
        "tool",
        "--run",
        "python3 -m py_compile app.py",
        "--entrypoint",
        "python3 app.py",
    ]);
    assert_eq!(a, b);
    assert!(a.starts_with("img-") && a.contains("version 1"), "{a}");
    let list = v.ok(&["image", "list"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    // Builds have no network: not even the host's loopback.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let probe =
        format!("python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\"");
    let out = v.expect(
        &[
            "image",
            "build",
            "app",
            "net",
            "--run",
            &probe,
            "--entrypoint",
            "python3 app.py",
        ],
        1,
    );
    assert!(out.contains("failed") && out.contains("build log"), "{out}");
    // A failing build shows its log and changes nothing.
    v.write(
        "bad/main.hcl",
        "resource \"image\" \"x\" {\n  name       = \"x\"\n  source     = \"app\"\n  build      = [\"echo compiling; echo 'error: no such crate' >&2; exit 3\"]\n  entrypoint = [\"./x\"]\n}\n",
    );
    let out = v.expect(&["apply", "bad", "--auto-approve"], 1);
    assert!(
        out.contains("error: no such crate") && out.contains("exit 3"),
        "{out}"
    );
    assert_eq!(v.ok(&["image", "list"]).lines().count(), 1);
    // Bad declarations: file:line:col and what to do.
    v.write(
        "decl/main.hcl",
        r#"resource "launch_template" "t" {
  name     = "t"
  image_id = "img-0000000000000000"
  memory   = 2
}
resource "autoscaling_group" "g" {
  name            = "g"
  launch_template = "lt-00000000"
  subnets         = ["subnet-1"]
  min_size        = 4
  max_size        = 2
}
resource "scaling_policy" "s" {
  name                 = "s"
  autoscaling_group_id = "asg-00000000"
  policy_type          = "ScheduledAction"
  recurrence           = "61 * * * *"
}
"#,
    );
    let out = v.expect(&["plan", "decl"], 1);
    for want in [
        "decl/main.hcl:4:14",
        "decl/main.hcl:10:21",
        "more than max_size",
        "decl/main.hcl:17:26",
        "outside 0-59",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    v.write(
        "decl/main.hcl",
        "resource \"launch_template\" \"t\" {\n  name     = \"t\"\n  image_id = \"img-0000000000000000\"\n}\n",
    );
    let out = v.expect(&["plan", "decl"], 1);
    assert!(
        out.contains("decl/main.hcl:3:14") && out.contains("no image img-0000000000000000"),
        "{out}"
    );
}

/// Issue "Trust what exists", item 27: without root, instances ran as veeps' own user with
/// HOME inside the data directory and could read `root.token`. Now (where the kernel allows
/// unprivileged user namespaces) they run in a user and mount namespace of their own in
/// which the data directory is an empty, read-only directory; HOME and the working
/// directory are outside it.
#[test]
fn unprivileged_instances_cannot_read_the_data_directory() {
    require_root_and_python();
    let v = Veeps::start_as_nobody();
    let probe = r#"
import os, time
token = os.environ["DATA_DIR"] + "/root.token"
try:
    open(token).read()
    print("TOKEN READABLE", flush=True)
except OSError as e:
    print("token hidden:", type(e).__name__, flush=True)
print("home", os.environ["HOME"], "cwd", os.getcwd(), flush=True)
time.sleep(3600)
"#;
    v.write("probe/probe.py", probe);
    v.write(
        "env/main.hcl",
        &format!(
            r#"
{vpc}
resource "image" "probe" {{
  name       = "probe"
  source     = "probe"
  entrypoint = ["python3", "probe.py"]
}}
resource "launch_template" "probe" {{
  name        = "probe"
  image_id    = image.probe.id
  environment = {{ DATA_DIR = "{}" }}
}}
resource "autoscaling_group" "probe" {{
  name            = "probe"
  launch_template = launch_template.probe.id
  subnets         = [subnet.a.id]
  min_size        = 1
  max_size        = 1
}}
"#,
            v.data.display(),
            vpc = vpc("nobody", 77, 16, &[("a", 1, "private-app")]),
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    wait_until("the probe's report", 60, || {
        v.ok(&["logs", "env", "probe"]).contains("home")
    });
    let logs = v.ok(&["logs", "env", "probe"]);
    assert!(logs.contains("token hidden"), "{logs}");
    assert!(!logs.contains("TOKEN READABLE"), "{logs}");
    let data = v.data.display().to_string();
    let home_line = logs.lines().find(|l| l.contains("home")).unwrap();
    assert!(!home_line.contains(&data), "{home_line}");
    v.ok(&["destroy", "env", "--auto-approve"]);
}

/// What an instance finds out about its confinement, printed as `key=value` lines.
const ISOLATION_PROBE: &str = r#"
import ctypes, os, socket, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def errno_of(r):
    return 0 if r == 0 else ctypes.get_errno()
me = os.environ["MARKER"]
other = "b" if me == "a" else "a"
procs = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
seen = 0
for p in procs:
    try:
        if ("MARKER=" + other).encode() in open(f"/proc/{p}/environ", "rb").read():
            seen += 1
    except OSError:
        pass
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    os.kill(1, 0)
    kill1 = 0
except OSError as e:
    kill1 = e.errno
t = threading.Thread(target=lambda: None); t.start(); t.join()
open(f"/tmp/{me}", "w").write(me)
tmp = ",".join(sorted(os.listdir("/tmp")))
print(f"report uid={os.getuid()} procs={len(procs)} foreign={seen} "
      f"capeff={status['CapEff'].strip()} capbnd={status['CapBnd'].strip()} "
      f"nnp={status['NoNewPrivs'].strip()} seccomp={status['Seccomp'].strip()} "
      f"host={socket.gethostname()} "
      f"mount={errno_of(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))} "
      f"unshare={errno_of(libc.unshare(0x10000000))} "
      f"ptrace={errno_of(libc.ptrace(16, 1, 0, 0))} kill1={kill1} thread=ok tmp={tmp}", flush=True)
time.sleep(3600)
"#;

/// Issue "Security baseline", isolated instances: each group's instances run as a user of
/// their own, see only their own processes, cannot signal, trace or read another
/// instance, hold no capability, and the system calls that would break out are refused.
#[test]
fn instances_are_isolated_from_each_other_and_from_the_host() {
    let v = start();
    v.write("probe/probe.py", ISOLATION_PROBE);
    let mut hcl = vpc("iso", 78, 16, &[("a", 1, "private-app")]);
    hcl.push_str(
        r#"
resource "image" "probe" {
  name       = "probe"
  source     = "probe"
  # Builds run under the same filter: the step succeeds only if unshare is refused.
  build      = ["python3 -c 'import ctypes, sys; sys.exit(0 if ctypes.CDLL(None).unshare(0x10000000) != 0 else 1)'"]
  entrypoint = ["python3", "probe.py"]
}
"#,
    );
    for g in ["a", "b"] {
        hcl.push_str(&format!(
            r#"
resource "launch_template" "{g}" {{
  name        = "{g}"
  image_id    = image.probe.id
  environment = {{ MARKER = "{g}" }}
}}
resource "autoscaling_group" "{g}" {{
  name            = "probe-{g}"
  launch_template = launch_template.{g}.id
  subnets         = [subnet.a.id]
  min_size        = 1
  max_size        = 1
}}
"#
        ));
    }
    v.write("env/main.hcl", &hcl);
    v.ok(&["apply", "env", "--auto-approve"]);
    let report = |g: &str| -> String {
        let mut line = String::new();
        wait_until(&format!("probe-{g}'s report"), 60, || {
            let logs = v.ok(&["logs", "env", &format!("probe-{g}")]);
            match logs.lines().find(|l| l.contains("report uid=")) {
                Some(l) => {
                    line = l.to_string();
                    true
                }
                None => false,
            }
        });
        line
    };
    let field = |line: &str, k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {line}"))
            .to_string()
    };
    let (a, b) = (report("a"), report("b"));
    let (uid_a, uid_b) = (field(&a, "uid"), field(&b, "uid"));
    assert_ne!(uid_a, uid_b, "two groups share a user:\n{a}\n{b}");
    for line in [&a, &b] {
        let uid: u32 = field(line, "uid").parse().unwrap();
        assert!(uid >= 200_000, "{line}");
        // Its init and itself: nothing of the host or of the other instance.
        assert!(field(line, "procs").parse::<u32>().unwrap() <= 3, "{line}");
        assert_eq!(field(line, "foreign"), "0", "{line}");
        assert_eq!(field(line, "capeff"), "0000000000000000", "{line}");
        assert_eq!(field(line, "capbnd"), "0000000000000000", "{line}");
        assert_eq!(field(line, "nnp"), "1", "{line}");
        assert_eq!(field(line, "seccomp"), "2", "{line}");
        assert!(field(line, "host").starts_with("i-"), "{line}");
        // EPERM from the filter (or the missing capability).
        for k in ["mount", "unshare", "ptrace", "kill1"] {
            assert_eq!(field(line, k), "1", "{k}: {line}");
        }
        assert_eq!(field(line, "thread"), "ok", "{line}");
        // A /tmp of its own: only the file it wrote there.
        assert_eq!(field(line, "tmp").len(), 1, "{line}");
    }
    v.ok(&["destroy", "env", "--auto-approve"]);
}

/// What the secrets probe prints: digests, never the secrets.
const SECRETS_PROBE: &str = r#"
import hashlib, os, time
d = lambda k: hashlib.sha256(os.environ.get(k, "").encode()).hexdigest()
print(f"secrets api={d('API_KEY')} db={d('DB_PASS')}", flush=True)
time.sleep(3600)
"#;

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Issue "Security baseline", KMS: a `kmscrypt::` value and a generated password reach the
/// application as environment variables, and neither is anywhere on disk, in state, in
/// plans or in logs; a value encrypted for another environment is refused at apply.
#[test]
fn kmscrypt_secrets_reach_the_app_and_nothing_else() {
    let v = start();
    v.write("probe/probe.py", SECRETS_PROBE);
    let api_key = format!("api-key-{}", std::process::id());
    let sealed = v
        .ok(&["kms", "encrypt", "env", "--value", &api_key])
        .trim()
        .to_string();
    assert!(
        sealed.starts_with("kmscrypt::") && !sealed.contains(&api_key),
        "{sealed}"
    );
    // `veeps kms decrypt` opens it again, in place.
    v.write("sealed.txt", &format!("key = \"{sealed}\"\n"));
    let opened = v.ok(&[
        "kms",
        "decrypt",
        "env",
        &v.work.join("sealed.txt").display().to_string(),
    ]);
    assert_eq!(opened, format!("key = \"{api_key}\"\n"));
    let config = |secret: &str| {
        format!(
            r#"
{vpc}
resource "random_password" "db" {{
  length  = 24
  special = false
}}
resource "image" "probe" {{
  name       = "probe"
  source     = "probe"
  entrypoint = ["python3", "probe.py"]
}}
resource "launch_template" "p" {{
  name     = "p"
  image_id = image.probe.id
  secrets  = {{
    API_KEY = "{secret}"
    DB_PASS = random_password.db.result
  }}
}}
resource "autoscaling_group" "p" {{
  name            = "secrets"
  launch_template = launch_template.p.id
  subnets         = [subnet.a.id]
  min_size        = 1
  max_size        = 1
}}
output "db_pass" {{
  value     = random_password.db.result
  sensitive = true
}}
"#,
            vpc = vpc("sec", 79, 16, &[("a", 1, "private-app")])
        )
    };
    v.write("env/main.hcl", &config(&sealed));
    let plan = v.ok(&["plan", "env"]);
    assert!(!plan.contains(&api_key), "{plan}");
    v.ok(&["apply", "env", "--auto-approve"]);
    let mut line = String::new();
    wait_until("the secrets probe's report", 60, || {
        let logs = v.ok(&["logs", "env", "secrets"]);
        match logs.lines().find(|l| l.contains("secrets api=")) {
            Some(l) => {
                line = l.to_string();
                true
            }
            None => false,
        }
    });
    let db_pass = v.ok(&["output", "env", "db_pass"]).trim().to_string();
    assert_eq!(db_pass.len(), 24, "{db_pass}");
    assert!(
        line.contains(&format!("api={}", sha256_hex(&api_key))),
        "{line}"
    );
    assert!(
        line.contains(&format!("db={}", sha256_hex(&db_pass))),
        "{line}"
    );
    // Nowhere in the clear: not in the data directory (state, compute records, history,
    // logs, spools), not in what state shows.
    for secret in [&api_key, &db_pass] {
        assert_eq!(files_containing(&v.data, secret), Vec::<String>::new());
        let shown = v.ok(&["state", "show", "env", "launch_template.p"]);
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
    // Encrypted for another environment: refused at apply, naming the secret.
    let foreign = v
        .ok(&["kms", "encrypt", "other", "--value", "x"])
        .trim()
        .to_string();
    v.write("env/main.hcl", &config(&foreign));
    let out = v.expect(&["apply", "env", "--auto-approve"], 1);
    assert!(
        out.contains("secrets.API_KEY") && out.contains("kms encrypt env"),
        "{out}"
    );
    v.ok(&["destroy", "env", "--auto-approve"]);
}

const ROLE_PROBE: &str = r#"
import configparser, json, os, shlex, subprocess, time
# What an AWS SDK does: read $AWS_CONFIG_FILE, run its credential_process, again and again.
while True:
    c = configparser.ConfigParser()
    c.read(os.environ["AWS_CONFIG_FILE"])
    out = subprocess.run(shlex.split(c["default"]["credential_process"]), capture_output=True, text=True)
    if out.returncode == 0:
        j = json.loads(out.stdout)
        print(f"role key={j['AccessKeyId']} version={j['Version']} expires={j['Expiration']}", flush=True)
    else:
        print(f"role failed: {out.stderr.strip()}", flush=True)
    time.sleep(1)
"#;

/// Issue "Security baseline": instances of a template with an `iam_role` get the role's
/// temporary credentials through a `credential_process` they can run, renewed before they
/// expire (shortened here), and S3 honours them as the role.
#[test]
fn instances_get_role_credentials_renewed_before_they_expire() {
    require_root_and_python();
    let v = Veeps::start_with_env(&[("VEEPS_ROLE_RENEW_SECS", "3595")]);
    v.write("probe/probe.py", ROLE_PROBE);
    v.write(
        "env/main.hcl",
        &format!(
            r#"
{vpc}
resource "iam_policy" "read" {{
  name   = "read-role-data"
  policy = jsonencode({{ Statement = [{{ Effect = "Allow", Action = "s3:GetObject", Resource = "arn:aws:s3:::instance-role-data/*" }}] }})
}}
resource "iam_role" "app" {{
  name     = "app"
  policies = [iam_policy.read.name]
}}
resource "bucket" "d" {{
  bucket        = "instance-role-data"
  force_destroy = true
}}
resource "bucket_object" "o" {{
  bucket  = bucket.d.bucket
  key     = "o.txt"
  content = "for the role"
}}
resource "image" "probe" {{
  name       = "probe"
  source     = "probe"
  entrypoint = ["python3", "probe.py"]
}}
resource "launch_template" "p" {{
  name     = "p"
  image_id = image.probe.id
  iam_role = iam_role.app.name
}}
resource "autoscaling_group" "p" {{
  name            = "roles"
  launch_template = launch_template.p.id
  subnets         = [subnet.a.id]
  min_size        = 1
  max_size        = 1
}}
"#,
            vpc = vpc("role", 78, 16, &[("a", 1, "private-app")])
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let keys = || -> Vec<String> {
        v.ok(&["logs", "env", "roles"])
            .lines()
            .filter_map(|l| l.split("role key=").nth(1))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect()
    };
    wait_until("the instance runs its credential_process", 60, || {
        !keys().is_empty()
    });
    let logs = v.ok(&["logs", "env", "roles"]);
    assert!(!logs.contains("role failed"), "{logs}");
    let first = keys()[0].clone();
    assert!(first.starts_with("ASIA"), "{first}");
    // Renewed before expiry: a new key appears while the instance keeps running.
    wait_until("renewed role credentials", 60, || {
        keys().iter().any(|k| *k != first)
    });
    // The file the process reads works against S3 as the role.
    let file = std::fs::read_dir(v.data.join("instances"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join(".aws").join("veeps-role.json"))
        .find(|p| p.exists())
        .expect("the credentials file");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let o = Command::new("aws")
        .args(["--endpoint-url", &format!("http://127.0.0.1:{}", v.s3_port)])
        .args(["s3", "cp", "s3://instance-role-data/o.txt", "-"])
        .env("AWS_ACCESS_KEY_ID", c["AccessKeyId"].as_str().unwrap())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            c["SecretAccessKey"].as_str().unwrap(),
        )
        .env("AWS_SESSION_TOKEN", c["SessionToken"].as_str().unwrap())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "for the role",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The auto-update test's app: answers the package its image's build fetched.
const FEED: &str = r#"
import http.server, os
HOST, PORT = os.environ["HOST"], int(os.environ["PORT"])
PKG = open("pkg").read().strip().encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK" if self.path == "/health" else PKG)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((HOST, PORT), H).serve_forever()
"#;

/// A package mirror on loopback answering every request with `body`; counts requests.
fn package_mirror(
    body: &str,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<String>>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let body = std::sync::Arc::new(std::sync::Mutex::new(body.to_string()));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (b, h) = (body.clone(), hits.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut req = vec![];
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = b.lock().unwrap().clone();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, body, hits)
}

/// Issue "Security baseline": an image with `auto_update` rebuilds on its schedule,
/// reaching only its egress allow list (a package mirror the test serves); a build whose
/// files are unchanged makes no new version, a changed one rolls out to the group, and the
/// next plan has nothing to do.
#[test]
fn auto_update_rebuilds_through_the_allow_list_and_rolls_out_only_changes() {
    require_root_and_python();
    let (port, body, hits) = package_mirror("pkg 1.0");
    let v = Veeps::start();
    v.write("feed/feed.py", FEED);
    v.write(
        "env/main.hcl",
        &format!(
            r#"
{vpc}
resource "image" "feed" {{
  name        = "feed"
  source      = "feed"
  build       = ["curl -sf -m 20 http://127.0.0.1:{port}/pkg -o pkg"]
  egress      = ["127.0.0.1:{port}"]
  auto_update = "*/2 * * * * *"
  entrypoint  = ["python3", "feed.py"]
}}
resource "launch_template" "feed" {{
  name              = "feed"
  image_id          = image.feed.id
  port              = 8080
  health_check_path = "/health"
}}
resource "autoscaling_group" "feed" {{
  name                      = "feed"
  launch_template           = launch_template.feed.id
  launch_template_version   = launch_template.feed.latest_version
  subnets                   = [subnet.a.id]
  min_size                  = 2
  max_size                  = 2
  health_check_grace_period = 10
}}
"#,
            vpc = vpc("upd", 76, 16, &[("a", 1, "private-app")])
        ),
    );
    v.ok(&["apply", "env", "--auto-approve"]);
    let feed = || -> serde_json::Value {
        let out = v.ok(&["instances", "env", "--group", "feed", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    };
    let g = feed();
    let first = g["image_id"].as_str().unwrap().to_string();
    let up = in_service(&g);
    assert_eq!(up.len(), 2, "{g}");
    assert_eq!(get(&up[0], "/"), "pkg 1.0");

    // Unchanged files: runs on schedule, makes no new version.
    let seen = hits.load(std::sync::atomic::Ordering::SeqCst);
    wait_until("two scheduled rebuilds", 60, || {
        hits.load(std::sync::atomic::Ordering::SeqCst) >= seen + 2
    });
    let updates = v.ok(&["image", "updates", "env"]);
    assert!(updates.contains("unchanged"), "{updates}");
    let images = v.ok(&["image", "list", "--json"]);
    let feeds = |images: &str| {
        serde_json::from_str::<Vec<serde_json::Value>>(images)
            .unwrap()
            .into_iter()
            .filter(|i| i["name"] == "feed")
            .count()
    };
    assert_eq!(feeds(&images), 1, "{images}");

    // A new package on the mirror: a new version, rolled out to every instance.
    *body.lock().unwrap() = "pkg 2.0".into();
    wait_until("the group runs the rebuilt image", 180, || {
        let g = feed();
        let up = in_service(&g);
        g["image_id"] != first.as_str()
            && up.len() == 2
            && g["instances"].as_array().is_some_and(|a| a.len() == 2)
            && up.iter().all(|i| i["image_id"] == g["image_id"])
    });
    for i in in_service(&feed()) {
        assert_eq!(get(&i, "/"), "pkg 2.0");
    }
    let updates = v.ok(&["image", "updates", "env"]);
    assert!(updates.contains("rolled out to feed"), "{updates}");
    assert_eq!(feeds(&v.ok(&["image", "list", "--json"])), 2);
    let activity = v.ok(&["activity", "env", "feed"]);
    assert!(activity.contains("Finished the rollout"), "{activity}");
    // The configuration still says image.feed.id: the plan sees the update as made outside
    // of it, with nothing to change.
    let plan = v.ok(&["plan", "env"]);
    assert!(plan.contains("No changes."), "{plan}");
}
