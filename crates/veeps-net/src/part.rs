//! Networking as a part of veeps.

use crate::Net;
use std::sync::Arc;
use veeps_resource::{Part, Registry, Services};

/// Networks: their resource types and the [`Net`] service other parts place endpoints with.
pub struct NetPart(pub Arc<Net>);

impl Part for NetPart {
    fn name(&self) -> &'static str {
        "net"
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.0.clone())
    }
}
