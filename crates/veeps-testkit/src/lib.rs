//! What veeps' scenario tests share: a real `veeps server` on a free port in a temporary data
//! directory ([`Veeps`]), [`wait_until`] a condition holds, [`curl`], and the network
//! fixture most scenarios start from ([`vpc`]).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `veeps` binary under test: `VEEPS_BIN`, or the one cargo built beside the test
/// executable (`target/debug/veeps` for `target/debug/deps/TEST-HASH`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("VEEPS_BIN") {
            return b.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/PROFILE");
        let b = dir.join("veeps");
        assert!(
            b.exists(),
            "no veeps binary at {} (build it: cargo build -p veeps)",
            b.display()
        );
        b.to_string_lossy().into_owned()
    })
}

pub struct Veeps {
    child: Option<Child>,
    pub port: u16,
    /// The S3 API's port.
    pub s3_port: u16,
    /// The bucket websites' port.
    pub web_port: u16,
    /// The public DNS listener's port (UDP and TCP, 127.0.0.1).
    pub dns_port: u16,
    /// The CDN edge's ports (HTTP, HTTPS; 127.0.0.1).
    pub cdn_port: u16,
    pub cdn_tls_port: u16,
    pub data: PathBuf,
    pub work: PathBuf,
    _tmp: tempfile::TempDir,
    env: Vec<(String, String)>,
    args: Vec<String>,
    /// A command the server runs under (like `prlimit --nofile=1024:1024`).
    pub wrap: Vec<String>,
    /// The program the server runs (another build of veeps for an upgrade).
    pub bin: PathBuf,
}

/// Spawns `cmd`, again while its program is "busy": a program copied just now (another
/// build) stays busy until every process forked meanwhile by another thread of the test,
/// which inherited the copy's write descriptor, has called `exec`.
pub fn spawn_retrying(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) && Instant::now() < deadline => {
                std::thread::yield_now();
            }
            r => return r.unwrap(),
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Veeps {
    pub fn start() -> Veeps {
        Veeps::start_with_env(&[])
    }

    /// Starts a server with extra environment variables (for it alone).
    pub fn start_with_env(env: &[(&str, &str)]) -> Veeps {
        Veeps::start_with(env, &[])
    }

    /// Starts a server with extra environment variables and arguments.
    pub fn start_with(env: &[(&str, &str)], args: &[&str]) -> Veeps {
        Veeps::start_wrapped(&[], env, args)
    }

    /// Starts a server as the unprivileged user `nobody` (its directories given to it).
    pub fn start_as_nobody() -> Veeps {
        Veeps::start_prepared(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ],
            &[],
            &[],
            |tmp| {
                let _ = Command::new("chown")
                    .args(["-R", "65534:65534"])
                    .arg(tmp)
                    .status();
            },
        )
    }

    /// Starts a server under a wrapping command (like `prlimit --nofile=256:256`).
    pub fn start_wrapped(wrap: &[&str], env: &[(&str, &str)], args: &[&str]) -> Veeps {
        Veeps::start_prepared(wrap, env, args, |_| {})
    }

    fn start_prepared(
        wrap: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        prepare: impl FnOnce(&std::path::Path),
    ) -> Veeps {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let mut v = Veeps {
            child: None,
            port: free_port(),
            s3_port: free_port(),
            web_port: free_port(),
            dns_port: free_port(),
            cdn_port: free_port(),
            cdn_tls_port: free_port(),
            data,
            work,
            _tmp: tmp,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            wrap: wrap.iter().map(|a| a.to_string()).collect(),
            bin: PathBuf::from(bin()),
        };
        prepare(v._tmp.path());
        v.boot();
        v
    }

    /// Starts the server and waits until it listens. A first start whose ports another
    /// process took meanwhile (free ports are only free when asked) retries on new ones.
    pub fn boot(&mut self) {
        record_run(&self.data);
        let first = !self.data.join("root.token").exists();
        for attempt in 0..4 {
            let before = self.log().len();
            self.spawn_server();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let log = self.log();
                let new = log.get(before..).unwrap_or_default().to_string();
                let exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                let taken = new.contains("cannot listen");
                if (exited || taken) && first && attempt < 3 {
                    self.kill9();
                    self.port = free_port();
                    self.s3_port = free_port();
                    self.web_port = free_port();
                    self.dns_port = free_port();
                    self.cdn_port = free_port();
                    self.cdn_tls_port = free_port();
                    break;
                }
                assert!(!exited, "server exited at start: {new}");
                if new.contains("API listening")
                    && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                {
                    return;
                }
                assert!(Instant::now() < deadline, "server did not start: {new}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("server did not start on any free ports: {}", self.log());
    }

    fn spawn_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("server.log"))
            .unwrap();
        let mut cmd = match self.wrap.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--s3-listen", &format!("127.0.0.1:{}", self.s3_port)])
            .args([
                "--s3-website-listen",
                &format!("127.0.0.1:{}", self.web_port),
            ])
            .args(["--dns-listen", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["--cdn-listen", &format!("127.0.0.1:{}", self.cdn_port)])
            .args([
                "--cdn-tls-listen",
                &format!("127.0.0.1:{}", self.cdn_tls_port),
            ])
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.data)
            .current_dir(&self.work)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(spawn_retrying(&mut cmd));
    }

    /// Sets (or with `None` removes) an environment variable of the server's next boot.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    /// Waits for the server process to exit by itself (a failpoint); true when it did.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("server.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(&self.work)
            .env("VEEPS_ADDR", format!("http://127.0.0.1:{}", self.port))
            .env("VEEPS_DATA_DIR", &self.data)
            .env("XDG_CACHE_HOME", self.work.join(".cache"))
            .env("VEEPS_SESSION", self.work.join(".session.json"))
            .env_remove("VEEPS_TOKEN")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run veeps")
    }

    /// Runs and asserts the exit code; returns stdout and stderr together.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "veeps {args:?} exited {:?}:\n{text}",
            o.status.code()
        );
        text
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn state(&self, env: &str) -> String {
        self.ok(&["state", "list", env])
    }
}

