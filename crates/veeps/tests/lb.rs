//! Load balancers on the real kernel: balancers in their namespaces, targets as auto
//! scaling group instances, driven through `veeps apply`. Needs root; each test uses its
//! own address range and host ports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veeps_testkit::*;

/// The target app: / answers "VERSION INSTANCE", /health (500 once /sick was asked),
/// /slow/SECS, /headers (the X-Forwarded-*, Host, Authorization and X-Veeps-Auth-User it
/// got), /ws (a WebSocket-style upgrade that
/// then echoes bytes).
const APP: &str = r#"
import http.server, os, time, base64, hashlib
HOST, PORT = os.environ["HOST"], int(os.environ["PORT"])
sick = [False]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        p = self.path
        if p == "/health":
            return self.reply(500 if sick[0] else 200, b"sick" if sick[0] else b"OK")
        if p == "/sick":
            sick[0] = True
            return self.reply(200, b"now sick")
        if p == "/well":
            sick[0] = False
            return self.reply(200, b"well again")
        if p.startswith("/slow/"):
            time.sleep(float(p[6:]))
            return self.reply(200, b"slow done")
        if p == "/headers":
            h = self.headers
            body = f"{h.get('x-forwarded-for')}|{h.get('x-forwarded-proto')}|{h.get('x-forwarded-port')}|{h.get('host')}|{h.get('authorization')}|{h.get('x-veeps-auth-user')}"
            return self.reply(200, body.encode())
        if p == "/ws" and self.headers.get("upgrade", "").lower() == "websocket":
            key = self.headers["sec-websocket-key"]
            acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101)
            self.send_header("upgrade", "websocket")
            self.send_header("connection", "Upgrade")
            self.send_header("sec-websocket-accept", acc)
            self.end_headers()
            self.wfile.flush()
            while True:
                d = self.connection.recv(4096)
                if not d:
                    break
                self.connection.sendall(d)
            self.close_connection = True
            return
        self.reply(200, f"{os.environ.get('VERSION')} {os.environ['VEEPS_INSTANCE_ID']}".encode())
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((HOST, PORT), H).serve_forever()
"#;

fn group(name: &str, version: &str, count: u32, tg: &str) -> String {
    format!(
        r#"
resource "launch_template" "{name}" {{
  name        = "{name}"
  image_id    = image.app.id
  cpu         = 0.5
  memory      = 128
  port        = 8080
  environment = {{ VERSION = "{version}" }}
}}
resource "autoscaling_group" "{name}" {{
  name                    = "{name}"
  launch_template         = launch_template.{name}.id
  launch_template_version = launch_template.{name}.latest_version
  subnets                 = [subnet.app.id]
  security_groups         = [security_group.app.id]
  min_size                = 0
  max_size                = 6
  desired_capacity        = {count}
  health_check_type       = "lb"
  target_group_arns       = [target_group.{tg}.arn]
  instance_refresh {{
    min_healthy_percentage = 50
    timeout                = 60
  }}
}}
"#
    )
}

fn tg(name: &str) -> String {
    format!(
        r#"
resource "target_group" "{name}" {{
  name                 = "{name}"
  port                 = 8080
  deregistration_delay = 10
  health_check {{
    path                = "/health"
    interval            = 1
    timeout             = 0.5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }}
}}
"#
    )
}

/// A VPC with a public and a private-app subnet, security groups, the app's image and
/// a certificate.
fn base(octet: u8) -> String {
    format!(
        r#"
{vpc}
resource "security_group" "lb" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol    = "tcp"
    from_port   = 80
    to_port     = 443
    cidr_blocks = ["0.0.0.0/0"]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "security_group" "app" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol        = "tcp"
    from_port       = 8080
    to_port         = 8080
    security_groups = [security_group.lb.id]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["10.{octet}.0.0/18"]
  }}
}}
resource "image" "app" {{
  name       = "app"
  source     = "app"
  entrypoint = ["python3", "app.py"]
}}
"#,
        vpc = vpc(
            &format!("l{octet}"),
            octet,
            18,
            &[("pub", 0, "public"), ("app", 16, "private-app")]
        )
    )
}

