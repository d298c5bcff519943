//! The AWS-compatible endpoint: one listener (S3's) serves every AWS API veeps speaks, each
//! request routed by the service its SigV4 credential scope names, so `AWS_ENDPOINT_URL`
//! is one address. Parts that serve an API register it here; the listener asks.

use std::sync::{Arc, RwLock};

/// A request as the endpoint hands it over: its body not read yet.
pub type Request = axum::http::Request<axum::body::Body>;
/// An answer, whole.
pub type Response = axum::http::Response<axum::body::Bytes>;

/// An AWS API served on the shared endpoint.
#[async_trait::async_trait]
pub trait AwsService: Send + Sync {
    /// The SigV4 service name it answers (`lambda`).
    fn service(&self) -> &'static str;
    /// Whether it answers an unsigned request for `host` and `path` (its own URL space).
    fn claims(&self, _host: &str, _path: &str) -> bool {
        false
    }
    /// Answers one request from `peer`.
    async fn call(&self, req: Request, peer: std::net::SocketAddr) -> Response;
}

/// The services registered, besides S3.
#[derive(Default)]
pub struct Edge {
    services: RwLock<Vec<Arc<dyn AwsService>>>,
}

impl Edge {
    /// Adds (or replaces) the service answering `s.service()`.
    pub fn register(&self, s: Arc<dyn AwsService>) {
        let mut all = self.services.write().unwrap_or_else(|p| p.into_inner());
        all.retain(|x| x.service() != s.service());
        all.push(s);
    }

    /// The service for a request signed for `service`, or claiming `host` and `path`.
    pub fn route(
        &self,
        service: Option<&str>,
        host: &str,
        path: &str,
    ) -> Option<Arc<dyn AwsService>> {
        let all = self.services.read().unwrap_or_else(|p| p.into_inner());
        match service {
            Some(name) => all.iter().find(|s| s.service() == name).cloned(),
            None => all.iter().find(|s| s.claims(host, path)).cloned(),
        }
    }
}

/// Where veeps' own processes invoke functions (a balancer's `lambda` target groups): a
/// Unix socket under the data directory, root's alone.
pub fn local_invoke_socket(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("functions").join("invoke.sock")
}
