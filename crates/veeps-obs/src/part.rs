//! Observability as a part of veeps.

use crate::Obs;
use std::sync::Arc;
use veeps_resource::{Part, Registry, Services};

/// Metrics, logs, alarms and topics: the store starts first, so that everything restored
/// after it can record.
pub struct ObsPart(pub Arc<Obs>);

impl Part for ObsPart {
    fn name(&self) -> &'static str {
        "obs"
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.0.clone())
    }

    fn start(&self) {
        self.0.start();
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(self.0.clone()))
    }

    fn actions(&self) -> &'static [veeps_resource::RouteAction] {
        crate::http::ACTIONS
    }
}
