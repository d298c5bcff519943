//! Host plumbing shared by veeps' parts, in one place so that every `unsafe` block (each with
//! its SAFETY comment) is here and nowhere else in the parts:
//!
//! - [`netns`]: running work inside a named network namespace, once ([`netns::in_netns`]) or
//!   as a tokio runtime on a thread pinned there ([`netns::NsRuntime`]);
//! - [`confine`]: starting a confined process (network, mount and user namespaces, binds,
//!   an unprivileged identity, a cgroup joined before `exec`);
//! - [`fdpass`]: handing open sockets to another process (SCM_RIGHTS);
//! - [`file`]: positional reads into memory not zeroed first;
//! - [`mmsg`]: many UDP datagrams per system call;
//! - [`cgroup`]: limits and statistics through cgroups v1 or v2;
//! - [`garp`]: announcing an address that moved to a new interface;
//! - [`init`]: the first process of a PID namespace (forwards signals, reaps orphans);
//! - [`seccomp`]: the system-call filter instances run under;
//! - [`plane`]: what data-plane processes share (pid file, control socket, start, stop);
//! - [`proc`]: signals and identities; [`now_ms`].

pub mod cgroup;
pub mod confine;
pub mod fdpass;
pub mod file;
pub mod garp;
pub mod init;
pub mod mmsg;
pub mod netns;
pub mod plane;
pub mod proc;
pub mod seccomp;

/// Tests that wait for children hold this: [`init::run`] waits for any child of the
/// process (as an init must), which in a test binary would take another test's.
#[cfg(test)]
pub(crate) static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
