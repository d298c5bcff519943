//! Work inside a named network namespace (`/run/netns/NAME`, as `ip netns` makes them).
//! A thread that enters a namespace stays there; sockets it opens belong to it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

fn open(ns: &str) -> std::io::Result<OwnedFd> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .map_err(|e| std::io::Error::new(e.kind(), format!("network namespace {ns}: {e}")))?;
    Ok(OwnedFd::from(f))
}

/// Moves the calling thread into the namespace `fd` refers to.
fn enter(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: setns on a namespace descriptor we hold; it changes only this thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `ns` and returns what it returns.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let fd = open(ns)?;
    std::thread::spawn(move || {
        enter(&fd)?;
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// A single-threaded tokio runtime on a thread of its own inside a network namespace (the
/// host's when `ns` is `None`): what it spawns listens and connects from there. Dropping it
/// (or [`NsRuntime::stop`]) ends the thread and waits for it: tasks still running are
/// dropped, so their sockets are closed when it returns.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    /// Starts the thread, named `name`; returns once its runtime runs.
    pub fn start(name: String, ns: Option<&str>) -> std::io::Result<NsRuntime> {
        let fd = ns.map(open).transpose()?.map(Arc::new);
        Self::start_with(name, fd)
    }

    /// How many worker runtimes a data plane starts: one per core (at most 16).
    pub fn per_core() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16)
    }

    /// Starts `n` runtimes in one namespace (opened once), named `name-0`...
    pub fn start_many(name: &str, ns: Option<&str>, n: usize) -> std::io::Result<Vec<NsRuntime>> {
        let fd = ns.map(open).transpose()?.map(Arc::new);
        (0..n)
            .map(|i| Self::start_with(format!("{name}-{i}"), fd.clone()))
            .collect()
    }

    fn start_with(name: String, fd: Option<Arc<OwnedFd>>) -> std::io::Result<NsRuntime> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(fd) = fd {
                if let Err(e) = enter(&fd) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(rt.handle().clone()));
            rt.block_on(async {
                let _ = stopped.await;
            });
            // Its tasks (and their sockets) are dropped here, on this thread; blocking work
            // still running is not waited for.
            rt.shutdown_background();
        })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the runtime thread ended before it ran"))??;
        Ok(NsRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to spawn tasks.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Ends the thread and waits for it.
    pub fn stop(self) {}
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            // Not from the thread itself (a task dropping its own runtime): that would wait
            // forever.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// A new network namespace of its own with only loopback (up), held by a descriptor:
/// nothing else refers to it, so it goes away with the last process in it and the last
/// socket and descriptor of it. `f` runs inside it first, on a thread of its own, to open
/// whatever listeners should live there; what it returns comes back with the descriptor.
/// Needs `CAP_SYS_ADMIN`.
pub fn isolated<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<(OwnedFd, T)> {
    std::thread::spawn(move || {
        // SAFETY: unshare changes only this thread's network namespace; the thread ends
        // when this closure returns, so no other work runs there by accident.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        loopback_up()?;
        let out = f();
        let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok((OwnedFd::from(ns), out))
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a datagram socket we close below; ioctls read and write an `ifreq` we own,
    // whose name is NUL-terminated.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_runs_tasks_until_stopped_and_a_missing_namespace_is_named() {
        let rt = NsRuntime::start("t".into(), None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.handle().spawn(async move {
            let _ = tx.send(std::thread::current().name().map(String::from));
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("t"));
        rt.stop();
        let e = NsRuntime::start("t".into(), Some("no-such-ns-veeps-test"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no-such-ns-veeps-test"), "{e}");
    }
}
