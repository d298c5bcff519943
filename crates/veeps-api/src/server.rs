#![allow(clippy::result_large_err)] // handlers return ready-made error responses
//! The API server.

use crate::{ApiError, DiagnosticJson, RunRequest};
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::Digest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use veeps_engine::{Engine, EngineError, Request as EngineRequest};
use veeps_resource::Shutdown;
use veeps_state::Store;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory is unusable.
    #[error("data directory {path}: {err}")]
    DataDir {
        /// Its path.
        path: String,
        /// Why.
        err: String,
    },
    /// The store failed to open (another server may be using it).
    #[error("cannot open the state store in {path}: {err} (is another veeps server running on this data directory?)")]
    Store {
        /// Its path.
        path: String,
        /// Why.
        err: String,
    },
    /// Keys failed.
    #[error(transparent)]
    Kms(#[from] veeps_kms::KmsError),
    /// The listen address is unusable.
    #[error("cannot listen on {addr}: {err}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        err: String,
    },
}

/// A running control plane's shared parts.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The store.
    pub store: Arc<Store>,
    /// Metrics, logs, alarms.
    pub obs: Arc<veeps_obs::Obs>,
    /// The internal CA's certificate.
    pub ca_pem: String,
    /// Buckets and objects.
    pub objects: Arc<veeps_s3::store::ObjectStore>,
    /// Networks.
    pub net: Arc<veeps_net::Net>,
    /// Every part, in start order.
    pub parts: veeps_resource::Parts,
    /// S3 credentials.
    pub s3_auth: Arc<veeps_s3::api::Auth>,
    /// S3 access keys and bucket policies.
    pub s3_access: Arc<veeps_s3::access::Access>,
    /// Users, groups, policies and credentials.
    pub iam: Arc<veeps_iam::directory::Directory>,
    /// Jails and bans.
    pub bans: Arc<veeps_ban::Bans>,
    /// DNS.
    pub dns: Arc<veeps_dns::Dns>,
    /// The CDN.
    pub cdn: Arc<veeps_cdn::service::Cdn>,
    /// Certificates issued by veeps' CA.
    certs: Arc<veeps_pki::Certs>,
    /// TLS for the API (`None`: off on loopback, on elsewhere).
    api_tls: Option<bool>,
    /// The IAM action of every route, by method and path.
    actions: Arc<HashMap<(String, String), veeps_resource::RouteAction>>,
    api: Arc<ApiStats>,
    token_hash: [u8; 32],
    /// `veeps down` asked for everything to stop.
    down: Arc<tokio::sync::Notify>,
    /// The audit trail's signing key and where digests are exported.
    trail: Arc<Trail>,
}

/// The audit trail's signing key (`DATA_DIR/audit.key`), export directory and archive.
struct Trail {
    key: veeps_state::TrailKey,
    export: std::path::PathBuf,
    /// Where sealed entries go once `archive_days` old.
    objects: Arc<veeps_s3::store::ObjectStore>,
    archive_days: u32,
}

/// The bucket sealed audit entries are archived to (reserved: out of reach of users).
const AUDIT_BUCKET: &str = "veeps-audit";
const K_ARCHIVED: &str = "audit/archived-through";

impl Trail {
    /// Seals what is new and exports the digest (and the public key) as files; the digest
    /// is in the store even when the export fails.
    fn seal(&self, store: &Store) -> Result<veeps_wire::Sealed, String> {
        let Some(d) = store.seal_audit(&self.key).map_err(|e| e.to_string())? else {
            return Ok(veeps_wire::Sealed {
                digest: None,
                exported: None,
                archived: self.archive(store)?,
            });
        };
        let path = self.export.join(format!("digest-{:06}.json", d.seq));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.export)?;
            std::fs::write(self.export.join("audit.pub"), format!("{}\n", d.public_key))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&d).unwrap_or_default())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        let exported = match write() {
            Ok(()) => Some(path.display().to_string()),
            Err(e) => {
                tracing::error!(dir = %self.export.display(), error = %e, "could not export an audit digest; it is kept in the store");
                None
            }
        };
        Ok(veeps_wire::Sealed {
            digest: Some(d),
            exported,
            archived: self.archive(store)?,
        })
    }

    /// Copies sealed entries older than the archive age, in order and once, to objects of
    /// the audit bucket (JSON lines, encrypted at rest like every object); returns their
    /// `s3://` names. Retention later removes the entries from the log, not the archive.
    fn archive(&self, store: &Store) -> Result<Vec<String>, String> {
        let e = |e: veeps_state::StateError| e.to_string();
        let sealed = store
            .audit_digests()
            .map_err(e)?
            .last()
            .map(|d| d.to_entry)
            .unwrap_or(0);
        let mut through: u64 = store.kv_get(K_ARCHIVED).map_err(e)?.unwrap_or(0);
        let cutoff = (time::OffsetDateTime::now_utc()
            - time::Duration::days(self.archive_days.into()))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
        let mut out = vec![];
        loop {
            let batch: Vec<veeps_state::AuditEntry> = store
                .audit_after(through, 10_000)
                .map_err(e)?
                .into_iter()
                .take_while(|x| x.seq <= sealed && x.time.as_str() < cutoff.as_str())
                .collect();
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                break;
            };
            if self.objects.bucket(AUDIT_BUCKET).is_err() {
                match self.objects.create_bucket(AUDIT_BUCKET, "system") {
                    Ok(_) | Err(veeps_s3::store::StoreError::BucketExists(_)) => {}
                    Err(err) => return Err(format!("the audit bucket: {err}")),
                }
            }
            let key = format!(
                "audit/{}/entries-{:012}-{:012}.jsonl",
                first.time.get(..10).unwrap_or("unknown"),
                first.seq,
                last.seq
            );
            let mut body = Vec::new();
            for x in &batch {
                serde_json::to_writer(&mut body, x).map_err(|err| err.to_string())?;
                body.push(b'\n');
            }
            self.objects
                .put(
                    AUDIT_BUCKET,
                    &key,
                    std::io::Cursor::new(body),
                    veeps_s3::store::PutOptions {
                        content_type: Some("application/x-ndjson".into()),
                        ..Default::default()
                    },
                )
                .map_err(|err| format!("archiving audit entries: {err}"))?;
            // Recorded after the object is durable: a crash between archives again.
            store.kv_put(K_ARCHIVED, &last.seq).map_err(e)?;
            tracing::info!(from = first.seq, to = last.seq, %key, "audit entries archived");
            out.push(format!("s3://{AUDIT_BUCKET}/{key}"));
            through = last.seq;
            if batch.len() < 10_000 {
                break;
            }
        }
        Ok(out)
    }
}

