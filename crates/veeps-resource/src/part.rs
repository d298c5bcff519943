//! The part contract. veeps is a list of parts (networking, compute, balancers, storage,
//! databases...): each part's crate implements [`Part`] once, and the server runs the
//! list. A part brings its resource types, the services its controllers reach through
//! [`crate::Ctx::service`], its metrics, the work it resumes at start, its shutdown and its
//! API routes. Adding a part is one crate and one line in the server's list; nothing else
//! in the server changes.
//!
//! Start, in [`Parts`]' order (dependencies first, as each part declares in
//! [`Part::after`]): every part's [`Part::start`] (background work that restoring resources
//! may need, like the metrics store), then the engine reconciles every recorded resource,
//! then every part's [`Part::resume`] (adopt what still runs, resume supervisors and health
//! checks). Shutdown runs in the reverse order.

use crate::metrics::{Collector, Sample};
use crate::{Registry, Services};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One part of veeps.
#[async_trait::async_trait]
pub trait Part: Send + Sync + 'static {
    /// Its name, unique in the list (logs, ordering).
    fn name(&self) -> &'static str;

    /// Parts that must start before this one (and stop after it).
    fn after(&self) -> &'static [&'static str] {
        &[]
    }

    /// Registers its resource types, data sources and plan checks.
    fn register(&self, _registry: &mut Registry) {}

    /// Adds the services its controllers (and other parts' controllers) use.
    fn provide(&self, services: Services) -> Services {
        services
    }

    /// Appends its metric samples; called every collection interval.
    fn collect(&self, _out: &mut Vec<Sample>) {}

    /// Starts background work, before recorded resources are restored.
    fn start(&self) {}

    /// After recorded resources are restored: adopts what still runs and resumes the
    /// part's supervisors.
    async fn resume(&self) {}

    /// Stops what the part runs on the way down (the reverse of the start order): its
    /// control-plane work always, its data plane when `how` says everything stops.
    async fn shutdown(&self, _how: Shutdown) {}

    /// Its API routes (merged into the API, behind its authentication), if any.
    fn routes(&self) -> Option<axum::Router> {
        None
    }

    /// The IAM action and resource of each of its routes: a route without one is refused
    /// to everyone (a bug caught by the first call).
    fn actions(&self) -> &'static [RouteAction] {
        &[]
    }
}

/// What a route does, in IAM's terms: the action a policy names and the resource ARN it
/// acts on. `resource` may use the route's path parameters (`{env}`, `{name}`).
#[derive(Debug, Clone, Copy)]
pub struct RouteAction {
    /// `GET`, `POST`, `DELETE`...
    pub method: &'static str,
    /// The route's path as registered, like `/v1/envs/{env}/db/{name}`.
    pub path: &'static str,
    /// Like `db:Failover`.
    pub action: &'static str,
    /// Like `arn:veeps:db:{env}:cluster/{name}`.
    pub resource: &'static str,
}

impl RouteAction {
    /// A route's action.
    pub const fn new(
        method: &'static str,
        path: &'static str,
        action: &'static str,
        resource: &'static str,
    ) -> RouteAction {
        RouteAction {
            method,
            path,
            action,
            resource,
        }
    }

    /// The resource ARN with the path parameters of `uri_path` (matched against `path`)
    /// filled in.
    pub fn resource_for(&self, uri_path: &str) -> String {
        let mut out = self.resource.to_string();
        for (pat, seg) in self.path.split('/').zip(uri_path.split('/')) {
            if let Some(name) = pat.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let seg: String = seg
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                    .take(128)
                    .collect();
                out = out.replace(&format!("{{{name}}}"), &seg);
            }
        }
        out
    }
}

/// How far a shutdown goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// The control plane alone (`veeps server` ending, crashing or being replaced): what
    /// serves traffic keeps running, and the next start adopts it.
    ControlPlane,
    /// Everything veeps started (`veeps up` ending, `veeps down`).
    Everything,
}

/// Why a list of parts cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// Two parts share a name.
    #[error("two parts are named {0}")]
    Duplicate(&'static str),
    /// A part waits for one that is not in the list.
    #[error("part {part} starts after {missing}, which is not in the list")]
    Missing {
        /// The part.
        part: &'static str,
        /// What it names.
        missing: &'static str,
    },
    /// Parts wait for each other.
    #[error("parts wait for each other: {0}")]
    Cycle(String),
}

/// The parts of a server, in start order.
#[derive(Clone)]
pub struct Parts(Arc<Vec<Arc<dyn Part>>>);

