//! Functions as a part of veeps.

use crate::api::{Caller, Credentials, LambdaApi};
use crate::Functions;
use std::sync::{Arc, Mutex};
use veeps_resource::metrics::Sample;
use veeps_resource::{Part, Registry, Services};
use veeps_s3::access::{Access, RequestCx};

/// The AWS endpoint's keys: the root pair, users' access keys and roles' sessions, with
/// the users' and roles' IAM policies.
pub struct EndpointCredentials {
    /// The root access key id and secret.
    pub root: (String, String),
    /// Users' keys and roles' sessions.
    pub access: Arc<Access>,
}

impl Credentials for EndpointCredentials {
    fn lookup(&self, key: &str) -> Option<Caller> {
        if key == self.root.0 {
            return Some(Caller {
                principal: None,
                secret: self.root.1.clone(),
                token_ok: None,
            });
        }
        if let Some((s, secret)) = self.access.session(key) {
            return Some(Caller {
                principal: Some(format!("role/{}", s.role)),
                secret,
                token_ok: Some(Arc::new(move |t: &str| {
                    veeps_iam::directory::Directory::session_token_ok(&s, t)
                })),
            });
        }
        let k = self
            .access
            .key(key)
            .filter(|k| self.access.user_exists(&k.user))?;
        let secret = self.access.secret(&k)?;
        Some(Caller {
            principal: Some(k.user),
            secret,
            token_ok: None,
        })
    }

    fn allowed(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        source: std::net::IpAddr,
    ) -> bool {
        let Some(user) = &caller.principal else {
            return true;
        };
        let cx = RequestCx {
            user: Some(user.clone()),
            source_ip: Some(source),
            ..Default::default()
        };
        self.access.identity_allows(&cx, action, resource)
    }
}

/// The part.
pub struct FnPart {
    functions: Arc<Functions>,
    edge: Option<Arc<veeps_resource::edge::Edge>>,
    creds: Arc<dyn Credentials>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl FnPart {
    /// The part; the Lambda API is served on `edge` (the AWS endpoint) when given.
    pub fn new(
        functions: Arc<Functions>,
        edge: Option<Arc<veeps_resource::edge::Edge>>,
        creds: Arc<dyn Credentials>,
    ) -> FnPart {
        FnPart {
            functions,
            edge,
            creds,
            tasks: Mutex::new(vec![]),
        }
    }
}

#[async_trait::async_trait]
impl Part for FnPart {
    fn name(&self) -> &'static str {
        "fn"
    }

    fn after(&self) -> &'static [&'static str] {
        &["obs", "s3", "iam", "net"]
    }

    fn register(&self, r: &mut Registry) {
        crate::resources::register(r);
    }

    fn provide(&self, s: Services) -> Services {
        s.with(self.functions.clone())
    }

    fn collect(&self, out: &mut Vec<Sample>) {
        self.functions.collect(out);
    }

    fn start(&self) {
        if let Err(e) = self.functions.open() {
            tracing::error!(error = %e, "cannot load the recorded functions");
        }
        if let Some(edge) = &self.edge {
            edge.register(Arc::new(LambdaApi::new(
                self.functions.clone(),
                self.creds.clone(),
            )));
        }
        let f = self.functions.clone();
        let reaper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                f.reap().await;
                f.fire_schedules();
            }
        });
        let queue = tokio::spawn(self.functions.clone().run_queue());
        let socket = crate::local::socket_path(self.functions.data_dir());
        let functions = self.functions.clone();
        let local = tokio::spawn(async move {
            if let Err(e) = crate::local::serve(functions, socket).await {
                tracing::error!(error = %e, "the local invoke socket failed; balancers cannot invoke functions");
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([reaper, queue, local]);
    }

    /// Endpoints of environments a previous run left (VPCs are reconciled by now).
    async fn resume(&self) {
        self.functions.sweep_endpoints().await;
    }

    async fn shutdown(&self, _how: veeps_resource::Shutdown) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        // Environments are the control plane's children: they stop with it.
        self.functions.stop_all().await;
    }
}
