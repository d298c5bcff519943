//! PostgreSQL clusters, with real PostgreSQL 15: endpoints, TLS, security groups, failover
//! under a stream of inserts, switchover, point-in-time restore, bad parameters.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veeps_testkit::*;

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const PASSWORD: &str = "correct-horse-battery";

fn config(octet: u8) -> String {
    format!(
        r#"
{vpc}
resource "security_group" "app" {{
  vpc_id = vpc.v.id
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "security_group" "other" {{
  vpc_id = vpc.v.id
  egress {{
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}
resource "security_group" "db" {{
  vpc_id = vpc.v.id
  ingress {{
    protocol        = "tcp"
    from_port       = 5432
    to_port         = 5432
    security_groups = [security_group.app.id]
  }}
}}
resource "network_endpoint" "app" {{
  subnet_id          = subnet.app.id
  security_group_ids = [security_group.app.id]
}}
resource "network_endpoint" "outsider" {{
  subnet_id          = subnet.app.id
  security_group_ids = [security_group.other.id]
}}
resource "db_cluster" "main" {{
  name                 = "main"
  instance_count       = 3
  subnets              = [subnet.db.id]
  security_groups      = [security_group.db.id]
  database_name        = "app"
  master_username      = "app"
  master_password      = "{PASSWORD}"
  synchronous_replicas = 1
  memory               = 256
  parameters = {{
    work_mem = "8MB"
  }}
}}
output "app_ns" {{
  value = network_endpoint.app.namespace
}}
output "outsider_ns" {{
  value = network_endpoint.outsider.namespace
}}
output "endpoint" {{
  value = db_cluster.main.endpoint
}}
output "reader" {{
  value = db_cluster.main.reader_endpoint
}}
"#,
        vpc = vpc(
            "dbtest",
            octet,
            16,
            &[("db", 1, "private-persistence"), ("app", 2, "private-app")]
        )
    )
}

/// `psql` in a namespace against `host`, TLS verified against veeps' CA.
fn psql(ns: &str, host: &str, ca: &str, sql: &str) -> Output {
    psql_within(None, ns, host, ca, sql)
}

/// [`psql`] cut off after `secs` seconds, if given (a commit may wait for ever).
fn psql_within(secs: Option<u32>, ns: &str, host: &str, ca: &str, sql: &str) -> Output {
    let mut c = match secs {
        Some(s) => {
            let mut c = Command::new("timeout");
            c.args([&s.to_string(), "ip"]);
            c
        }
        None => Command::new("ip"),
    };
    c.args(["netns", "exec", ns, PSQL])
        .arg(format!(
            "host={host} user=app dbname=app sslmode=verify-full sslrootcert={ca} connect_timeout=5"
        ))
        .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap()
}

/// `veeps db failover` run into the server's failpoint: the server is gone after it.
fn switchover_into_failpoint(v: &mut Veeps) {
    let r = v.run(&["db", "failover", "env", "main"]);
    assert!(
        !r.status.success(),
        "the failpoint should have stopped the server"
    );
    assert!(v.wait_exit(30), "the server did not die at the failpoint");
}

/// A two-node cluster applied, with its table `t` holding `rows`: the client namespace,
/// the writer and reader endpoints, and the CA's file.
fn two_nodes(v: &Veeps, octet: u8, rows: &str) -> (String, String, String, String) {
    let cfg = config(octet).replace("instance_count       = 3", "instance_count       = 2");
    v.write("env/main.hcl", &cfg);
    v.ok(&["apply", "env", "--auto-approve"]);
    let (app, endpoint, reader) = (
        output(v, "app_ns"),
        output(v, "endpoint"),
        output(v, "reader"),
    );
    let ca = v.work.join("ca.pem");
    std::fs::write(&ca, v.ok(&["ca", "cert"])).unwrap();
    let ca = ca.to_str().unwrap().to_string();
    let w = psql(
        &app,
        &endpoint,
        &ca,
        &format!("CREATE TABLE t (id int); INSERT INTO t VALUES {rows}"),
    );
    assert!(w.status.success(), "{}", text(&w));
    (app, endpoint, reader, ca)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn output(v: &Veeps, name: &str) -> String {
    let out = v.ok(&["output", "env", name]);
    out.trim().trim_matches('"').to_string()
}

fn writer_pid(v: &Veeps, cluster: &str) -> (String, u64) {
    let s: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "db", "status", "env", cluster])).unwrap();
    let w = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "writer")
        .unwrap()
        .clone();
    (
        w["name"].as_str().unwrap().to_string(),
        w["pid"].as_u64().unwrap_or(0),
    )
}

/// What a commit waits for: `on`, `off` or `relaxed`.
fn synchronous(v: &Veeps, cluster: &str) -> String {
    let s: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "db", "status", "env", cluster])).unwrap();
    s["synchronous"].as_str().unwrap_or_default().to_string()
}

