//! Starting confined processes: inside a network namespace, a cgroup, a mount namespace
//! with binds, as an unprivileged user, with `no_new_privs`, in a session of their own (so
//! a whole tree can be killed), as each caller asks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The unprivileged identity instances and builds run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The system user instances run as.
pub const USER: &str = "veeps-app";

fn lookup(user: &str) -> Option<Ids> {
    let out = std::process::Command::new("getent")
        .args(["passwd", user])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let f: Vec<&str> = line.trim().split(':').collect();
    Some(Ids {
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
    })
}

/// The identity to drop to: [`USER`] (created as a system user if missing), else
/// `nobody`; `None` when veeps itself is not root (processes then run as veeps' user).
pub fn unprivileged() -> Option<Ids> {
    if !crate::proc::is_root() {
        return None;
    }
    if let Some(ids) = lookup(USER) {
        return Some(ids);
    }
    let made = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ])
        .output();
    if let Some(ids) = lookup(USER) {
        return Some(ids);
    }
    tracing::warn!(
        ?made,
        "could not create the system user {USER}; instances run as nobody"
    );
    Some(Ids {
        uid: 65534,
        gid: 65534,
    })
}

/// Whether this kernel lets an unprivileged process make a user namespace (the fallback's
/// way to keep instances out of the data directory).
pub fn user_namespaces() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    read("/proc/sys/kernel/unprivileged_userns_clone").is_none_or(|v| v != "0")
        && read("/proc/sys/user/max_user_namespaces").is_none_or(|v| v != "0")
}

/// How to confine a process.
#[derive(Debug, Clone, Default)]
pub struct Confine {
    /// Enter this named network namespace (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// Enter the network namespace this descriptor refers to (one of
    /// [`crate::netns::isolated`]).
    pub netns_fd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Start in a new, empty network namespace instead (builds: no network at all).
    pub new_netns: bool,
    /// Join these `cgroup.procs` files before running anything.
    pub cgroup_procs: Vec<PathBuf>,
    /// Drop to this identity.
    pub ids: Option<Ids>,
    /// In a mount namespace of its own: bind `source` on `target` (read-only when asked).
    pub binds: Vec<Bind>,
    /// Change to this directory last (after the binds).
    pub chdir: Option<PathBuf>,
    /// Without privileges: first a user namespace of its own mapping this uid and gid to
    /// themselves (so the mount namespace and binds need no root).
    pub user_ns: Option<Ids>,
    /// Cover these directories with an empty read-only tmpfs, after the binds (the data
    /// directory: its keys and token are out of sight).
    pub hide: Vec<PathBuf>,
    /// A private `/tmp` of this many MiB (tmpfs), mounted after the binds.
    pub private_tmp: Option<u64>,
    /// Start a session (and process group) of its own.
    pub session: bool,
    /// Set `no_new_privs`: neither it nor its children gain privileges through `exec`.
    pub no_new_privs: bool,
    /// Its children start in a PID namespace of their own (the first is its PID 1): they
    /// see only each other, and all die with that first child. Needs root or `user_ns`.
    pub new_pidns: bool,
    /// With `new_pidns`, and as root: the command runs inside that namespace, as its PID 2.
    /// A reaper is the namespace's first process (it mounts the namespace's own `/proc`,
    /// reaps orphans, and ends when the command does, taking the rest with it); the process
    /// spawned waits outside and ends as the command ends (by the same signal, or with the
    /// same status).
    pub pid1_reaper: bool,
    /// In IPC and UTS namespaces of its own: no shared memory or message queues with
    /// anyone else, and a host name of its own. Needs root or `user_ns`.
    pub new_ipc_uts: bool,
}