fn start() -> Veeps {
    require_root("load balancer tests");
    let v = Veeps::start();
    v.write("app/app.py", APP);
    v
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
fn http(port: u16, raw: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, "connection refused".into());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(raw.as_bytes()).is_err() {
        return (0, "write failed".into());
    }
    let mut buf = vec![];
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn get(port: u16, path: &str, extra: &str) -> (u16, String) {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: shop.l.test\r\n{extra}Connection: close\r\n\r\n"),
    )
}

fn healthy_targets(v: &Veeps) -> usize {
    v.ok(&["targets", "env"]).matches(" healthy ").count()
}

#[test]
fn rules_tls_sni_http2_websockets_and_bad_requests() {
    let v = start();
    let p = free_port();
    let ps = free_port();
    let rules = format!(
        r#"
resource "certificate" "shop" {{
  domain_name = "shop.l.test"
}}
resource "certificate" "admin" {{
  domain_name               = "admin.l.test"
  subject_alternative_names = ["*.admin.l.test"]
}}
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "http" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 80
  host_port         = {p}
  default_action {{
    type = "forward"
    forward {{
      target_group {{
        arn    = target_group.a.arn
        weight = 3
      }}
      target_group {{
        arn    = target_group.b.arn
        weight = 1
      }}
    }}
  }}
}}
resource "listener" "https" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = certificate.shop.arn
  certificate_arns  = [certificate.admin.arn]
  host_port         = {ps}
  default_action {{
    type             = "forward"
    target_group_arn = target_group.a.arn
  }}
}}
resource "scaling_policy" "requests" {{
  name                      = "requests"
  autoscaling_group_id      = autoscaling_group.a.id
  policy_type               = "TargetTrackingScaling"
  predefined_metric_type    = "ALBRequestCountPerTarget"
  target_value              = 600
  estimated_instance_warmup = 0
  cooldown                  = 600
}}
resource "listener_rule" "api" {{
  listener_arn = listener.http.arn
  priority     = 5
  condition {{
    host_header {{
      values = ["api.*"]
    }}
  }}
  action {{
    type = "fixed-response"
    fixed_response {{
      status_code  = "200"
      message_body = "api host"
    }}
  }}
}}
resource "listener_rule" "first" {{
  listener_arn = listener.http.arn
  priority     = 15
  condition {{
    path_pattern {{
      values = ["/p*"]
    }}
  }}
  action {{
    type = "fixed-response"
    fixed_response {{
      status_code  = "200"
      message_body = "first"
    }}
  }}
}}
resource "listener_rule" "second" {{
  listener_arn = listener.http.arn
  priority     = 16
  condition {{
    path_pattern {{
      values = ["/p*"]
    }}
  }}
  action {{
    type = "fixed-response"
    fixed_response {{
      status_code  = "200"
      message_body = "second"
    }}
  }}
}}
resource "listener_rule" "redirect" {{
  listener_arn = listener.http.arn
  priority     = 20
  condition {{
    path_pattern {{
      values = ["/secure/*"]
    }}
  }}
  action {{
    type = "redirect"
    redirect {{
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }}
  }}
}}
resource "listener_rule" "canary" {{
  listener_arn = listener.http.arn
  priority     = 30
  condition {{
    http_header {{
      http_header_name = "X-Canary"
      values           = ["yes"]
    }}
  }}
  condition {{
    http_request_method {{
      values = ["GET"]
    }}
  }}
  action {{
    type             = "forward"
    target_group_arn = target_group.b.arn
  }}
}}
resource "listener_rule" "query" {{
  listener_arn = listener.http.arn
  priority     = 40
  condition {{
    query_string {{
      key   = "group"
      value = "a"
    }}
  }}
  action {{
    type             = "forward"
    target_group_arn = target_group.a.arn
  }}
}}
resource "listener_rule" "office" {{
  listener_arn = listener.http.arn
  priority     = 50
  condition {{
    source_ip {{
      values = ["192.0.2.0/24"]
    }}
  }}
  action {{
    type = "fixed-response"
    fixed_response {{
      status_code = "403"
    }}
  }}
}}
"#
    );
    let cfg = format!(
        "{}{}{}{}{}{rules}",
        base(91),
        tg("a"),
        tg("b"),
        group("a", "a", 1, "a"),
        group("b", "b", 1, "b")
    );
    v.write("env/main.hcl", &cfg);
    v.ok(&["apply", "env", "--auto-approve"]);
    wait_until("two healthy targets", 20, || healthy_targets(&v) == 2);

    // Rules by priority: host, path (the lower priority wins), header + method, query.
    assert_eq!(
        http(
            p,
            "GET /x HTTP/1.1\r\nHost: api.l.test\r\nConnection: close\r\n\r\n"
        )
        .1,
        "api host"
    );
    assert_eq!(get(p, "/products", ""), (200, "first".to_string()));
    assert!(get(p, "/", "X-Canary: yes\r\n").1.starts_with("b "));
    for _ in 0..10 {
        assert!(get(p, "/?group=a", "").1.starts_with("a "));
    }
    // Redirect keeps host, path and query.
    let r = http(
        p,
        "GET /secure/cart?id=7 HTTP/1.1\r\nHost: shop.l.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.0, 301);
    let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
    s.write_all(
        b"GET /secure/cart?id=7 HTTP/1.1\r\nHost: shop.l.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut head = String::new();
    let _ = s.read_to_string(&mut head);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: https://shop.l.test/secure/cart?id=7"),
        "{head}"
    );
    // Weighted forwarding: about 3 to 1.
    let mut a = 0;
    for _ in 0..400 {
        if get(p, "/", "").1.starts_with("a ") {
            a += 1;
        }
    }
    assert!(
        (250..=350).contains(&a),
        "{a} of 400 went to a (weight 3 of 4)"
    );
    // Requests per target drive the scaling policy of group a (600 a minute each).
    let desired_a = || -> u64 {
        let all: serde_json::Value =
            serde_json::from_str(&v.ok(&["instances", "env", "--json"])).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "a")
            .and_then(|g| g["desired"].as_u64())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while desired_a() < 2 {
        assert!(
            Instant::now() < deadline,
            "requests per target never scaled group a out:\n{}\n{}",
            v.ok(&["activity", "env", "a"]),
            v.ok(&[
                "metrics",
                "query",
                "env",
                "lb_requests_per_target",
                "--since",
                "5m",
                "--period",
                "10"
            ])
        );
        for _ in 0..50 {
            get(p, "/?group=a", "");
        }
    }
    let act = v.ok(&["activity", "env", "a"]);
    assert!(act.contains("requests per minute per instance"), "{act}");
    // X-Forwarded-*.
    let h = get(p, "/headers", "X-Forwarded-For: 203.0.113.9\r\n").1;
    assert!(
        h.starts_with("203.0.113.9, 127.0.0.1|http|80|shop.l.test"),
        "{h}"
    );

    // TLS: SNI picks the certificate, HTTP/2 by ALPN, verified against veeps' CA.
    let ca = v.work.join("ca.pem");
    std::fs::write(&ca, v.ok(&["ca", "cert"])).unwrap();
    let ca = ca.to_str().unwrap();
    for (name, want) in [
        ("shop.l.test", "CN=shop.l.test"),
        ("x.admin.l.test", "CN=admin.l.test"),
    ] {
        let resolve = format!("{name}:{ps}:127.0.0.1");
        let url = format!("https://{name}:{ps}/headers");
        let out = Command::new("curl")
            .args([
                "-sv",
                "-m",
                "10",
                "--http2",
                "--cacert",
                ca,
                "--resolve",
                &resolve,
                &url,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {err}");
        assert!(err.contains(want), "{name} did not get {want}:\n{err}");
        assert!(
            err.contains("using HTTP/2") || err.contains("HTTP/2 200"),
            "{name}: not HTTP/2:\n{err}"
        );
        assert!(body.contains("|https|443|"), "{body}");
    }

    // A WebSocket upgrade becomes a tunnel.
    let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: shop.l.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    for msg in [&b"hello"[..], b"over the tunnel"] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
    drop(s);

    // Bad requests get their status; the balancer keeps serving.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_eq!(http(p, &big).0, 431);
    assert_eq!(http(p, "GARBAGE\r\n\r\n").0, 400);
    assert_eq!(get(p, "/products", "").0, 200);
    // Access logs and metrics.
    wait_until("access logs", 10, || {
        v.ok(&[
            "logs",
            "env",
            "lb-pub",
            "--since",
            "5m",
            "--grep",
            "/products",
        ])
        .contains("\"GET /products HTTP/1.1\" 200")
    });
    wait_until("balancer metrics", 30, || {
        v.ok(&["metrics", "list", "env"])
            .contains("lb_healthy_host_count")
    });
}

#[test]
fn health_draining_hot_changes_and_rolling_deploys_lose_no_request() {
    let mut v = start();
    let p = free_port();
    let lb = format!(
        r#"
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "http" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 80
  host_port         = {p}
  default_action {{
    type             = "forward"
    target_group_arn = target_group.a.arn
  }}
}}
resource "load_balancer" "internal" {{
  name            = "internal"
  internal        = true
  subnets         = [subnet.app.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "internal" {{
  load_balancer_arn = load_balancer.internal.arn
  port              = 80
  default_action {{
    type = "fixed-response"
    fixed_response {{
      message_body = "internal"
    }}
  }}
}}
"#
    );
    let cfg = |version: &str, extra: &str| {
        format!(
            "{}{}{}{lb}{extra}",
            base(92),
            tg("a"),
            group("a", version, 2, "a")
        )
    };
    v.write("env/main.hcl", &cfg("v1", ""));
    v.ok(&["apply", "env", "--auto-approve"]);
    wait_until("two healthy targets", 20, || healthy_targets(&v) == 2);

    // An internal balancer answers inside its VPC and not from the host (whatever
    // answers the host at that address, it is not the balancer).
    let st = v.ok(&["state", "show", "env", "load_balancer.internal"]);
    let addr = st
        .lines()
        .find(|l| l.trim_start().starts_with("dns_name"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap()
        .to_string();
    let from_host = curl(&[&format!("http://{addr}/")]).1;
    assert!(
        !from_host.contains("internal"),
        "the host reached the internal balancer at {addr}"
    );
    let insts: serde_json::Value =
        serde_json::from_str(&v.ok(&["instances", "env", "--json"])).unwrap();
    let pid = insts[0]["instances"][0]["pid"]
        .as_u64()
        .unwrap()
        .to_string();
    let ns = Command::new("ip")
        .args(["netns", "identify", &pid])
        .output()
        .unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout).trim().to_string();
    let inside = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{addr}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inside.stdout), "internal");

    // Continuous load for the rest of the test: no request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(vec![]));
    let count = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, failures, count) = (stop.clone(), failures.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = get(p, "/", "");
                    count.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failures.lock().unwrap().push(format!("{status} {body}"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    // A target failing its health check leaves rotation, and comes back.
    let insts: serde_json::Value =
        serde_json::from_str(&v.ok(&["instances", "env", "--json"])).unwrap();
    let sick = insts[0]["instances"][0].clone();
    let sick_id = sick["id"].as_str().unwrap().to_string();
    let in_ns = |path: &str| {
        let pid = sick["pid"].as_u64().unwrap().to_string();
        let ns = Command::new("ip")
            .args(["netns", "identify", &pid])
            .output()
            .unwrap();
        let ns = String::from_utf8_lossy(&ns.stdout).trim().to_string();
        let url = format!("http://{}:8080{path}", sick["address"].as_str().unwrap());
        Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-s", "-m", "5", &url])
            .output()
            .unwrap();
    };
    in_ns("/sick");
    wait_until("the sick target out of rotation", 10, || {
        healthy_targets(&v) == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        assert!(
            !get(p, "/", "").1.contains(&sick_id),
            "a sick target got a request"
        );
    }
    in_ns("/well");
    wait_until("the target back in rotation", 10, || {
        healthy_targets(&v) == 2
    });

    // Draining: a slow request in flight on an instance finishes while it is replaced.
    let slow = std::thread::spawn(move || get(p, "/slow/3", ""));
    std::thread::sleep(Duration::from_millis(300));
    // Hot change of rules under load: a new rule takes effect, nothing drops.
    let rule = r#"
resource "listener_rule" "hello" {
  listener_arn = listener.http.arn
  priority     = 10
  condition {
    path_pattern {
      values = ["/hello"]
    }
  }
  action {
    type = "fixed-response"
    fixed_response {
      message_body = "hello"
    }
  }
}
"#;
    v.write("env/main.hcl", &cfg("v1", rule));
    v.ok(&["apply", "env", "--auto-approve"]);
    assert_eq!(get(p, "/hello", "").1, "hello");

    // A rolling deploy under load: every request answered, all on v2 at the end.
    v.write("env/main.hcl", &cfg("v2", rule));
    v.ok(&["apply", "env", "--auto-approve"]);
    let (status, body) = slow.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "slow done"),
        "the in-flight request was cut"
    );
    wait_until("v2 everywhere", 20, || {
        (0..10).all(|_| get(p, "/", "").1.starts_with("v2 "))
    });

    // kill -9 of one target under load: what it refused or dropped before answering goes
    // to the other, and it leaves rotation at once; no request fails (the load loop counts).
    let insts: serde_json::Value =
        serde_json::from_str(&v.ok(&["instances", "env", "--json"])).unwrap();
    let victim = insts[0]["instances"][0].clone();
    let victim_id = victim["id"].as_str().unwrap().to_string();
    let before = count.load(Ordering::Relaxed);
    Command::new("kill")
        .args(["-9", &victim["pid"].as_u64().unwrap().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let insts = v.ok(&["instances", "env"]);
        let targets = v.ok(&["targets", "env"]);
        if !insts.contains(&victim_id) && targets.matches(" healthy ").count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed target was not replaced:\n{insts}\n{targets}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("requests after the kill", 20, || {
        count.load(Ordering::Relaxed) > before + 30
    });

    // kill -9 of the control plane under load: the balancer's data plane (a process of its
    // own) keeps serving from its last configuration, the instances keep running, and the
    // restarted server adopts both as they are.
    let planes = v.plane_pids();
    assert!(
        !planes.is_empty() && planes.iter().all(|p| !p.is_empty()),
        "{planes:?}"
    );
    let before = count.load(Ordering::Relaxed);
    v.kill9();
    wait_until("requests while the control plane is down", 20, || {
        count.load(Ordering::Relaxed) > before + 50
    });
    v.boot();
    wait_until("both targets healthy after the restart", 20, || {
        v.ok(&["targets", "env"]).matches(" healthy ").count() == 2
    });
    assert_eq!(
        v.plane_pids(),
        planes,
        "the data plane was restarted, not adopted"
    );
    // An upgrade: the server comes back as another build; the data plane hands its
    // listening sockets to a process of that build and the old one drains.
    v.kill9();
    v.next_build();
    v.boot();
    wait_until("a data plane of the new build", 20, || {
        let now = v.plane_pids();
        now.len() == planes.len() && now.iter().all(|p| !planes.contains(p) && !p.is_empty())
    });
    let before = count.load(Ordering::Relaxed);
    wait_until("requests after the upgrade", 20, || {
        count.load(Ordering::Relaxed) > before + 50
    });
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let failed = failures.lock().unwrap().clone();
    let n = count.load(Ordering::Relaxed);
    assert!(n > 100, "only {n} requests were made");
    assert!(
        failed.is_empty(),
        "{} of {n} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );

    // kill -9 of the server: at the restart the balancer, its rules and its targets come
    // back by themselves.
    v.kill9();
    v.boot();
    wait_until("the balancer after a restart", 30, || {
        get(p, "/", "").1.starts_with("v2 ")
    });
    assert_eq!(get(p, "/hello", "").1, "hello");
    v.ok(&["plan", "env", "--detailed-exitcode"]);

    // `veeps down`: the server stops everything it started, then itself.
    let planes = v.plane_pids();
    v.ok(&["down"]);
    assert!(v.wait_exit(60), "the server did not exit: {}", v.log());
    for p in planes {
        assert!(
            process_gone(&p),
            "a balancer's data plane ({p}) outlived veeps down"
        );
    }
    let prefix = veeps_net::prefix_for(&v.data);
    for c in ["pids", "memory"] {
        let dir = std::path::Path::new("/sys/fs/cgroup").join(c).join(&prefix);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            assert!(
                procs.trim().is_empty(),
                "an instance outlived veeps down: {procs}"
            );
        }
    }
}

#[test]
fn bad_balancer_declarations_name_their_position() {
    let v = Veeps::start();
    v.write(
        "bad/main.hcl",
        r#"resource "target_group" "t" {
  name = "t"
  port = 70000
  health_check {
    matcher  = "200-1000"
    interval = 5
    timeout  = 10
  }
}
resource "listener" "l" {
  load_balancer_arn = "lb-00000000"
  port              = 443
  protocol          = "HTTPS"
  default_action {
    type = "teleport"
  }
}
resource "listener_rule" "r" {
  listener_arn = "listener-00000000"
  priority     = 0
  condition {
    source_ip {
      values = ["not-a-cidr"]
    }
  }
  action {
    type = "redirect"
    redirect {
      status_code = "HTTP_307"
    }
    authenticate_basic {
      users = {
        "a:b" = "pw"
        empty = ""
        greedy = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
      }
    }
  }
}
resource "certificate" "c" {
  domain_name = "exa mple.test"
}
"#,
    );
    let out = v.expect(&["plan", "bad"], 1);
    for want in [
        "bad/main.hcl:3:10",
        "a port is a whole number",
        "200-1000",
        "less than the interval",
        "needs certificate_arn",
        "\"teleport\" must be forward, redirect or fixed-response",
        "priority is a whole number from 1",
        "not-a-cidr",
        "HTTP_301 or HTTP_302",
        "is not a DNS name",
        "\"a:b\" cannot be a user name",
        "the password of \"empty\" is empty",
        "asks for m=4194304 KiB",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn a_listener_that_cannot_bind_fails_alone() {
    let v = start();
    let octet = 60 + (std::process::id() % 40) as u8;
    // Something else holds the port one listener wants on the host.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let free = free_port();
    v.write(
        "env/main.hcl",
        &format!(
            r#"{base}
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "ok" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 80
  host_port         = {free}
  default_action {{
    type = "fixed-response"
    fixed_response {{
      status_code  = "200"
      message_body = "fine"
    }}
  }}
}}
resource "listener" "busy" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 81
  host_port         = {port}
  default_action {{
    type = "fixed-response"
    fixed_response {{
      status_code  = "200"
      message_body = "never"
    }}
  }}
}}
"#,
            base = base(octet)
        ),
    );
    let out = v.expect(&["apply", "env", "--auto-approve"], 1);
    assert!(
        out.contains("listener.busy") && out.contains(&format!("127.0.0.1:{port}")),
        "{out}"
    );
    assert!(!out.contains("listener.ok: Creation failed"), "{out}");
    assert_eq!(get(free, "/", "").1, "fine");
    // Once the port is free, the next apply starts it.
    drop(busy);
    v.ok(&["apply", "env", "--auto-approve"]);
    assert_eq!(get(port, "/", "").1, "never");
}

#[test]
fn basic_auth_guards_actions_and_a_brute_force_on_it_is_banned() {
    let v = start();
    let p = free_port();
    let cfg = format!(
        r#"{base}{tg}{group}
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "http" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 80
  host_port         = {p}
  default_action {{
    type             = "forward"
    target_group_arn = target_group.a.arn
    authenticate_basic {{
      realm = "staff"
      users = {{ alice = "{alice}" }}
    }}
  }}
}}
resource "listener_rule" "open" {{
  listener_arn = listener.http.arn
  priority     = 1
  condition {{
    path_pattern {{
      values = ["/open"]
    }}
  }}
  action {{
    type = "fixed-response"
    fixed_response {{
      message_body = "open to all"
    }}
  }}
}}
resource "listener_rule" "admin" {{
  listener_arn = listener.http.arn
  priority     = 2
  condition {{
    path_pattern {{
      values = ["/admin*"]
    }}
  }}
  action {{
    type = "fixed-response"
    fixed_response {{
      message_body = "admin area"
    }}
    authenticate_basic {{
      users = {{ root = "another long secret" }}
    }}
  }}
}}
resource "ban_policy" "guard" {{
  name = "guard"
  jail {{
    source    = "lb"
    max_retry = 3
    find_time = 60
    ban_time  = 15
    increment = false
  }}
}}
"#,
        // Declared as a hash: the password itself is in no file.
        alice = veeps_lb::auth::hash_password("anything", "alice", "correct horse battery"),
        base = base(233),
        tg = tg("a"),
        group = group("a", "v1", 1, "a"),
    );
    v.write("env/main.hcl", &cfg);
    let out = v.ok(&["apply", "env", "--auto-approve"]);
    assert!(
        !out.contains("another long secret"),
        "a password in the apply's output:\n{out}"
    );
    wait_until("a healthy target", 30, || healthy_targets(&v) == 1);
    // Passwords are kept as hashes: one declared in the configuration is in no state,
    // plan or balancer file (only in the copy of the configuration itself).
    let st = v.ok(&["state", "show", "env", "listener_rule.admin"]);
    assert!(!st.contains("another long secret"), "{st}");
    for secret in ["correct horse battery", "another long secret"] {
        let found = files_containing(&v.data.join("lb"), secret);
        assert!(found.is_empty(), "{secret:?} is in {found:?}");
    }
    let found = files_containing(&v.data, "correct horse battery");
    assert!(found.is_empty(), "the password is in {found:?}");
    let url = |path: &str| format!("http://127.0.0.1:{p}{path}");
    let ask = |from: &str, path: &str, creds: Option<&str>| -> (u16, String) {
        let u = url(path);
        let mut args = vec!["--interface", from, "--connect-timeout", "1", u.as_str()];
        if let Some(c) = creds {
            args.extend(["-u", c]);
        }
        curl(&args)
    };

    // Asked for, with the realm; the right user passes, and the target learns who but
    // never the password (a client's own claim of a user is dropped).
    let o = Command::new("curl")
        .args(["-s", "-i", "--noproxy", "*", &url("/")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(
        head.contains("www-authenticate: basic realm=\"staff\", charset=\"utf-8\""),
        "{head}"
    );
    let (code, body) = curl(&[
        "-u",
        "alice:correct horse battery",
        "-H",
        "x-veeps-auth-user: mallory",
        &url("/headers"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("|None|alice"), "{body}");
    assert_eq!(ask("127.0.0.1", "/", Some("alice:wrong")).0, 401);
    assert_eq!(
        ask("127.0.0.1", "/", Some("bob:correct horse battery")).0,
        401
    );
    // A rule asks for its own users; a rule without credentials asks for none.
    assert_eq!(
        ask("127.0.0.1", "/admin", Some("alice:correct horse battery")).0,
        401
    );
    assert_eq!(
        ask("127.0.0.1", "/admin/x", Some("root:another long secret")),
        (200, "admin area".into())
    );
    assert_eq!(ask("127.0.0.1", "/open", None), (200, "open to all".into()));

    // Asking without credentials is not a failure: never banned.
    for _ in 0..5 {
        assert_eq!(ask("127.0.0.4", "/", None).0, 401);
    }
    // Three wrong passwords from 127.0.0.2 ban it in the kernel; the host is never banned.
    for _ in 0..3 {
        assert_eq!(ask("127.0.0.2", "/", Some("alice:guess")).0, 401);
        assert_eq!(ask("127.0.0.1", "/", Some("alice:guess")).0, 401);
    }
    let table = format!("{}ban", veeps_net::prefix_for(&v.data));
    let in_set = |addr: &str| {
        let o = Command::new("nft")
            .args(["list", "set", "inet", &table, "ban4"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains(addr)
    };
    wait_until("127.0.0.2 is in the kernel's ban set", 10, || {
        in_set("127.0.0.2")
    });
    assert_eq!(
        ask("127.0.0.2", "/open", None).0,
        0,
        "its packets are dropped"
    );
    assert_eq!(ask("127.0.0.4", "/open", None).0, 200);
    let bans = v.ok(&["bans"]);
    assert!(
        bans.contains("127.0.0.2") && bans.contains("env/guard/lb"),
        "{bans}"
    );
    // Without the kernel's set, the balancer itself closes on the banned address.
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", &table])
        .status();
    wait_until("the balancer refuses 127.0.0.2", 10, || {
        ask("127.0.0.2", "/open", None).0 == 0
    });
    assert_eq!(ask("127.0.0.4", "/open", None).0, 200);
    // Lifted on time, by the balancer too.
    wait_until("the ban of 127.0.0.2 ends", 30, || {
        ask("127.0.0.2", "/open", None).0 == 200
    });
    assert_eq!(
        ask("127.0.0.2", "/admin", Some("root:another long secret")).0,
        200
    );
    let audit = v.ok(&["audit"]);
    assert!(
        audit.contains("banned 127.0.0.2/32 for 15 s by jail env/guard/lb"),
        "{audit}"
    );
}
