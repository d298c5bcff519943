//! Networking on the real kernel: namespaces, veth, bridges and nftables, driven through
//! `veeps apply`. Needs root (CI runs as root); each test uses its own address ranges.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;
use veeps_testkit::*;

const PORTS: [u16; 5] = [22, 80, 5432, 6000, 8080];

/// One cell of the reachability matrix: what, from (a namespace, or the host), to, port,
/// which probe must answer, and whether it should.
type Cell<'a> = (&'a str, Option<String>, String, u16, &'a str, bool);

fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "network tests need root (CAP_NET_ADMIN) and the `ip` and `nft` tools; run them as root"
    );
    for tool in ["ip", "nft"] {
        assert!(
            Command::new(tool)
                .arg("-V")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
                || Command::new(tool).arg("--version").output().is_ok(),
            "{tool} is not installed"
        );
    }
}

/// Listens on every probe port inside namespace `ns`; each connection is answered with `name`.
fn listen_in(ns: &str, name: &str) {
    for port in PORTS {
        let name = name.to_string();
        let l = veeps_net::sys::in_netns(ns, move || TcpListener::bind(("0.0.0.0", port)))
            .expect("enter namespace")
            .expect("bind probe port");
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(name.as_bytes());
            }
        });
    }
}

/// True if a connection from `ns` (or the host) to `addr` reaches the probe named `want`.
/// Anything else (refused, dropped, or something in between answering) is unreachable.
fn reaches(ns: Option<&str>, addr: &str, port: u16, want: &str) -> bool {
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let attempt = move || -> String {
        let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_millis(700)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(700)));
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf
    };
    let got = match ns {
        Some(ns) => veeps_net::sys::in_netns(ns, attempt).unwrap_or_default(),
        None => attempt(),
    };
    got == want
}

fn host_snapshot(prefix: &str) -> String {
    let sh = format!("ip netns list | grep '^{prefix}' ; ip -o link | grep '{prefix}' ; nft list tables | grep '{prefix}' ; ip route | grep '{prefix}' ; true");
    String::from_utf8_lossy(
        &Command::new("sh")
            .arg("-c")
            .arg(sh)
            .output()
            .unwrap()
            .stdout,
    )
    .to_string()
}