/// Settings of `veeps server` beyond the data directory.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// SMTP relay for email notifications (`HOST:PORT`).
    pub smtp_relay: Option<String>,
    /// Sender of email notifications.
    pub smtp_from: Option<String>,
    /// Metrics retention per resolution (CloudWatch's when `None`).
    pub metrics_retention: Option<veeps_obs::tsdb::Retention>,
    /// Days of logs kept for groups without a `log_group` of their own (30 when `None`).
    pub log_retention_days: Option<u32>,
    /// Address of the S3 API (none: not served).
    pub s3_listen: Option<String>,
    /// Address of bucket websites over plain HTTP (none: not served).
    pub s3_website_listen: Option<String>,
    /// How long a lifecycle "day" lasts (a real day when `None`; shortened by tests).
    pub s3_lifecycle_day: Option<std::time::Duration>,
    /// Days after which sealed audit entries are copied to the `veeps-audit` bucket (30
    /// when `None`).
    pub audit_archive_days: Option<u32>,
    /// Days of audit log kept (365 when `None`).
    pub audit_retention_days: Option<u32>,
    /// Where signed audit digests are copied as they are made (`DATA_DIR/audit-digests`
    /// when `None`): somewhere whoever can write the data directory cannot.
    pub audit_export: Option<std::path::PathBuf>,
    /// Parts beyond veeps' own (an embedding program's, or a test's).
    pub extra_parts: ExtraParts,
    /// Serve the API over TLS with a certificate from veeps' CA (`None`: when it listens
    /// on an address other than loopback).
    pub api_tls: Option<bool>,
    /// Serve the S3 API over TLS with a certificate from veeps' CA.
    pub s3_tls: bool,
    /// Address of the public DNS listener, UDP and TCP (none: not served).
    pub dns_listen: Option<String>,
    /// DNS rate limits (per source, per answer).
    pub dns_limits: Option<veeps_dns::server::Limits>,
    /// Functions' limits (environments at once, idle timeout); `None`: the defaults.
    pub functions: Option<veeps_fn::FnOptions>,
    /// Address of the CDN's edge over plain HTTP (none: not served).
    pub cdn_listen: Option<String>,
    /// Address of the CDN's edge over HTTPS (none: not served).
    pub cdn_tls_listen: Option<String>,
}

/// Parts added to veeps' own list.
#[derive(Clone, Default)]
pub struct ExtraParts(pub Vec<Arc<dyn veeps_resource::Part>>);

impl std::fmt::Debug for ExtraParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|p| p.name()))
            .finish()
    }
}

/// Binds `addr` now, so a busy port is reported at start; `None` (logged) if it cannot.
fn bind_early(addr: Option<&str>, what: &str) -> Option<std::net::TcpListener> {
    let addr = addr?;
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for {what} (another program on the port?); it is off until the next start");
            None
        }
    }
}

/// API call counts and latencies, reported every collection interval, and the audit
/// log's writer.
struct ApiStats {
    inner: std::sync::Mutex<(u64, Vec<f64>)>,
    audit: Arc<crate::audit::Auditor>,
    audit_days: u32,
}

impl veeps_obs::collect::Collector for ApiStats {
    fn collect(&self, out: &mut Vec<veeps_obs::collect::Sample>) {
        use veeps_obs::collect::Sample;
        let (total, mut lat) = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            (g.0, std::mem::take(&mut g.1))
        };
        let l = [("env", "system"), ("component", "api")];
        out.push(Sample::new("api_requests_total", &l, total as f64));
        out.push(Sample::new(
            "api_audit_dropped_total",
            &l,
            self.audit
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        ));
        if !lat.is_empty() {
            lat.sort_by(|a, b| a.total_cmp(b));
            let avg = lat.iter().sum::<f64>() / lat.len() as f64;
            let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1];
            out.push(Sample::new("api_request_duration_seconds_avg", &l, avg));
            out.push(Sample::new("api_request_duration_seconds_p99", &l, p99));
        }
    }
}

/// The file holding the root API token.
pub fn token_path(data_dir: &FsPath) -> PathBuf {
    data_dir.join("root.token")
}

/// Opens a data directory: the store, keys, root token (generated at first start) and the
/// engine with every resource type registered. Locks held by earlier boots are released.
pub fn open(data_dir: &FsPath) -> Result<AppState, ServerError> {
    open_with(data_dir, ServerOptions::default())
}

