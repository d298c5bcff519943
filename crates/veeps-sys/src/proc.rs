//! Processes: signals and identities.

/// Sends `sig` to process `pid`; false if it is gone (or `pid` is not a process id).
pub fn signal(pid: u32, sig: i32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill(2) with a positive pid touches no memory.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// Sends `sig` to the process group led by `pid` (every process it started).
pub fn signal_group(pid: u32, sig: i32) {
    if pid == 0 || pid > i32::MAX as u32 {
        return;
    }
    // SAFETY: kill(2) on a process group id; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// When process `pid` started (clock ticks since boot), or `None` when it is gone or a
/// zombie: with the pid, it names one process for good (pids are reused).
pub fn start_time(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), so field 22 (starttime) is f[19].
    if matches!(f.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    f.get(19)?.parse().ok()
}

/// The `PID START_TIME` a process wrote of itself (or its starter wrote of it) in `path`.
pub fn read_pidfile(path: &std::path::Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (p, s) = text.trim().split_once(' ')?;
    Some((p.parse().ok()?, s.parse().ok()?))
}

/// The process named in `path` ([`read_pidfile`]), if it still runs as that process.
pub fn live_pidfile(path: &std::path::Path) -> Option<(u32, u64)> {
    let (pid, started) = read_pidfile(path)?;
    (start_time(pid) == Some(started)).then_some((pid, started))
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// This process's real user and group ids.
pub fn ids() -> (u32, u32) {
    // SAFETY: getuid and getgid have no preconditions.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Restores SIGPIPE's default action (end quietly when the reader of our output goes
/// away, like other Unix tools, instead of failing to print).
pub fn default_sigpipe() {
    // SAFETY: restoring a signal's default action has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Total and free (for unprivileged users) bytes of the filesystem holding `p`.
pub fn disk_space(p: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value of it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a live out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some((
        s.f_blocks as u64 * s.f_frsize as u64,
        s.f_bavail as u64 * s.f_frsize as u64,
    ))
}

/// Raises the soft limit on open files to the hard limit (the default soft limit of 1,024
/// is too small for a server); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the rlimit struct passed to them.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

/// The soft limit on open files; 0 when it cannot be read.
pub fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur
}

/// Bytes sent on TCP socket `fd` that the peer has not acknowledged yet (the FIN counts
/// as one); 0 when it cannot be told.
pub fn unacknowledged(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer passed; a bad fd only fails.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Waits up to `timeout_ms` for any of `fds` to be readable (or closed by the writer);
/// returns which are. Single-threaded waiting, for processes that cannot start threads
/// (a process whose children go to a PID namespace of their own).
pub fn readable(fds: &[std::os::fd::RawFd], timeout_ms: i32) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll reads and writes exactly `p.len()` pollfd entries of `p`.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r <= 0 {
        return vec![false; fds.len()];
    }
    p.iter()
        .map(|x| x.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_reach_live_processes_only() {
        assert!(super::signal(std::process::id(), 0));
        assert!(!super::signal(0, 0));
        assert!(!super::signal(u32::MAX, 0));
    }

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        let n = super::raise_fd_limit();
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct passed to it.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        assert_eq!(n, r.rlim_cur);
        assert_eq!(r.rlim_cur, r.rlim_max);
    }

    #[test]
    fn disk_space_is_read_and_a_bad_path_is_none() {
        let (total, free) = super::disk_space(std::path::Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
        assert!(super::disk_space(std::path::Path::new("/no/such/dir")).is_none());
    }
}