fn all_healthy(v: &Veeps, cluster: &str) -> bool {
    let s: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "db", "status", "env", cluster])).unwrap();
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["healthy"] == true)
}

#[test]
fn clusters_replicate_fail_over_without_loss_and_restore_to_a_point_in_time() {
    require_root("database clusters");
    let v = Veeps::start();
    let octet = 100 + (std::process::id() % 100) as u8;
    v.write("env/main.hcl", &config(octet));
    v.ok(&["apply", "env", "--auto-approve"]);
    let (app, outsider) = (output(&v, "app_ns"), output(&v, "outsider_ns"));
    let (endpoint, reader) = (output(&v, "endpoint"), output(&v, "reader"));
    let ca = v.work.join("ca.pem");
    std::fs::write(&ca, v.ok(&["ca", "cert"])).unwrap();
    let ca = ca.to_str().unwrap();

    // Writes through the writer endpoint are read back through the reader endpoint, over
    // TLS verified against veeps' CA; a reader cannot write.
    let w = psql(
        &app,
        &endpoint,
        ca,
        "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1); SHOW work_mem",
    );
    assert!(w.status.success(), "{}", text(&w));
    assert!(text(&w).contains("8MB"), "parameters reach postgresql.conf");
    wait_until("the row on a reader", 20, || {
        text(&psql(&app, &reader, ca, "SELECT count(*) FROM t")).trim() == "1"
    });
    let r = psql(
        &app,
        &reader,
        ca,
        "SELECT pg_is_in_recovery(); INSERT INTO t VALUES (2)",
    );
    assert!(
        !r.status.success() && text(&r).contains("read-only"),
        "{}",
        text(&r)
    );
    // The reader endpoint spreads connections over both readers.
    let mut servers = std::collections::HashSet::new();
    for _ in 0..8 {
        servers.insert(text(&psql(&app, &reader, ca, "SELECT inet_server_addr()")));
    }
    assert_eq!(servers.len(), 2, "{servers:?}");
    // Outside the allowed security groups: nothing gets through; without TLS: refused.
    let o = psql(&outsider, &endpoint, ca, "SELECT 1");
    assert!(!o.status.success(), "an outsider connected: {}", text(&o));
    let plain = Command::new("ip")
        .args(["netns", "exec", &app, PSQL])
        .arg(format!(
            "host={endpoint} user=app dbname=app sslmode=disable connect_timeout=5"
        ))
        .args(["-Atc", "SELECT 1"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        !plain.status.success() && text(&plain).contains("no encryption"),
        "{}",
        text(&plain)
    );

    // kill -9 of the writer under a steady stream of inserts: the endpoint takes writes
    // again, and with a synchronous replica every acknowledged insert survives.
    // (id, when the insert began, when it was acknowledged)
    let acked = Arc::new(Mutex::new(Vec::<(u32, Instant, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, app, endpoint, ca) = (
            acked.clone(),
            stop.clone(),
            app.clone(),
            endpoint.clone(),
            ca.to_string(),
        );
        std::thread::spawn(move || {
            let mut i = 1000;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let began = Instant::now();
                let o = psql(&app, &endpoint, &ca, &format!("INSERT INTO t VALUES ({i})"));
                if o.status.success() {
                    acked.lock().unwrap().push((i, began, Instant::now()));
                }
            }
        })
    };
    wait_until("inserts flowing", 30, || acked.lock().unwrap().len() >= 20);
    let (old, pid) = writer_pid(&v, "main");
    assert!(pid > 0);
    let killed = Instant::now();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until("inserts after the failover", 60, || {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.1 > killed)
            .count()
            >= 20
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let first_after = acked
        .iter()
        .find(|a| a.1 > killed)
        .map(|a| a.2.duration_since(killed))
        .unwrap();
    eprintln!(
        "failover: first committed insert {:.2}s after kill -9",
        first_after.as_secs_f64()
    );
    let present = text(&psql(
        &app,
        &endpoint,
        ca,
        "SELECT id FROM t WHERE id > 1000",
    ));
    let present: std::collections::HashSet<u32> = present
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let lost: Vec<u32> = acked
        .iter()
        .map(|a| a.0)
        .filter(|i| !present.contains(i))
        .collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    let (new, _) = writer_pid(&v, "main");
    assert_ne!(new, old);
    // The old writer returns as a healthy reader.
    wait_until("the old writer back as a reader", 90, || {
        all_healthy(&v, "main")
    });
    let events = v.ok(&["db", "events", "env", "main"]);
    assert!(
        events.contains("failover") && events.contains("rejoined"),
        "{events}"
    );
    // The new writer confirmed commits alone while the old one was rebuilt; once a
    // reader caught up, commits wait for one again.
    wait_until("synchronous commits restored", 60, || {
        synchronous(&v, "main") == "on"
    });
    let sync = psql(&app, &endpoint, ca, "SHOW synchronous_standby_names");
    assert!(text(&sync).contains("ANY 1"), "{}", text(&sync));

    // A planned switchover loses nothing.
    let before = text(&psql(&app, &endpoint, ca, "SELECT count(*) FROM t"));
    v.ok(&["db", "failover", "env", "main", "--to", &old]);
    assert_eq!(writer_pid(&v, "main").0, old);
    let ins = psql(
        &app,
        &endpoint,
        ca,
        "INSERT INTO t VALUES (5); SELECT count(*) FROM t",
    );
    assert!(ins.status.success(), "{}", text(&ins));
    assert_eq!(
        text(&ins).trim().parse::<u64>().unwrap(),
        before.trim().parse::<u64>().unwrap() + 1
    );

    // The server killed outright: its nodes are adopted at the next start, data intact.
    let mut v = v;
    v.kill9();
    v.boot();
    wait_until("the cluster back after a server kill -9", 90, || {
        all_healthy(&v, "main")
    });
    let again = psql(
        &app,
        &endpoint,
        ca,
        "INSERT INTO t VALUES (6); SELECT count(*) FROM t",
    );
    assert!(again.status.success(), "{}", text(&again));

    // Point-in-time restore to a moment between two inserts yields exactly the first.
    v.ok(&["db", "snapshot", "env", "main", "before-pitr"]);
    assert!(v
        .ok(&["db", "backups", "env", "main"])
        .contains("before-pitr"));
    let a = psql(
        &app,
        &endpoint,
        ca,
        "CREATE TABLE pitr (v text); INSERT INTO pitr VALUES ('first')",
    );
    assert!(a.status.success(), "{}", text(&a));
    std::thread::sleep(Duration::from_millis(1500));
    let t = text(&psql(
        &app,
        &endpoint,
        ca,
        "SELECT to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let b = psql(&app, &endpoint, ca, "INSERT INTO pitr VALUES ('second')");
    assert!(b.status.success(), "{}", text(&b));
    v.ok(&[
        "db",
        "restore",
        "env",
        "main",
        "--to-time",
        t.trim(),
        "--new-cluster",
        "restored",
    ]);
    let got = v.ok(&[
        "db",
        "psql",
        "env",
        "restored",
        "--",
        "-Atc",
        "SELECT v FROM pitr",
    ]);
    assert_eq!(got.trim(), "first");
    v.ok(&["db", "delete", "env", "restored"]);

    // Resizing in place: one reader fewer, and a setting that needs a restart applied by
    // a rolling restart with a switchover; the data stays.
    let smaller = config(octet)
        .replace("instance_count       = 3", "instance_count       = 2")
        .replace(
            "work_mem = \"8MB\"",
            "work_mem = \"8MB\"\n    max_connections = \"120\"",
        );
    v.write("env/main.hcl", &smaller);
    v.ok(&["apply", "env", "--auto-approve"]);
    let s: serde_json::Value =
        serde_json::from_str(&v.ok(&["--json", "db", "status", "env", "main"])).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 2, "{s}");
    let m = psql(
        &app,
        &endpoint,
        ca,
        "SHOW max_connections; SELECT count(*) > 20 FROM t",
    );
    assert_eq!(text(&m).trim(), "120\nt", "{}", text(&m));
    assert!(v
        .ok(&["db", "events", "env", "main"])
        .contains("rolling restart"));

    // Bad parameters are refused at plan with where and why.
    v.write(
        "bad/main.hcl",
        "resource \"db_cluster\" \"x\" {\n  name            = \"x\"\n  subnets         = [\"subnet-1\"]\n  master_password = \"long-enough\"\n  parameters = {\n    wrok_mem = \"8MB\"\n  }\n}\n",
    );
    let out = v.expect(&["plan", "bad"], 1);
    assert!(
        out.contains("bad/main.hcl:") && out.contains("did you mean work_mem"),
        "{out}"
    );

    v.ok(&["destroy", "env", "--auto-approve"]);
    assert!(!v.run(&["db", "status", "env", "main"]).status.success());
}

/// Issue "Trust what exists", item 22: a failover promoted the new writer before
/// recording the new roles, so a crash in between restarted the cluster with the old
/// roles over a promoted node. The roles are recorded first: the server dies right before
/// the promotion (a failpoint), and after the restart the target is the writer, every
/// committed row is there, and writes go through.
#[test]
fn a_crash_in_the_middle_of_a_switchover_finishes_it_at_restart() {
    require_root("database clusters");
    let mut v = Veeps::start_with_env(&[("VEEPS_FAILPOINT", "db-before-promote")]);
    let octet = 10 + (std::process::id() % 80) as u8;
    let (app, endpoint, _, ca) = two_nodes(&v, octet, "(1), (2)");
    let ca = ca.as_str();
    wait_until("both nodes healthy", 60, || all_healthy(&v, "main"));
    let (old, _) = writer_pid(&v, "main");
    switchover_into_failpoint(&mut v);
    // Fenced and not yet promoted: the endpoint's address is parked where nothing
    // listens, so a client is refused at once (not left to send its SYN again a second
    // later, or for minutes).
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &app, "python3", "-c"])
        .arg(format!(
            "import socket\ntry:\n    socket.create_connection(('{endpoint}', 5432), 10)\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)"
        ))
        .output()
        .unwrap();
    assert_eq!(
        text(&out).trim(),
        "ConnectionRefusedError",
        "{}",
        text(&out)
    );
    v.set_env("VEEPS_FAILPOINT", None);
    v.boot();
    wait_until("the cluster back, healthy", 120, || all_healthy(&v, "main"));
    let (new, _) = writer_pid(&v, "main");
    assert_ne!(
        new,
        old,
        "the switchover was not finished: {}\n{}",
        v.ok(&["db", "events", "env", "main"]),
        v.log()
    );
    wait_until("writes through the endpoint", 60, || {
        psql(&app, &endpoint, ca, "INSERT INTO t VALUES (3)")
            .status
            .success()
    });
    let rows = text(&psql(&app, &endpoint, ca, "SELECT count(*) FROM t"));
    assert!(rows.trim().parse::<u32>().unwrap() >= 3, "{rows}");
    v.ok(&["destroy", "env", "--auto-approve"]);
}

/// With one synchronous reader of two nodes, the promoted writer has nobody to wait for
/// until the old writer is rebuilt: it confirms commits alone meanwhile (writes go on),
/// and waits for a reader again once one has caught up. The server dies right before
/// the rebuild (a failpoint), so the writer runs alone for as long as the test wants.
#[test]
fn the_new_writer_takes_writes_while_the_old_one_rejoins() {
    require_root("database clusters");
    let mut v = Veeps::start_with_env(&[("VEEPS_FAILPOINT", "db-before-rejoin")]);
    let octet = 90 + (std::process::id() % 10) as u8;
    let (app, endpoint, _, ca) = two_nodes(&v, octet, "(1)");
    let ca = ca.as_str();
    wait_until(
        "both nodes healthy, commits waiting for the reader",
        60,
        || all_healthy(&v, "main") && synchronous(&v, "main") == "on",
    );
    let (old, _) = writer_pid(&v, "main");
    switchover_into_failpoint(&mut v);
    // Promoted, the old writer not rebuilt: a commit does not wait for it (it would
    // wait forever; psql is cut off well before).
    let ins = psql_within(
        Some(30),
        &app,
        &endpoint,
        ca,
        "INSERT INTO t VALUES (2); SELECT count(*) FROM t",
    );
    assert!(ins.status.success(), "{}", text(&ins));
    assert_eq!(text(&ins).trim(), "2");
    v.set_env("VEEPS_FAILPOINT", None);
    v.boot();
    // Relaxed until the old writer streams again and has everything; then on.
    wait_until(
        "the old writer back and synchronous commits restored",
        120,
        || all_healthy(&v, "main") && synchronous(&v, "main") == "on",
    );
    assert_ne!(writer_pid(&v, "main").0, old);
    let sync = psql(&app, &endpoint, ca, "SHOW synchronous_standby_names");
    assert!(text(&sync).contains("ANY 1"), "{}", text(&sync));
    let w = psql(&app, &endpoint, ca, "INSERT INTO t VALUES (3)");
    assert!(w.status.success(), "{}", text(&w));
    v.ok(&["destroy", "env", "--auto-approve"]);
}

/// A reader that cannot follow the writer (here its replication slot is dropped, as a slot
/// invalidated for holding too much WAL would be) keeps running in recovery, serving ever
/// staler reads: after ten seconds without replicating it is copied afresh. Meanwhile the
/// writer confirms commits alone rather than wait for it, and waits again once it is back.
#[test]
fn a_reader_that_stops_replicating_is_copied_afresh() {
    require_root("database clusters");
    let v = Veeps::start();
    let octet = 200 + (std::process::id() % 50) as u8;
    let (app, endpoint, reader, ca) = two_nodes(&v, octet, "(1)");
    let ca = ca.as_str();
    wait_until(
        "both nodes healthy, commits waiting for the reader",
        60,
        || all_healthy(&v, "main") && synchronous(&v, "main") == "on",
    );
    // Its slot gone (its walsender ended first: an active slot cannot be dropped).
    wait_until("the reader's slot dropped", 30, || {
        let o = psql(
            &app,
            &endpoint,
            ca,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_replication; \
             SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active; \
             SELECT count(*) FROM pg_replication_slots",
        );
        text(&o).trim().ends_with('0')
    });
    // Writes go on (the writer stops waiting for a reader that does not replicate).
    let mut ins = None;
    wait_until("a write while the reader is lost", 30, || {
        let o = psql_within(Some(10), &app, &endpoint, ca, "INSERT INTO t VALUES (2)");
        let ok = o.status.success();
        ins = Some(o);
        ok
    });
    assert!(ins.unwrap().status.success());
    // Copied afresh, it has the write it missed, and commits wait for it again.
    wait_until("the reader rebuilt and caught up", 120, || {
        synchronous(&v, "main") == "on"
            && all_healthy(&v, "main")
            && text(&psql(&app, &reader, ca, "SELECT count(*) FROM t")).trim() == "2"
    });
    let events = v.ok(&["db", "events", "env", "main"]);
    assert!(events.contains("has not replicated"), "{events}");
    v.ok(&["destroy", "env", "--auto-approve"]);
}
