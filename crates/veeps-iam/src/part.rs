//! IAM as a part of veeps.

use crate::directory::Directory;
use std::sync::Arc;
use veeps_resource::{Part, Registry, RouteAction, Services};

/// Users, groups, policies and credentials: global to the server.
pub struct IamPart(pub Arc<Directory>);

#[async_trait::async_trait]
impl Part for IamPart {
    fn name(&self) -> &'static str {
        "iam"
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.0.clone())
    }

    fn start(&self) {
        // Expired tokens are refused when presented; this removes their records.
        let dir = self.0.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                t.tick().await;
                let d = dir.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.sweep_tokens()).await {
                    tracing::warn!(error = %e, "removing expired tokens failed; retried in an hour");
                }
            }
        });
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(self.0.clone()))
    }

    fn actions(&self) -> &'static [RouteAction] {
        crate::http::ACTIONS
    }
}
