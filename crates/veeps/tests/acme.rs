//! ACME certificates against Pebble (Debian `pebble`), the ACME test server: DNS-01 answered
//! by veeps' own zone (Pebble asks veeps' DNS listener), HTTP-01 answered by a balancer's
//! plain-HTTP listener, a wildcard, renewal at two thirds
//! of the lifetime, and a listener serving the renewed certificate while a connection made
//! before stays up. Needs root (the balancer's namespace), pebble, openssl and python3.

use std::process::{Child, Command, Stdio};
use veeps_testkit::*;

/// Pebble, stopped when dropped.
struct Pebble {
    child: Child,
    dir: String,
}

impl Pebble {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.dir)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(dir: &std::path::Path, cmd: &str) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts Pebble with a TLS certificate from a CA of the test's own (`ca.pem` in `dir`),
/// certificates valid `validity` seconds, resolving names through `dns_port` and asking
/// HTTP-01 answers on `http_port`.
fn pebble(dir: &std::path::Path, dns_port: u16, http_port: u16, validity: u64) -> Pebble {
    sh(dir, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=pebble-test-ca 2>/dev/null");
    sh(dir, "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out req.csr -subj /CN=localhost 2>/dev/null");
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(dir, "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null");
    let (port, mgmt) = (free_port(), free_port());
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }
    });
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("pebble (Debian package pebble)");
    let p = Pebble {
        child,
        dir: port.to_string(),
    };
    wait_until("pebble listens", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}

/// Keeps one TLS connection to 127.0.0.1:PORT (SNI NAME) and asks on it every half
/// second; meanwhile opens new connections until one gets another certificate. Prints
/// "renewed" once the old connection has answered after that.
const WATCH: &str = r#"
import socket, ssl, sys, time, hashlib
port, name = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def connect():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=name)
    return s, s.getpeercert(binary_form=True)
