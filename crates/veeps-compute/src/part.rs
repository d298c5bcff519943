//! Compute as a part of veeps.

use crate::policy::Policies;
use crate::Compute;
use std::sync::Arc;
use veeps_resource::metrics::Sample;
use veeps_resource::{Part, Registry, Services, Shutdown};

/// Images, groups of instances and their scaling policies.
pub struct ComputePart {
    /// Images and groups.
    pub compute: Arc<Compute>,
    /// Scaling policies.
    pub policies: Arc<Policies>,
}

#[async_trait::async_trait]
impl Part for ComputePart {
    fn name(&self) -> &'static str {
        "compute"
    }

    fn after(&self) -> &'static [&'static str] {
        &["net", "obs"]
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r, Some(self.compute.images.clone()));
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.compute.clone()).with(self.policies.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        out.extend(self.compute.samples());
    }

    async fn resume(&self) {
        self.compute.reconcile_all().await;
        self.policies.run();
        self.compute.run_updates();
    }

    async fn shutdown(&self, how: Shutdown) {
        self.compute.shutdown(how == Shutdown::Everything).await;
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(self.compute.clone()))
    }

    fn actions(&self) -> &'static [veeps_resource::RouteAction] {
        crate::http::ACTIONS
    }
}
