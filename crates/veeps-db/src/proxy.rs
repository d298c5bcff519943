//! The reader endpoint: a lean TCP proxy on a thread inside the endpoint's network
//! namespace, spreading connections over healthy readers (the writer when there are none).
//! TLS passes through to PostgreSQL untouched. When a target leaves the route, the
//! connections to it are cut at once. (The writer endpoint is an address, not a proxy.)
//!
//! It runs as a process of its own (`veeps db-proxy DIR`), apart from the control plane:
//! `DIR/endpoint.json` says where it listens, `DIR/routes.json` (written by the control
//! plane's [`Route::set`]) where connections go, and it reports its counters in
//! `DIR/stats.json`; it keeps serving from the last routes while the control plane is away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Where the endpoint listens (`endpoint.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointFile {
    /// The address and port.
    pub listen: SocketAddr,
    /// The namespace (the host's when empty).
    pub netns: String,
}

/// The endpoint's counters (`stats.json`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StatsFile {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections that found no target or could not reach it.
    pub failed: u64,
    /// Connections open.
    pub open: u64,
}

/// The endpoint's files.
pub const ENDPOINT: &str = "endpoint.json";
/// Its routes.
pub const ROUTES: &str = "routes.json";
/// Its counters.
pub const STATS: &str = "stats.json";
/// `PID START_TIME` of its process.
pub const PID: &str = "pid";

fn write_atomic(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

/// Where an endpoint sends connections, changed by the controller.
#[derive(Clone)]
pub struct Route {
    targets: watch::Sender<Vec<SocketAddr>>,
    /// Where changes are written for the endpoint's process.
    file: Arc<std::sync::Mutex<Option<std::path::PathBuf>>>,
    next: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    /// Connections that found no target or could not reach it.
    pub failed: Arc<AtomicU64>,
    /// Connections open now.
    pub open: Arc<AtomicU64>,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            targets: watch::channel(vec![]).0,
            file: Arc::default(),
            next: Arc::default(),
            accepted: Arc::default(),
            failed: Arc::default(),
            open: Arc::default(),
        }
    }
}

impl Route {
    /// Points the endpoint at `targets`; connections to any other target are cut.
    pub fn set(&self, targets: Vec<SocketAddr>) {
        let changed = self.targets.send_if_modified(|t| {
            if *t == targets {
                false
            } else {
                *t = targets.clone();
                true
            }
        });
        if changed {
            let file = self.file.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(f) = file {
                let body = serde_json::to_vec(&targets).unwrap_or_default();
                if let Err(e) = write_atomic(&f, &body) {
                    tracing::warn!(error = %e, "cannot write the reader endpoint's routes");
                }
            }
        }
    }

    /// From now on, changes go to `path` too (read by the endpoint's process).
    pub fn write_to(&self, path: &std::path::Path) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
    }

    /// The current targets.
    pub fn targets(&self) -> Vec<SocketAddr> {
        self.targets.borrow().clone()
    }

    fn pick(&self) -> Option<SocketAddr> {
        let t = self.targets.borrow();
        if t.is_empty() {
            return None;
        }
        Some(t[self.next.fetch_add(1, Ordering::Relaxed) % t.len()])
    }
}

/// A running endpoint; dropping it stops the proxy (and closes its listener).
pub struct Proxy {
    _rt: veeps_sys::netns::NsRuntime,
}

