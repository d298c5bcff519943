//! The per-instance supervisor (`veeps shim`), the pattern of containerd's shims and
//! conmon: the control plane starts it, confined as the instance is, and it holds the
//! instance for as long as the instance runs, whether or not the control plane does. It
//! starts `veeps shim --init`, the first process of the instance's PID namespace (it
//! forwards signals and reaps orphans, as tini does), which starts the application. The
//! shim keeps the application's output in a bounded spool in its directory and, when the
//! application ends, writes its status to `exit`. The control plane reads both, from where
//! it left off, when it is there: restarting it touches no instance.
//!
//! Files in the shim's directory: `out.log` and `out.log.1` (the spool), `status` (written
//! by the init process: the application's status), `exit` (written last by the shim: its
//! pid on the first line, so that a later shim of the same directory never takes an
//! earlier one's end for its own, then the status; the instance is over and its output is
//! all in the spool).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use veeps_obs::spool::SpoolWriter;

/// Bytes of output kept while the control plane is away.
pub const SPOOL_LIMIT: u64 = 16 * 1024 * 1024;
/// The file the shim writes last.
pub const EXIT: &str = "exit";
const STATUS: &str = "status";
/// The size of an instance's private `/tmp` (it counts against the instance's memory).
const PRIVATE_TMP_MIB: u64 = 64;

/// What `veeps shim` is told besides its directory and program.
#[derive(Debug, Default, Clone)]
struct Options {
    /// Run as the instance's init (inside its PID namespace).
    init: bool,
    /// The application's user and group (`--as UID:GID`); the shim and init stay root.
    ids: Option<veeps_sys::confine::Ids>,
    /// The instance's host name (`--hostname NAME`).
    hostname: Option<String>,
    /// Run the application under the instances' system-call filter (`--seccomp`).
    seccomp: bool,
}

impl Options {
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![];
        if let Some(ids) = self.ids {
            a.push("--as".into());
            a.push(format!("{}:{}", ids.uid, ids.gid).into());
        }
        if let Some(h) = &self.hostname {
            a.push("--hostname".into());
            a.push(h.into());
        }
        if self.seccomp {
            a.push("--seccomp".into());
        }
        a
    }
}

const USAGE: &str = "usage: veeps shim [--init] [--as UID:GID] [--hostname NAME] [--seccomp] DIR PROGRAM [ARGS...] (started by veeps for each instance)";

/// Runs `veeps shim [--init] [--as UID:GID] [--hostname NAME] [--seccomp] DIR PROGRAM
/// [ARGS...]`;
/// returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let mut it = args.into_iter().peekable();
    let mut o = Options::default();
    while let Some(a) = it.peek().and_then(|a| a.to_str()).map(String::from) {
        match a.as_str() {
            "--init" => o.init = true,
            "--seccomp" => o.seccomp = true,
            "--as" => {
                it.next();
                let ids = it.peek().and_then(|v| v.to_str()).and_then(|v| {
                    let (u, g) = v.split_once(':')?;
                    Some(veeps_sys::confine::Ids {
                        uid: u.parse().ok()?,
                        gid: g.parse().ok()?,
                    })
                });
                match ids {
                    Some(ids) => o.ids = Some(ids),
                    None => {
                        eprintln!("{USAGE}");
                        return 2;
                    }
                }
            }
            "--hostname" => {
                it.next();
                o.hostname = it.peek().map(|h| h.to_string_lossy().into_owned());
            }
            _ => break,
        }
        it.next();
    }
    let (Some(dir), Some(program)) = (it.next(), it.next()) else {
        eprintln!("{USAGE}");
        return 2;
    };
    let rest: Vec<OsString> = it.collect();
    let dir = PathBuf::from(dir);
    if o.init {
        run_init(&dir, &o, program, rest)
    } else {
        supervise(&dir, &o, program, rest)
    }
}

/// The first process of the namespace: the application's parent. With `--as` (veeps runs
/// as root), it mounts the namespace's own `/proc` and names the host first, and the
/// application drops to its user; with `--seccomp` it runs under the instances' system-call
/// filter.
fn run_init(dir: &Path, o: &Options, program: OsString, args: Vec<OsString>) -> i32 {
    let fail = |what: String| {
        eprintln!("veeps: {what}");
        let _ = write_atomic(&dir.join(STATUS), &format!("could not start: {what}"));
        127
    };
    if std::process::id() == 1 {
        if let Err(e) = veeps_sys::confine::mount_proc() {
            // Without privileges (a user namespace), /proc stays the one it was given.
            if o.ids.is_some() {
                return fail(format!("cannot mount the instance's /proc: {e}"));
            }
        }
        if o.ids.is_some() {
            if let Err(e) = veeps_sys::confine::mount_private_tmp(PRIVATE_TMP_MIB) {
                return fail(format!("cannot mount the instance's /tmp: {e}"));
            }
        }
        if let Some(h) = &o.hostname {
            if let Err(e) = veeps_sys::confine::set_hostname(h) {
                if o.ids.is_some() {
                    return fail(format!("cannot set the host name: {e}"));
                }
            }
        }
    }
    let mut cmd = Command::new(&program);
    cmd.args(args);
    if o.ids.is_some() || o.seccomp {
        veeps_sys::confine::drop_privileges(
            &mut cmd,
            o.ids,
            Arc::new(veeps_sys::seccomp::Filter::instances()),
        );
    }
    let (status, code) = match veeps_sys::init::run(cmd) {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            let code = st.code().or(st.signal().map(|s| 128 + s)).unwrap_or(1);
            (st.to_string(), code)
        }
        Err(e) => {
            eprintln!("veeps: cannot start {}: {e}", program.to_string_lossy());
            (format!("could not start: {e}"), 127)
        }
    };
    let _ = write_atomic(&dir.join(STATUS), &status);
    code
}

