//! The first process of an instance's PID namespace, as tini is for a container: it starts
//! the application as its child in a process group of its own, forwards termination
//! signals to it, reaps every orphan the application leaves (which the kernel hands to
//! PID 1), and ends with the application's status. When it ends, the kernel kills whatever
//! else is left in the namespace.
//!
//! Also [`hold_termination`], for a supervisor that must outlive the signals it relays.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

/// The application's pid, read by the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Signals passed on to the application.
const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and touches no memory.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

extern "C" fn absorb(_sig: libc::c_int) {}

fn install(handler: extern "C" fn(libc::c_int)) {
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction with a handler that only calls async-signal-safe
        // functions (or nothing); the handler stays valid for the whole program. A handler
        // (not SIG_IGN) is reset to the default by exec, so children are unaffected.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Survive termination signals (they are meant for the application, which a supervisor
/// relays them to or waits for). Children started afterwards get the default actions.
pub fn hold_termination() {
    install(absorb);
}

/// Runs `cmd` as the application and supervises it until it exits; returns its status.
/// Every other child that ends meanwhile (orphans re-parented here) is reaped.
pub fn run(mut cmd: Command) -> std::io::Result<ExitStatus> {
    install(forward);
    // Outside a PID namespace of its own, orphans still come here rather than to the
    // host's init.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // Its own group: a signal to ours reaches it once, through `forward`.
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    CHILD.store(pid, Ordering::SeqCst);
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`, a local.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == pid {
            CHILD.store(0, Ordering::SeqCst);
            return Ok(ExitStatus::from_raw(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_s_status_comes_back_and_orphans_are_reaped() {
        // The application leaves a grandchild behind, which is re-parented here and
        // reaped; the status is the application's own.
        let _one = crate::CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 0.1 & exit 7"]);
        let st = run(cmd).unwrap();
        assert_eq!(st.code(), Some(7));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -9 $$"]);
        let st = run(cmd).unwrap();
        assert_eq!(st.signal(), Some(9));
    }
}
