//! What every data-plane process shares (a balancer's, the DNS server's): a directory of its
//! own holding its configuration, its pid file (`PID START_TIME`, so that a reused pid is
//! never mistaken for it) and its control socket, on which one request line gets one reply
//! line. The control plane starts it in a session of its own, so that the control plane's
//! end (or a terminal's Ctrl-C) does not reach it, and adopts it at its next start.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

/// The pid file in a plane's directory.
pub const PIDFILE: &str = "pid";
/// The control socket in a plane's directory.
pub const SOCKET: &str = "control.sock";
/// The log a plane writes (its stdout and stderr).
pub const LOG: &str = "plane.log";

/// Writes `bytes` to `path` whole or not at all (a temporary file, synced, then renamed),
/// readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A temporary name of this writer's own: two writers never rename each other's file.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The plane named in `dir`'s pid file, if that process still runs: `(pid, start time)`.
pub fn running(dir: &Path) -> Option<(u32, u64)> {
    crate::proc::live_pidfile(&dir.join(PIDFILE))
}

/// Called by a plane once it serves: publishes its pid file.
pub fn announce(dir: &Path) -> std::io::Result<()> {
    let me = std::process::id();
    let started = crate::proc::start_time(me).unwrap_or(0);
    let path = dir.join(PIDFILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{me} {started}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Called by a plane: its control socket, bound under a temporary name and moved over the
/// previous one's, so that a client always finds a live plane there.
pub fn control_listener(dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let sock = dir.join(SOCKET);
    let tmp = dir.join(format!("{SOCKET}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = tokio::net::UnixListener::bind(&tmp)?;
    std::fs::rename(&tmp, &sock)?;
    Ok(l)
}

/// A plane's process: `ARGS` are `DIR [--takeover]`; raises the open-file limit, runs
/// `run(DIR, takeover)` on a runtime of `workers` threads named `name`, and exits with
/// its code (a usage error, 2, names `usage`).
pub fn main<F, Fut>(
    args: Vec<std::ffi::OsString>,
    name: &str,
    usage: &str,
    workers: usize,
    run: F,
) -> i32
where
    F: FnOnce(std::path::PathBuf, bool) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let Some(dir) = args.first().map(std::path::PathBuf::from) else {
        eprintln!("usage: {usage}");
        return 2;
    };
    let takeover = args.iter().any(|a| a == "--takeover");
    crate::proc::raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(run(dir, takeover));
    // Whatever else runs (worker runtimes, threads) goes with the process.
    std::process::exit(code);
}

/// Who stops a plane's control loop ([`serve`]): a request, or its directory going.
pub type Stop = std::sync::Arc<tokio::sync::watch::Sender<bool>>;

/// Opens the control socket in `dir`, announces the plane (its pid file), and serves one
/// connection at a time with `handle` (each in a task of its own) until a handler sends
/// on its [`Stop`] or `dir/config` is gone (a plane whose data directory was deleted
/// answers to no one). An error when the control socket cannot be opened.
pub async fn serve<H, F>(dir: &Path, config: &str, what: &str, handle: H) -> std::io::Result<()>
where
    H: Fn(tokio::net::UnixStream, Stop) -> F,
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = control_listener(dir)?;
    let _ = announce(dir);
    tracing::info!(pid = std::process::id(), "{what} ready");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let watcher = {
        let (path, stop_tx, what) = (dir.join(config), stop_tx.clone(), what.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if !path.exists() {
                    tracing::warn!("the directory of the {what} is gone; stopping");
                    let _ = stop_tx.send(true);
                    return;
                }
            }
        })
    };
    loop {
        tokio::select! {
            _ = stop_rx.changed() => break,
            acc = listener.accept() => {
                let Ok((conn, _)) = acc else { continue };
                let work = handle(conn, stop_tx.clone());
                tokio::spawn(async move {
                    if let Err(e) = work.await {
                        tracing::debug!(error = %e, "control request failed");
                    }
                });
            }
        }
    }
    watcher.abort();
    Ok(())
}

/// Reads one request line from a control connection (within 10 s).
pub async fn read_request(
    conn: &mut tokio::io::BufReader<tokio::net::UnixStream>,
) -> std::io::Result<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(line)
}

