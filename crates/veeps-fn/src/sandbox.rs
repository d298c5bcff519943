//! Execution environments as confined processes: each in a network namespace of its own
//! with only loopback (where veeps serves its Runtime API, and relays the AWS endpoint), a
//! cgroup with the function's memory, its own mount namespace (the code read-only at
//! `/var/task`, a private `/tmp` of the function's size, the data directory hidden), the
//! function's own unprivileged user without capabilities, `no_new_privs` and the instances'
//! system-call filter, in a session of its own; in PID, IPC and UTS namespaces of its own,
//! the runtime the child of the namespace's reaper.

use crate::logs::{Log, Sink};
use crate::runtime::{Channel, Invocation};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veeps_sys::cgroup::{Cgroup, Flavor, Limits};
use veeps_sys::confine::{Bind, Confine, Ids};

/// Where the Runtime API listens inside every environment.
pub const RUNTIME_API: &str = "127.0.0.1:9001";
/// Where the code is, inside.
pub const TASK_ROOT: &str = "/var/task";
/// Where a runtime's own files are (the Python runtime interface client), inside.
pub const RUNTIME_DIR: &str = "/var/runtime";
/// Most connections at once from one environment to the AWS endpoint.
const MAX_RELAYED: usize = 64;

/// What one environment runs.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its id (unique in this server's life): log stream, cgroup.
    pub id: String,
    /// The environment (of the function).
    pub env: String,
    /// The function's name.
    pub function: String,
    /// `provided` or `pythonX.Y`.
    pub runtime: String,
    /// The handler (`app.handler`).
    pub handler: String,
    /// MB.
    pub memory_mb: u64,
    /// MB of `/tmp`.
    pub tmp_mb: u64,
    /// The code, on the host.
    pub code: PathBuf,
    /// The runtime's files on the host (Python's interface client), if it needs some.
    pub runtime_dir: Option<PathBuf>,
    /// The function's variables, and the credentials of its role.
    pub vars: BTreeMap<String, String>,
    /// Its user.
    pub ids: Ids,
    /// The AWS endpoint to relay (S3, Lambda), if any.
    pub endpoint: Option<SocketAddr>,
    /// The data directory, hidden from it.
    pub data_dir: PathBuf,
    /// The cgroup prefix.
    pub cgroup_prefix: String,
    /// A VPC endpoint's network namespace to run in (none: one of its own, loopback only).
    pub netns: Option<String>,
    /// The VPC's resolver, for its `/etc/resolv.conf`.
    pub resolver: Option<std::net::Ipv4Addr>,
    /// An image's entrypoint, instead of the runtime's program (relative paths are in
    /// the image, at `/var/task`).
    pub entrypoint: Vec<String>,
}

/// A running environment.
pub struct Running {
    /// Its process (the session leader).
    pub child: tokio::process::Child,
    /// Its cgroup.
    pub cgroup: Cgroup,
    /// Its output.
    pub log: Log,
    /// Events go in here.
    pub tx: tokio::sync::mpsc::Sender<Invocation>,
    /// What the Runtime API and the invoker share.
    pub channel: Arc<Channel>,
    /// The Runtime API's and the relay's tasks.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Kills every process of the environment and stops serving it.
    pub async fn stop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(pid) = self.child.id() {
            veeps_sys::proc::signal_group(pid, libc_sigkill());
        }
        let _ = self.child.kill().await;
        let cg = self.cgroup.clone();
        let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
    }
}

fn libc_sigkill() -> i32 {
    9
}

/// The program and arguments that start `runtime`.
pub fn command_of(runtime: &str, handler: &str) -> Result<(PathBuf, Vec<String>), String> {
    if runtime == "provided" || runtime.starts_with("provided.") {
        return Ok((Path::new(TASK_ROOT).join("bootstrap"), vec![]));
    }
    if let Some(v) = runtime.strip_prefix("python") {
        let python = which(&format!("python{v}")).ok_or_else(|| {
            format!("runtime {runtime}: python{v} is not installed on this machine")
        })?;
        return Ok((
            python,
            vec!["-m".into(), "awslambdaric".into(), handler.into()],
        ));
    }
    Err(format!("unknown runtime {runtime}"))
}

fn which(prog: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
}

/// Where the host keeps what a runtime needs besides the interpreter: the first of
/// `$VEEPS_RUNTIMES/NAME` and `/usr/local/lib/veeps/runtimes/NAME` that exists.
pub fn runtime_files(runtime: &str) -> Option<PathBuf> {
    let mut dirs = vec![];
    if let Ok(d) = std::env::var("VEEPS_RUNTIMES") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("/usr/local/lib/veeps/runtimes"));
    dirs.into_iter()
        .map(|d| d.join(runtime))
        .find(|p| p.is_dir())
}