impl Veeps {
    /// Starts a server whose process lacks CAP_NET_ADMIN (the unisolated fallback).
    pub fn start_without_net_admin() -> Veeps {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let mut v = Veeps {
            child: None,
            port: free_port(),
            s3_port: free_port(),
            web_port: free_port(),
            dns_port: free_port(),
            cdn_port: free_port(),
            cdn_tls_port: free_port(),
            data,
            work,
            _tmp: tmp,
            env: vec![],
            args: vec![],
            wrap: vec![],
            bin: PathBuf::from(bin()),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(v.work.join("server.log"))
            .unwrap();
        let child = Command::new("setpriv")
            .args([
                "--bounding-set=-net_admin",
                "--inh-caps=-net_admin",
                bin(),
                "server",
                "--listen",
                &format!("127.0.0.1:{}", v.port),
                "--s3-listen",
                &format!("127.0.0.1:{}", v.s3_port),
                "--s3-website-listen",
                &format!("127.0.0.1:{}", v.web_port),
                "--dns-listen",
                &format!("127.0.0.1:{}", v.dns_port),
                "--cdn-listen",
                &format!("127.0.0.1:{}", v.cdn_port),
                "--cdn-tls-listen",
                &format!("127.0.0.1:{}", v.cdn_tls_port),
            ])
            .arg("--data-dir")
            .arg(&v.data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start veeps server under setpriv");
        v.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", v.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                v.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    }

    /// The pids of the balancers' data planes, by balancer.
    pub fn plane_pids(&self) -> Vec<String> {
        plane_pids(&self.data)
    }

    /// Another build of veeps for the next boot (a copy of this one: a new file, as an
    /// upgrade installs).
    pub fn next_build(&mut self) {
        let copy = self
            .work
            .join(format!("veeps-build-{}", std::process::id()));
        std::fs::copy(bin(), &copy).unwrap();
        self.bin = copy;
    }

    /// Removes whatever this server created on the host (even after a failed test).
    pub fn cleanup_host(&self) {
        cleanup_host_for(&self.data);
    }
}

/// Where each test process notes the data directories of its servers, so that a later
/// test process removes what a killed one left on the host (namespaces, links, nftables
/// tables, cgroups): a note names the process (pid and start time) and the data directory.
const RUNS: &str = "/run/veeps-testkit";

/// Notes that this process runs a server with data directory `data`; the first time, it
/// first cleans up after test processes that ended without doing so themselves.
fn record_run(data: &std::path::Path) {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_dead_runs);
    let me = std::process::id();
    let started = veeps_sys::proc::start_time(me).unwrap_or(0);
    let _ = std::fs::create_dir_all(RUNS);
    let note = std::path::Path::new(RUNS).join(veeps_net::prefix_for(data));
    let _ = std::fs::write(note, format!("{me} {started}\n{}", data.display()));
}

/// Cleans up after every noted server whose test process is gone.
pub fn sweep_dead_runs() {
    for e in std::fs::read_dir(RUNS).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let (who, data) = text.split_once('\n').unwrap_or((&text, ""));
        let mut who = who.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(started))) = (who.next(), who.next()) else {
            continue;
        };
        let alive = veeps_sys::proc::start_time(pid as u32) == Some(started);
        if alive || data.is_empty() {
            continue;
        }
        let prefix = e.file_name().to_string_lossy().into_owned();
        cleanup_prefix(std::path::Path::new(data), &prefix);
        let _ = std::fs::remove_file(e.path());
    }
}

