//! Database clusters as a part of veeps.

use crate::Dbs;
use std::sync::Arc;
use veeps_resource::metrics::Sample;
use veeps_resource::{Part, Registry, Services};

/// PostgreSQL clusters: nodes, endpoints, failover and backups (into object storage).
pub struct DbPart(pub Arc<Dbs>);

#[async_trait::async_trait]
impl Part for DbPart {
    fn name(&self) -> &'static str {
        "db"
    }

    fn after(&self) -> &'static [&'static str] {
        &["net", "obs", "s3"]
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.0.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        out.extend(self.0.samples());
    }

    async fn resume(&self) {
        self.0.reconcile_all().await;
        self.0.run();
    }

    async fn shutdown(&self, how: veeps_resource::Shutdown) {
        self.0
            .shutdown(how == veeps_resource::Shutdown::Everything)
            .await;
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(self.0.clone()))
    }

    fn actions(&self) -> &'static [veeps_resource::RouteAction] {
        crate::http::ACTIONS
    }
}