/// [`open`] with options.
pub fn open_with(data_dir: &FsPath, opts: ServerOptions) -> Result<AppState, ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let dd = |e: std::io::Error| ServerError::DataDir {
        path: data_dir.display().to_string(),
        err: e.to_string(),
    };
    // Only a directory veeps makes is made private; an existing one is the user's (a
    // warning says when others can read it).
    if data_dir.exists() {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(data_dir).map_err(dd)?.mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %data_dir.display(), mode = format!("{:o}", mode & 0o777), "the data directory can be read by other users; chmod 700 it");
        }
    } else {
        std::fs::create_dir_all(data_dir).map_err(dd)?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(dd)?;
    }
    let db_path = data_dir.join("state.redb");
    let store = Arc::new(Store::open(&db_path).map_err(|e| ServerError::Store {
        path: db_path.display().to_string(),
        err: e.to_string(),
    })?);
    let kms = Arc::new(veeps_kms::Kms::open(data_dir, store.clone())?);
    let objects = Arc::new(
        veeps_s3::store::ObjectStore::open(data_dir, store.clone(), kms.clone()).map_err(|e| {
            ServerError::DataDir {
                path: data_dir.display().to_string(),
                err: e.to_string(),
            }
        })?,
    );
    let tpath = token_path(data_dir);
    let token = match std::fs::read_to_string(&tpath) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = format!("veeps_{}", hex::encode(rand::random::<[u8; 24]>()));
            veeps_kms::write_private(&tpath, format!("{t}\n").as_bytes()).map_err(dd)?;
            tracing::info!(path = %tpath.display(), "generated the root API token");
            t
        }
    };
    let iam = Arc::new(veeps_iam::directory::Directory::new(
        store.clone(),
        kms.clone(),
    ));
    let s3_access = Arc::new(
        veeps_s3::access::Access::new(store.clone(), kms.clone()).with_identities(iam.clone()),
    );
    let s3_listener = bind_early(opts.s3_listen.as_deref(), "S3");
    let website_listener = bind_early(opts.s3_website_listen.as_deref(), "bucket websites");
    let cdn_dir = data_dir.join("cdn");
    let cdn_listen = |addr: Option<&str>, tls: bool| {
        let addr = addr?;
        veeps_cdn::service::Cdn::check_listen(addr, &cdn_dir, tls)
            .map_err(|e| tracing::error!(%addr, error = %e, "cannot listen for the CDN (another program on the port?); it is off until the next start"))
            .ok()
    };
    let mut cdn_opts = veeps_cdn::service::CdnOptions {
        http: cdn_listen(opts.cdn_listen.as_deref(), false),
        https: cdn_listen(opts.cdn_tls_listen.as_deref(), true),
        bounds: None,
        website: website_listener.as_ref().and_then(|l| l.local_addr().ok()),
        origin_ca: None,
    };
    let dns_listener = opts.dns_listen.as_deref().and_then(|addr| {
        veeps_dns::Dns::check_listen(addr, &data_dir.join("dns"))
            .map_err(|e| tracing::error!(%addr, error = %e, "cannot listen for DNS (another program on the port? pass --dns-listen); it is off until the next start"))
            .ok()
    });
    let boot_id = hex::encode(rand::random::<[u8; 8]>());
    for (env, lock) in store
        .release_stale_locks(&boot_id)
        .map_err(|e| ServerError::Store {
            path: db_path.display().to_string(),
            err: e.to_string(),
        })?
    {
        tracing::warn!(env, holder = %lock.who, operation = %lock.operation, since = %lock.since, "released a lock left by a previous server run; the next apply finishes its work");
    }
    let net = Arc::new(veeps_net::Net::new(data_dir, store.clone()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let obs_config = veeps_obs::service::ObsConfig {
        smtp: veeps_obs::topics::SmtpConfig {
            relay: opts.smtp_relay.clone(),
            from: opts
                .smtp_from
                .clone()
                .unwrap_or_else(|| format!("veeps@{host}")),
        },
        retention: opts.metrics_retention.unwrap_or_default(),
        log_days: opts.log_retention_days.unwrap_or(30).max(1),
    };
    let obs = Arc::new(veeps_obs::Obs::open(data_dir, store.clone(), obs_config).map_err(dd)?);
    veeps_obs::layer::set_sink(obs.logs.clone());
    let api = Arc::new(ApiStats {
        inner: Default::default(),
        audit: crate::audit::Auditor::start(store.clone()),
        audit_days: opts.audit_retention_days.unwrap_or(365).max(1),
    });
    obs.register(Arc::new(veeps_obs::collect::HostCollector::new(
        data_dir.to_path_buf(),
    )));
    obs.register(api.clone());
    let ca = veeps_pki::Ca::open(
        data_dir,
        &format!("veeps CA {}", veeps_net::prefix_for(data_dir)),
    )
    .map_err(|e| ServerError::DataDir {
        path: data_dir.display().to_string(),
        err: e.to_string(),
    })?;
    let ca_pem = ca.cert_pem.clone();
    let certs = Arc::new(veeps_pki::Certs::new(data_dir, store.clone(), Arc::new(ca)));
    let compute = veeps_compute::Compute::new(
        data_dir,
        store.clone(),
        net.clone(),
        obs.clone(),
        ca_pem.clone(),
        kms.clone(),
    )
    .map_err(dd)?;
    let policies = veeps_compute::policy::Policies::new(compute.clone(), &store);
    obs.register_action(Arc::new(veeps_compute::policy::PolicyAction(
        policies.clone(),
    )));
    let lbs = veeps_lb::service::Lbs::new(
        data_dir,
        store.clone(),
        net.clone(),
        obs.clone(),
        compute.clone(),
        certs.clone(),
        ca_pem.clone(),
    )
    .map_err(dd)?;
    compute.set_target_health(lbs.clone());
    compute.set_roles(iam.clone());
    let dbs = veeps_db::Dbs::new(
        data_dir,
        store.clone(),
        kms.clone(),
        net.clone(),
        obs.clone(),
        certs.clone(),
        objects.clone(),
        ca_pem.clone(),
    );
    let s3_auth = Arc::new(veeps_s3::api::Auth::from_root_token(&token));
    let bans = Arc::new(veeps_ban::Bans::new(
        store.clone(),
        &format!("{}ban", veeps_net::prefix_for(data_dir)),
        Some(api.audit.clone()),
    ));
    lbs.set_intrusion(bans.clone());
    let dns = veeps_dns::Dns::new(
        store.clone(),
        Some(net.clone()),
        dns_listener,
        opts.dns_limits.unwrap_or_default(),
        Some(data_dir.join("dns")),
    );
    dns.set_alias_targets(lbs.clone());
    certs.acme.set_dns01(dns.clone());
    certs.acme.set_kms(kms.clone());
    certs
        .acme
        .set_http01(Arc::new(veeps_lb::service::HttpChallenges(lbs.clone())));
    let s3_day = opts
        .s3_lifecycle_day
        .unwrap_or(std::time::Duration::from_secs(86_400));
    // One AWS endpoint: S3's listener serves the other AWS APIs too.
    let edge = Arc::new(veeps_resource::edge::Edge::default());
    let functions = veeps_fn::Functions::new(
        data_dir,
        store.clone(),
        obs.clone(),
        &veeps_net::prefix_for(data_dir),
        opts.functions.clone().unwrap_or_default(),
    );
    functions.set_roles(iam.clone());
    functions.set_objects(objects.clone());
    functions.set_net(net.clone());
    functions.set_kms(kms.clone());
    functions.set_images(compute.images.clone());
    if let Some(addr) = s3_listener.as_ref().and_then(|l| l.local_addr().ok()) {
        functions.set_endpoint(addr);
    }
    let fn_creds = Arc::new(veeps_fn::part::EndpointCredentials {
        root: {
            let (id, secret) = s3_auth.root();
            (id.to_string(), secret.to_string())
        },
        access: s3_access.clone(),
    });
    // Origins may be veeps' own HTTPS listeners (a balancer's, say): its CA is trusted.
    cdn_opts.origin_ca = Some(ca_pem.clone());
    let cdn = veeps_cdn::service::Cdn::new(
        store.clone(),
        Some(certs.clone()),
        Some(obs.clone()),
        cdn_opts,
        Some(cdn_dir.clone()),
    );
    // The parts of veeps; a new part is one more line here.
    let mut s3_part = veeps_s3::part::S3Part::new(
        objects.clone(),
        s3_access.clone(),
        s3_auth.clone(),
        s3_listener,
        website_listener,
        s3_day,
    )
    .with_audit(api.audit.clone())
    .with_intrusion(bans.clone())
    .with_edge(edge.clone());
    if opts.s3_tls {
        let at = opts
            .s3_listen
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let tls = listener_tls(&certs, "veeps-s3", at).map_err(|err| ServerError::DataDir {
            path: data_dir.display().to_string(),
            err: format!("the S3 API's certificate: {err}"),
        })?;
        s3_part = s3_part.with_tls(tls);
    }
    let mut list: Vec<Arc<dyn veeps_resource::Part>> = vec![
        Arc::new(veeps_builtins::part::Builtins),
        Arc::new(veeps_iam::part::IamPart(iam.clone())),
        Arc::new(veeps_ban::part::BanPart::new(bans.clone())),
        Arc::new(veeps_obs::part::ObsPart(obs.clone())),
        Arc::new(veeps_net::part::NetPart(net.clone())),
        Arc::new(s3_part),
        Arc::new(veeps_compute::part::ComputePart {
            compute: compute.clone(),
            policies: policies.clone(),
        }),
        Arc::new(veeps_lb::part::LbPart(lbs.clone())),
        Arc::new(veeps_db::part::DbPart(dbs.clone())),
        Arc::new(veeps_dns::part::DnsPart::new(dns.clone())),
        Arc::new(veeps_fn::part::FnPart::new(
            functions.clone(),
            Some(edge.clone()),
            fn_creds,
        )),
        Arc::new(veeps_cdn::part::CdnPart::new(cdn.clone())),
    ];
    list.extend(opts.extra_parts.0.iter().cloned());
    let parts = veeps_resource::Parts::new(list).map_err(|e| ServerError::DataDir {
        path: data_dir.display().to_string(),
        err: e.to_string(),
    })?;
    obs.register(Arc::new(parts.clone()));
    let actions = Arc::new(
        ACTIONS
            .iter()
            .copied()
            .chain(parts.actions())
            .map(|a| ((a.method.to_string(), a.path.to_string()), a))
            .collect(),
    );
    let engine = Engine::new(
        data_dir.to_path_buf(),
        parts.registry(),
        store.clone(),
        kms,
        parts.services(),
        boot_id,
    );
    Ok(AppState {
        engine,
        store,
        obs,
        ca_pem,
        objects: objects.clone(),
        net,
        parts,
        s3_auth,
        s3_access,
        iam,
        bans,
        dns,
        cdn,
        certs: certs.clone(),
        api_tls: opts.api_tls,
        actions,
        api,
        token_hash: sha2::Sha256::digest(token.as_bytes()).into(),
        down: Arc::new(tokio::sync::Notify::new()),
        trail: Arc::new(Trail {
            key: veeps_state::TrailKey::load_or_create(&data_dir.join("audit.key")).map_err(dd)?,
            export: opts
                .audit_export
                .clone()
                .unwrap_or_else(|| data_dir.join("audit-digests")),
            objects: objects.clone(),
            archive_days: opts.audit_archive_days.unwrap_or(30),
        }),
    })
}

/// Every resource type veeps knows, registered without a server (for offline
/// validation): the same registrations as the parts', without their services.
pub fn registry() -> veeps_resource::Registry {
    let mut registry = veeps_resource::Registry::new();
    veeps_builtins::register(&mut registry);
    veeps_iam::resources::register(&mut registry);
    veeps_ban::resources::register(&mut registry);
    veeps_net::resources::register(&mut registry);
    veeps_obs::resources::register(&mut registry);
    veeps_compute::resources::register(&mut registry, None);
    veeps_lb::resources::register(&mut registry);
    veeps_s3::resources::register(&mut registry);
    veeps_db::resources::register(&mut registry);
    veeps_dns::resources::register(&mut registry);
    veeps_fn::resources::register(&mut registry);
    veeps_cdn::resources::register(&mut registry);
    registry
}

impl AppState {
    /// Every hour (and at start): seals the audit entries written since the last digest,
    /// then removes those older than the retention (sealed first, so what goes was signed).
    fn prune_audit_daily(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let days = self.api.audit_days;
        let trail = self.trail.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                t.tick().await;
                let (s, tr) = (store.clone(), trail.clone());
                match tokio::task::spawn_blocking(move || tr.seal(&s)).await {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "sealing the audit log failed; retried in an hour")
                    }
                    Ok(Ok(s)) => {
                        if let Some(d) = s.digest {
                            tracing::info!(
                                digest = d.seq,
                                from = d.from_entry,
                                to = d.to_entry,
                                "audit entries sealed"
                            );
                        }
                    }
                    Err(_) => {}
                }
                let (store, tr) = (store.clone(), trail.clone());
                let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(days.into());
                let cutoff = cutoff
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                // What retention removes is named by an entry of the chain, sealed before
                // anything goes, so the trail still verifies from its signed digests.
                let prune = move || -> Result<u64, String> {
                    let Some((n, last)) = store.audit_due(&cutoff).map_err(|e| e.to_string())?
                    else {
                        return Ok(0);
                    };
                    store
                        .append_audit(
                            "veeps",
                            "",
                            &format!("audit retention: {n} entries up to #{last}, older than {cutoff}, are removed (sealed in signed digests before)"),
                            200,
                        )
                        .map_err(|e| e.to_string())?;
                    tr.seal(&store)?;
                    store.prune_audit(&cutoff).map_err(|e| e.to_string())
                };
                match tokio::task::spawn_blocking(prune).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(
                        removed = n,
                        days,
                        "audit entries past their retention removed"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "audit pruning failed; retried in an hour")
                    }
                    _ => {}
                }
            }
        })
    }

    /// After a (re)start: brings every recorded resource back in line with its state
    /// (namespaces, links, rules...), dependencies first.
    pub async fn reconcile(&self) {
        self.parts.start();
        let started = std::time::Instant::now();
        let failures = self.engine.reconcile_all().await;
        self.parts.resume().await;
        self.obs.record(&[veeps_obs::collect::Sample::new(
            "reconcile_duration_seconds",
            &[("env", "system")],
            started.elapsed().as_secs_f64(),
        )]);
        for (env, e) in &failures {
            tracing::error!(env, error = %e, "could not restore a resource at start; the next apply retries");
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            failures = failures.len(),
            "reconciled recorded resources"
        );
    }
}

