//! DNS as a part of veeps.

use crate::Dns;
use std::sync::{Arc, Mutex};
use veeps_resource::metrics::Sample;
use veeps_resource::{Part, Registry, Services, Shutdown};

/// Zones, records, health checks, the public listener and the VPC resolvers.
pub struct DnsPart {
    dns: Arc<Dns>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DnsPart {
    /// Over the DNS service.
    pub fn new(dns: Arc<Dns>) -> DnsPart {
        DnsPart {
            dns,
            task: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Part for DnsPart {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn after(&self) -> &'static [&'static str] {
        &["net", "lb"]
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.dns.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        let l = [("env", "system")];
        for (name, v) in self.dns.stats() {
            out.push(Sample::new(&name, &l, v as f64));
        }
        // Route 53's HealthCheckStatus: 1 healthy, 0 not (an alarm can watch it).
        for (c, st) in self.dns.health() {
            out.push(Sample::new(
                "health_check_status",
                &[("env", c.env.as_str()), ("health_check", c.id.as_str())],
                if st.healthy { 1.0 } else { 0.0 },
            ));
        }
    }

    async fn resume(&self) {
        if let Err(e) = self.dns.ensure_plane().await {
            tracing::error!(error = %e, "DNS: the data plane could not start");
        }
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.dns.run());
    }

    async fn shutdown(&self, how: Shutdown) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        self.dns.stop(matches!(how, Shutdown::Everything)).await;
    }
}