fn matrix_config(o: u8) -> String {
    // Three VPCs: a (three tiers), b (peered with a), c (not peered).
    let (a, b, c) = (
        format!("10.{o}"),
        format!("10.{}", o + 1),
        format!("10.{}", o + 2),
    );
    format!(
        r#"
environment "net" {{}}

resource "vpc" "a" {{
  cidr_block = "{a}.0.0/16"
  name       = "a"
}}
resource "vpc" "b" {{
  cidr_block = "{b}.0.0/16"
  name       = "b"
}}
resource "vpc" "c" {{
  cidr_block = "{c}.0.0/16"
  name       = "c"
}}
resource "vpc_peering" "ab" {{
  vpc_id      = vpc.a.id
  peer_vpc_id = vpc.b.id
}}

locals {{
  tiers = {{ public = "{a}.0.0/24", "private-app" = "{a}.16.0/24", "private-persistence" = "{a}.32.0/24" }}
}}
resource "subnet" "a" {{
  for_each   = local.tiers
  vpc_id     = vpc.a.id
  cidr_block = each.value
  tier       = each.key
}}
resource "subnet" "b" {{
  vpc_id     = vpc.b.id
  cidr_block = "{b}.16.0/24"
  tier       = "private-app"
}}
resource "subnet" "c" {{
  vpc_id     = vpc.c.id
  cidr_block = "{c}.0.0/24"
  tier       = "public"
}}

resource "security_group" "web" {{
  vpc_id = vpc.a.id
  ingress {{
    protocol    = "tcp"
    from_port   = 80
    to_port     = 80
    cidr_blocks = ["0.0.0.0/0"]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "security_group" "app" {{
  vpc_id = vpc.a.id
  ingress {{
    protocol    = "tcp"
    from_port   = 8080
    to_port     = 8080
    cidr_blocks = ["{a}.0.0/16", "{b}.0.0/16"]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "security_group" "db" {{
  vpc_id = vpc.a.id
  ingress {{
    protocol        = "tcp"
    from_port       = 5432
    to_port         = 5432
    security_groups = [security_group.app.id]
  }}
  ingress {{
    protocol        = "tcp"
    from_port       = 6000
    to_port         = 6000
    security_groups = [security_group.app.id]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "network_acl" "db" {{
  vpc_id     = vpc.a.id
  subnet_ids = [subnet.a["private-persistence"].id]
  ingress {{
    rule_no    = 100
    action     = "deny"
    protocol   = "tcp"
    from_port  = 6000
    to_port    = 6000
    cidr_block = "{a}.16.0/24"
  }}
  ingress {{
    rule_no    = 200
    action     = "allow"
    protocol   = "all"
    cidr_block = "0.0.0.0/0"
  }}
  egress {{
    rule_no    = 100
    action     = "allow"
    protocol   = "all"
    cidr_block = "0.0.0.0/0"
  }}
}}
resource "security_group" "b" {{
  vpc_id = vpc.b.id
  ingress {{
    protocol    = "tcp"
    from_port   = 8080
    to_port     = 8080
    cidr_blocks = ["{a}.0.0/16"]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "security_group" "c" {{
  vpc_id = vpc.c.id
  ingress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}

resource "network_endpoint" "pub" {{
  subnet_id          = subnet.a["public"].id
  security_group_ids = [security_group.web.id]
}}
resource "network_endpoint" "app" {{
  subnet_id          = subnet.a["private-app"].id
  security_group_ids = [security_group.app.id]
}}
resource "network_endpoint" "db" {{
  subnet_id          = subnet.a["private-persistence"].id
  security_group_ids = [security_group.db.id]
}}
resource "network_endpoint" "b" {{
  subnet_id          = subnet.b.id
  security_group_ids = [security_group.b.id]
}}
resource "network_endpoint" "c" {{
  subnet_id          = subnet.c.id
  security_group_ids = [security_group.c.id]
}}

output "addresses" {{
  value = {{ for k, e in {{ pub = network_endpoint.pub, app = network_endpoint.app, db = network_endpoint.db, b = network_endpoint.b, c = network_endpoint.c }} : k => e.address }}
}}
output "namespaces" {{
  value = {{ for k, e in {{ pub = network_endpoint.pub, app = network_endpoint.app, db = network_endpoint.db, b = network_endpoint.b, c = network_endpoint.c }} : k => e.namespace }}
}}
"#
    )
}

#[test]
fn reachability_matrix_destroy_and_restart() {
    require_root();
    let mut v = Veeps::start();
    let prefix = veeps_net::prefix_for(&v.data);
    let before = host_snapshot(&prefix);
    v.write("net/main.hcl", &matrix_config(81));
    let out = v.ok(&["apply", "net", "--auto-approve"]);
    assert!(out.contains("Apply complete!"), "{out}");
    let j: serde_json::Value = serde_json::from_str(&v.ok(&["output", "net", "--json"])).unwrap();
    let addr = |k: &str| j["addresses"]["value"][k].as_str().unwrap().to_string();
    let ns = |k: &str| j["namespaces"]["value"][k].as_str().unwrap().to_string();
    for k in ["pub", "app", "db", "b", "c"] {
        listen_in(&ns(k), k);
    }
    // "The internet": a listener on the host, reached through the uplink.
    let host_l = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in host_l.incoming().flatten() {
            let _ = c.write_all(b"host");
        }
    });
    let host_ip = {
        let o = Command::new("ip")
            .args(["-4", "route", "get", "1.1.1.1"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.split_whitespace()
            .skip_while(|w| *w != "src")
            .nth(1)
            .unwrap()
            .to_string()
    };
    let cases: Vec<Cell> = vec![
        (
            "host reaches a public endpoint's allowed port",
            None,
            addr("pub"),
            80,
            "pub",
            true,
        ),
        (
            "host cannot reach a public endpoint's denied port",
            None,
            addr("pub"),
            22,
            "pub",
            false,
        ),
        (
            "host cannot reach private-app",
            None,
            addr("app"),
            8080,
            "app",
            false,
        ),
        (
            "host cannot reach private-persistence",
            None,
            addr("db"),
            5432,
            "db",
            false,
        ),
        (
            "private-app reaches persistence on an allowed port",
            Some(ns("app")),
            addr("db"),
            5432,
            "db",
            true,
        ),
        (
            "private-app cannot reach persistence on another port",
            Some(ns("app")),
            addr("db"),
            22,
            "db",
            false,
        ),
        (
            "public is not in the app group, so not admitted to the database",
            Some(ns("pub")),
            addr("db"),
            5432,
            "db",
            false,
        ),
        (
            "an ACL deny wins over a security group allow",
            Some(ns("app")),
            addr("db"),
            6000,
            "db",
            false,
        ),
        (
            "public reaches private-app in its VPC",
            Some(ns("pub")),
            addr("app"),
            8080,
            "app",
            true,
        ),
        (
            "private-app has NAT egress",
            Some(ns("app")),
            host_ip.clone(),
            host_port,
            "host",
            true,
        ),
        (
            "persistence has no egress",
            Some(ns("db")),
            host_ip.clone(),
            host_port,
            "host",
            false,
        ),
        (
            "peered VPCs reach each other (a to b)",
            Some(ns("app")),
            addr("b"),
            8080,
            "b",
            true,
        ),
        (
            "peered VPCs reach each other (b to a)",
            Some(ns("b")),
            addr("app"),
            8080,
            "app",
            true,
        ),
        (
            "unpeered VPCs do not (a to c)",
            Some(ns("app")),
            addr("c"),
            8080,
            "c",
            false,
        ),
        (
            "unpeered VPCs do not, even to a public subnet (c to a)",
            Some(ns("c")),
            addr("pub"),
            80,
            "pub",
            false,
        ),
    ];
    let mut wrong = vec![];
    for (what, from, to, port, want, expect) in &cases {
        let got = reaches(from.as_deref(), to, *port, want);
        if got != *expect {
            wrong.push(format!(
                "{what}: expected {}, got {}",
                if *expect { "reachable" } else { "unreachable" },
                if got { "reachable" } else { "unreachable" }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "reachability matrix:\n{}",
        wrong.join("\n")
    );

    // Restart adoption: the server dies, one endpoint's namespace disappears; the restarted
    // server recreates it with the same address and adopts the rest.
    let app_before = addr("app");
    v.kill9();
    let db_ns = ns("db");
    assert!(Command::new("ip")
        .args(["netns", "del", &db_ns])
        .status()
        .unwrap()
        .success());
    v.boot();
    let j2: serde_json::Value = serde_json::from_str(&v.ok(&["output", "net", "--json"])).unwrap();
    assert_eq!(
        j2["addresses"]["value"]["app"].as_str().unwrap(),
        app_before
    );
    let listed = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        listed.contains(&db_ns),
        "the restarted server did not recreate {db_ns}:\n{listed}\n{}",
        v.log()
    );
    listen_in(&db_ns, "db");
    assert!(
        reaches(Some(&ns("app")), &addr("db"), 5432, "db"),
        "the recreated endpoint is reachable with its rules"
    );
    assert!(
        !reaches(Some(&ns("app")), &addr("db"), 6000, "db"),
        "the recreated subnet keeps its ACL"
    );
    v.expect(&["plan", "net", "--detailed-exitcode"], 0);

    // A new rule applies in place: the VPC and endpoints stay.
    let widened = matrix_config(81).replace(
        "from_port   = 80\n    to_port     = 80",
        "from_port   = 22\n    to_port     = 80",
    );
    v.write("net/main.hcl", &widened);
    let plan = v.ok(&["plan", "net"]);
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{plan}"
    );
    v.ok(&["apply", "net", "--auto-approve"]);
    assert!(
        reaches(None, &addr("pub"), 22, "pub"),
        "the widened rule admits port 22"
    );

    // Destroy leaves no trace.
    let out = v.ok(&["destroy", "net", "--auto-approve"]);
    assert!(out.contains("Apply complete!"), "{out}");
    assert_eq!(
        host_snapshot(&prefix),
        before,
        "destroy left something behind"
    );
}

#[test]
fn cidr_and_overlap_errors_name_their_position() {
    require_root();
    let v = Veeps::start();
    let base =
        "resource \"vpc\" \"a\" {\n  cidr_block = \"10.91.0.0/16\"\n  name       = \"a\"\n}\n";
    let cases: Vec<(String, &str, &str)> = vec![
        ("resource \"vpc\" \"x\" {\n  cidr_block = \"10.300.0.0/16\"\n  name       = \"x\"\n}\n".into(), "e/main.hcl:2:16", "not an IPv4 CIDR block"),
        (format!("{base}resource \"subnet\" \"s\" {{\n  vpc_id     = vpc.a.id\n  cidr_block = \"10.92.0.0/24\"\n  tier       = \"public\"\n}}\n"), "e/main.hcl:7:16", "is not inside its VPC vpc.a"),
        (
            format!("{base}resource \"subnet\" \"s\" {{\n  vpc_id     = vpc.a.id\n  cidr_block = \"10.91.0.0/24\"\n  tier       = \"public\"\n}}\nresource \"subnet\" \"t\" {{\n  vpc_id     = vpc.a.id\n  cidr_block = \"10.91.0.128/25\"\n  tier       = \"public\"\n}}\n"),
            "e/main.hcl:12:16",
            "overlaps",
        ),
        (
            format!("{base}resource \"vpc\" \"b\" {{\n  cidr_block = \"10.91.128.0/17\"\n  name       = \"b\"\n}}\nresource \"vpc_peering\" \"p\" {{\n  vpc_id      = vpc.a.id\n  peer_vpc_id = vpc.b.id\n}}\n"),
            "e/main.hcl:11:17",
            "their ranges overlap",
        ),
        (
            format!("{base}resource \"security_group\" \"g\" {{\n  vpc_id = vpc.a.id\n  ingress {{\n    protocol  = \"tcp\"\n    from_port = 90\n    to_port   = 80\n  }}\n}}\n"),
            "e/main.hcl:5:1",
            "impossible",
        ),
        (format!("{base}resource \"subnet\" \"s\" {{\n  vpc_id     = vpc.a.id\n  cidr_block = \"10.91.0.0/24\"\n  tier       = \"dmz\"\n}}\n"), "e/main.hcl:8:16", "is not a tier"),
    ];
    for (cfg, pos, msg) in cases {
        v.write("e/main.hcl", &cfg);
        let out = v.expect(&["plan", "e"], 1);
        assert!(
            out.contains(pos) && out.contains(msg),
            "expected {pos} and {msg:?} for\n{cfg}\ngot:\n{out}"
        );
    }
    assert!(v.ok(&["state", "list", "e"]).trim().is_empty());
}

#[test]
fn without_net_admin_veeps_says_so_and_falls_back_to_loopback() {
    require_root();
    let v = Veeps::start_without_net_admin();
    assert!(v.log().contains("NETWORK ISOLATION IS OFF"), "{}", v.log());
    v.write(
        "e/main.hcl",
        "resource \"vpc\" \"a\" {\n  cidr_block = \"10.95.0.0/16\"\n  name       = \"a\"\n}\nresource \"subnet\" \"s\" {\n  vpc_id     = vpc.a.id\n  cidr_block = \"10.95.0.0/24\"\n  tier       = \"public\"\n}\nresource \"network_endpoint\" \"e\" {\n  count     = 2\n  subnet_id = subnet.s.id\n}\noutput \"addr\" {\n  value = network_endpoint.e[*].address\n}\n",
    );
    v.ok(&["apply", "e", "--auto-approve"]);
    let j: serde_json::Value = serde_json::from_str(&v.ok(&["output", "e", "--json"])).unwrap();
    let addrs: Vec<String> = j["addr"]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(addrs.iter().all(|a| a.starts_with("127.")), "{addrs:?}");
    assert_ne!(addrs[0], addrs[1]);
    // The addresses work: a listener on one is reachable.
    let l = TcpListener::bind((addrs[0].as_str(), 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(TcpStream::connect((addrs[0].as_str(), port)).is_ok());
    assert!(
        host_snapshot(&veeps_net::prefix_for(&v.data))
            .trim()
            .is_empty(),
        "nothing is created on the host"
    );
    v.ok(&["destroy", "e", "--auto-approve"]);
}

/// What a killed test process left on the host (a namespace, an nftables table) goes when
/// the next test process sweeps: its note names a process that no longer runs.
#[test]
fn a_killed_test_runs_host_objects_are_swept_by_the_next() {
    require_root();
    let prefix = format!("vzz{:02x}", std::process::id() % 256);
    let sh = |c: &str| Command::new("sh").arg("-c").arg(c).status().unwrap();
    sh(&format!(
        "ip netns add {prefix}-gone && nft add table inet {prefix}"
    ));
    let listed = || {
        let o = Command::new("sh")
            .arg("-c")
            .arg("ip netns list; nft list tables")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains(&prefix)
    };
    assert!(listed());
    std::fs::create_dir_all("/run/veeps-testkit").unwrap();
    let note = format!("/run/veeps-testkit/{prefix}");
    // A pid past the kernel's largest: that process is gone.
    std::fs::write(&note, "999999999 1\n/nonexistent/veeps-test-data").unwrap();
    sweep_dead_runs();
    assert!(!listed(), "{prefix} is still on the host");
    assert!(!std::path::Path::new(&note).exists());
}
