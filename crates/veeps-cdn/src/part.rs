//! The CDN as a part of veeps.

use crate::service::Cdn;
use std::sync::{Arc, Mutex};
use veeps_resource::metrics::Sample;
use veeps_resource::{Part, Registry, RouteAction, Services, Shutdown};

/// Distributions and the edge.
pub struct CdnPart {
    cdn: Arc<Cdn>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl CdnPart {
    /// Over the CDN service.
    pub fn new(cdn: Arc<Cdn>) -> CdnPart {
        CdnPart {
            cdn,
            task: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Part for CdnPart {
    fn name(&self) -> &'static str {
        "cdn"
    }

    fn after(&self) -> &'static [&'static str] {
        &["s3", "lb"]
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.cdn.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        let l = [("env", "system")];
        let stats = self.cdn.stats();
        for (name, v) in &stats {
            out.push(Sample::new(name, &l, *v as f64));
        }
        let (hits, misses) = (
            stats.get("cdn_hits_total").copied().unwrap_or(0),
            stats.get("cdn_misses_total").copied().unwrap_or(0),
        );
        if hits + misses > 0 {
            out.push(Sample::new(
                "cdn_hit_ratio",
                &l,
                hits as f64 / (hits + misses) as f64,
            ));
        }
    }

    async fn resume(&self) {
        if let Err(e) = self.cdn.ensure_plane().await {
            tracing::error!(error = %e, "CDN: the data plane could not start");
        }
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.cdn.run());
    }

    async fn shutdown(&self, how: Shutdown) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        self.cdn.stop(matches!(how, Shutdown::Everything)).await;
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(self.cdn.clone()))
    }

    fn actions(&self) -> &'static [RouteAction] {
        crate::http::ACTIONS
    }
}