/// Writes one reply line and closes the connection.
pub async fn write_reply(conn: &mut tokio::net::UnixStream, reply: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    conn.write_all(reply.as_bytes()).await?;
    conn.write_all(b"\n").await?;
    conn.shutdown().await
}

/// Sends one request line to the plane listening at `sock` and reads its reply line,
/// within `within`.
pub async fn ask(sock: &Path, line: &str, within: Duration) -> std::io::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::UnixStream::connect(sock).await?;
        s.write_all(line.as_bytes()).await?;
        s.write_all(b"\n").await?;
        let mut r = tokio::io::BufReader::new(s);
        let mut reply = String::new();
        r.read_line(&mut reply).await?;
        if reply.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "it closed the connection",
            ));
        }
        Ok(reply)
    };
    tokio::time::timeout(within, work).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {within:?}"),
        )
    })?
}

/// The same, blocking (for callers outside the runtime, like metric collection).
pub fn ask_blocking(sock: &Path, line: &str, within: Duration) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(within))?;
    s.set_write_timeout(Some(within))?;
    (&s).write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    std::io::BufReader::new(&s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "it closed the connection",
        ));
    }
    Ok(reply)
}

/// Starts `exe ARGS` as a plane in `dir` (in a session of its own, its output appended to
/// `dir/plane.log`) and waits until it announces itself; its pid. `what` names it in
/// errors.
pub async fn spawn(exe: &Path, args: &[&OsStr], dir: &Path, what: &str) -> Result<u32, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))
        .map_err(|e| format!("{what}: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| format!("{what}: {e}"))?)
        .stderr(log)
        .env(
            "VEEPS_LOG",
            std::env::var("VEEPS_LOG").unwrap_or_else(|_| "info".into()),
        );
    crate::confine::confine(
        &mut cmd,
        &crate::confine::Confine {
            session: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("{what}: {e}"))?;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if running(dir).map(|(p, _)| p) == Some(pid) {
            return Ok(pid);
        }
        if crate::proc::start_time(pid).is_none() {
            let tail = std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(format!(
                "{what} exited at start: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what} did not start within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the process `(pid, start time)` of a plane: `ask_stop` asks it to (it may
/// not answer), then it gets 5 s to go before SIGKILL.
pub async fn stop((pid, started): (u32, u64), ask_stop: impl std::future::Future<Output = ()>) {
    let alive = || crate::proc::start_time(pid) == Some(started);
    if !alive() {
        return;
    }
    ask_stop.await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive() {
        crate::proc::signal(pid, libc::SIGKILL);
    }
}

/// [`serve`] for planes whose requests are JSON: each connection's one request, read as
/// `R`, is answered with the JSON `handle` makes of it.
pub async fn serve_json<R, H, F>(
    dir: &Path,
    config: &str,
    what: &str,
    handle: H,
) -> std::io::Result<()>
where
    R: serde::de::DeserializeOwned + Send + 'static,
    H: Fn(R, Stop) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = serde_json::Value> + Send + 'static,
{
    serve(dir, config, what, move |conn, stop| {
        let handle = handle.clone();
        async move {
            let mut conn = tokio::io::BufReader::new(conn);
            let line = read_request(&mut conn).await?;
            let req: R = serde_json::from_str(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let reply = handle(req, stop).await;
            write_reply(conn.get_mut(), &reply.to_string()).await
        }
    })
    .await
}

/// A plane's answer to `hello`: its pid and build.
pub fn hello() -> serde_json::Value {
    serde_json::json!({ "pid": std::process::id(), "version": build_id() })
}

/// Called by a plane that took over from the one before it (serving beside it on the same
/// ports): that one may go now.
pub async fn retire_previous(dir: &Path) {
    let _ = ask_json::<serde_json::Value>(
        dir,
        &serde_json::json!({"op": "stop"}),
        Duration::from_secs(5),
    )
    .await;
}

/// One JSON request to the plane in `dir`, its JSON reply (within `within`).
pub async fn ask_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    req: &impl serde::Serialize,
    within: Duration,
) -> Result<T, String> {
    let line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    let reply = ask(&dir.join(SOCKET), &line, within)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&reply).map_err(|e| e.to_string())
}

/// [`ask_json`], blocking.
pub fn ask_json_blocking<T: serde::de::DeserializeOwned>(
    dir: &Path,
    req: &impl serde::Serialize,
    within: Duration,
) -> Result<T, String> {
    let line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    let reply = ask_blocking(&dir.join(SOCKET), &line, within).map_err(|e| e.to_string())?;
    serde_json::from_str(&reply).map_err(|e| e.to_string())
}

/// How [`adopt_or_start`] found the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// It runs this build: kept.
    Adopted,
    /// It ran another build: a new one started beside it (`--takeover`), then it stopped.
    Upgraded,
    /// It did not answer: stopped, and a new one started.
    Replaced,
    /// None ran: started.
    Started,
}

/// Makes sure the plane of `dir` runs, as this build of veeps: `EXE SUB DIR [--takeover]`.
/// Planes answer `{"op":"hello"}` with their `version` and stop on `{"op":"stop"}`.
pub async fn adopt_or_start(
    exe: &Path,
    sub: &str,
    dir: &Path,
    what: &str,
) -> Result<Adoption, String> {
    let running = running(dir);
    let version = match running {
        Some(_) => ask_json::<serde_json::Value>(
            dir,
            &serde_json::json!({"op": "hello"}),
            Duration::from_secs(5),
        )
        .await
        .ok()
        .and_then(|h| h["version"].as_str().map(str::to_string)),
        None => None,
    };
    let start = |takeover: bool| async move {
        let mut args: Vec<&OsStr> = vec![sub.as_ref(), dir.as_os_str()];
        if takeover {
            args.push("--takeover".as_ref());
        }
        spawn(exe, &args, dir, what).await.map(|_| ())
    };
    Ok(match (running, version) {
        (Some(_), Some(v)) if v == build_id() => {
            tracing::info!("adopted the running {what}");
            Adoption::Adopted
        }
        (Some(old), Some(v)) => {
            tracing::info!(from = %v, "upgrading {what} in place (it runs another build)");
            start(true).await?;
            stop(old, async {}).await;
            Adoption::Upgraded
        }
        (Some(old), None) => {
            tracing::warn!("{what} does not answer; replacing it");
            stop(old, async {}).await;
            start(false).await?;
            Adoption::Replaced
        }
        (None, _) => {
            start(false).await?;
            Adoption::Started
        }
    })
}

/// Stops the plane of `dir`, if it runs: asked first, killed if it lingers.
pub async fn stop_dir(dir: &Path) {
    if let Some(p) = running(dir) {
        stop(p, async {
            let _ = ask_json::<serde_json::Value>(
                dir,
                &serde_json::json!({"op": "stop"}),
                Duration::from_secs(5),
            )
            .await;
        })
        .await;
    }
}

/// Names the program this process runs (its file's identity when it started): a plane
/// whose build differs from the control plane's is replaced in place.
pub fn build_id() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/exe") {
        Ok(m) => format!("{}:{}:{}:{}", m.dev(), m.ino(), m.len(), m.mtime()),
        Err(_) => env!("CARGO_PKG_VERSION").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_control_socket_answers_one_line_per_connection() {
        let d = tempfile::tempdir().unwrap();
        let l = control_listener(d.path()).unwrap();
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let mut c = tokio::io::BufReader::new(c);
                let line = read_request(&mut c).await.unwrap();
                write_reply(c.get_mut(), &line.trim().to_uppercase())
                    .await
                    .unwrap();
            }
        });
        let sock = d.path().join(SOCKET);
        let a = ask(&sock, "hello", Duration::from_secs(5)).await.unwrap();
        assert_eq!(a.trim(), "HELLO");
        let b = tokio::task::spawn_blocking(move || {
            ask_blocking(&sock, "again", Duration::from_secs(5)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(b.trim(), "AGAIN");
        assert!(running(d.path()).is_none());
        announce(d.path()).unwrap();
        assert_eq!(running(d.path()).map(|p| p.0), Some(std::process::id()));
        write_private(&d.path().join("c.json"), b"{}").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("c.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn writers_at_once_each_succeed_and_leave_one_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_private(&path, format!("{i}").repeat(4096).as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 4096);
        assert!(text.chars().all(|c| c == text.chars().next().unwrap()));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
