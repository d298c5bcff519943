//! Intrusion detection as a part of veeps.

use crate::Bans;
use std::sync::{Arc, Mutex};
use veeps_resource::metrics::Sample;
use veeps_resource::{Part, Registry, RouteAction, Services, Shutdown};

/// Jails and bans: the nftables set is the data plane (it keeps dropping banned addresses
/// while the control plane is down), removed only when everything stops.
pub struct BanPart {
    bans: Arc<Bans>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl BanPart {
    /// Over the ban service.
    pub fn new(bans: Arc<Bans>) -> BanPart {
        BanPart {
            bans,
            task: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Part for BanPart {
    fn name(&self) -> &'static str {
        "ban"
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.bans.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        let l = [("env", "system")];
        out.push(Sample::new(
            "bans_active",
            &l,
            self.bans.list().len() as f64,
        ));
        out.push(Sample::new(
            "bans_total",
            &l,
            self.bans
                .banned_total
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        ));
        out.push(Sample::new(
            "auth_failures_total",
            &l,
            self.bans
                .failures
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        ));
    }

    fn start(&self) {
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.bans.start());
    }

    async fn shutdown(&self, how: Shutdown) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        if how == Shutdown::Everything {
            self.bans.remove_table().await;
        }
    }

    fn routes(&self) -> Option<axum::Router> {
        Some(crate::http::routes(self.bans.clone()))
    }

    fn actions(&self) -> &'static [RouteAction] {
        crate::http::ACTIONS
    }
}
