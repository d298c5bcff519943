//! A `tracing` layer that copies the server's own log events into the log store
//! (environment `system`, group `server`).

use crate::logs::{LogLine, LogStore};
use std::fmt::Write;
use std::sync::{Arc, OnceLock};
use tracing::field::{Field, Visit};

static SINK: OnceLock<Arc<LogStore>> = OnceLock::new();

/// Points the layer at a log store (once; later calls are ignored).
pub fn set_sink(store: Arc<LogStore>) {
    let _ = SINK.set(store);
}

/// The layer; install it in the subscriber at start, it writes once a sink is set.
pub struct ServerLogLayer;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ServerLogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(sink) = SINK.get() else { return };
        let meta = event.metadata();
        let mut f = Fields(String::new());
        event.record(&mut f);
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let _ = sink.append(LogLine {
            ts,
            env: "system".into(),
            group: "server".into(),
            source: meta
                .target()
                .split("::")
                .next()
                .unwrap_or("veeps")
                .to_string(),
            stream: meta.level().to_string().to_lowercase(),
            text: f.0,
        });
    }
}