/// The IAM action and resource of each of the API's own routes (parts bring theirs).
pub const ACTIONS: &[veeps_resource::RouteAction] = {
    use veeps_resource::RouteAction as A;
    const ENV: &str = "arn:veeps:env:{env}:environment";
    const KEY: &str = "arn:veeps:kms:{env}:key/default";
    const TRAIL: &str = "arn:veeps:audit::trail";
    &[
        A::new(
            "GET",
            "/v1/status",
            "system:GetStatus",
            "arn:veeps:system::server",
        ),
        A::new("GET", "/v1/envs", "env:ListEnvironments", "*"),
        A::new("POST", "/v1/envs/{env}/plan", "env:Plan", ENV),
        A::new("POST", "/v1/envs/{env}/apply", "env:Apply", ENV),
        A::new("GET", "/v1/envs/{env}/state", "env:GetState", ENV),
        A::new("GET", "/v1/envs/{env}/resource", "env:GetState", ENV),
        A::new("GET", "/v1/envs/{env}/outputs", "env:GetOutputs", ENV),
        A::new("GET", "/v1/envs/{env}/history", "env:GetHistory", ENV),
        A::new(
            "GET",
            "/v1/envs/{env}/history/{version}",
            "env:GetHistory",
            ENV,
        ),
        A::new("GET", "/v1/envs/{env}/lock", "env:GetLock", ENV),
        A::new("DELETE", "/v1/envs/{env}/lock", "env:ForceUnlock", ENV),
        A::new("GET", "/metrics", "obs:GetMetrics", "*"),
        A::new("GET", "/v1/ca", "pki:GetCaCertificate", "arn:veeps:pki::ca"),
        A::new(
            "POST",
            "/v1/system/down",
            "system:Shutdown",
            "arn:veeps:system::server",
        ),
        A::new("POST", "/v1/kms/{env}/encrypt", "kms:Encrypt", KEY),
        A::new("POST", "/v1/kms/{env}/decrypt", "kms:Decrypt", KEY),
        A::new("POST", "/v1/kms/{env}/export-key", "kms:ExportKey", KEY),
        A::new("POST", "/v1/kms/{env}/import-key", "kms:ImportKey", KEY),
        A::new("GET", "/v1/kms/{env}", "kms:DescribeKey", KEY),
        A::new("POST", "/v1/kms/{env}/rotate", "kms:RotateKeyOnDemand", KEY),
        A::new(
            "POST",
            "/v1/kms/{env}/cancel-deletion",
            "kms:CancelKeyDeletion",
            KEY,
        ),
        A::new("GET", "/v1/audit", "audit:LookupEvents", TRAIL),
        A::new("GET", "/v1/audit/verify", "audit:VerifyTrail", TRAIL),
        A::new("POST", "/v1/audit/seal", "audit:SealTrail", TRAIL),
        A::new("POST", "/v1/audit/trail", "audit:VerifyTrail", TRAIL),
    ]
};