impl Parts {
    /// Orders `parts` so that each comes after those it names; the given order breaks ties.
    pub fn new(parts: Vec<Arc<dyn Part>>) -> Result<Parts, PartError> {
        let names: Vec<&'static str> = parts.iter().map(|p| p.name()).collect();
        let mut seen = BTreeSet::new();
        for n in &names {
            if !seen.insert(*n) {
                return Err(PartError::Duplicate(n));
            }
        }
        for p in &parts {
            if let Some(m) = p.after().iter().find(|m| !seen.contains(*m)) {
                return Err(PartError::Missing {
                    part: p.name(),
                    missing: m,
                });
            }
        }
        let mut left = parts;
        let mut done: BTreeSet<&'static str> = BTreeSet::new();
        let mut out = Vec::with_capacity(left.len());
        while !left.is_empty() {
            let Some(i) = left
                .iter()
                .position(|p| p.after().iter().all(|a| done.contains(a)))
            else {
                let waiting: Vec<_> = left.iter().map(|p| p.name()).collect();
                return Err(PartError::Cycle(waiting.join(", ")));
            };
            let p = left.remove(i);
            done.insert(p.name());
            out.push(p);
        }
        Ok(Parts(Arc::new(out)))
    }

    /// The parts, in start order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Part>> {
        self.0.iter()
    }

    /// Names in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.name()).collect()
    }

    /// Every part's resource types.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::new();
        for p in self.iter() {
            p.register(&mut r);
        }
        r
    }

    /// Every part's services.
    pub fn services(&self) -> Services {
        self.iter().fold(Services::default(), |s, p| p.provide(s))
    }

    /// Starts every part's background work.
    pub fn start(&self) {
        for p in self.iter() {
            p.start();
        }
    }

    /// Resumes every part, dependencies first.
    pub async fn resume(&self) {
        for p in self.iter() {
            let t = std::time::Instant::now();
            p.resume().await;
            tracing::debug!(
                part = p.name(),
                elapsed_ms = t.elapsed().as_millis() as u64,
                "resumed"
            );
        }
    }

    /// Stops every part, dependents first.
    pub async fn shutdown(&self, how: Shutdown) {
        for p in self.0.iter().rev() {
            p.shutdown(how).await;
        }
    }

    /// Every part's route actions.
    pub fn actions(&self) -> Vec<RouteAction> {
        self.iter()
            .flat_map(|p| p.actions().iter().copied())
            .collect()
    }

    /// Every part's routes in one router.
    pub fn routes(&self) -> axum::Router {
        self.iter()
            .filter_map(|p| p.routes())
            .fold(axum::Router::new(), |r, p| r.merge(p))
    }
}

impl Collector for Parts {
    fn collect(&self, out: &mut Vec<Sample>) {
        for p in self.iter() {
            p.collect(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(&'static str, &'static [&'static str]);

    impl Part for P {
        fn name(&self) -> &'static str {
            self.0
        }
        fn after(&self) -> &'static [&'static str] {
            self.1
        }
    }

    fn order(ps: Vec<P>) -> Result<Vec<&'static str>, String> {
        Parts::new(
            ps.into_iter()
                .map(|p| Arc::new(p) as Arc<dyn Part>)
                .collect(),
        )
        .map(|p| p.names())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn parts_start_after_what_they_name_and_bad_lists_are_refused() {
        assert_eq!(
            order(vec![P("db", &["net", "s3"]), P("s3", &[]), P("net", &[])]),
            Ok(vec!["s3", "net", "db"])
        );
        assert_eq!(
            order(vec![P("a", &[]), P("a", &[])]),
            Err("two parts are named a".into())
        );
        assert_eq!(
            order(vec![P("lb", &["compute"])]),
            Err("part lb starts after compute, which is not in the list".into())
        );
        assert_eq!(
            order(vec![P("a", &["b"]), P("b", &["a"]), P("c", &[])]),
            Err("parts wait for each other: a, b".into())
        );
    }
}

/// Error answers for parts' routes, in the API's one error shape (`veeps_wire::ApiError`).
pub mod reply {
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    /// An error answer with `status`.
    pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
        (
            status,
            axum::Json(veeps_wire::ApiError {
                error: msg.into(),
                text: None,
                diagnostics: vec![],
            }),
        )
            .into_response()
    }

    /// 400: the request is wrong; the message says how.
    pub fn bad(msg: impl Into<String>) -> Response {
        error(StatusCode::BAD_REQUEST, msg)
    }

    /// 404.
    pub fn not_found(msg: impl Into<String>) -> Response {
        error(StatusCode::NOT_FOUND, msg)
    }

    /// 500: the server failed.
    pub fn fail(msg: impl Into<String>) -> Response {
        error(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}
