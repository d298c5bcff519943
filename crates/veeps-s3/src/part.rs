//! Object storage as a part of veeps.

use crate::access::{Access, Gate};
use crate::api::{Api, Auth};
use crate::stats::Stats;
use crate::store::ObjectStore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use veeps_resource::metrics::{Collector, Sample};
use veeps_resource::{Part, Registry, Services};

/// Buckets and objects, the S3 API, bucket websites and lifecycle rules.
pub struct S3Part {
    objects: Arc<ObjectStore>,
    access: Arc<Access>,
    auth: Arc<Auth>,
    stats: Arc<Stats>,
    api: Mutex<Option<std::net::TcpListener>>,
    website: Mutex<Option<std::net::TcpListener>>,
    day: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The S3 API's worker threads, one per core, each with a runtime of its own that
    /// accepts on the listener and keeps its connections (no wakeups across threads, as
    /// nginx's workers).
    workers: Mutex<Vec<veeps_sys::netns::NsRuntime>>,
    audit: Option<Arc<dyn veeps_state::AuditSink>>,
    intrusion: Option<Arc<dyn veeps_resource::intrusion::Intrusion>>,
    tls: Option<veeps_http::TlsConfig>,
    edge: Option<Arc<veeps_resource::edge::Edge>>,
}

impl S3Part {
    /// The part; `api` and `website` are listeners bound already (none: not served), and
    /// a lifecycle "day" lasts `day`.
    pub fn new(
        objects: Arc<ObjectStore>,
        access: Arc<Access>,
        auth: Arc<Auth>,
        api: Option<std::net::TcpListener>,
        website: Option<std::net::TcpListener>,
        day: Duration,
    ) -> S3Part {
        S3Part {
            stats: Stats::new(objects.clone()),
            objects,
            access,
            auth,
            api: Mutex::new(api),
            website: Mutex::new(website),
            day,
            tasks: Mutex::new(vec![]),
            workers: Mutex::new(vec![]),
            audit: None,
            intrusion: None,
            tls: None,
            edge: None,
        }
    }

    /// The S3 API serves TLS with `tls`.
    pub fn with_tls(mut self, tls: veeps_http::TlsConfig) -> S3Part {
        self.tls = Some(tls);
        self
    }

    /// Failed signatures are reported to `intrusion`, and banned clients refused.
    pub fn with_intrusion(
        mut self,
        intrusion: Arc<dyn veeps_resource::intrusion::Intrusion>,
    ) -> S3Part {
        self.intrusion = Some(intrusion);
        self
    }

    /// The other AWS APIs in `edge` are served on the S3 listener too.
    pub fn with_edge(mut self, edge: Arc<veeps_resource::edge::Edge>) -> S3Part {
        self.edge = Some(edge);
        self
    }

    /// Every write (PUT, POST, DELETE) through the S3 API goes to `audit` too.
    pub fn with_audit(mut self, audit: Arc<dyn veeps_state::AuditSink>) -> S3Part {
        self.audit = Some(audit);
        self
    }

    fn take(l: &Mutex<Option<std::net::TcpListener>>) -> Option<tokio::net::TcpListener> {
        let l = l.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        let _ = l.set_nonblocking(true);
        tokio::net::TcpListener::from_std(l).ok()
    }

    fn limits() -> veeps_http::Limits {
        veeps_http::Limits {
            max_connections: veeps_http::per_listener_connections(),
            ..Default::default()
        }
    }

    /// The S3 API's bounds: as every listener's, but a connection may stay silent for five
    /// minutes, because the server itself can be the silent one: CompleteMultipartUpload
    /// re-seals every part into one blob before it answers (seconds per GiB).
    fn api_limits() -> veeps_http::Limits {
        veeps_http::Limits {
            inactivity_timeout: Some(Duration::from_secs(300)),
            ..Self::limits()
        }
    }
}

#[async_trait::async_trait]
impl Part for S3Part {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn after(&self) -> &'static [&'static str] {
        &["obs"]
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.objects.clone()).with(self.access.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        self.stats.collect(out);
    }

    /// Serves the S3 API and bucket websites on the ports bound at open, and runs
    /// lifecycle rules.
    fn start(&self) {
        let mut tasks = vec![tokio::spawn(crate::stats::run_background(
            self.stats.clone(),
            self.day,
        ))];
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(l) = api {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(%addr, "S3 listening");
            let _ = l.set_nonblocking(true);
            let n = veeps_sys::netns::NsRuntime::per_core();
            // The listener's connection cap, shared out: a worker at its share stops
            // accepting, and the others take the new connections.
            let mut limits = Self::api_limits();
            limits.max_connections = (limits.max_connections / n).max(1);
            let serve = |l: std::net::TcpListener, limits: veeps_http::Limits| {
                let (id, secret) = self.auth.root();
                let gate = Gate {
                    access: self.access.clone(),
                    root_id: id.into(),
                    root_secret: secret.into(),
                };
                let (objects, stats) = (self.objects.clone(), self.stats.clone());
                let hooks = crate::api::Hooks {
                    audit: self.audit.clone(),
                    intrusion: self.intrusion.clone(),
                    tls: self.tls.clone(),
                    edge: self.edge.clone(),
                };
                // Registered with the runtime that runs it.
                async move {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            crate::api::serve(l, Api::new(objects), gate, stats, limits, hooks)
                                .await
                        }
                        Err(e) => tracing::error!(error = %e, "cannot serve the S3 API"),
                    }
                }
            };
            // Each worker accepts on its own descriptor of the one listening socket.
            let copies: std::io::Result<Vec<std::net::TcpListener>> =
                (0..n).map(|_| l.try_clone()).collect();
            match copies.and_then(|c| {
                veeps_sys::netns::NsRuntime::start_many("s3", None, n).map(|w| (c, w))
            }) {
                Ok((copies, workers)) => {
                    for (l, w) in copies.into_iter().zip(&workers) {
                        drop(w.handle().spawn(serve(l, limits)));
                    }
                    self.workers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(workers);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no S3 worker threads; serving on the main runtime");
                    tasks.push(tokio::spawn(serve(l, Self::api_limits())));
                }
            }
        }
        if let Some(l) = Self::take(&self.website) {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(%addr, "bucket websites listening");
            let site = Arc::new(crate::website::Site {
                store: self.objects.clone(),
                access: self.access.clone(),
                stats: self.stats.clone(),
            });
            tasks.push(tokio::spawn(crate::website::serve(l, site, Self::limits())));
        }
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tasks);
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(
            self.objects.clone(),
            self.auth.clone(),
            self.day,
        ))
    }

    fn actions(&self) -> &'static [veeps_resource::RouteAction] {
        crate::http::ACTIONS
    }

    async fn shutdown(&self, _how: veeps_resource::Shutdown) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        // Stopped (and joined) away from the runtime: their connections end with them.
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        if !workers.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
        }
    }
}