/// Removes whatever a server with data directory `data` created on the host.
pub fn cleanup_host_for(data: &std::path::Path) {
    let prefix = veeps_net::prefix_for(data);
    cleanup_prefix(data, &prefix);
    let _ = std::fs::remove_file(std::path::Path::new(RUNS).join(&prefix));
}

/// Removes the host objects named with `prefix`, and the data planes of `data`.
fn cleanup_prefix(data: &std::path::Path, prefix: &str) {
    // Data planes (balancers', DNS's) outlive the server: stop them first.
    let planes = std::fs::read_dir(data.join("lb"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([data.join("dns"), data.join("cdn")]);
    for dir in planes {
        // Only the process the file names, told by its start time from a later one that
        // reuses the pid (a killed run's planes may be long gone).
        if let Some((pid, _)) = veeps_sys::proc::live_pidfile(&dir.join("pid")) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    {
        let sh = format!(
            "for n in $(ip netns list | cut -d' ' -f1 | grep '^{prefix}'); do ip netns del $n; done; \
             for l in $(ip -o link | awk -F': ' '{{print $2}}' | cut -d@ -f1 | grep '^{prefix}'); do ip link del $l; done; \
             nft delete table inet {prefix} 2>/dev/null; nft delete table inet {prefix}ban 2>/dev/null; \
             for c in /sys/fs/cgroup/*/{prefix} /sys/fs/cgroup/{prefix} /sys/fs/cgroup/*/{prefix}-db /sys/fs/cgroup/{prefix}-db /sys/fs/cgroup/*/{prefix}fn /sys/fs/cgroup/{prefix}fn; do [ -d $c ] || continue; \
               for i in $c/*/; do [ -d $i ] || continue; for p in $(cat $i/cgroup.procs 2>/dev/null); do kill -9 $p 2>/dev/null; done; done; \
               sleep 0.1; for i in $c/*/; do rmdir $i 2>/dev/null; done; rmdir $c 2>/dev/null; done; \
             for d in /run/veeps-{prefix}/*/*; do umount $d 2>/dev/null; done; rm -rf /run/veeps-{prefix}; true"
        );
        let _ = Command::new("sh").arg("-c").arg(sh).status();
    }
}

impl Drop for Veeps {
    fn drop(&mut self) {
        self.kill9();
        self.cleanup_host();
    }
}

/// The balancers' data-plane processes of a data directory (`DATA/lb/*/pid`), sorted.
pub fn plane_pids(data: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(data.join("lb"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let t = std::fs::read_to_string(e.path().join("pid")).unwrap_or_default();
            t.split_whitespace().next().unwrap_or("").to_string()
        })
        .collect();
    out.sort();
    out
}

/// The DNS data plane's pid (`DATA/dns/pid`), if it wrote one.
pub fn dns_plane_pid(data: &std::path::Path) -> Option<String> {
    let t = std::fs::read_to_string(data.join("dns").join("pid")).ok()?;
    t.split_whitespace().next().map(str::to_string)
}

/// Whether process `pid` is gone (or a zombie left for whoever adopted it to reap).
pub fn process_gone(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    matches!(state, None | Some("Z") | Some("X"))
}

/// Fails (naming what needs it) unless the tests run as root.
pub fn require_root(what: &str) {
    let out = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{what} need root (namespaces, cgroups, nftables); run them as root"
    );
}

/// Polls `f` every 100 ms until it holds; fails after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `curl -s` with `args` (no proxy, 10 s at most): the status code (0 when there was no
/// answer) and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "-m",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `resource "vpc" "v"` named `name` with range `10.OCTET.0.0/PREFIX`, and one subnet per
/// `(resource name, third octet, tier)`: `10.OCTET.THIRD.0/24`.
pub fn vpc(name: &str, octet: u8, prefix: u8, subnets: &[(&str, u8, &str)]) -> String {
    let mut s = format!(
        "resource \"vpc\" \"v\" {{\n  name       = \"{name}\"\n  cidr_block = \"10.{octet}.0.0/{prefix}\"\n}}\n"
    );
    for (res, third, tier) in subnets {
        s.push_str(&format!(
            "resource \"subnet\" \"{res}\" {{\n  vpc_id     = vpc.v.id\n  cidr_block = \"10.{octet}.{third}.0/24\"\n  tier       = \"{tier}\"\n}}\n"
        ));
    }
    s
}

/// What makes the AWS CLI take `--payload` as it is: version 2 reads it as base64 unless
/// told otherwise; version 1 takes it as it is.
pub fn raw_payloads() -> &'static [&'static str] {
    static V2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let v2 = *V2.get_or_init(|| {
        let o = Command::new("aws").arg("--version").output().unwrap();
        let all = [o.stdout, o.stderr].concat();
        String::from_utf8_lossy(&all).contains("aws-cli/2")
    });
    if v2 {
        &["--cli-binary-format", "raw-in-base64-out"]
    } else {
        &[]
    }
}

/// The AWS CLI against a server's S3 API, with a key pair (the root's from [`Aws::new`]).
pub struct Aws {
    /// The S3 endpoint.
    pub endpoint: String,
    /// The access key id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl Aws {
    /// With the root key pair.
    pub fn new(v: &Veeps) -> Aws {
        assert!(
            Command::new("aws").arg("--version").output().is_ok(),
            "S3 tests need the AWS CLI (Debian package awscli)"
        );
        Aws::root_of(&v.data, v.port, v.s3_port)
    }

    /// With the root key pair of the server whose API listens on `api_port` (root token
    /// in `data`), and S3 on `s3_port`.
    pub fn root_of(data: &std::path::Path, api_port: u16, s3_port: u16) -> Aws {
        let token = std::fs::read_to_string(data.join("root.token")).unwrap();
        let (code, body) = curl(&[
            "-H",
            &format!("authorization: Bearer {}", token.trim()),
            &format!("http://127.0.0.1:{api_port}/v1/s3/credentials"),
        ]);
        assert_eq!(code, 200, "{body}");
        let c: serde_json::Value = serde_json::from_str(&body).unwrap();
        Aws {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            id: c["access_key_id"].as_str().unwrap().into(),
            secret: c["secret_access_key"].as_str().unwrap().into(),
        }
    }

    /// Runs `aws --endpoint-url S3 ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(&[], args)
    }

    /// Runs `aws --endpoint-url S3 ARGS` with more environment variables (like
    /// `AWS_MAX_ATTEMPTS`).
    pub fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new("aws")
            .envs(env.iter().copied())
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Runs and asserts failure with `code` (like `AccessDenied`).
    pub fn fails(&self, args: &[&str], code: &str) {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(code),
            "aws {args:?} should fail with {code}: {err}"
        );
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    if b.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push(p.display().to_string());
                    }
                }
            }
        }
    }
    found
}
