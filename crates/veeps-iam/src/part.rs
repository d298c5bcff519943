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
        // Hourly: expired tokens' records go (they are refused when presented anyway),
        // keys due rotate, keys past their deletion window are destroyed.
        let dir = self.0.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                t.tick().await;
                let d = dir.clone();
                let r = tokio::task::spawn_blocking(move || {
                    d.sweep_tokens()?;
                    d.key_housekeeping(time::OffsetDateTime::now_utc().unix_timestamp())
                })
                .await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "IAM housekeeping (expired tokens, key rotation and deletion) failed; retried in an hour");
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
