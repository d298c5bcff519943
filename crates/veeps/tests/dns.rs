//! DNS on the real kernel, asked with dig: public zones on the public listener, private
//! zones through each VPC's resolver (in its router namespace), aliases that follow a
//! balancer, failover on a health check, zone transfers, and instances resolving private
//! names. Needs root and dig (Debian dnsutils).

use std::process::Command;
use veeps_testkit::*;

fn dig_at(ns: Option<&str>, server: &str, port: u16, args: &[&str]) -> String {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "dig"]);
            c
        }
        None => Command::new("dig"),
    };
    let out = c
        .arg(format!("@{server}"))
        .args(["-p", &port.to_string(), "+tries=1", "+time=3"])
        .args(args)
        .output()
        .expect("dig (Debian dnsutils)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn dig(v: &Veeps, args: &[&str]) -> String {
    dig_at(None, "127.0.0.1", v.dns_port, args)
}

fn short(v: &Veeps, name: &str, t: &str) -> Vec<String> {
    let mut a: Vec<String> = dig(v, &["+short", name, t])
        .lines()
        .map(String::from)
        .collect();
    a.sort();
    a
}

fn status(out: &str) -> String {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no answer)")
        .to_string()
}

fn serial(v: &Veeps) -> u64 {
    dig(v, &["+short", "example.test", "SOA"])
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The namespace holding a VPC's resolver address.
fn router_ns(v: &Veeps, resolver: &str) -> String {
    let prefix = veeps_net::prefix_for(&v.data);
    let mut found = None;
    wait_until(&format!("the resolver {resolver}"), 30, || {
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for ns in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
        {
            let a = Command::new("ip")
                .args(["-n", ns, "-4", "addr", "show", "dev", "lo"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&a.stdout).contains(&format!("{resolver}/32")) {
                found = Some(ns.to_string());
                return true;
            }
        }
        false
    });
    found.unwrap()
}

/// A resolver upstream of veeps: prints its port, answers every question with an A record
/// 203.0.113.9.
const UPSTREAM: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    q, a = s.recvfrom(4096)
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    head = q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 9])
    s.sendto(head + q[12:end + 5] + answer, a)
"#;

/// The app: GET /resolve/NAME answers the addresses NAME resolves to, from inside the
/// instance (its resolv.conf, its security groups).
const RESOLVER_APP: &str = r#"
import http.server, os, socket
HOST, PORT = os.environ["HOST"], int(os.environ["PORT"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/resolve/"):
            try:
                body = " ".join(sorted({a[4][0] for a in socket.getaddrinfo(self.path[9:], 80, socket.AF_INET)}))
            except Exception as e:
                body = "error: " + str(e)
        else:
            body = "OK"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((HOST, PORT), H).serve_forever()
"#;

fn config(lb_subnet: &str, check_port: u16, extra: &str) -> String {
    format!(
        r#"
{vpc}
resource "subnet" "pub2" {{
  vpc_id     = vpc.v.id
  cidr_block = "10.73.2.0/24"
  tier       = "public"
}}
resource "vpc" "b" {{
  name       = "dnsb"
  cidr_block = "10.72.0.0/16"
}}
resource "security_group" "lb" {{
  vpc_id = vpc.v.id
}}
resource "security_group" "app" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol    = "tcp"
    from_port   = 8080
    to_port     = 8080
    cidr_blocks = ["10.73.0.0/16"]
  }}
}}
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.{lb_subnet}.id]
  security_groups = [security_group.lb.id]
}}
resource "dns_zone" "public" {{
  name           = "example.test"
  allow_transfer = ["127.0.0.1/32"]
}}
resource "dns_zone" "private" {{
  name = "internal.test"
  vpc {{
    vpc_id = vpc.v.id
  }}
}}
resource "dns_record" "www" {{
  zone_id = dns_zone.public.zone_id
  name    = "www"
  type    = "A"
  ttl     = 300
  records = ["192.0.2.10", "192.0.2.11"]
}}
resource "dns_record" "apex" {{
  zone_id = dns_zone.public.zone_id
  name    = "example.test"
  type    = "A"
  alias {{
    name                   = load_balancer.pub.id
    evaluate_target_health = false
  }}
}}
resource "dns_record" "db" {{
  zone_id = dns_zone.private.zone_id
  name    = "db.internal.test"
  type    = "A"
  ttl     = 60
  records = ["10.73.3.50"]
}}
resource "health_check" "primary" {{
  type              = "TCP"
  ip_address        = "127.0.0.1"
  port              = {check_port}
  request_interval  = 1
  failure_threshold = 2
}}
resource "dns_record" "app_primary" {{
  zone_id         = dns_zone.public.zone_id
  name            = "app"
  type            = "A"
  ttl             = 5
  records         = ["192.0.2.1"]
  set_identifier  = "primary"
  health_check_id = health_check.primary.id
  failover_routing_policy {{
    type = "PRIMARY"
  }}
}}
resource "dns_record" "app_secondary" {{
  zone_id        = dns_zone.public.zone_id
  name           = "app"
  type           = "A"
  ttl            = 5
  records        = ["192.0.2.2"]
  set_identifier = "secondary"
  failover_routing_policy {{
    type = "SECONDARY"
  }}
}}
resource "image" "resolver" {{
  name       = "resolver"
  source     = "resolver"
  entrypoint = ["python3", "app.py"]
}}
resource "launch_template" "resolver" {{
  name              = "resolver"
  image_id          = image.resolver.id
  port              = 8080
  health_check_path = "/health"
}}
resource "autoscaling_group" "resolver" {{
  name            = "resolver"
  launch_template = launch_template.resolver.id
  subnets         = [subnet.app.id]
  security_groups = [security_group.app.id]
  min_size        = 1
  max_size        = 1
}}
{extra}
"#,
        vpc = vpc(
            "dnsa",
            73,
            16,
            &[("pub", 1, "public"), ("app", 3, "private-app")]
        )
    )
}