/// A bind mount inside the process's own mount namespace.
#[derive(Debug, Clone)]
pub struct Bind {
    /// What to mount.
    pub source: PathBuf,
    /// Where (an existing directory).
    pub target: PathBuf,
    /// Read-only.
    pub readonly: bool,
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// Applies `c` to `cmd`: everything is prepared before the fork; the child only makes
/// system calls.
pub fn confine(cmd: &mut std::process::Command, c: &Confine) -> std::io::Result<()> {
    let netns_fd = match &c.netns {
        Some(ns) if !ns.is_empty() => {
            let f = std::fs::File::open(Path::new("/run/netns").join(ns)).map_err(|e| {
                std::io::Error::new(e.kind(), format!("network namespace {ns}: {e}"))
            })?;
            Some(std::os::fd::OwnedFd::from(f))
        }
        _ => None,
    };
    let given_ns = c.netns_fd.clone();
    let raw_given = given_ns.as_deref().map(std::os::fd::AsRawFd::as_raw_fd);
    let tmp = c
        .private_tmp
        .map(|mib| CString::new(format!("size={mib}m,mode=1777")).expect("no NUL"));
    let tmp_dir = CString::new("/tmp").expect("no NUL");
    let procs: Vec<CString> = c
        .cgroup_procs
        .iter()
        .map(|p| cstr(p))
        .collect::<Result<_, _>>()?;
    let new_netns = c.new_netns;
    let (session, no_new_privs, new_pidns) = (c.session, c.no_new_privs, c.new_pidns);
    let reaper = c.new_pidns && c.pid1_reaper;
    let proc_dir = CString::new("/proc").expect("no NUL");
    let proc_fs = CString::new("proc").expect("no NUL");
    let mut reaper_stack = if reaper {
        vec![0u8; REAPER_STACK]
    } else {
        vec![]
    };
    let new_ipc_uts = c.new_ipc_uts;
    let ids = c.ids;
    let binds: Vec<(CString, CString, bool)> = c
        .binds
        .iter()
        .map(|b| Ok((cstr(&b.source)?, cstr(&b.target)?, b.readonly)))
        .collect::<std::io::Result<_>>()?;
    let chdir = c.chdir.as_deref().map(cstr).transpose()?;
    let hide: Vec<CString> = c.hide.iter().map(|p| cstr(p)).collect::<Result<_, _>>()?;
    let user_ns = c.user_ns.map(|i| {
        (
            format!("{} {} 1\n", i.uid, i.uid).into_bytes(),
            format!("{} {} 1\n", i.gid, i.gid).into_bytes(),
        )
    });
    let proc_files = (
        CString::new("/proc/self/setgroups").expect("no NUL"),
        CString::new("/proc/self/uid_map").expect("no NUL"),
        CString::new("/proc/self/gid_map").expect("no NUL"),
    );
    let tmpfs = CString::new("tmpfs").expect("no NUL");
    let tmpfs_opts = CString::new("size=4k,mode=000").expect("no NUL");
    let root = CString::new("/").expect("no NUL");
    let raw_ns = netns_fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // The fd must live until the fork; keep it with the command's lifetime.
    let keep = std::sync::Arc::new(netns_fd);
    let std_cmd = cmd;
    // SAFETY: the closure runs between fork and exec and only makes system calls
    // (setsid, setns, unshare, mount, statvfs, open, write, close, chdir, setgroups,
    // setgid, setuid, prctl) on data prepared above.
    unsafe {
        std_cmd.pre_exec(move || {
            let _hold = (&keep, &given_ns);
            if session && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                libc::close(fd);
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(fd) = raw_ns.or(raw_given) {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if new_netns && libc::unshare(libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid_map, gid_map)) = &user_ns {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (path, text) in [
                    (&proc_files.0, &b"deny\n"[..]),
                    (&proc_files.1, &uid_map[..]),
                    (&proc_files.2, &gid_map[..]),
                ] {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let r = libc::write(fd, text.as_ptr().cast(), text.len());
                    libc::close(fd);
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            if new_pidns && libc::unshare(libc::CLONE_NEWPID) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if new_ipc_uts && libc::unshare(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if !binds.is_empty() || !hide.is_empty() || tmp.is_some() || reaper {
                if user_ns.is_none() && libc::unshare(libc::CLONE_NEWNS) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Keep these mounts from propagating back to the host.
                let private = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    private,
                    std::ptr::null(),
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (src, dst, ro) in &binds {
                    let bind = libc::MS_BIND | libc::MS_REC;
                    if libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        bind,
                        std::ptr::null(),
                    ) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    if *ro {
                        // Keep the flags the mount has (a user namespace may not drop
                        // them), and add read-only.
                        let mut st: libc::statvfs = std::mem::zeroed();
                        let mut kept: libc::c_ulong = 0;
                        if libc::statvfs(dst.as_ptr(), &mut st) == 0 {
                            for (st_flag, ms_flag) in [
                                (libc::ST_NOEXEC, libc::MS_NOEXEC),
                                (libc::ST_NOATIME, libc::MS_NOATIME),
                                (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                                (libc::ST_RELATIME, libc::MS_RELATIME),
                            ] {
                                if st.f_flag & st_flag != 0 {
                                    kept |= ms_flag;
                                }
                            }
                        }
                        let flags = libc::MS_BIND
                            | libc::MS_REMOUNT
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV
                            | kept;
                        if libc::mount(
                            std::ptr::null(),
                            dst.as_ptr(),
                            std::ptr::null(),
                            flags,
                            std::ptr::null(),
                        ) < 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
            }
            if let Some(opts) = &tmp {
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
                if libc::mount(
                    tmpfs.as_ptr(),
                    tmp_dir.as_ptr(),
                    tmpfs.as_ptr(),
                    flags,
                    opts.as_ptr().cast(),
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for dir in &hide {
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                if libc::mount(
                    tmpfs.as_ptr(),
                    dir.as_ptr(),
                    tmpfs.as_ptr(),
                    flags,
                    tmpfs_opts.as_ptr().cast(),
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if reaper {
                enter_pidns(&proc_fs, &proc_dir, &mut reaper_stack)?;
            }
            if let Some(dir) = &chdir {
                if libc::chdir(dir.as_ptr()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(ids) = ids {
                if libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setgid(ids.gid) < 0
                    || libc::setuid(ids.uid) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// What the namespace's first process is given (prepared before the fork).
struct ReaperArgs {
    proc_fs: *const libc::c_char,
    proc_dir: *const libc::c_char,
    /// Where it reports whether `/proc` is mounted (0, or the error number).
    report: libc::c_int,
}

/// Bytes of stack for the namespace's first process.
const REAPER_STACK: usize = 64 * 1024;

/// The namespace's first process: it mounts the namespace's `/proc`, reports, and then
/// only waits, with `SIGCHLD` ignored so that orphans handed to it are reaped by the
/// kernel. It dies with its parent, and the namespace with it.
extern "C" fn reaper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ReaperArgs` the parent keeps alive while this runs (it shares
    // the parent's memory); only system calls follow.
    unsafe {
        let a = &*(arg as *const ReaperArgs);
        // Its descriptor table is a copy of its parent's: it keeps only the report's.
        let report = a.report as libc::c_uint;
        if report > 0 {
            libc::close_range(0, report - 1, 0);
        }
        libc::close_range(report + 1, libc::c_uint::MAX, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let r = libc::mount(a.proc_fs, a.proc_dir, a.proc_fs, flags, std::ptr::null());
        let code: libc::c_int = if r < 0 { *libc::__errno_location() } else { 0 };
        let raw = code.to_ne_bytes();
        libc::write(a.report, raw.as_ptr().cast(), 4);
        libc::close(a.report);
        loop {
            libc::pause();
        }
    }
}

/// Between fork and exec, after `unshare(CLONE_NEWPID)` and in a mount namespace of its
/// own: starts the namespace's first process ([`reaper`], sharing this process's memory
/// on a stack of its own, so no page table is copied), then forks the child that returns
/// to go on to `exec`, the namespace's PID 2. The caller stays outside: it closes every
/// descriptor (so that `exec`'s report to the spawner comes from the child alone), waits
/// for the child, ends the reaper and ends as the child ended.
///
/// # Safety
/// Only between fork and exec, in a single-threaded child: it makes only system calls;
/// `stack` is not otherwise used.
unsafe fn enter_pidns(
    proc_fs: &CString,
    proc_dir: &CString,
    stack: &mut [u8],
) -> std::io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (rd, wr) = (fds[0], fds[1]);
    let mut args = ReaperArgs {
        proc_fs: proc_fs.as_ptr(),
        proc_dir: proc_dir.as_ptr(),
        report: wr,
    };
    // The stack grows down: its top, aligned as the ABI wants.
    let top = (stack.as_mut_ptr().add(stack.len()) as usize & !15) as *mut libc::c_void;
    let first = libc::clone(
        reaper,
        top,
        libc::CLONE_VM | libc::SIGCHLD,
        (&mut args as *mut ReaperArgs).cast(),
    );
    if first < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut raw = [0u8; 4];
    let n = libc::read(rd, raw.as_mut_ptr().cast(), 4);
    libc::close(rd);
    libc::close(wr);
    let code = if n == 4 {
        libc::c_int::from_ne_bytes(raw)
    } else {
        libc::EIO
    };
    if code != 0 {
        libc::kill(first, libc::SIGKILL);
        libc::waitpid(first, std::ptr::null_mut(), 0);
        return Err(std::io::Error::from_raw_os_error(code));
    }
    let child = libc::fork();
    if child < 0 {
        let e = std::io::Error::last_os_error();
        libc::kill(first, libc::SIGKILL);
        libc::waitpid(first, std::ptr::null_mut(), 0);
        return Err(e);
    }
    if child == 0 {
        // Nothing the spawner inherited reaches the command but its standard streams
        // (and `exec`'s report, which closes on `exec` anyway).
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        );
        return Ok(());
    }
    // The waiter, outside the namespace.
    libc::close_range(0, libc::c_uint::MAX, 0);
    let mut status: libc::c_int = 0;
    loop {
        let r = libc::waitpid(child, &mut status, 0);
        if r == child || (r < 0 && *libc::__errno_location() != libc::EINTR) {
            break;
        }
    }
    // Ending the first process ends whatever is left in the namespace.
    libc::kill(first, libc::SIGKILL);
    libc::waitpid(first, std::ptr::null_mut(), 0);
    end_as(status);
}

/// Ends the calling process as a process with wait status `status` ended: by the same
/// signal, or with the same exit code.
///
/// # Safety
/// Between fork and exec only.
unsafe fn end_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(libc::WEXITSTATUS(status))
}

/// Makes `cmd` drop to `ids` just before `exec`, for good: every capability (the bounding
/// set too), supplementary groups; then `no_new_privs` and `filter`. For a process started
/// by root (an instance's init starting its application); with `ids` `None`, only
/// `no_new_privs` and the filter.
pub fn drop_privileges(
    cmd: &mut std::process::Command,
    ids: Option<Ids>,
    filter: std::sync::Arc<crate::seccomp::Filter>,
) {
    // SAFETY: the closure runs between fork and exec and only makes system calls (prctl,
    // setgroups, setgid, setuid) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let Some(ids) = ids else {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                return filter.install();
            };
            // Bounding set first: CAP_SETPCAP is still ours. Capabilities this kernel does
            // not know end the loop.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EINVAL) {
                        break;
                    }
                    return Err(e);
                }
            }
            if libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(ids.gid) < 0
                || libc::setuid(ids.uid) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Leaving uid 0 cleared the permitted, effective and ambient sets; make sure.
            if libc::getuid() == 0 || libc::geteuid() == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            filter.install()
        });
    }
}

/// Mounts a fresh `/proc` for the calling process's PID namespace (it must be that
/// namespace's first process, in a mount namespace of its own): the processes of the
/// namespace are all `/proc` shows.
pub fn mount_proc() -> std::io::Result<()> {
    let proc_ = CString::new("proc").expect("no NUL");
    let target = CString::new("/proc").expect("no NUL");
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            proc_.as_ptr(),
            target.as_ptr(),
            proc_.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts a private `/tmp` (tmpfs of `size_mib`, sticky and world-writable as `/tmp` is) in
/// the calling process's mount namespace: nothing written there is shared with the host or
/// another instance, and it counts against the instance's memory.
pub fn mount_private_tmp(size_mib: u64) -> std::io::Result<()> {
    let tmpfs = CString::new("tmpfs").expect("no NUL");
    let target = CString::new("/tmp").expect("no NUL");
    let opts = CString::new(format!("size={size_mib}m,mode=1777")).expect("no NUL");
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            flags,
            opts.as_ptr().cast(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the host name (of the calling process's UTS namespace).
pub fn set_hostname(name: &str) -> std::io::Result<()> {
    // SAFETY: sethostname(2) reads `name.len()` bytes of `name`.
    let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives `path` (recursively) to `ids`.
pub fn chown_tree(path: &Path, ids: Ids) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(ids.uid), Some(ids.gid))?;
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), ids)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// `cmd`, to run as PID 2 of a namespace of its own.
    fn reaped(cmd: &mut std::process::Command) {
        confine(
            cmd,
            &Confine {
                session: true,
                new_pidns: true,
                pid1_reaper: true,
                ..Default::default()
            },
        )
        .unwrap();
    }

    fn in_own_pidns(script: &str) -> std::process::Output {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]);
        reaped(&mut cmd);
        cmd.output().unwrap()
    }

    #[test]
    fn a_reaped_pid_namespace_shows_only_its_own_and_ends_as_the_command_does() {
        if !crate::proc::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let _one = crate::CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        // The command is PID 2 under the reaper, and /proc shows those two, and the
        // pipeline's processes (a host shows hundreds).
        let o = in_own_pidns("echo $$; ls -d /proc/[0-9]* | wc -l");
        let out = String::from_utf8_lossy(&o.stdout);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("2"), "{out}");
        let n: usize = lines.next().unwrap_or_default().trim().parse().unwrap();
        assert!((3..=6).contains(&n), "{out}");
        assert_eq!(o.status.code(), Some(0));
        // The exit code and a killing signal come back as they were.
        assert_eq!(in_own_pidns("exit 7").status.code(), Some(7));
        assert_eq!(in_own_pidns("kill -9 $$").status.signal(), Some(9));
        // A process left behind dies with the command: the output's end comes at once.
        let t = std::time::Instant::now();
        let o = in_own_pidns("sleep 30 & echo left");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "left\n");
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
        // Spawning returns once the command runs, not when it ends; the command gets its
        // standard streams and nothing else the spawner holds, even without CLOEXEC.
        let mut fds = [0; 2];
        // SAFETY: pipe(2) writes two descriptors into `fds`.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "ls /proc/self/fd; sleep 30"])
            .stdout(std::process::Stdio::piped());
        reaped(&mut cmd);
        let t = std::time::Instant::now();
        let mut child = cmd.spawn().unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = vec![];
        while seen.len() < 4 && std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0 {
            seen.push(line.trim().to_string());
            line.clear();
        }
        assert_eq!(seen, ["0", "1", "2", "3"], "fds {fds:?}");
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        // SAFETY: closing the two descriptors pipe(2) gave.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        // A command that cannot start is the spawner's error, as without the namespace.
        let mut cmd = std::process::Command::new("/nonexistent/program");
        reaped(&mut cmd);
        assert_eq!(
            cmd.spawn().err().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
    }
}