/// Starts an environment: its namespace with the Runtime API and the relay, its cgroup, and
/// the runtime's process, which connects to the Runtime API when it is ready.
pub async fn start(spec: &Spec, cgroups: &Flavor, sink: Sink) -> std::io::Result<Running> {
    let (program, args) = match spec.entrypoint.split_first() {
        Some((first, rest)) => {
            let p = Path::new(first);
            let program = if p.is_absolute() {
                p.to_path_buf()
            } else {
                Path::new(TASK_ROOT).join(first.trim_start_matches("./"))
            };
            (program, rest.to_vec())
        }
        None => command_of(&spec.runtime, &spec.handler).map_err(std::io::Error::other)?,
    };
    // The mount points, empty on the host (as on Lambda's hosts).
    for d in [TASK_ROOT, RUNTIME_DIR] {
        std::fs::create_dir_all(d)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{d}: {e}")))?;
    }
    let endpoint = spec.endpoint;
    let bind = move || {
        let rt = std::net::TcpListener::bind(RUNTIME_API)?;
        rt.set_nonblocking(true)?;
        let relay = match endpoint {
            Some(e) => {
                let l = std::net::TcpListener::bind(SocketAddr::new(
                    std::net::Ipv4Addr::LOCALHOST.into(),
                    e.port(),
                ))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        Ok::<_, std::io::Error>((rt, relay))
    };
    // The Runtime API and the relay listen on the loopback of the environment's namespace:
    // a VPC endpoint's, or one of its own.
    let (ns, listeners) = match &spec.netns {
        Some(name) => (None, veeps_sys::netns::in_netns(name, bind)?),
        None => {
            let (fd, l) = veeps_sys::netns::isolated(bind)?;
            (Some(Arc::new(fd)), l)
        }
    };
    let (runtime_l, relay_l) = listeners?;
    let (channel, tx) = Channel::new();
    let mut tasks = vec![tokio::spawn(crate::runtime::serve(
        tokio::net::TcpListener::from_std(runtime_l)?,
        channel.clone(),
    ))];
    if let (Some(l), Some(to)) = (relay_l, endpoint) {
        tasks.push(tokio::spawn(relay(
            tokio::net::TcpListener::from_std(l)?,
            to,
        )));
    }
    let cgroup = Cgroup::new(cgroups, &spec.cgroup_prefix, &spec.id);
    let started = (|| {
        cgroup.create(Limits {
            // Lambda's: a whole CPU at 1769 MB, in proportion below and above.
            cpu: (spec.memory_mb as f64 / 1769.0).max(0.1),
            memory: spec.memory_mb.saturating_mul(1024 * 1024),
            pids: 1024,
        })?;
        let mut binds = vec![Bind {
            source: spec.code.clone(),
            target: TASK_ROOT.into(),
            readonly: true,
        }];
        if let Some(d) = &spec.runtime_dir {
            binds.push(Bind {
                source: d.clone(),
                target: RUNTIME_DIR.into(),
                readonly: true,
            });
        }
        // Under /tmp the data directory disappears under the private /tmp anyway.
        let hide = if spec.data_dir.starts_with("/tmp") {
            vec![]
        } else {
            vec![spec.data_dir.clone()]
        };
        if let Some(r) = spec.resolver {
            let conf = spec
                .data_dir
                .join("functions")
                .join("resolv")
                .join(format!("{}.conf", spec.id));
            if let Some(d) = conf.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(
                &conf,
                format!("nameserver {r}\noptions timeout:2 attempts:2\n"),
            )?;
            binds.push(Bind {
                source: conf,
                target: "/etc/resolv.conf".into(),
                readonly: true,
            });
        }
        let c = Confine {
            netns: spec.netns.clone(),
            netns_fd: ns.clone(),
            cgroup_procs: cgroup.procs_files(),
            binds,
            hide,
            private_tmp: Some(spec.tmp_mb),
            chdir: Some(TASK_ROOT.into()),
            session: true,
            new_ipc_uts: true,
            new_pidns: true,
            pid1_reaper: true,
            ..Default::default()
        };
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .envs(&spec.vars)
            .stdin(std::process::Stdio::null());
        let (r, w) = std::io::pipe()?;
        cmd.stdout(w.try_clone()?).stderr(w);
        veeps_sys::confine::confine(&mut cmd, &c)?;
        veeps_sys::confine::drop_privileges(
            &mut cmd,
            Some(spec.ids),
            Arc::new(veeps_sys::seccomp::Filter::instances()),
        );
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn()?;
        // The write ends went with the command.
        drop(cmd);
        let log = Log::start(
            r,
            sink,
            &spec.env,
            &format!("/aws/lambda/{}", spec.function),
            &spec.id,
        )?;
        Ok::<_, std::io::Error>((child, log))
    })();
    match started {
        Ok((child, log)) => Ok(Running {
            channel: {
                *channel.starter.lock().unwrap_or_else(|p| p.into_inner()) = Some(log.starter());
                channel
            },
            child,
            cgroup,
            log,
            tx,
            tasks,
        }),
        Err(e) => {
            for t in &tasks {
                t.abort();
            }
            let cg = cgroup.clone();
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
            Err(e)
        }
    }
}

/// Relays connections made inside the environment to the AWS endpoint on the host.
async fn relay(listener: tokio::net::TcpListener, to: SocketAddr) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_RELAYED));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let connect = tokio::net::TcpStream::connect(to);
            if let Ok(Ok(mut out)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), connect).await
            {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}
