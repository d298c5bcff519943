//! Target groups as one balancer sees them: targets with their health (active checks with
//! thresholds), in-flight counts, draining, and the choice of a target per request.

use crate::model::{parse_matcher, Protocol, TgSpec};
use crate::proxy::{empty, Client};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One target.
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// In service.
    pub healthy: AtomicBool,
    /// Deregistered: no new requests.
    pub draining: AtomicBool,
    /// Removed: its checks stop.
    pub gone: AtomicBool,
    /// Requests being served.
    pub in_flight: AtomicUsize,
    /// Requests served (for requests per target).
    pub requests: AtomicU64,
    ok: AtomicU32,
    fail: AtomicU32,
}

impl Target {
    fn new(addr: SocketAddr) -> Target {
        Target {
            addr,
            healthy: false.into(),
            draining: false.into(),
            gone: false.into(),
            in_flight: 0.into(),
            requests: 0.into(),
            ok: 0.into(),
            fail: 0.into(),
        }
    }

    /// Takes the target out of service at once (it refused a connection); its health
    /// check puts it back after `healthy_threshold` passes.
    pub fn mark_down(&self) {
        self.ok.store(0, Ordering::Relaxed);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(target = %self.addr, "target refused a connection; out of service until its health check passes");
        }
    }

    /// Serving new requests.
    pub fn usable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }
}

/// A target group in one balancer.
pub struct TgState {
    /// Its declaration.
    pub spec: ArcSwap<TgSpec>,
    /// Its targets.
    pub targets: ArcSwap<Vec<Arc<Target>>>,
    rr: AtomicUsize,
    lock: Mutex<()>,
    /// Requests sent to this group so far.
    pub requests_total: AtomicU64,
    sampled: AtomicU64,
}

impl TgState {
    /// A group with no targets yet.
    pub fn new(spec: TgSpec) -> Arc<TgState> {
        Arc::new(TgState {
            spec: ArcSwap::from_pointee(spec),
            targets: ArcSwap::from_pointee(vec![]),
            rr: 0.into(),
            lock: Mutex::new(()),
            requests_total: 0.into(),
            sampled: 0.into(),
        })
    }

    /// Chooses a target for a request: the sticky one if usable, else by the algorithm.
    pub fn pick(&self, sticky: Option<SocketAddr>) -> Option<Arc<Target>> {
        let ts = self.targets.load();
        if let Some(s) = sticky {
            if let Some(t) = ts.iter().find(|t| t.addr == s && t.usable()) {
                return Some(t.clone());
            }
        }
        let usable: Vec<&Arc<Target>> = ts.iter().filter(|t| t.usable()).collect();
        if usable.is_empty() {
            return None;
        }
        if self.spec.load().algorithm == "least_outstanding_requests" {
            let start = self.rr.fetch_add(1, Ordering::Relaxed);
            let n = usable.len();
            // Ties go round robin.
            return (0..n)
                .map(|k| usable[(start + k) % n])
                .min_by_key(|t| t.in_flight.load(Ordering::Relaxed))
                .cloned();
        }
        let i = self.rr.fetch_add(1, Ordering::Relaxed) % usable.len();
        Some(usable[i].clone())
    }

    /// A usable target other than those `tried` (for a second attempt), the least busy.
    pub fn pick_other(&self, tried: &[SocketAddr]) -> Option<Arc<Target>> {
        let ts = self.targets.load();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let usable: Vec<&Arc<Target>> = ts
            .iter()
            .filter(|t| t.usable() && !tried.contains(&t.addr))
            .collect();
        let n = usable.len();
        (0..n)
            .map(|k| usable[(start + k) % n])
            .min_by_key(|t| t.in_flight.load(Ordering::Relaxed))
            .cloned()
    }