/// TLS for a listener of veeps' own at `at`: a certificate `id` from veeps' CA for the
/// host's name, `localhost`, `127.0.0.1` and the listen address (unless unspecified).
fn listener_tls(
    certs: &veeps_pki::Certs,
    id: &str,
    at: Option<SocketAddr>,
) -> Result<veeps_http::TlsConfig, String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let mut names = vec![host, "localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(a) = at.filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback()) {
        names.push(a.ip().to_string());
    }
    let issued = certs.issue(id, &names).map_err(|e| e.to_string())?;
    veeps_http::tls_config(&issued.chain_pem, &issued.key_pem)
}

/// The router of the API.
pub fn router(state: AppState) -> Router {
    let parts = state.parts.routes();
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/envs", get(list_envs))
        .route("/v1/envs/{env}/plan", post(plan))
        .route("/v1/envs/{env}/apply", post(apply))
        .route("/v1/envs/{env}/state", get(state_list))
        .route("/v1/envs/{env}/resource", get(state_show))
        .route("/v1/envs/{env}/outputs", get(outputs))
        .route("/v1/envs/{env}/history", get(history))
        .route("/v1/envs/{env}/history/{version}", get(history_entry))
        .route("/v1/envs/{env}/lock", get(lock_info).delete(force_unlock))
        .route("/metrics", get(prometheus))
        .route("/v1/ca", get(ca_cert))
        .route("/v1/system/down", post(system_down))
        .route("/v1/kms/{env}/encrypt", post(kms_encrypt))
        .route("/v1/kms/{env}/decrypt", post(kms_decrypt))
        .route("/v1/kms/{env}/export-key", post(kms_export))
        .route("/v1/kms/{env}/import-key", post(kms_import))
        .route("/v1/kms/{env}", get(kms_describe))
        .route("/v1/kms/{env}/rotate", post(kms_rotate))
        .route("/v1/kms/{env}/cancel-deletion", post(kms_cancel_deletion))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/seal", post(audit_seal))
        .route("/v1/audit/trail", post(audit_trail))
        .with_state(state.clone())
        // Each part's own routes, behind the same authentication and audit.
        .merge(parts)
        .fallback(|| async { err(StatusCode::NOT_FOUND, "no such API route") })
        .layer(middleware::from_fn_with_state(state, auth))
        .layer(DefaultBodyLimit::max(128 << 20))
}

/// Serves the API on `listen` until `shutdown` completes.
pub async fn serve(
    state: AppState,
    listen: &str,
    shutdown: impl std::future::Future<Output = Shutdown> + Send + 'static,
) -> Result<(), ServerError> {
    let listener =
        tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| ServerError::Listen {
                addr: listen.to_string(),
                err: e.to_string(),
            })?;
    state.reconcile().await;
    serve_listener(state, listener, shutdown).await
}

/// Serves the API on a bound listener until `shutdown` completes (and says how far the
/// shutdown goes) or `veeps down` asks for everything to stop.
pub async fn serve_listener(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = Shutdown> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let local = listener.local_addr().ok();
    let tls = match (state.api_tls, local) {
        (Some(on), _) => on,
        (None, Some(a)) => !a.ip().is_loopback(),
        (None, None) => false,
    };
    let tls = if tls {
        Some(
            listener_tls(&state.certs, "veeps-api", local).map_err(|err| ServerError::Listen {
                addr: addr.clone(),
                err: format!("the API's certificate: {err}"),
            })?,
        )
    } else {
        None
    };
    tracing::info!(%addr, tls = tls.is_some(), "API listening");
    let prune = state.prune_audit_daily();
    let parts = state.parts.clone();
    let down = state.down.clone();
    let router = router(state);
    // The API answers slowly on purpose at times (a streamed apply), so only its headers
    // and its idle keep-alive connections have a deadline.
    let limits = veeps_http::Limits {
        max_connections: veeps_http::per_listener_connections(),
        header_timeout: std::time::Duration::from_secs(15),
        inactivity_timeout: None,
    };
    let make = move |peer: SocketAddr| {
        let router = router.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let mut router = router.clone();
            async move {
                tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await
            }
        })
    };
    let api: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match tls {
        Some(cfg) => Box::pin(veeps_http::serve_tls(listener, "api", limits, cfg, make)),
        None => Box::pin(veeps_http::serve(listener, "api", limits, make)),
    };
    let how = tokio::select! {
        _ = api => Shutdown::ControlPlane,
        how = shutdown => how,
        _ = down.notified() => Shutdown::Everything,
    };
    tracing::info!(?how, "shutting down");
    parts.shutdown(how).await;
    prune.abort();
    Ok(())
}

