//! Metrics, logs, alarms and notifications through a real server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use veeps_testkit::*;

fn token(v: &Veeps) -> String {
    std::fs::read_to_string(v.data.join("root.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn post(v: &Veeps, path: &str, body: serde_json::Value) {
    let r = ureq::post(&format!("http://127.0.0.1:{}{path}", v.port))
        .set("authorization", &format!("Bearer {}", token(v)))
        .send_json(body);
    assert!(r.is_ok(), "POST {path}: {r:?}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A one-request-at-a-time HTTP server that records each request body.
fn webhook_server() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).to_string());
        }
    });
    (port, rx)
}

/// A minimal SMTP server that records each message it accepts.
fn smtp_server() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let _ = c.write_all(b"220 test ESMTP\r\n");
            let mut msg = String::new();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        let _ = c.write_all(b"250 queued\r\n");
                        let _ = tx.send(std::mem::take(&mut msg));
                    } else {
                        msg.push_str(&line);
                    }
                    continue;
                }
                let cmd = line.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                    b"250 test\r\n"
                } else if cmd.starts_with("DATA") {
                    in_data = true;
                    b"354 go ahead\r\n"
                } else if cmd.starts_with("QUIT") {
                    let _ = c.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 ok\r\n"
                };
                let _ = c.write_all(reply);
            }
        }
    });
    (port, rx)
}

#[test]
fn an_alarm_goes_off_and_notifies_by_webhook_and_email() {
    let (hook_port, hooks) = webhook_server();
    let (smtp_port, mails) = smtp_server();
    let relay = format!("127.0.0.1:{smtp_port}");
    let v = Veeps::start_with_env(&[
        ("VEEPS_OBS_INTERVAL_SECS", "1"),
        ("VEEPS_SMTP_RELAY", &relay),
    ]);
    v.write(
        "e/main.hcl",
        &format!(
            r#"
resource "topic" "alarms" {{
  name = "alarms"
  subscription {{
    protocol = "webhook"
    endpoint = "http://127.0.0.1:{hook_port}/hook"
  }}
  subscription {{
    protocol = "email"
    endpoint = "ops@example.test"
  }}
}}
resource "alarm" "cpu" {{
  name                = "web-cpu-high"
  metric              = "instance_cpu_percent"
  labels              = {{ group = "web" }}
  statistic           = "avg"
  period              = 10
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = 90
  treat_missing_data  = "notBreaching"
  alarm_actions       = [topic.alarms.id]
  ok_actions          = [topic.alarms.id]
}}
"#
        ),
    );
    v.ok(&["apply", "e", "--auto-approve"]);
    // A steady stream of breaching samples until the alarm fires (evaluation runs on
    // period boundaries, so the test does not guess which periods it will look at).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        let (port, tok) = (v.port, token(&v));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = serde_json::json!({"samples": [{"name": "instance_cpu_percent", "labels": {"group": "web"}, "value": 95.0}]});
                let _ = ureq::post(&format!("http://127.0.0.1:{port}/v1/envs/e/metrics"))
                    .set("authorization", &format!("Bearer {tok}"))
                    .send_json(body);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = v.ok(&["alarms", "e"]);
        if out.contains("ALARM") && !out.contains("INSUFFICIENT") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alarm never went off:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    // Notifications arrive in order; the first may be INSUFFICIENT_DATA -> OK.
    let wait_for = |rx: &mpsc::Receiver<String>, what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no notification containing {what:?}"));
            if m.contains(what) {
                return m;
            }
        }
    };
    let hook = wait_for(&hooks, "[ALARM] web-cpu-high");
    assert!(hook.contains("threshold crossed"), "{hook}");
    let mail = wait_for(&mails, "[ALARM] web-cpu-high");
    assert!(mail.contains("ops@example.test"), "{mail}");
    let hist = v.ok(&["alarm", "history", "e", "web-cpu-high"]);
    assert!(hist.contains("-> ALARM"), "{hist}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = v.ok(&["deliveries", "e", "alarms"]);
        if d.matches("delivered").count() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries not recorded:\n{d}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // With notBreaching, no new data means OK at the next evaluations.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let out = v.ok(&["alarms", "e"]);
        if out.starts_with("OK") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alarm never returned to OK:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let hook = wait_for(&hooks, "[OK] web-cpu-high");
    assert!(hook.contains("\"OK\""), "{hook}");
    // Bad alarm definitions are configuration errors.
    v.write("bad/main.hcl", "resource \"alarm\" \"a\" {\n  name                = \"a\"\n  metric              = \"m\"\n  period              = 15\n  comparison_operator = \"Bigger\"\n  threshold           = 1\n}\n");
    let out = v.expect(&["plan", "bad"], 1);
    assert!(
        out.contains("bad/main.hcl:4:25") && out.contains("multiple of 10"),
        "{out}"
    );
    assert!(
        out.contains("bad/main.hcl:5:25") && out.contains("GreaterThanThreshold"),
        "{out}"
    );
}