    /// Puts targets at `addrs` in service now, as another process of this balancer found
    /// them (their checks go on and take them out if they fail).
    pub fn assume_healthy(&self, addrs: &[SocketAddr]) {
        for t in self.targets.load().iter() {
            if addrs.contains(&t.addr) && !t.draining.load(Ordering::Relaxed) {
                t.healthy.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Healthy and unhealthy counts (draining ones aside).
    pub fn counts(&self) -> (usize, usize) {
        let ts = self.targets.load();
        let live: Vec<_> = ts
            .iter()
            .filter(|t| !t.draining.load(Ordering::Relaxed))
            .collect();
        let h = live
            .iter()
            .filter(|t| t.healthy.load(Ordering::Relaxed))
            .count();
        (h, live.len() - h)
    }

    /// Makes the targets `want`: new ones start their health checks (out of service until
    /// healthy); missing ones drain and go.
    pub fn set_targets(
        self: &Arc<Self>,
        want: &[SocketAddr],
        client: &Client,
        rt: &tokio::runtime::Handle,
    ) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.targets.load_full();
        let mut next: Vec<Arc<Target>> = vec![];
        for t in cur.iter() {
            if want.contains(&t.addr) && !t.draining.load(Ordering::Relaxed) {
                next.push(t.clone());
            } else if !t.draining.swap(true, Ordering::Relaxed) {
                // Deregistered: let in-flight requests finish, then drop it.
                next.push(t.clone());
                let (me, t) = (self.clone(), t.clone());
                rt.spawn(async move { me.drain_then_remove(t).await });
            } else {
                next.push(t.clone());
            }
        }
        for a in want {
            if !next
                .iter()
                .any(|t| t.addr == *a && !t.draining.load(Ordering::Relaxed))
            {
                let t = Arc::new(Target::new(*a));
                next.push(t.clone());
                let (me, c) = (self.clone(), client.clone());
                rt.spawn(async move { me.check_loop(t, c).await });
            }
        }
        self.targets.store(Arc::new(next));
    }

    /// Drains `addr` now (a deregistration): waits until its in-flight requests are done or
    /// the deregistration delay passes. Returns false if it is not a target here.
    pub async fn drain(self: &Arc<Self>, ip: std::net::IpAddr) -> bool {
        let ts: Vec<Arc<Target>> = self
            .targets
            .load()
            .iter()
            .filter(|t| t.addr.ip() == ip)
            .cloned()
            .collect();
        if ts.is_empty() {
            return false;
        }
        let mut waits = vec![];
        for t in ts {
            t.draining.store(true, Ordering::Relaxed);
            waits.push(self.clone().drain_then_remove(t));
        }
        futures::future::join_all(waits).await;
        true
    }

    async fn drain_then_remove(self: Arc<Self>, t: Arc<Target>) {
        let delay = Duration::from_secs(self.spec.load().deregistration_delay);
        let deadline = tokio::time::Instant::now() + delay;
        while t.in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t.gone.store(true, Ordering::Relaxed);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let next: Vec<Arc<Target>> = self
            .targets
            .load()
            .iter()
            .filter(|x| !Arc::ptr_eq(x, &t))
            .cloned()
            .collect();
        self.targets.store(Arc::new(next));
    }

    /// Stops every check (the group left the balancer).
    pub fn stop(&self) {
        for t in self.targets.load().iter() {
            t.gone.store(true, Ordering::Relaxed);
        }
    }

    async fn check_loop(self: Arc<Self>, t: Arc<Target>, client: Client) {
        // The first check runs at once, so a new target can enter service quickly.
        loop {
            if t.gone.load(Ordering::Relaxed) {
                return;
            }
            let spec = self.spec.load_full();
            let ok = check(&client, &spec, t.addr).await;
            let h = &spec.health;
            if ok {
                t.fail.store(0, Ordering::Relaxed);
                let n = t.ok.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= h.healthy_threshold && !t.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(target_group = %spec.name, target = %t.addr, "target is healthy");
                }
            } else {
                t.ok.store(0, Ordering::Relaxed);
                let n = t.fail.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= h.unhealthy_threshold && t.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(target_group = %spec.name, target = %t.addr, "target is unhealthy");
                }
            }
            // Until a target is in service, check it often; then at the set interval.
            let wait = if t.healthy.load(Ordering::Relaxed) {
                h.interval
            } else {
                h.interval.min(0.2)
            };
            tokio::time::sleep(Duration::from_secs_f64(wait.max(0.05))).await;
        }
    }
}

async fn check(client: &Client, spec: &TgSpec, addr: SocketAddr) -> bool {
    let h = &spec.health;
    let port = h.port.unwrap_or(addr.port());
    let scheme = match h.protocol {
        Protocol::Http => "http",
        Protocol::Https => "https",
    };
    let uri = format!("{scheme}://{}:{port}{}", addr.ip(), h.path);
    let Ok(req) = hyper::Request::get(&uri)
        .header("user-agent", "veeps-lb-health/1")
        .body(empty())
    else {
        return false;
    };
    let timeout = Duration::from_secs_f64(h.timeout.max(0.05));
    let Ok(Ok(resp)) = tokio::time::timeout(timeout, client.request(req)).await else {
        return false;
    };
    let status = resp.status().as_u16();
    // Read (and drop) the body so the connection can be reused.
    let _ = tokio::time::timeout(timeout, http_body_util::BodyExt::collect(resp.into_body())).await;
    parse_matcher(&h.matcher)
        .map(|ranges| ranges.iter().any(|(a, b)| (*a..=*b).contains(&status)))
        .unwrap_or(status == 200)
}

/// Health of targets by address, across target groups (for the compute part).
pub fn find<'a>(
    tgs: impl Iterator<Item = (&'a String, &'a Arc<TgState>)>,
    wanted: &[String],
    ip: std::net::IpAddr,
) -> Option<bool> {
    let mut seen = None;
    for (id, tg) in tgs {
        if !wanted.contains(id) {
            continue;
        }
        for t in tg.targets.load().iter() {
            if t.addr.ip() == ip && !t.draining.load(Ordering::Relaxed) {
                let h = t.healthy.load(Ordering::Relaxed);
                seen = Some(seen.unwrap_or(true) && h);
            }
        }
    }
    seen
}

/// Per target group request counts since the last call (requests per target).
pub fn take_requests(tgs: &HashMap<String, Arc<TgState>>) -> Vec<(String, u64, usize)> {
    tgs.iter()
        .map(|(id, tg)| {
            let total = tg.requests_total.load(Ordering::Relaxed);
            let n = total.saturating_sub(tg.sampled.swap(total, Ordering::Relaxed));
            let usable = tg.targets.load().iter().filter(|t| t.usable()).count();
            (id.clone(), n, usable)
        })
        .collect()
}