/// How long a connection waits for a target to appear (a failover in progress).
const WAIT_FOR_TARGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts an endpoint listening on `listen` inside `netns` (the host's when empty).
pub fn start(netns: &str, listen: SocketAddr, route: Route) -> std::io::Result<Proxy> {
    let rt = veeps_sys::netns::NsRuntime::start(
        format!("db-proxy-{listen}"),
        Some(netns).filter(|n| !n.is_empty()),
    )?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    rt.handle().spawn(async move {
        match bind(listen) {
            Ok(l) => {
                let _ = ready_tx.send(Ok(()));
                serve(l, route).await;
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("the endpoint thread ended early"))??;
    Ok(Proxy { _rt: rt })
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

async fn serve(listener: tokio::net::TcpListener, route: Route) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        route.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(relay(client, route.clone()));
    }
}

async fn relay(mut client: tokio::net::TcpStream, route: Route) {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_TARGET;
    let mut rx = route.targets.subscribe();
    let (target, mut server) = loop {
        if let Some(t) = route.pick() {
            match tokio::time::timeout(
                std::time::Duration::from_secs(3),
                tokio::net::TcpStream::connect(t),
            )
            .await
            {
                Ok(Ok(s)) => break (t, s),
                _ => {
                    route.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        // No target yet (a failover): wait for one, up to a limit.
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            route.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    route.open.fetch_add(1, Ordering::Relaxed);
    let removed = async {
        loop {
            if !rx.borrow_and_update().contains(&target) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = removed => {}
    }
    route.open.fetch_sub(1, Ordering::Relaxed);
}

/// `veeps db-proxy DIR`: runs a reader endpoint until its directory says otherwise.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let Some(dir) = args.first().map(std::path::PathBuf::from) else {
        eprintln!("usage: veeps db-proxy DIR (started by veeps for each reader endpoint)");
        return 2;
    };
    let ep: EndpointFile = match std::fs::read(dir.join(ENDPOINT))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.join(ENDPOINT).display());
            return 1;
        }
    };
    let route = Route::default();
    let routes = dir.join(ROUTES);
    let read_routes = |route: &Route| {
        if let Ok(b) = std::fs::read(&routes) {
            if let Ok(t) = serde_json::from_slice::<Vec<SocketAddr>>(&b) {
                route.set(t);
            }
        }
    };
    read_routes(&route);
    let _proxy = match start(&ep.netns, ep.listen, route.clone()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", ep.listen);
            return 1;
        }
    };
    let me = std::process::id();
    let started = veeps_sys::proc::start_time(me).unwrap_or(0);
    if let Err(e) = write_atomic(&dir.join(PID), format!("{me} {started}\n").as_bytes()) {
        eprintln!("cannot write the pid file: {e}");
        return 1;
    }
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(&routes);
    for tick in 0u64.. {
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Gone (the cluster deleted, or this endpoint moved): stop.
        match std::fs::read(dir.join(ENDPOINT))
            .ok()
            .and_then(|b| serde_json::from_slice::<EndpointFile>(&b).ok())
        {
            Some(now) if now == ep => {}
            _ => return 0,
        }
        let m = mtime(&routes);
        if m != seen {
            seen = m;
            read_routes(&route);
        }
        if tick % 20 == 0 {
            let st = StatsFile {
                accepted: route.accepted.load(Ordering::Relaxed),
                failed: route.failed.load(Ordering::Relaxed),
                open: route.open.load(Ordering::Relaxed),
            };
            let _ = write_atomic(
                &dir.join(STATS),
                &serde_json::to_vec(&st).unwrap_or_default(),
            );
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo(tag: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(tag).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        a
    }

    #[tokio::test]
    async fn routes_spread_and_cut_connections_to_removed_targets() {
        let a = echo(b"a").await;
        let b = echo(b"b").await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let route = Route::default();
        route.set(vec![a, b]);
        let _p = start("", listen, route.clone()).unwrap();
        let mut seen = vec![];
        let mut conns = vec![];
        for _ in 0..2 {
            let mut c = tokio::net::TcpStream::connect(listen).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut r = [0u8; 1];
            c.read_exact(&mut r).await.unwrap();
            seen.push(r[0]);
            conns.push(c);
        }
        seen.sort();
        assert_eq!(seen, b"ab");
        // Dropping a from the route cuts its connection; b's stays.
        route.set(vec![b]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut alive = 0;
        for c in &mut conns {
            let _ = c.write_all(b"x").await;
            let mut r = [0u8; 1];
            if let Ok(Ok(1)) =
                tokio::time::timeout(std::time::Duration::from_secs(1), c.read(&mut r)).await
            {
                assert_eq!(&r, b"b");
                alive += 1;
            }
        }
        assert_eq!(alive, 1);
        // With no target, a connection waits for one.
        route.set(vec![]);
        let r2 = route.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            r2.set(vec![a]);
        });
        let mut c = tokio::net::TcpStream::connect(listen).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut r = [0u8; 1];
        c.read_exact(&mut r).await.unwrap();
        assert_eq!(&r, b"a");
    }
}