/// Records the end of this shim's instance.
fn write_exit(dir: &Path, status: &str) {
    let _ = write_atomic(
        &dir.join(EXIT),
        &format!("{}\n{status}", std::process::id()),
    );
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The supervisor: starts the init process with its output piped here, spools the
/// output, and records the end.
fn supervise(dir: &Path, o: &Options, program: OsString, args: Vec<OsString>) -> i32 {
    // Termination signals are for the application (the init process relays them); the shim
    // ends when the application has.
    veeps_sys::init::hold_termination();
    let spool = match SpoolWriter::open(dir, SPOOL_LIMIT) {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => {
            write_exit(dir, &format!("its output cannot be kept: {e}"));
            return 1;
        }
    };
    let note = |text: String| {
        let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
        let _ = s.line(veeps_sys::now_ms(), "stderr", &format!("veeps: {text}"));
    };
    let mut child = match Command::new("/proc/self/exe")
        .arg("shim")
        .arg("--init")
        .args(o.args())
        .arg(dir)
        .arg(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            note(format!("cannot start the instance's init process: {e}"));
            write_exit(dir, &format!("could not start: {e}"));
            return 1;
        }
    };
    // One thread only: a process whose children go to a PID namespace of their own cannot
    // start threads. Both pipes are read as they fill, until every writer is gone.
    use std::os::fd::AsRawFd;
    let mut pipes: Vec<(&'static str, Box<dyn Read>, i32, veeps_obs::service::Lines)> = vec![];
    if let Some(p) = child.stdout.take() {
        let fd = p.as_raw_fd();
        pipes.push(("stdout", Box::new(p), fd, Default::default()));
    }
    if let Some(p) = child.stderr.take() {
        let fd = p.as_raw_fd();
        pipes.push(("stderr", Box::new(p), fd, Default::default()));
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut waited = None;
    let mut ended_at = None;
    while !pipes.is_empty() {
        let fds: Vec<i32> = pipes.iter().map(|p| p.2).collect();
        let ready = veeps_sys::proc::readable(&fds, 500);
        let mut closed = vec![];
        for (i, (stream, pipe, _, lines)) in pipes.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let emit = |text: String| {
                let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
                let _ = s.line(veeps_sys::now_ms(), stream, &text);
            };
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => {
                    lines.finish(&emit);
                    closed.push(i);
                }
                Ok(n) => lines.push(&buf[..n], &emit),
            }
        }
        for i in closed.into_iter().rev() {
            pipes.remove(i);
        }
        if waited.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                waited = Some(st);
                ended_at = Some(std::time::Instant::now());
            }
        }
        // Without a PID namespace a descendant may keep the pipes open: a moment after
        // the init process ends, stop waiting for them.
        if ended_at.is_some_and(|t| t.elapsed() > std::time::Duration::from_secs(2)) {
            break;
        }
    }
    let waited = match waited {
        Some(st) => Ok(st),
        None => child.wait(),
    };
    let status = match std::fs::read_to_string(dir.join(STATUS)) {
        Ok(s) => s,
        Err(_) => match waited {
            Ok(st) => format!("its init process ended ({st})"),
            Err(e) => format!("its init process was lost: {e}"),
        },
    };
    write_exit(dir, &status);
    0
}

/// What the control plane sees of an instance's shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimState {
    /// It runs.
    Running,
    /// The application ended with this status, and its output is all spooled.
    Exited(String),
    /// The shim itself is gone (killed) without a word.
    Gone,
}

/// The state of the shim `pid` (started at `started`, as [`veeps_sys::proc::start_time`]
/// gives it; 0 when unknown) with its directory `dir`.
pub fn state(dir: &Path, pid: u32, started: u64) -> ShimState {
    // Its own end only (an earlier shim of the same directory may have written one late).
    let ended = || {
        let text = std::fs::read_to_string(dir.join(EXIT)).ok()?;
        let (who, status) = text.split_once('\n').unwrap_or(("", text.as_str()));
        (who.trim().parse::<u32>().ok() == Some(pid)).then(|| status.trim().to_string())
    };
    if let Some(s) = ended() {
        return ShimState::Exited(s);
    }
    match veeps_sys::proc::start_time(pid) {
        Some(t) if started == 0 || t == started => ShimState::Running,
        // It finished between the two looks, or is gone without a word.
        _ => ended().map_or(ShimState::Gone, ShimState::Exited),
    }
}