/// Who is calling, as found by [`auth`] (for history and logs).
#[derive(Clone)]
struct Caller(String);

fn unauthorized(msg: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer")],
        Json(ApiError {
            error: msg.into(),
            text: None,
            diagnostics: vec![],
        }),
    )
        .into_response()
}

/// Authenticates the caller (the root token, or a user's token), finds the route's IAM
/// action and resource, authorises them by the one evaluator, and audits the call.
async fn auth(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    use veeps_iam::directory::Principal;
    let call = format!("{} {}", req.method(), req.uri().path());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let source = peer.ip().to_string();
    // A banned client (where the kernel does not drop it already) is refused at once.
    if st.bans.banned(peer.ip()) {
        let mut resp = err(
            StatusCode::FORBIDDEN,
            "this address is banned after repeated failed authentications; it is lifted on time",
        );
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return resp;
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| {
            // HEAD is answered by a GET route, and authorised as that GET.
            let method = match req.method().as_str() {
                "HEAD" => "GET",
                other => other,
            };
            (method.to_string(), m.as_str().to_string())
        });
    // The login is the one route reached without a token; it audits under the name tried.
    if route
        .as_ref()
        .is_some_and(|(m, p)| m == "POST" && p == veeps_iam::http::LOGIN)
    {
        let resp = next.run(req).await;
        let who = resp
            .extensions()
            .get::<veeps_iam::http::LoginName>()
            .map(|n| format!("user/{}", n.0))
            .unwrap_or_else(|| "anonymous".into());
        let code = resp.status().as_u16();
        if code == 401 {
            st.bans.failure("api", peer.ip());
        }
        st.api
            .audit
            .record(veeps_state::AuditRecord {
                who,
                source,
                action: call,
                result: code,
            })
            .await;
        return resp;
    }
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let is_root = presented.as_ref().is_some_and(|t| {
        let h: [u8; 32] = sha2::Sha256::digest(t.as_bytes()).into();
        veeps_iam::directory::same(&h, &st.token_hash)
    });
    let principal = match &presented {
        Some(_) if is_root && st.iam.root_disabled() => Err(
            "the root token is disabled; log in as an IAM user (veeps login USER)",
        ),
        Some(_) if is_root => Ok(Principal {
            user: None,
            mfa_at: Some(now),
            source: peer.ip(),
            scope: vec![],
            token: None,
            secure: false,
        }),
        Some(t) => match st.iam.authenticate(t) {
            Some(tok) => Ok(Principal {
                user: Some(tok.user),
                mfa_at: tok.mfa.then_some(tok.created),
                source: peer.ip(),
                scope: tok.scope,
                token: Some(tok.id),
                secure: false,
            }),
            None => Err("not a valid API token (wrong, expired or revoked); log in again (veeps login USER)"),
        },
        None => Err("a valid API token is required (Authorization: Bearer TOKEN)"),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(msg) => {
            let who = if presented.is_some() {
                "invalid-token"
            } else {
                "anonymous"
            };
            st.api.audit.refused(who, &source, &call, now);
            st.bans.failure("api", peer.ip());
            tracing::debug!(%peer, "refused an API call without a valid token");
            return unauthorized(msg);
        }
    };
    let who = match &principal.user {
        Some(u) => format!("user/{u}"),
        None => match req
            .headers()
            .get("x-veeps-caller")
            .and_then(|v| v.to_str().ok())
        {
            Some(b) => format!("root ({})", b.chars().take(100).collect::<String>()),
            None => "root".to_string(),
        },
    };
    // Every route names its action; one that does not is refused to everyone.
    if let Some(route) = &route {
        let Some(a) = st.actions.get(route) else {
            tracing::error!(route = %route.1, "an API route has no IAM action");
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{} {} has no IAM action (a veeps bug)", route.0, route.1),
            );
        };
        let resource = a
            .resource_for(req.uri().path())
            .replace("{caller}", principal.user.as_deref().unwrap_or("root"));
        if let Err(denial) = st.iam.authorize(&principal, a.action, &resource) {
            st.api
                .audit
                .record(veeps_state::AuditRecord {
                    who: who.clone(),
                    source,
                    action: format!("{call} ({} on {resource})", a.action),
                    result: 403,
                })
                .await;
            return err(
                StatusCode::FORBIDDEN,
                format!(
                    "{} may not {} on {resource}: {denial}",
                    principal.label(),
                    a.action
                ),
            );
        }
    }
    req.extensions_mut().insert(Caller(who.clone()));
    req.extensions_mut().insert(principal);
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    {
        let mut g = st.api.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        if g.1.len() < 100_000 {
            g.1.push(started.elapsed().as_secs_f64());
        }
    }
    let code = resp.status().as_u16();
    st.api
        .audit
        .record(veeps_state::AuditRecord {
            who: who.clone(),
            source,
            action: call.clone(),
            result: code,
        })
        .await;
    tracing::info!(%who, action = %call, status = code, ms = started.elapsed().as_millis() as u64, "api call");
    resp
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (
        code,
        Json(ApiError {
            error: msg.into(),
            text: None,
            diagnostics: vec![],
        }),
    )
        .into_response()
}

fn engine_err(e: EngineError) -> Response {
    match e {
        EngineError::Config(d) => (
            StatusCode::BAD_REQUEST,
            Json(ApiError {
                error: format!(
                    "the configuration has {} error{}",
                    d.0.len(),
                    if d.0.len() == 1 { "" } else { "s" }
                ),
                text: Some(d.to_string()),
                diagnostics: DiagnosticJson::from_diags(&d),
            }),
        )
            .into_response(),
        EngineError::State(s @ veeps_state::StateError::Locked { .. }) => err(
            StatusCode::CONFLICT,
            format!(
                "{s}; wait for it to finish, or run `veeps force-unlock ENV` if its holder is gone"
            ),
        ),
        EngineError::PlanChanged => err(StatusCode::CONFLICT, EngineError::PlanChanged.to_string()),
        other => err(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// Environment names veeps keeps for itself: `s3` owns buckets made through the S3 API,
/// `db` the database backups, `system` the host's metrics.
pub const RESERVED_ENVS: &[&str] = &["s3", "db", "system"];

fn valid_env(env: &str) -> Result<(), Response> {
    if env.is_empty()
        || env.len() > 64
        || !env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid environment name \"{env}\": use letters, digits, '-' and '_' (at most 64)"
            ),
        ));
    }
    if RESERVED_ENVS.contains(&env) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "the environment name \"{env}\" is reserved for veeps' own use (buckets made through the S3 API, database backups, the host's metrics); choose another name"
            ),
        ));
    }
    Ok(())
}

