//! PostgreSQL's programs, run the way veeps runs every node: as the unprivileged system
//! user `veeps-pg`, inside the node's network namespace, with the node's directory
//! bind-mounted at [`MOUNT`] in a mount namespace of its own (so the data directory may sit
//! under directories that user cannot traverse, and every node sees the same paths).

use std::path::{Path, PathBuf};

/// Where PostgreSQL 15's programs are.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The system user nodes run as.
pub const USER: &str = "veeps-pg";
/// Where a node's directory appears to its processes.
pub const MOUNT: &str = "/run/veeps-pg";

/// The node's data directory, as its processes see it.
pub const PGDATA: &str = "/run/veeps-pg/pgdata";
/// The socket directory, as its processes see it.
pub const SOCKETS: &str = "/run/veeps-pg/run";
/// TLS files, as its processes see them.
pub const TLS: &str = "/run/veeps-pg/tls";
/// Archived WAL waiting to go to object storage, as its processes see it.
pub const SPOOL: &str = "/run/veeps-pg/spool";

/// The uid and gid of [`USER`], creating the user (a system account without a shell) when
/// missing.
pub fn ensure_user() -> Result<(u32, u32), String> {
    if let Some(ids) = lookup_user() {
        return Ok(ids);
    }
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            USER,
        ])
        .output()
        .map_err(|e| format!("cannot run useradd to create the {USER} user: {e}"))?;
    if !out.status.success() && lookup_user().is_none() {
        return Err(format!(
            "cannot create the {USER} system user (PostgreSQL refuses to run as root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    lookup_user().ok_or_else(|| format!("the {USER} user is missing after useradd"))
}

fn lookup_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == USER).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Makes `path` (and everything under it) belong to the node user.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    veeps_sys::confine::chown_tree(path, veeps_sys::confine::Ids { uid, gid })
}

/// A command running `program` (one of PostgreSQL's, or an absolute path) for the node
/// whose directory is `node_dir`, in network namespace `netns` (the host's when empty).
pub fn command(
    node_dir: &Path,
    netns: &str,
    ids: (u32, u32),
    program: &str,
) -> std::io::Result<tokio::process::Command> {
    let program = if program.starts_with('/') {
        PathBuf::from(program)
    } else {
        Path::new(BIN).join(program)
    };
    let c = confined(
        std::process::Command::new(program),
        node_dir,
        netns,
        ids,
        vec![],
        vec![],
        false,
    )?;
    Ok(tokio::process::Command::from(c))
}

/// Where a node's server keeps its output (the shim's spool), as its processes see it.
pub const LOG: &str = "/run/veeps-pg/log";

/// The command running a node's server, `postgres`, held by a shim (`shim_exe shim`, bound
/// into the node's mount namespace) in a session of its own and in the node's cgroup: it outlives the control plane,
/// and its output is spooled in the node's `log` directory.
pub fn server_command(
    node_dir: &Path,
    netns: &str,
    ids: (u32, u32),
    shim_exe: &Path,
    cgroup_procs: Vec<PathBuf>,
) -> std::io::Result<std::process::Command> {
    std::fs::create_dir_all(node_dir.join("log"))?;
    let exe_at = node_dir.join("veeps");
    if !exe_at.exists() {
        std::fs::write(&exe_at, b"")?;
    }
    chown_tree(&node_dir.join("log"), ids.0, ids.1)?;
    let inside = Path::new(MOUNT).join("veeps");
    let mut c = std::process::Command::new(&inside);
    c.arg("shim")
        .arg(LOG)
        .arg(Path::new(BIN).join("postgres"))
        .args(["-D", PGDATA]);
    let exe = veeps_sys::confine::Bind {
        source: shim_exe.to_path_buf(),
        target: inside,
        readonly: true,
    };
    // Joined before anything runs: every process of the node is in the cgroup.
    confined(c, node_dir, netns, ids, vec![exe], cgroup_procs, true)
}

/// `c` as every node process runs: PostgreSQL's environment, the node's namespace and
/// user, its directory at [`MOUNT`] (then `binds`), in `cgroup_procs`, in a session of its
/// own when asked.
fn confined(
    mut c: std::process::Command,
    node_dir: &Path,
    netns: &str,
    ids: (u32, u32),
    binds: Vec<veeps_sys::confine::Bind>,
    cgroup_procs: Vec<PathBuf>,
    session: bool,
) -> std::io::Result<std::process::Command> {
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("LANG", "C.UTF-8")
        .env("PGDATA", PGDATA);
    let (uid, gid) = ids;
    let mut all = vec![veeps_sys::confine::Bind {
        source: node_dir.to_path_buf(),
        target: PathBuf::from(MOUNT),
        readonly: false,
    }];
    all.extend(binds);
    veeps_sys::confine::confine(
        &mut c,
        &veeps_sys::confine::Confine {
            netns: Some(netns.to_string()).filter(|n| !n.is_empty()),
            ids: Some(veeps_sys::confine::Ids { uid, gid }),
            binds: all,
            chdir: Some(PathBuf::from(MOUNT)),
            cgroup_procs,
            session,
            ..Default::default()
        },
    )?;
    Ok(c)
}

/// Runs a PostgreSQL program to completion; its output, or an error with its stderr.
pub async fn run(
    node_dir: &Path,
    netns: &str,
    ids: (u32, u32),
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, String> {
    let mut c = command(node_dir, netns, ids, program).map_err(|e| format!("{program}: {e}"))?;
    c.args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = c.output().await.map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Setting names PostgreSQL knows, with whether a change needs a restart.
pub fn known_settings() -> &'static std::collections::BTreeMap<String, bool> {
    static KNOWN: std::sync::OnceLock<std::collections::BTreeMap<String, bool>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let out = std::process::Command::new(Path::new(BIN).join("postgres"))
            .arg("--describe-config")
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    Some((f.next()?.to_string(), f.next()? == "postmaster"))
                })
                .collect(),
            Err(_) => Default::default(),
        }
    })
}