/// Issue "DNS and TLS": authoritative answers per RFC on the public listener, private
/// names only inside their VPC, an alias following its balancer to a new address, failover
/// when a health check fails, transfers to allowed peers only, and instances resolving
/// private names through their VPC's resolver.
#[test]
fn zones_answer_publicly_and_privately_aliases_follow_and_failover_fails_over() {
    require_root("DNS tests");
    assert!(
        Command::new("dig").arg("-v").output().is_ok(),
        "DNS tests need dig (Debian dnsutils)"
    );
    let check = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let check_port = check.local_addr().unwrap().port();
    // An upstream resolver for the names outside veeps' zones: answers every A question
    // with 203.0.113.9.
    let mut upstream = Command::new("python3")
        .args(["-c", UPSTREAM])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up_port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(upstream.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _upstream = Kill(upstream);
    let mut v = Veeps::start_with_env(&[("VEEPS_DNS_UPSTREAM", &format!("127.0.0.1:{up_port}"))]);
    v.write("resolver/app.py", RESOLVER_APP);
    v.write("env/main.hcl", &config("pub", check_port, ""));
    v.ok(&["apply", "env", "--auto-approve"]);

    // Public: authoritative, NXDOMAIN with the SOA, no recursion.
    let out = dig(&v, &["www.example.test", "A"]);
    assert!(out.contains("flags: qr aa"), "{out}");
    assert_eq!(
        short(&v, "www.example.test", "A"),
        ["192.0.2.10", "192.0.2.11"]
    );
    let out = dig(&v, &["nope.example.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(out.contains("SOA"), "{out}");
    let out = dig(&v, &["www.example.test", "AAAA"]);
    assert_eq!(status(&out), "NOERROR", "NODATA: {out}");
    let out = dig(&v, &["example.org", "A"]);
    assert_eq!(status(&out), "REFUSED", "{out}");
    // A private name is nobody's business outside its VPC.
    let out = dig(&v, &["db.internal.test", "A"]);
    assert_eq!(status(&out), "REFUSED", "{out}");
    let out = dig(&v, &["+tcp", "www.example.test", "A"]);
    assert!(out.contains("192.0.2.10"), "over TCP: {out}");

    // The apex alias answers with the balancer's address.
    let first = short(&v, "example.test", "A");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("10.73.1."), "{first:?}");

    // Inside the VPC: the private zone, and the public one beside it.
    let ns_a = router_ns(&v, "10.73.0.2");
    let out = dig_at(
        Some(&ns_a),
        "10.73.0.2",
        53,
        &["+short", "db.internal.test", "A"],
    );
    assert_eq!(out.trim(), "10.73.3.50");
    let out = dig_at(
        Some(&ns_a),
        "10.73.0.2",
        53,
        &["+short", "www.example.test", "A"],
    );
    assert!(out.contains("192.0.2.10"), "{out}");
    // Names outside veeps' zones: a VPC's resolver asks upstream, the public listener
    // never does.
    let out = dig_at(
        Some(&ns_a),
        "10.73.0.2",
        53,
        &["+short", "elsewhere.example", "A"],
    );
    assert_eq!(out.trim(), "203.0.113.9");
    let out = dig(&v, &["elsewhere.example", "A"]);
    assert_eq!(status(&out), "REFUSED", "{out}");
    // Another VPC's resolver does not know it.
    // (the name goes upstream from there, as any name outside its zones).
    let ns_b = router_ns(&v, "10.72.0.2");
    let out = dig_at(
        Some(&ns_b),
        "10.72.0.2",
        53,
        &["+short", "db.internal.test", "A"],
    );
    assert_eq!(out.trim(), "203.0.113.9", "{out}");

    // An instance resolves the private name (its resolv.conf, past its security groups,
    // which allow no egress at all).
    wait_until("the instance answers", 60, || {
        let out = v.ok(&["instances", "env", "--group", "resolver", "--json"]);
        out.contains("InService")
    });
    let g: serde_json::Value =
        serde_json::from_str(&v.ok(&["instances", "env", "--group", "resolver", "--json"]))
            .unwrap();
    let inst = &g[0]["instances"][0];
    let pid = inst["pid"].as_u64().unwrap().to_string();
    let ns = Command::new("ip")
        .args(["netns", "identify", &pid])
        .output()
        .unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout).trim().to_string();
    let url = format!(
        "http://{}:8080/resolve/db.internal.test",
        inst["address"].as_str().unwrap()
    );
    let mut answer = String::new();
    wait_until("the instance resolves db.internal.test", 30, || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-s", "-m", "10", &url])
            .output()
            .unwrap();
        answer = String::from_utf8_lossy(&out.stdout).to_string();
        answer == "10.73.3.50"
    });
    // Its address has a host name both ways, answered by its VPC's resolver itself (the
    // upstream would say 203.0.113.9), and a private range outside the VPC has none.
    let addr = inst["address"].as_str().unwrap();
    let host = format!("ip-{}.ec2.internal.", addr.replace('.', "-"));
    let out = dig_at(Some(&ns_a), "10.73.0.2", 53, &["+short", "-x", addr]);
    assert_eq!(out.trim(), host);
    let out = dig_at(Some(&ns_a), "10.73.0.2", 53, &["+short", &host, "A"]);
    assert_eq!(out.trim(), addr);
    let out = dig_at(Some(&ns_a), "10.73.0.2", 53, &["-x", "192.168.7.7"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    let out = dig_at(Some(&ns_b), "10.72.0.2", 53, &["-x", addr]);
    assert_eq!(status(&out), "NXDOMAIN", "another VPC's resolver: {out}");

    // Transfers: to an allowed peer over TCP; the private zone is not on offer here.
    let out = dig(&v, &["example.test", "AXFR"]);
    assert!(out.contains("192.0.2.11"), "{out}");
    assert!(out.matches("SOA").count() >= 2, "{out}");
    let out = dig(&v, &["internal.test", "AXFR"]);
    assert!(!out.contains("10.73.3.50"), "{out}");

    // Failover: the primary while its check passes, the secondary once it fails.
    assert_eq!(short(&v, "app.example.test", "A"), ["192.0.2.1"]);
    drop(check);
    wait_until("failover to the secondary", 30, || {
        short(&v, "app.example.test", "A") == ["192.0.2.2"]
    });
    let again = std::net::TcpListener::bind(("127.0.0.1", check_port)).unwrap();
    wait_until("back to the primary", 30, || {
        short(&v, "app.example.test", "A") == ["192.0.2.1"]
    });
    drop(again);

    // The balancer moves to another subnet: the alias follows (the record is untouched),
    // and a new record moves the zone's serial on.
    let before = serial(&v);
    v.write(
        "env/main.hcl",
        &config(
            "pub2",
            check_port,
            r#"
resource "dns_record" "txt" {
  zone_id = dns_zone.public.zone_id
  name    = "example.test"
  type    = "TXT"
  ttl     = 300
  records = ["v=spf1 -all"]
}
"#,
        ),
    );
    let out = v.ok(&["apply", "env", "--auto-approve"]);
    assert!(!out.contains("dns_record.apex"), "{out}");
    // The data plane learns the balancer's new address within a second or so (as Route
    // 53's aliases follow their targets without a change to the record).
    wait_until("the alias follows its balancer", 30, || {
        short(&v, "example.test", "A")
            .first()
            .is_some_and(|a| a.starts_with("10.73.2."))
    });
    assert!(serial(&v) > before);
    assert_eq!(short(&v, "example.test", "TXT"), ["\"v=spf1 -all\""]);

    // The data plane outlives the control plane: with the server killed, public and
    // private names still answer, and failover still follows the health check.
    let plane = dns_plane_pid(&v.data).expect("the DNS data plane's pid file");
    wait_until("failover (the check's port is closed)", 30, || {
        short(&v, "app.example.test", "A") == ["192.0.2.2"]
    });
    v.kill9();
    assert_eq!(
        short(&v, "www.example.test", "A"),
        ["192.0.2.10", "192.0.2.11"]
    );
    let out = dig_at(
        Some(&ns_a),
        "10.73.0.2",
        53,
        &["+short", "db.internal.test", "A"],
    );
    assert_eq!(out.trim(), "10.73.3.50");
    let again = std::net::TcpListener::bind(("127.0.0.1", check_port)).unwrap();
    wait_until("back to the primary, with no control plane", 30, || {
        short(&v, "app.example.test", "A") == ["192.0.2.1"]
    });
    // The next start adopts it as it runs.
    v.boot();
    v.ok(&["plan", "env"]);
    assert_eq!(dns_plane_pid(&v.data).as_deref(), Some(plane.as_str()));
    // A data plane killed is started again, and answers as before.
    let _ = Command::new("kill").args(["-9", &plane]).status();
    wait_until("a new DNS data plane", 30, || {
        dns_plane_pid(&v.data).is_some_and(|p| p != plane && !process_gone(&p))
            && short(&v, "www.example.test", "A").len() == 2
    });
    assert_eq!(short(&v, "app.example.test", "A"), ["192.0.2.1"]);
    // Another build of veeps replaces it beside itself: queries asked all along (with
    // a client's usual retries) are all answered.
    let restarted = dns_plane_pid(&v.data).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let (stop, port) = (stop.clone(), v.dns_port);
        std::thread::spawn(move || {
            let (mut asked, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new("dig")
                    .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=3", "+time=2"])
                    .args(["+short", "www.example.test", "A"])
                    .output()
                    .unwrap();
                asked += 1;
                if !String::from_utf8_lossy(&out.stdout).contains("192.0.2.10") {
                    failed += 1;
                }
            }
            (asked, failed)
        })
    };
    v.next_build();
    v.kill9();
    v.boot();
    wait_until("the upgraded DNS data plane", 60, || {
        dns_plane_pid(&v.data).is_some_and(|p| p != restarted) && process_gone(&restarted)
    });
    v.ok(&["plan", "env"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (asked, failed) = asker.join().unwrap();
    assert!(asked > 0);
    assert_eq!(
        failed, 0,
        "{failed} of {asked} queries failed during the upgrade"
    );
    drop(again);
}

#[test]
fn bad_dns_declarations_name_their_position() {
    let v = Veeps::start();
    v.write(
        "env/main.hcl",
        r#"
resource "dns_zone" "z" {
  name = "example.test"
}
resource "dns_record" "bad" {
  zone_id = dns_zone.z.zone_id
  name    = "mx"
  type    = "MX"
  ttl     = 300
  records = ["mail.example.test"]
}
"#,
    );
    let out = v.expect(&["plan", "env"], 1);
    assert!(out.contains("main.hcl:"), "{out}");
    assert!(out.contains("PRIORITY TARGET"), "{out}");
    v.write(
        "env/main.hcl",
        r#"
resource "dns_zone" "z" {
  name = "example.test"
}
resource "dns_record" "a" {
  zone_id = dns_zone.z.zone_id
  name    = "www"
  type    = "A"
  ttl     = 300
  records = ["192.0.2.1"]
}
resource "dns_record" "c" {
  zone_id = dns_zone.z.zone_id
  name    = "www"
  type    = "CNAME"
  ttl     = 300
  records = ["example.test"]
}
"#,
    );
    let out = v.expect(&["apply", "env", "--auto-approve"], 1);
    assert!(out.contains("conflicts"), "{out}");
}