async fn status(State(st): State<AppState>) -> Response {
    Json(veeps_wire::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        boot_id: st.engine.boot_id.clone(),
        data_dir: st.engine.data_dir.display().to_string(),
    })
    .into_response()
}

async fn list_envs(State(st): State<AppState>) -> Response {
    match st.store.envs() {
        Ok(envs) => Json(
            envs.into_iter()
                .map(|e| veeps_wire::EnvSummary {
                    name: e.name,
                    version: e.version,
                    updated_at: e.updated_at,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn engine_request(
    st: &AppState,
    env: &str,
    caller: &str,
    r: &RunRequest,
) -> Result<EngineRequest, Response> {
    valid_env(env)?;
    let (bundle, vars, operation) = match r.from_version {
        Some(v) => {
            let h = st
                .store
                .history_entry(env, v)
                .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .ok_or_else(|| {
                    err(
                        StatusCode::NOT_FOUND,
                        format!(
                            "environment \"{env}\" has no version {v}; see `veeps history {env}`"
                        ),
                    )
                })?;
            let (b, vars) = st
                .engine
                .history_inputs(env, &h)
                .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            (b, vars, format!("rollback to {v}"))
        }
        None => match &r.bundle {
            Some(b) => (b.clone(), r.vars.clone(), "apply".to_string()),
            None => {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "the request has no configuration (bundle) and no from_version",
                ))
            }
        },
    };
    // The approved plan's time, as the plan gave it: `YYYY-MM-DDThh:mm:ssZ`.
    if let Some(t) = &r.plan_time {
        let shape = t.len() == 20
            && t.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                10 => b == b'T',
                13 | 16 => b == b':',
                19 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
        if !shape {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "plan_time must be a plan's time, like 2026-01-02T03:04:05Z",
            ));
        }
    }
    Ok(EngineRequest {
        env: env.to_string(),
        bundle,
        vars,
        caller: caller.to_string(),
        operation,
        plan_time: r.plan_time.clone(),
    })
}

async fn plan(
    State(st): State<AppState>,
    Path(env): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(r): Json<RunRequest>,
) -> Response {
    let req = match engine_request(&st, &env, &caller.0, &r) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match st.engine.plan(&req, r.destroy).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => engine_err(e),
    }
}