#[test]
fn logs_follow_sees_a_new_line_and_search_finds_old_ones() {
    let v = Veeps::start();
    post(
        &v,
        "/v1/envs/prod/logs",
        serde_json::json!({"lines": [{"group": "web", "source": "i-1", "stream": "stdout", "text": "started on :8080"}]}),
    );
    let mut follow = v
        .cmd(&["logs", "prod", "web", "-f", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("started on :8080"), "{first}");
    post(
        &v,
        "/v1/envs/prod/logs",
        serde_json::json!({"lines": [{"group": "web", "source": "i-2", "stream": "stderr", "text": "panic: out of cheese"}, {"group": "db", "text": "not for the web follower"}]}),
    );
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    assert!(
        second.contains("out of cheese") && second.contains("i-2"),
        "{second}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let grep = v.ok(&["logs", "prod", "--grep", "cheese"]);
    assert!(
        grep.contains("web/i-2 stderr: panic: out of cheese") && !grep.contains("started on"),
        "{grep}"
    );
    v.expect(&["logs", "prod", "--since", "5 minutes"], 1);
}

#[test]
fn metrics_survive_kill_9_and_are_exposed_to_prometheus() {
    let mut v = Veeps::start();
    let wal = v.data.join("metrics").join("wal");
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let before = wal_len();
    let now = now_ms();
    let samples: Vec<serde_json::Value> = (0..30).map(|i| serde_json::json!({"name": "queue_depth", "labels": {"queue": "jobs"}, "value": i, "ts": now - (30 - i) * 10_000})).collect();
    post(
        &v,
        "/v1/envs/prod/metrics",
        serde_json::json!({ "samples": samples }),
    );
    // The log is written out every second: wait until the 30 points (21 bytes each) are
    // in the file (a kill -9 keeps what the kernel has), however loaded the machine is.
    wait_until("the samples in the metrics log", 60, || {
        wal_len() >= before + 30 * 21
    });
    v.kill9();
    v.boot();
    let j: serde_json::Value = serde_json::from_str(&v.ok(&[
        "metrics",
        "query",
        "prod",
        "queue_depth{queue=\"jobs\"}",
        "--since",
        "10m",
        "--period",
        "600",
        "--stat",
        "max",
        "--json",
    ]))
    .unwrap();
    let max = j[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(max, 29.0, "{j}");
    let j: serde_json::Value = serde_json::from_str(&v.ok(&[
        "metrics",
        "query",
        "prod",
        "queue_depth",
        "--since",
        "10m",
        "--period",
        "600",
        "--stat",
        "count",
        "--json",
    ]))
    .unwrap();
    let count: f64 = j[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert_eq!(count, 30.0, "every acknowledged sample survived: {j}");
    assert!(v
        .ok(&["metrics", "list", "prod"])
        .contains("queue_depth{env=\"prod\",queue=\"jobs\"}"));
    let body = ureq::get(&format!("http://127.0.0.1:{}/metrics", v.port))
        .set("authorization", &format!("Bearer {}", token(&v)))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        body.contains("queue_depth{env=\"prod\",queue=\"jobs\"} 29"),
        "{body}"
    );
    assert_eq!(
        ureq::get(&format!("http://127.0.0.1:{}/metrics", v.port))
            .call()
            .unwrap_err()
            .kind(),
        ureq::ErrorKind::HTTP,
        "the exposition needs a token"
    );
    v.expect(&["metrics", "query", "prod", "queue_depth{queue=jobs}"], 1);
}

#[test]
fn the_example_alarms_module_watches_the_host_and_notifies_another_environments_topic() {
    let (hook_port, hooks) = webhook_server();
    let v = Veeps::start_with_env(&[("VEEPS_OBS_INTERVAL_SECS", "1")]);
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/veeps-hosting/modules/alarms")
        .canonicalize()
        .unwrap();
    v.write(
        "mgmt/main.hcl",
        &format!(
            r#"
resource "topic" "alarms" {{
  name = "alarms"
  subscription {{
    protocol = "webhook"
    endpoint = "http://127.0.0.1:{hook_port}/hook"
  }}
}}
output "alarm_topic_id" {{
  value = topic.alarms.id
}}
"#
        ),
    );
    v.ok(&["apply", "mgmt", "--auto-approve"]);
    // Another environment's alarms on the host's series, to mgmt's topic. Thresholds
    // are the reference's; a 1 EB free-disk threshold makes the disk alarm breach here.
    v.write(
        "stage/main.hcl",
        &format!(
            r#"
data "environment" "mgmt" {{
  name = "mgmt"
}}
module "host_alarms" {{
  source   = "{}"
  name     = "host"
  labels   = {{ env = "system" }}
  topic_id = data.environment.mgmt.outputs.alarm_topic_id
}}
resource "alarm" "disk_tiny" {{
  name                = "host-disk-below-an-exabyte"
  metric              = "host_disk_free_bytes"
  labels              = {{ env = "system" }}
  statistic           = "min"
  period              = 10
  comparison_operator = "LessThanThreshold"
  threshold           = 1e18
  alarm_actions       = [data.environment.mgmt.outputs.alarm_topic_id]
}}
"#,
            module.display()
        ),
    );
    v.ok(&["apply", "stage", "--auto-approve"]);
    let out = v.ok(&["alarms", "stage"]);
    for name in ["host-cpu-high", "host-memory-low", "host-disk-low"] {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let hook = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = hooks
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("mgmt's topic never heard the host alarm"));
        if m.contains("[ALARM] host-disk-below-an-exabyte") {
            break m;
        }
    };
    assert!(hook.contains("\"env\":\"stage\""), "{hook}");
    // The delivery is recorded once the webhook has answered, which may be just after
    // the webhook saw it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = v.ok(&["deliveries", "mgmt", "alarms"]);
        if d.contains("delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery recorded:\n{d}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