def ask(s):
    s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise Exception("the old connection closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body
old, first = connect()
assert b"Pebble" in first, "not a Pebble certificate"
print("first", hashlib.sha256(first).hexdigest()[:12], flush=True)
deadline = time.time() + 120
while time.time() < deadline:
    ask(old)
    s, cert = connect()
    s.close()
    if cert != first:
        assert b"Pebble" in cert
        ask(old)
        print("renewed", hashlib.sha256(cert).hexdigest()[:12], flush=True)
        sys.exit(0)
    time.sleep(0.5)
print("no renewal within 120 s", flush=True)
sys.exit(1)
"#;

/// Issue "DNS and TLS": a wildcard certificate from an ACME CA through DNS-01 answered by
/// veeps' zone and another through HTTP-01 answered by the balancer's port 80, served by
/// the balancer, renewed at two thirds of their lifetime and swapped into the listener
/// with no dropped connection.
#[test]
fn acme_certificates_issue_by_dns_and_http_and_renew_into_live_listeners() {
    require_root("ACME tests");
    for tool in ["pebble", "openssl", "python3"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "ACME tests need {tool}"
        );
    }
    let v = Veeps::start_with_env(&[("VEEPS_ACME_CHECK_SECS", "1")]);
    let dir = v.work.join("pebble");
    std::fs::create_dir_all(&dir).unwrap();
    let (https, http, site) = (free_port(), free_port(), free_port());
    let pebble = pebble(&dir, v.dns_port, http, 45);
    v.write(
        "env/main.hcl",
        &format!(
            r#"
{vpc}
resource "security_group" "lb" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol    = "tcp"
    from_port   = 80
    to_port     = 8443
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "dns_record" "site" {{
  zone_id = dns_zone.z.zone_id
  name    = "site.acme.test"
  type    = "A"
  ttl     = 5
  records = ["127.0.0.1"]
}}
resource "listener" "http" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 80
  protocol          = "HTTP"
  host_port         = {http}
  default_action {{
    type = "fixed-response"
    fixed_response {{
      message_body = "plain"
    }}
  }}
}}
resource "certificate" "site" {{
  domain_name       = "site.acme.test"
  validation_method = "acme_http"
  acme_directory    = "{url}"
  acme_ca_file      = "{ca}"
  depends_on        = [listener.http, dns_record.site]
}}
resource "listener" "site" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 8443
  protocol          = "HTTPS"
  certificate_arn   = certificate.site.arn
  host_port         = {site}
  default_action {{
    type = "fixed-response"
    fixed_response {{
      message_body = "site"
    }}
  }}
}}
resource "dns_zone" "z" {{
  name = "acme.test"
}}
resource "certificate" "wild" {{
  domain_name               = "*.acme.test"
  subject_alternative_names = ["acme.test"]
  validation_method         = "acme_dns"
  acme_directory            = "{url}"
  acme_ca_file              = "{ca}"
  acme_email                = "ops@acme.test"
}}
resource "load_balancer" "pub" {{
  name            = "pub"
  subnets         = [subnet.pub.id]
  security_groups = [security_group.lb.id]
}}
resource "listener" "https" {{
  load_balancer_arn = load_balancer.pub.arn
  port              = 443
  protocol          = "HTTPS"
  certificate_arn   = certificate.wild.arn
  host_port         = {https}
  default_action {{
    type = "fixed-response"
    fixed_response {{
      message_body = "ok"
    }}
  }}
}}
"#,
            vpc = vpc("acme", 71, 16, &[("pub", 1, "public")]),
            url = pebble.url(),
            ca = dir.join("ca.pem").display(),
        ),
    );
    let out = v.ok(&["apply", "env", "--auto-approve"]);
    assert!(out.contains("certificate.wild"), "{out}");
    // HTTP-01: Pebble fetched the token from the balancer's port 80 (its name in veeps'
    // zone); the certificate is Pebble's, for that name, and the token is gone after.
    let served = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{site} -servername site.acme.test </dev/null 2>/dev/null | openssl x509 -noout -issuer -ext subjectAltName"
        ))
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&served.stdout);
    assert!(
        served.contains("Pebble") && served.contains("DNS:site.acme.test"),
        "{served}"
    );
    let url = format!("http://127.0.0.1:{http}/.well-known/acme-challenge/anything");
    let (code, body) = curl(&[&url]);
    assert_eq!(
        (code, body.as_str()),
        (200, "plain"),
        "a token no order holds"
    );
    // The challenge answers are gone once the order is done.
    let txt = Command::new("dig")
        .args(["@127.0.0.1", "-p", &v.dns_port.to_string(), "+short"])
        .args(["_acme-challenge.acme.test", "TXT"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    assert!(txt.trim().is_empty(), "{txt}");
    // Served for any name under the wildcard; renewed while a connection stays up.
    std::fs::write(dir.join("watch.py"), WATCH).unwrap();
    let out = Command::new("python3")
        .arg(dir.join("watch.py"))
        .args([&https.to_string(), "www.acme.test"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("renewed"),
        "{said}{}\n--- pebble ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
    );
    // The account key is sealed with veeps' KMS, never kept in the clear.
    let accounts: Vec<_> = std::fs::read_dir(v.data.join("pki").join("acme"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert!(accounts[0].to_string_lossy().ends_with(".sealed"));
    let sealed = std::fs::read(&accounts[0]).unwrap();
    assert!(
        serde_json::from_slice::<serde_json::Value>(&sealed).is_err()
            && !String::from_utf8_lossy(&sealed).contains("key_pkcs8"),
        "the account key is in the clear"
    );
    // The state follows the renewed certificate; nothing to change.
    let plan = v.ok(&["plan", "env"]);
    assert!(plan.contains("No changes."), "{plan}");
    let metrics = v.ok(&["metrics", "list", "system"]);
    assert!(metrics.contains("certificate_expiry_seconds"), "{metrics}");
}

#[test]
fn acme_declarations_are_checked_before_anything_is_ordered() {
    let v = Veeps::start();
    v.write(
        "env/main.hcl",
        r#"
resource "certificate" "c" {
  domain_name       = "*.example.test"
  validation_method = "acme_http"
}
"#,
    );
    let out = v.expect(&["plan", "env"], 1);
    assert!(out.contains("main.hcl:"), "{out}");
    assert!(out.contains("use acme_dns"), "{out}");
    // No zone of veeps holds the name: refused with what to do.
    v.write(
        "env/main.hcl",
        r#"
resource "certificate" "c" {
  domain_name       = "www.nowhere.test"
  validation_method = "acme_dns"
  acme_directory    = "https://127.0.0.1:1/dir"
}
"#,
    );
    let out = v.expect(&["apply", "env", "--auto-approve"], 1);
    assert!(out.contains("ACME") || out.contains("dns_zone"), "{out}");
}