/// Applies, streaming newline-delimited JSON events. The apply runs to completion even if
/// the client goes away.
async fn apply(
    State(st): State<AppState>,
    Path(env): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(r): Json<RunRequest>,
) -> Response {
    let req = match engine_request(&st, &env, &caller.0, &r) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Fail fast, with a proper status, when the environment is locked.
    if let Ok(Some(holder)) = st.store.lock_info(&env) {
        return engine_err(EngineError::State(veeps_state::StateError::Locked {
            env,
            holder: Box::new(holder),
        }));
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<veeps_engine::plan::Event>();
    let engine = st.engine.clone();
    let obs = st.obs.clone();
    let destroy = r.destroy;
    let hash = r.plan_hash.clone();
    tokio::spawn(async move {
        let err_tx = tx.clone();
        let started = std::time::Instant::now();
        let env_name = req.env.clone();
        let result = engine.apply(req, destroy, hash, tx).await;
        obs.record(&[veeps_obs::collect::Sample::new(
            "apply_duration_seconds",
            &[("env", env_name.as_str())],
            started.elapsed().as_secs_f64(),
        )]);
        if let Err(e) = result {
            let message = match &e {
                EngineError::Config(d) => d.to_string(),
                other => other.to_string(),
            };
            let _ = err_tx.send(veeps_engine::plan::Event::Error { message });
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| err(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn resource_summary(r: veeps_state::ResourceRecord) -> veeps_wire::ResourceSummary {
    veeps_wire::ResourceSummary {
        address: r.address,
        type_name: r.type_name,
        status: match r.status {
            veeps_state::ResourceStatus::Ready => "ready",
            veeps_state::ResourceStatus::Creating => "creating",
            veeps_state::ResourceStatus::Tainted => "tainted",
        }
        .into(),
        updated_at: r.updated_at,
        dependencies: r.dependencies,
    }
}

async fn state_list(State(st): State<AppState>, Path(env): Path<String>) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    match st.store.resources(&env) {
        Ok(rs) => Json(rs.into_iter().map(resource_summary).collect::<Vec<_>>()).into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn state_show(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(address) = q.get("address") else {
        return err(
            StatusCode::BAD_REQUEST,
            "the address query parameter is required",
        );
    };
    match st.engine.show(&env, address) {
        Ok(Some((rec, attrs))) => {
            let attributes = match attrs.to_plan_json() {
                serde_json::Value::Object(m) => m.into_iter().collect(),
                _ => Default::default(),
            };
            Json(veeps_wire::ResourceDetail {
                summary: resource_summary(rec),
                attributes,
            })
            .into_response()
        }
        Ok(None) => err(
            StatusCode::NOT_FOUND,
            format!("no resource {address} in environment \"{env}\"; see `veeps state list {env}`"),
        ),
        Err(e) => engine_err(e),
    }
}

async fn outputs(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let reveal = q.get("reveal").is_some_and(|v| v == "true");
    match st.engine.outputs(&env) {
        Ok(o) => Json(
            o.into_iter()
                .map(|(k, (v, s))| {
                    let value = if s && !reveal {
                        json!({"$sensitive": true})
                    } else {
                        v.to_json()
                    };
                    (
                        k,
                        veeps_wire::OutputValue {
                            value,
                            sensitive: s,
                        },
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .into_response(),
        Err(e) => engine_err(e),
    }
}

async fn history(State(st): State<AppState>, Path(env): Path<String>) -> Response {
    match st.store.history(&env) {
        Ok(h) => Json(
            h.into_iter()
                .map(|h| veeps_wire::HistoryRow {
                    version: h.version,
                    time: h.time,
                    caller: h.caller,
                    operation: h.operation,
                    status: h.status,
                    summary: veeps_wire::ChangeCounts {
                        add: h.summary.add,
                        change: h.summary.change,
                        destroy: h.summary.destroy,
                    },
                    errors: h.errors,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn history_entry(
    State(st): State<AppState>,
    Path((env, version)): Path<(String, u64)>,
) -> Response {
    match st.store.history_entry(&env, version) {
        Ok(Some(h)) => Json(h).into_response(),
        Ok(None) => err(
            StatusCode::NOT_FOUND,
            format!("environment \"{env}\" has no version {version}"),
        ),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn lock_view(l: veeps_state::LockInfo) -> veeps_wire::LockView {
    veeps_wire::LockView {
        id: l.id,
        who: l.who,
        operation: l.operation,
        since: l.since,
    }
}

async fn lock_info(State(st): State<AppState>, Path(env): Path<String>) -> Response {
    match st.store.lock_info(&env) {
        Ok(l) => Json(veeps_wire::LockState {
            lock: l.map(lock_view),
            removed: None,
        })
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn force_unlock(
    State(st): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _ = headers;
    match st.store.force_unlock(&env) {
        Ok(Some(l)) => {
            tracing::warn!(env, holder = %l.who, "lock removed by force-unlock");
            Json(veeps_wire::LockState {
                lock: None,
                removed: Some(lock_view(l)),
            })
            .into_response()
        }
        Ok(None) => err(
            StatusCode::NOT_FOUND,
            format!("environment \"{env}\" is not locked"),
        ),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn audit(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100usize)
        .min(100_000);
    match st.store.audit(limit) {
        Ok(a) => Json(a).into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn audit_verify(State(st): State<AppState>) -> Response {
    match st.store.verify_audit() {
        Ok(Ok(n)) => Json(veeps_wire::AuditCheck {
            ok: true,
            entries: Some(n),
            first_bad_entry: None,
        })
        .into_response(),
        Ok(Err(seq)) => (
            StatusCode::CONFLICT,
            Json(veeps_wire::AuditCheck {
                ok: false,
                entries: None,
                first_bad_entry: Some(seq),
            }),
        )
            .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Seals the audit entries written since the last digest now.
async fn audit_seal(State(st): State<AppState>) -> Response {
    let (store, trail) = (st.store.clone(), st.trail.clone());
    match tokio::task::spawn_blocking(move || trail.seal(&store)).await {
        Ok(Ok(s)) => Json(s).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Checks the audit trail against the digests the caller kept.
async fn audit_trail(
    State(st): State<AppState>,
    Json(check): Json<veeps_wire::TrailCheck>,
) -> Response {
    // Times compare as the entries write them: normalised to RFC 3339 in UTC.
    let mut check = check;
    if let Some(f) = &check.from {
        match time::OffsetDateTime::parse(f, &time::format_description::well_known::Rfc3339) {
            Ok(t) => {
                check.from = t
                    .to_offset(time::UtcOffset::UTC)
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }
            Err(e) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    format!("from: {f} is not an RFC 3339 time like 2026-11-01T00:00:00Z ({e})"),
                )
            }
        }
    }
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || {
        store.verify_trail(&check.anchors, check.from.as_deref())
    })
    .await
    {
        // A trail that does not verify is an answer, not a failed request: `problem` says.
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `veeps down`: the server stops everything it started, then itself.
async fn system_down(State(st): State<AppState>) -> Response {
    tracing::info!("asked to stop everything (veeps down)");
    st.down.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"stopping": true})),
    )
        .into_response()
}

/// A KMS call's answer: the value, 400 with the reason for what cannot be done as asked,
/// 500 otherwise.
fn kms_answer(r: Result<String, veeps_kms::KmsError>) -> Response {
    match r {
        Ok(value) => Json(veeps_wire::KmsValue { value }).into_response(),
        Err(veeps_kms::KmsError::Invalid(m)) => err(StatusCode::BAD_REQUEST, m),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Most bytes of a secret to encrypt: configuration values, not files.
const MAX_SECRET: usize = 64 * 1024;

fn key_info(st: &AppState, env: &str) -> Response {
    match st.engine.kms.versions(env) {
        Ok(v) => Json(veeps_wire::iam::KmsKeyInfo {
            env: env.to_string(),
            current_version: v.current,
            rotated: v.rotated,
            policy: st
                .iam
                .key_policy(env)
                .map(|k| veeps_wire::iam::KeyPolicyInfo {
                    administrators: k.administrators,
                    users: k.users,
                    rotation_period_in_days: k.rotation_days,
                    deletion_window_in_days: k.deletion_window_days,
                    pending_deletion_until: k.pending_deletion,
                }),
        })
        .into_response(),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// An environment's key: versions, policy, scheduled deletion.
async fn kms_describe(State(st): State<AppState>, Path(env): Path<String>) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    key_info(&st, &env)
}

/// Rotates an environment's key now.
async fn kms_rotate(State(st): State<AppState>, Path(env): Path<String>) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    let (iam, e) = (st.iam.clone(), env.clone());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match tokio::task::spawn_blocking(move || iam.rotate_key(&e, now)).await {
        Ok(Ok(_)) => key_info(&st, &env),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the rotation did not run",
        ),
    }
}

/// Keeps a key scheduled for deletion.
async fn kms_cancel_deletion(State(st): State<AppState>, Path(env): Path<String>) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    match st.iam.cancel_key_deletion(&env) {
        Ok(true) => key_info(&st, &env),
        Ok(false) => err(
            StatusCode::CONFLICT,
            format!("the key of {env} is not scheduled for deletion"),
        ),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn kms_encrypt(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Json(v): Json<veeps_wire::KmsValue>,
) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    if v.value.len() > MAX_SECRET {
        return err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a secret is at most {MAX_SECRET} bytes"),
        );
    }
    kms_answer(st.engine.kms.encrypt_value(&env, &v.value))
}

async fn kms_decrypt(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Json(v): Json<veeps_wire::KmsValue>,
) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    match st.engine.kms.decrypt_value(&env, v.value.trim()) {
        Ok(value) => Json(veeps_wire::KmsValue { value }).into_response(),
        Err(_) => err(
            StatusCode::BAD_REQUEST,
            format!("not a kmscrypt:: value of environment {env} (wrong environment, or altered)"),
        ),
    }
}

async fn kms_export(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Json(k): Json<veeps_wire::KmsKey>,
) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    // Argon2 takes a while and memory: off the runtime.
    let kms = st.engine.kms.clone();
    let r = tokio::task::spawn_blocking(move || kms.export_env_key(&env, &k.passphrase)).await;
    kms_answer(r.unwrap_or_else(|e| Err(veeps_kms::KmsError::Invalid(e.to_string()))))
}

async fn kms_import(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Json(k): Json<veeps_wire::KmsKey>,
) -> Response {
    if let Err(r) = valid_env(&env) {
        return r;
    }
    let kms = st.engine.kms.clone();
    let r = tokio::task::spawn_blocking(move || {
        kms.import_env_key(&env, &k.key, &k.passphrase)
            .map(|()| format!("imported the key of environment {env}"))
    })
    .await;
    kms_answer(r.unwrap_or_else(|e| Err(veeps_kms::KmsError::Invalid(e.to_string()))))
}

async fn ca_cert(State(st): State<AppState>) -> Response {
    (
        [("content-type", "application/x-pem-file")],
        st.ca_pem.clone(),
    )
        .into_response()
}

async fn prometheus(State(st): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        st.obs.prometheus(),
    )
        .into_response()
}
