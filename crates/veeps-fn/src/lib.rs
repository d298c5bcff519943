//! Functions, with Lambda's semantics: the `function` type (code from a directory or a zip
//! kept content-addressed, a runtime, memory, timeout, variables, reserved concurrency, a
//! role); execution environments started on demand as confined processes, kept warm and
//! reused, scaled out per concurrent invocation up to the function's concurrency and the
//! server's, stopped when idle; the Runtime API served to each (`runtime.rs`); the Invoke API
//! on the AWS endpoint (`api.rs`); START, END and REPORT lines and the function's output in
//! the log store; invocations, errors, throttles, durations and cold starts as metrics.

pub mod api;
pub mod code;
pub mod local;
pub mod logs;
pub mod part;
pub mod queue;
pub mod resources;
pub mod runtime;
pub mod sandbox;
pub mod schedule;
pub mod url;

use bytes::Bytes;
use runtime::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use veeps_obs::Obs;
use veeps_resource::metrics::Sample;
use veeps_resource::roles::Roles;
use veeps_state::Store;

const K_FUNCTION: &str = "fn/function/";
const K_VERSION: &str = "fn/version/";
const K_ALIAS: &str = "fn/alias/";
const K_NEXT_UID: &str = "fn/next-uid";
/// Functions' users: from here up, one per function, never reused.
pub const FIRST_UID: u32 = 400_000;
/// How long a runtime may take to start (Lambda's init phase).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A function as veeps keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionRecord {
    /// Its name, unique in the server.
    pub name: String,
    /// The environment that declares it.
    pub env: String,
    /// Its address in that environment's configuration.
    pub address: String,
    /// `provided`, `provided.al2023`, `python3.11`...
    pub runtime: String,
    /// The handler (Python's `module.function`; `provided` passes it on as `_HANDLER`).
    pub handler: String,
    /// Memory, MB.
    pub memory_mb: u64,
    /// Seconds an invocation may run.
    pub timeout_secs: u64,
    /// `/tmp`'s size, MB.
    pub tmp_mb: u64,
    /// Variables.
    pub environment: BTreeMap<String, String>,
    /// Concurrent executions it may have (`None`: the server's unreserved share).
    pub reserved_concurrency: Option<u64>,
    /// The role it runs as.
    pub role: Option<String>,
    /// Lambda's `CodeSha256` (base64).
    pub code_sha256: String,
    /// Bytes of the package.
    pub code_size: u64,
    /// Its user.
    pub uid: u32,
    /// RFC 3339.
    pub last_modified: String,
    /// Bumped at every change: environments of an older revision are not reused.
    pub revision: u64,
    /// Retries of a failed asynchronous invocation (0 to 2).
    #[serde(default = "two")]
    pub max_retry_attempts: u32,
    /// Where failed asynchronous invocations go: a bucket...
    #[serde(default)]
    pub dead_letter_bucket: Option<String>,
    /// ... and a topic of the function's environment.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// `$LATEST`, or the number of a published version.
    #[serde(default = "latest")]
    pub version: String,
    /// Subnets its environments are placed in (none: outside any VPC).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Their security groups.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Variables decrypted only when an environment starts: `kmscrypt::` values of the
    /// function's environment.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// A digest of the secrets as configured: an unchanged one keeps the sealed values (and
    /// the revision).
    #[serde(default)]
    pub secrets_digest: String,
    /// The image the code is (instead of a package), and its entrypoint.
    #[serde(default)]
    pub image: Option<String>,
    /// The image's entrypoint.
    #[serde(default)]
    pub entrypoint: Vec<String>,
}

fn two() -> u32 {
    2
}

fn latest() -> String {
    "$LATEST".into()
}

/// An alias: a name for a version, or for two with weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AliasRecord {
    /// The function.
    pub function: String,
    /// The alias.
    pub name: String,
    /// The version it names (`$LATEST` or a number).
    pub version: String,
    /// Another version and the share of invocations it gets (0 to 1).
    pub additional: Option<(String, f64)>,
}

impl FunctionRecord {
    /// Its ARN.
    pub fn arn(&self) -> String {
        format!("arn:veeps:lambda:{}:function:{}", self.env, self.name)
    }

    /// Its ARN with its version (`...:function:NAME:3`), as a published version's is.
    pub fn qualified_arn(&self) -> String {
        format!("{}:{}", self.arn(), self.version)
    }

    /// Where its environments are kept: `NAME`, or `NAME:VERSION` for a published version.
    pub fn key(&self) -> String {
        if self.version == "$LATEST" {
            self.name.clone()
        } else {
            format!("{}:{}", self.name, self.version)
        }
    }
}

/// Why an invocation was refused before it ran.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// No such function (or qualifier).
    #[error("Function not found: {0}")]
    NotFound(String),
    /// Too many concurrent executions; the reason says whose limit.
    #[error("Rate Exceeded.")]
    Throttled(&'static str),
    /// The environment could not be started.
    #[error("{0}")]
    Service(String),
}

/// What an invocation answered.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The payload (the function's answer or its error document).
    pub payload: Bytes,
    /// `Unhandled` when the function failed.
    pub function_error: Option<&'static str>,
    /// The last 4 KB of its log.
    pub log_tail: String,
    /// The request id.
    pub request_id: String,
}

/// Per-function counters, for metrics.
#[derive(Default)]
struct Stats {
    invocations: AtomicU64,
    errors: AtomicU64,
    throttles: AtomicU64,
    cold_starts: AtomicU64,
    /// Durations (ms) since the last collection, at most 4096.
    durations: Mutex<Vec<f64>>,
}

/// One warm (or starting) environment.
struct Env {
    running: sandbox::Running,
    revision: u64,
    last_used: Instant,
    /// Credentials it was started with expire then (Unix seconds).
    expires: Option<i64>,
    /// Its VPC endpoint, when the function runs in a VPC.
    endpoint: Option<String>,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Env>,
    busy: u64,
}

struct Live {
    rec: Mutex<FunctionRecord>,
    pool: Mutex<Pool>,
    stats: Stats,
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct FnOptions {
    /// Environments alive at once, all functions together.
    pub max_environments: usize,
    /// An environment idle this long is stopped.
    pub idle_timeout: Duration,
    /// A failed asynchronous invocation is retried after this, then twice this...
    pub retry_delay: Duration,
    /// An asynchronous event older than this is not run (it goes to the dead letters).
    pub max_event_age: Duration,
    /// How long a schedule's `rate` minute lasts (shorter only to try schedules out).
    pub minute: Duration,
}

impl Default for FnOptions {
    fn default() -> Self {
        FnOptions {
            max_environments: 64,
            idle_timeout: Duration::from_secs(300),
            retry_delay: Duration::from_secs(60),
            max_event_age: Duration::from_secs(6 * 3600),
            minute: Duration::from_secs(60),
        }
    }
}

/// The functions service.
pub struct Functions {
    data_dir: PathBuf,
    store: Arc<Store>,
    obs: Arc<Obs>,
    prefix: String,
    cgroups: veeps_sys::cgroup::Flavor,
    opts: FnOptions,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Environments alive (idle or busy), all functions together.
    alive: Mutex<usize>,
    next_env: AtomicU64,
    uid_lock: Mutex<()>,
    endpoint: Mutex<Option<SocketAddr>>,
    roles: OnceLock<Arc<dyn Roles>>,
    queue: queue::Queue,
    objects: OnceLock<Arc<veeps_s3::store::ObjectStore>>,
    net: OnceLock<Arc<veeps_net::Net>>,
    kms: OnceLock<Arc<veeps_kms::Kms>>,
    images: OnceLock<Arc<veeps_compute::image::Images>>,
}

impl Functions {
    /// The service over the server's store, with host objects named with `prefix`.
    pub fn new(
        data_dir: &Path,
        store: Arc<Store>,
        obs: Arc<Obs>,
        prefix: &str,
        opts: FnOptions,
    ) -> Arc<Functions> {
        Arc::new(Functions {
            data_dir: data_dir.to_path_buf(),
            store,
            obs,
            prefix: prefix.to_string(),
            cgroups: veeps_sys::cgroup::detect(),
            opts,
            live: Mutex::new(HashMap::new()),
            alive: Mutex::new(0),
            next_env: AtomicU64::new(1),
            uid_lock: Mutex::new(()),
            endpoint: Mutex::new(None),
            roles: OnceLock::new(),
            queue: queue::Queue::default(),
            objects: OnceLock::new(),
            net: OnceLock::new(),
            kms: OnceLock::new(),
            images: OnceLock::new(),
        })
    }

    /// Functions reach the AWS endpoint (S3, Lambda) at `addr` (`AWS_ENDPOINT_URL`).
    pub fn set_endpoint(&self, addr: SocketAddr) {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// Where functions whose code is an image find it.
    pub fn set_images(&self, images: Arc<veeps_compute::image::Images>) {
        let _ = self.images.set(images);
    }

    /// An image's entrypoint and files, if it is built.
    pub fn image(&self, id: &str) -> Option<(Vec<String>, PathBuf)> {
        let images = self.images.get()?;
        let img = images.get(id)?;
        Some((img.entrypoint, images.root(id)))
    }

    /// What seals and opens functions' secrets.
    pub fn set_kms(&self, kms: Arc<veeps_kms::Kms>) {
        let _ = self.kms.set(kms);
    }

    /// `secrets` sealed for `env`: `kmscrypt::` values are checked to open there, plain
    /// (sensitive) ones sealed now.
    pub fn seal(
        &self,
        env: &str,
        secrets: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        if secrets.is_empty() {
            return Ok(BTreeMap::new());
        }
        let kms = self.kms.get().ok_or("secrets need KMS")?;
        let mut out = BTreeMap::new();
        for (name, v) in secrets {
            let sealed = if veeps_kms::is_kmscrypt(v) {
                kms.decrypt_value(env, v).map_err(|_| {
                    format!("secrets.{name}: this kmscrypt:: value was not encrypted for environment {env} (use `veeps kms encrypt {env}`)")
                })?;
                v.clone()
            } else {
                kms.encrypt_value(env, v)
                    .map_err(|e| format!("sealing secrets.{name}: {e}"))?
            };
            out.insert(name.clone(), sealed);
        }
        Ok(out)
    }

    /// Where VPC-attached functions get their endpoints.
    pub fn set_net(&self, net: Arc<veeps_net::Net>) {
        let _ = self.net.set(net);
    }

    /// Where dead-letter buckets are.
    pub fn set_objects(&self, objects: Arc<veeps_s3::store::ObjectStore>) {
        let _ = self.objects.set(objects);
    }

    /// Where roles' credentials come from.
    pub fn set_roles(&self, roles: Arc<dyn Roles>) {
        let _ = self.roles.set(roles);
    }

    /// Whether `role` exists (true without IAM).
    pub fn role_exists(&self, role: &str) -> bool {
        self.roles.get().is_none_or(|r| r.exists(role))
    }

    fn cgroup_prefix(&self) -> String {
        format!("{}fn", self.prefix)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The code store.
    pub fn code_dir(&self) -> PathBuf {
        self.data_dir.join("functions").join("code")
    }

    /// Loads recorded functions; kills environments a previous run left.
    pub fn open(&self) -> Result<(), veeps_state::StateError> {
        let mut recs: Vec<(String, FunctionRecord)> = self.store.kv_scan(K_FUNCTION)?;
        recs.extend(self.store.kv_scan::<FunctionRecord>(K_VERSION)?);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for (_, r) in recs {
            live.insert(
                r.key(),
                Arc::new(Live {
                    rec: Mutex::new(r),
                    pool: Mutex::new(Pool::default()),
                    stats: Stats::default(),
                }),
            );
        }
        drop(live);
        self.queue.open(&self.store);
        self.sweep();
        Ok(())
    }

    /// Kills and removes the cgroups of environments nothing holds (a previous run's).
    fn sweep(&self) {
        let flavor = self.cgroups.clone();
        let prefix = self.cgroup_prefix();
        let root = match flavor {
            veeps_sys::cgroup::Flavor::V1 => Path::new("/sys/fs/cgroup/memory").join(&prefix),
            veeps_sys::cgroup::Flavor::V2 => Path::new("/sys/fs/cgroup").join(&prefix),
            veeps_sys::cgroup::Flavor::None(_) => return,
        };
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                let name = e.file_name().to_string_lossy().to_string();
                veeps_sys::cgroup::Cgroup::new(&flavor, &prefix, &name).remove();
            }
        }
    }

    /// A function by name, or a published version by its key (`NAME:VERSION`).
    pub fn get(&self, name: &str) -> Option<FunctionRecord> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(name)
            .map(|l| l.rec.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Every function.
    pub fn list(&self) -> Vec<FunctionRecord> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<FunctionRecord> = live
            .values()
            .map(|l| l.rec.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .filter(|r| r.version == "$LATEST")
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn allocate_uid(&self) -> Result<u32, String> {
        let _g = self.uid_lock.lock().unwrap_or_else(|p| p.into_inner());
        let next = self
            .store
            .kv_get::<u32>(K_NEXT_UID)
            .map_err(|e| e.to_string())?
            .unwrap_or(FIRST_UID);
        self.store
            .kv_put(K_NEXT_UID, &(next + 1))
            .map_err(|e| e.to_string())?;
        Ok(next)
    }

    /// Records (creates or updates) a function; warm environments of its previous
    /// revision are stopped. `rec.uid` and `rec.revision` are set here.
    pub async fn put(&self, mut rec: FunctionRecord) -> Result<FunctionRecord, String> {
        if let Some(other) = self.get(&rec.name) {
            if other.env != rec.env || other.address != rec.address {
                return Err(format!(
                    "a function named {} exists already (declared by {} in environment {}); function names are unique in the server",
                    rec.name, other.address, other.env
                ));
            }
            rec.uid = other.uid;
            if other.secrets_digest == rec.secrets_digest {
                rec.secrets = other.secrets.clone();
            }
            rec.revision = if strip(&other) == strip(&rec) {
                other.revision
            } else {
                other.revision + 1
            };
        } else {
            rec.uid = self.allocate_uid()?;
            rec.revision = 1;
        }
        self.store
            .kv_put(&format!("{K_FUNCTION}{}", rec.name), &rec)
            .map_err(|e| e.to_string())?;
        let live = {
            let mut all = self.live.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(rec.name.clone())
                .or_insert_with(|| {
                    Arc::new(Live {
                        rec: Mutex::new(rec.clone()),
                        pool: Mutex::new(Pool::default()),
                        stats: Stats::default(),
                    })
                })
                .clone()
        };
        *live.rec.lock().unwrap_or_else(|p| p.into_inner()) = rec.clone();
        let stale: Vec<Env> = {
            let mut pool = live.pool.lock().unwrap_or_else(|p| p.into_inner());
            let (keep, stale) = std::mem::take(&mut pool.idle)
                .into_iter()
                .partition(|e| e.revision == rec.revision);
            pool.idle = keep;
            stale
        };
        for e in stale {
            self.retire(e).await;
        }
        Ok(rec)
    }

    /// Deletes a function: its environments stop; its record, versions, aliases and URL
    /// go.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        let lives: Vec<Arc<Live>> = {
            let mut all = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<String> = all
                .keys()
                .filter(|k| *k == name || k.starts_with(&format!("{name}:")))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        let mut ops = vec![veeps_state::KvOp::Delete(format!("{K_FUNCTION}{name}"))];
        for prefix in [format!("{K_VERSION}{name}/"), format!("{K_ALIAS}{name}/")] {
            for (k, _) in self
                .store
                .kv_scan::<serde::de::IgnoredAny>(&prefix)
                .map_err(|e| e.to_string())?
            {
                ops.push(veeps_state::KvOp::Delete(k));
            }
        }
        self.store.kv_batch(ops).map_err(|e| e.to_string())?;
        self.delete_url(name)?;
        for l in lives {
            let idle = std::mem::take(&mut l.pool.lock().unwrap_or_else(|p| p.into_inner()).idle);
            for e in idle {
                self.retire(e).await;
            }
        }
        Ok(())
    }

    /// Published versions of a function, oldest first.
    pub fn versions(&self, name: &str) -> Vec<FunctionRecord> {
        self.store
            .kv_scan::<FunctionRecord>(&format!("{K_VERSION}{name}/"))
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default()
    }

    /// Publishes `$LATEST` as a new version, unless the newest version is the same code
    /// and configuration already (then that one's number); as Lambda's PublishVersion.
    pub fn publish(&self, name: &str) -> Result<String, String> {
        let latest = self
            .get(name)
            .ok_or_else(|| format!("no function {name}"))?;
        let versions = self.versions(name);
        let same = |v: &FunctionRecord| {
            FunctionRecord {
                version: latest.version.clone(),
                ..strip(v)
            } == strip(&latest)
        };
        if let Some(v) = versions.last().filter(|v| same(v)) {
            return Ok(v.version.clone());
        }
        let n = versions
            .last()
            .and_then(|v| v.version.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let rec = FunctionRecord {
            version: n.to_string(),
            ..latest
        };
        self.store
            .kv_put(&format!("{K_VERSION}{name}/{n:010}"), &rec)
            .map_err(|e| e.to_string())?;
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            rec.key(),
            Arc::new(Live {
                rec: Mutex::new(rec),
                pool: Mutex::new(Pool::default()),
                stats: Stats::default(),
            }),
        );
        Ok(n.to_string())
    }

    /// Records an alias, after checking its versions exist.
    pub fn put_alias(&self, a: &AliasRecord) -> Result<(), String> {
        let exists = |v: &str| {
            v == "$LATEST" && self.get(&a.function).is_some()
                || self.get(&format!("{}:{v}", a.function)).is_some()
        };
        for v in std::iter::once(&a.version).chain(a.additional.as_ref().map(|x| &x.0)) {
            if !exists(v) {
                return Err(format!(
                    "function {} has no version {v}; publish it (publish = true) first",
                    a.function
                ));
            }
        }
        self.store
            .kv_put(&format!("{K_ALIAS}{}/{}", a.function, a.name), a)
            .map_err(|e| e.to_string())
    }

    /// An alias.
    pub fn alias(&self, function: &str, name: &str) -> Option<AliasRecord> {
        self.store
            .kv_get(&format!("{K_ALIAS}{function}/{name}"))
            .ok()
            .flatten()
    }

    /// Removes an alias.
    pub fn delete_alias(&self, function: &str, name: &str) -> Result<(), String> {
        self.store
            .kv_delete(&format!("{K_ALIAS}{function}/{name}"))
            .map_err(|e| e.to_string())
    }

    async fn retire(&self, mut e: Env) {
        e.running.stop().await;
        self.detach(e.endpoint.take()).await;
        let mut a = self.alive.lock().unwrap_or_else(|p| p.into_inner());
        *a = a.saturating_sub(1);
    }

    /// Stops every environment (the server is stopping).
    pub async fn stop_all(&self) {
        let lives: Vec<Arc<Live>> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for l in lives {
            let idle = std::mem::take(&mut l.pool.lock().unwrap_or_else(|p| p.into_inner()).idle);
            for e in idle {
                self.retire(e).await;
            }
        }
    }

    /// Stops environments idle longer than the idle timeout, or whose credentials are
    /// about to expire.
    pub async fn reap(&self) {
        let lives: Vec<Arc<Live>> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let soon = veeps_obs::service::now() / 1000 + 600;
        for l in lives {
            let old: Vec<Env> = {
                let mut pool = l.pool.lock().unwrap_or_else(|p| p.into_inner());
                let (old, keep) = std::mem::take(&mut pool.idle).into_iter().partition(|e| {
                    e.last_used.elapsed() >= self.opts.idle_timeout
                        || e.expires.is_some_and(|x| x <= soon)
                });
                pool.idle = keep;
                old
            };
            for e in old {
                self.retire(e).await;
            }
        }
    }

    /// Takes a slot for one more environment, stopping the longest-idle environment of any
    /// function when the server's limit is reached; `false` if none can be had.
    async fn take_slot(&self) -> bool {
        {
            let mut a = self.alive.lock().unwrap_or_else(|p| p.into_inner());
            if *a < self.opts.max_environments {
                *a += 1;
                return true;
            }
        }
        let lives: Vec<Arc<Live>> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut victim: Option<(Instant, Arc<Live>)> = None;
        for l in &lives {
            let pool = l.pool.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = pool.idle.iter().map(|e| e.last_used).min() {
                if victim.as_ref().is_none_or(|(v, _)| t < *v) {
                    victim = Some((t, l.clone()));
                }
            }
        }
        let Some((t, l)) = victim else {
            return false;
        };
        let e = {
            let mut pool = l.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.idle
                .iter()
                .position(|e| e.last_used == t)
                .map(|i| pool.idle.swap_remove(i))
        };
        match e {
            // Its slot passes to the new environment.
            Some(mut e) => {
                e.running.stop().await;
                self.detach(e.endpoint.take()).await;
                true
            }
            None => false,
        }
    }

    async fn detach(&self, endpoint: Option<String>) {
        if let (Some(name), Some(net)) = (endpoint, self.net.get()) {
            if let Err(e) = net.detach(&name).await {
                tracing::warn!(endpoint = %name, error = %e, "cannot remove a function environment's endpoint");
            }
        }
    }

    /// Removes the endpoints of environments a previous run left.
    pub async fn sweep_endpoints(&self) {
        let Some(net) = self.net.get() else {
            return;
        };
        for ep in net.endpoints().unwrap_or_default() {
            if ep.name.starts_with("fn/") {
                let _ = net.detach(&ep.name).await;
            }
        }
    }

    fn release_slot(&self) {
        let mut a = self.alive.lock().unwrap_or_else(|p| p.into_inner());
        *a = a.saturating_sub(1);
    }

    async fn start_env(&self, rec: &FunctionRecord) -> Result<Env, String> {
        let id = format!(
            "{}-{}",
            rec.name,
            self.next_env.fetch_add(1, Ordering::Relaxed)
        );
        let endpoint = *self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: BTreeMap<String, String> = rec.environment.clone();
        let region = "us-east-1";
        let stream = format!(
            "{}/[$LATEST]{}",
            time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!("[year]/[month]/[day]"))
                .unwrap_or_default(),
            id
        );
        for (k, v) in [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "en_US.UTF-8"),
            ("TZ", ":UTC"),
            ("HOME", "/tmp"),
            ("LAMBDA_TASK_ROOT", sandbox::TASK_ROOT),
            ("LAMBDA_RUNTIME_DIR", sandbox::RUNTIME_DIR),
            ("AWS_LAMBDA_RUNTIME_API", sandbox::RUNTIME_API),
            ("AWS_REGION", region),
            ("AWS_DEFAULT_REGION", region),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ] {
            vars.insert(k.into(), v.into());
        }
        vars.insert("_HANDLER".into(), rec.handler.clone());
        vars.insert("AWS_LAMBDA_FUNCTION_VERSION".into(), rec.version.clone());
        vars.insert("AWS_LAMBDA_FUNCTION_NAME".into(), rec.name.clone());
        vars.insert(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            rec.memory_mb.to_string(),
        );
        vars.insert(
            "AWS_LAMBDA_LOG_GROUP_NAME".into(),
            format!("/aws/lambda/{}", rec.name),
        );
        vars.insert("AWS_LAMBDA_LOG_STREAM_NAME".into(), stream);
        vars.insert(
            "AWS_EXECUTION_ENV".into(),
            format!("AWS_Lambda_{}", rec.runtime),
        );
        let mut runtime_dir = None;
        if rec.runtime.starts_with("python") {
            let d = sandbox::runtime_files(&rec.runtime).ok_or_else(|| {
                format!(
                    "runtime {} needs its runtime interface client: pip install --target /usr/local/lib/veeps/runtimes/{} awslambdaric boto3 (./run does)",
                    rec.runtime, rec.runtime
                )
            })?;
            runtime_dir = Some(d);
            vars.insert(
                "PYTHONPATH".into(),
                format!("{}:{}", sandbox::TASK_ROOT, sandbox::RUNTIME_DIR),
            );
            vars.insert("PYTHONUNBUFFERED".into(), "1".into());
        }
        if let Some(e) = endpoint {
            vars.insert(
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", e.port()),
            );
        }
        if !rec.secrets.is_empty() {
            let kms = self.kms.get().ok_or("secrets need KMS")?;
            for (name, sealed) in &rec.secrets {
                let plain = kms
                    .decrypt_value(&rec.env, sealed)
                    .map_err(|e| format!("{}: secrets.{name} does not open: {e}", rec.name))?;
                vars.insert(name.clone(), plain);
            }
        }
        let mut expires = None;
        if let Some(role) = &rec.role {
            let roles = self
                .roles
                .get()
                .ok_or_else(|| format!("role {role}: IAM is not running"))?;
            let c = roles.issue(role, &format!("fn-{}", rec.name))?;
            vars.insert("AWS_ACCESS_KEY_ID".into(), c.access_key_id.clone());
            vars.insert("AWS_SECRET_ACCESS_KEY".into(), c.secret_access_key.clone());
            vars.insert("AWS_SESSION_TOKEN".into(), c.session_token.clone());
            expires = Some(c.expires);
        }
        // In a VPC: an endpoint of its own in one of the subnets (in turn), reached as the
        // function's security groups allow, names resolved by the VPC's resolver.
        let mut netns = None;
        let mut resolver = None;
        let mut vpc_endpoint = None;
        if !rec.subnets.is_empty() {
            let net = self
                .net
                .get()
                .ok_or_else(|| "functions in a VPC need the network service".to_string())?;
            let n = self.next_env.load(Ordering::Relaxed) as usize;
            let subnet = rec.subnets[n % rec.subnets.len()].clone();
            let name = format!("fn/{id}");
            let ep = net
                .attach(veeps_net::AttachRequest {
                    name: name.clone(),
                    subnet_id: subnet,
                    security_groups: rec.security_groups.clone(),
                })
                .await
                .map_err(|e| {
                    format!(
                        "cannot place an environment of {} in its VPC: {e}",
                        rec.name
                    )
                })?;
            vpc_endpoint = Some(name);
            resolver = net
                .subnet(&ep.subnet_id)
                .ok()
                .and_then(|s| net.vpc(&s.vpc_id).ok())
                .map(|v| v.resolver());
            netns = Some(ep.netns);
        }
        let spec = sandbox::Spec {
            netns,
            resolver,
            id,
            env: rec.env.clone(),
            function: rec.name.clone(),
            runtime: rec.runtime.clone(),
            handler: rec.handler.clone(),
            memory_mb: rec.memory_mb,
            tmp_mb: rec.tmp_mb,
            code: match &rec.image {
                Some(id) => {
                    self.image(id)
                        .ok_or_else(|| format!("{}: its image {id} is not built", rec.name))?
                        .1
                }
                None => self.code_dir().join(code::dir_name(&rec.code_sha256)),
            },
            entrypoint: rec.entrypoint.clone(),
            runtime_dir,
            vars,
            ids: veeps_sys::confine::Ids {
                uid: rec.uid,
                gid: rec.uid,
            },
            endpoint,
            data_dir: self.data_dir.clone(),
            cgroup_prefix: self.cgroup_prefix(),
        };
        let obs = self.obs.clone();
        let running =
            match sandbox::start(&spec, &self.cgroups, Arc::new(move |l| obs.log(l))).await {
                Ok(r) => r,
                Err(e) => {
                    self.detach(vpc_endpoint).await;
                    return Err(format!("cannot start an environment of {}: {e}", rec.name));
                }
            };
        Ok(Env {
            running,
            revision: rec.revision,
            last_used: Instant::now(),
            expires,
            endpoint: vpc_endpoint,
        })
    }

    /// Resolves what the Invoke API names: `NAME`, `NAME:QUALIFIER` or an ARN, and a
    /// qualifier given apart: `$LATEST`, a published version's number, or an alias (which
    /// picks one of its versions by their weights).
    pub fn resolve(
        &self,
        name: &str,
        qualifier: Option<&str>,
    ) -> Result<FunctionRecord, InvokeError> {
        let tail = match name.split_once(":function:") {
            Some((_, t)) => t,
            None if name.starts_with("arn:") => return Err(InvokeError::NotFound(name.into())),
            None => name,
        };
        let (fname, q) = match tail.split_once(':') {
            Some((n, q)) => (n, Some(q)),
            None => (tail, None),
        };
        let latest = self
            .get(fname)
            .ok_or_else(|| InvokeError::NotFound(name.to_string()))?;
        let q = match (q, qualifier) {
            (Some(a), Some(b)) if a != b => {
                return Err(InvokeError::NotFound(format!(
                    "{}:{b} (the name says {a})",
                    latest.arn()
                )))
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => "$LATEST",
        };
        let missing = || InvokeError::NotFound(format!("{}:{q}", latest.arn()));
        if q == "$LATEST" {
            return Ok(latest);
        }
        if q.chars().all(|c| c.is_ascii_digit()) {
            return self.get(&format!("{fname}:{q}")).ok_or_else(missing);
        }
        let a = self.alias(fname, q).ok_or_else(missing)?;
        let version = match &a.additional {
            Some((other, w)) if rand::random::<f64>() < *w => other.clone(),
            _ => a.version.clone(),
        };
        if version == "$LATEST" {
            return Ok(latest);
        }
        self.get(&format!("{fname}:{version}")).ok_or_else(missing)
    }

    /// Invokes `name` with `payload` and waits for its answer.
    pub async fn invoke(
        &self,
        name: &str,
        payload: Bytes,
        call: Call,
    ) -> Result<Invoked, InvokeError> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| InvokeError::NotFound(name.into()))?;
        let rec = live.rec.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // A slot of the function's concurrency, and a warm environment if one is idle.
        let mut warm = {
            let mut pool = live.pool.lock().unwrap_or_else(|p| p.into_inner());
            let limit = rec.reserved_concurrency.unwrap_or(u64::MAX);
            if pool.busy >= limit {
                live.stats.throttles.fetch_add(1, Ordering::Relaxed);
                return Err(InvokeError::Throttled(
                    "ReservedFunctionConcurrentInvocationLimitExceeded",
                ));
            }
            pool.busy += 1;
            // The most recently used is the warmest.
            pool.idle.pop()
        };
        let busy = BusyGuard(&live);
        // One whose process ended while it was idle is not reused.
        while let Some(mut e) = warm.take() {
            if matches!(e.running.child.try_wait(), Ok(None)) {
                warm = Some(e);
                break;
            }
            self.retire(e).await;
            warm = live
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .idle
                .pop();
        }
        let spawned = Instant::now();
        let (mut env, cold) = match warm {
            Some(e) => (e, false),
            None => {
                if !self.take_slot().await {
                    live.stats.throttles.fetch_add(1, Ordering::Relaxed);
                    return Err(InvokeError::Throttled("ConcurrentInvocationLimitExceeded"));
                }
                match self.start_env(&rec).await {
                    Ok(e) => (e, true),
                    Err(e) => {
                        self.release_slot();
                        return Err(InvokeError::Service(e));
                    }
                }
            }
        };
        if cold {
            live.stats.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        live.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let (result, keep) = self.run(&rec, &mut env, payload, call, cold, spawned).await;
        if result.function_error.is_some() {
            live.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        drop(busy);
        let current = live.rec.lock().unwrap_or_else(|p| p.into_inner()).revision;
        let still_listed = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_some_and(|l| Arc::ptr_eq(l, &live));
        if keep && env.revision == current && still_listed {
            env.last_used = Instant::now();
            live.pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .idle
                .push(env);
        } else {
            self.retire(env).await;
        }
        Ok(result)
    }

    /// Runs one invocation in `env`; says whether the environment may be reused.
    async fn run(
        &self,
        rec: &FunctionRecord,
        env: &mut Env,
        payload: Bytes,
        call: Call,
        cold: bool,
        spawned: Instant,
    ) -> (Invoked, bool) {
        let Call {
            client_context,
            tail: want_tail,
        } = call;
        let id = uuid4();
        let timeout = Duration::from_secs(rec.timeout_secs);
        let (stx, srx) = tokio::sync::oneshot::channel();
        let (dtx, drx) = tokio::sync::oneshot::channel();
        let inv = runtime::Invocation {
            id: id.clone(),
            payload: if payload.is_empty() {
                Bytes::from_static(b"{}")
            } else {
                payload
            },
            arn: if rec.version == "$LATEST" {
                rec.arn()
            } else {
                rec.qualified_arn()
            },
            timeout,
            client_context,
            start_line: format!("START RequestId: {id} Version: {}", rec.version),
            started: stx,
            done: dtx,
        };
        let r = &mut env.running;
        let fail = |payload: String| Invoked {
            payload: Bytes::from(payload),
            function_error: Some("Unhandled"),
            log_tail: String::new(),
            request_id: id.clone(),
        };
        if r.tx.try_send(inv).is_err() {
            return (
                fail(error_doc(
                    "Runtime.Unavailable",
                    &id,
                    "the environment is not ready",
                )),
                false,
            );
        }
        // The start: the runtime takes the event when it is ready.
        let started = tokio::select! {
            s = srx => s.ok(),
            st = r.child.wait() => {
                let why = exit_text(st.ok());
                return (self.exited(r, &id, &why), false);
            }
            _ = tokio::time::sleep(if cold { INIT_TIMEOUT } else { Duration::from_secs(1) + INIT_TIMEOUT }) => None,
        };
        let Some(started) = started else {
            let mut out = match r
                .channel
                .init_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                Some((body, _)) => fail(String::from_utf8_lossy(&body).into_owned()),
                None => fail(error_doc(
                    "Runtime.InitError",
                    &id,
                    &format!(
                        "the runtime did not ask for an event within {} seconds",
                        INIT_TIMEOUT.as_secs()
                    ),
                )),
            };
            out.log_tail = r.log.end_invocation(vec![]).await;
            return (out, false);
        };
        let init_ms = cold.then(|| started.duration_since(spawned).as_secs_f64() * 1000.0);
        let deadline = tokio::time::Instant::from_std(started + timeout);
        enum End {
            Done(Outcome),
            Exit(String),
            Timeout,
        }
        let end = tokio::select! {
            o = drx => match o {
                Ok(o) => End::Done(o),
                Err(_) => End::Exit("the runtime abandoned the invocation".into()),
            },
            st = r.child.wait() => End::Exit(exit_text(st.ok())),
            _ = tokio::time::sleep_until(deadline) => End::Timeout,
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (payload, error, keep, extra): (Bytes, bool, bool, Vec<String>) = match end {
            End::Done(Outcome::Response(b)) => (b, false, true, vec![]),
            End::Done(Outcome::Error(b, _)) => (b, true, true, vec![]),
            End::Done(Outcome::InitError(b, _)) => (b, true, false, vec![]),
            End::Done(Outcome::TooLarge) => (
                Bytes::from(format!(
                    "{{\"errorMessage\":\"Response payload size exceeded maximum allowed payload size ({} bytes).\",\"errorType\":\"Function.ResponseSizeTooLarge\"}}",
                    runtime::MAX_PAYLOAD
                )),
                true,
                true,
                vec![],
            ),
            End::Exit(why) => {
                let oom = r.cgroup.oom_kills() > 0;
                let kind = if oom { "Runtime.OutOfMemory" } else { "Runtime.ExitError" };
                let msg = format!("Runtime exited with error: {why}");
                (
                    Bytes::from(error_doc(kind, &id, &msg)),
                    true,
                    false,
                    vec![format!("RequestId: {id} Error: {msg}"), kind.to_string()],
                )
            }
            End::Timeout => {
                let msg = format!("Task timed out after {:.2} seconds", timeout.as_secs_f64());
                (
                    Bytes::from(error_doc("Sandbox.Timedout", &id, &msg)),
                    true,
                    false,
                    vec![format!("{} {id} {msg}", rfc3339_now())],
                )
            }
        };
        let peak = r
            .cgroup
            .peak_memory_bytes()
            .map(|b| b.div_ceil(1024 * 1024))
            .unwrap_or(0);
        let mut report = format!(
            "REPORT RequestId: {id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {peak} MB\t",
            duration_ms.ceil().max(1.0) as u64,
            rec.memory_mb
        );
        if let Some(i) = init_ms {
            report.push_str(&format!("Init Duration: {i:.2} ms\t"));
        }
        let mut lines = extra;
        lines.push(format!("END RequestId: {id}"));
        lines.push(report);
        // The log thread writes these after what the function wrote; only a caller who
        // wants the tail waits for it.
        let tail = if want_tail {
            r.log.end_invocation(lines).await
        } else {
            r.log.end_invocation_unseen(lines);
            String::new()
        };
        {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = live.get(&rec.key()) {
                let mut d = l.stats.durations.lock().unwrap_or_else(|p| p.into_inner());
                if d.len() < 4096 {
                    d.push(duration_ms);
                }
            }
        }
        (
            Invoked {
                payload,
                function_error: error.then_some("Unhandled"),
                log_tail: tail,
                request_id: id,
            },
            keep,
        )
    }

    fn exited(&self, _r: &sandbox::Running, id: &str, why: &str) -> Invoked {
        let init = _r
            .channel
            .init_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let payload = match init {
            Some((body, _)) => String::from_utf8_lossy(&body).into_owned(),
            None => error_doc(
                "Runtime.ExitError",
                id,
                &format!("Runtime exited with error: {why}"),
            ),
        };
        Invoked {
            payload: Bytes::from(payload),
            function_error: Some("Unhandled"),
            log_tail: String::new(),
            request_id: id.to_string(),
        }
    }

    /// Metric samples of every function.
    pub fn collect(&self, out: &mut Vec<Sample>) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for l in live.values() {
            let rec = l.rec.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let labels = [
                ("env", rec.env.as_str()),
                ("function", rec.name.as_str()),
                ("version", rec.version.as_str()),
            ];
            let s = &l.stats;
            for (name, v) in [
                ("function_invocations_total", &s.invocations),
                ("function_errors_total", &s.errors),
                ("function_throttles_total", &s.throttles),
                ("function_cold_starts_total", &s.cold_starts),
            ] {
                out.push(Sample::new(name, &labels, v.load(Ordering::Relaxed) as f64));
            }
            let (busy, idle) = {
                let p = l.pool.lock().unwrap_or_else(|p| p.into_inner());
                (p.busy, p.idle.len())
            };
            out.push(Sample::new(
                "function_concurrent_executions",
                &labels,
                busy as f64,
            ));
            out.push(Sample::new(
                "function_warm_environments",
                &labels,
                idle as f64,
            ));
            let mut d = std::mem::take(&mut *s.durations.lock().unwrap_or_else(|p| p.into_inner()));
            if !d.is_empty() {
                d.sort_by(|a, b| a.total_cmp(b));
                for (q, name) in [
                    (0.5, "function_duration_p50_ms"),
                    (0.99, "function_duration_p99_ms"),
                ] {
                    let i = ((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1;
                    out.push(Sample::new(name, &labels, d[i]));
                }
            }
        }
    }
}

/// What a caller asks of one invocation besides its event.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// A base64 client context, for the runtime.
    pub client_context: Option<String>,
    /// Wait for the last 4 KB of its log (`LogType: Tail`).
    pub tail: bool,
}

/// Gives back the function's concurrency slot however the invocation ends.
struct BusyGuard<'a>(&'a Live);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut p = self.0.pool.lock().unwrap_or_else(|p| p.into_inner());
        p.busy = p.busy.saturating_sub(1);
    }
}

/// The record without what `put` sets: two records equal here are one revision.
fn strip(r: &FunctionRecord) -> FunctionRecord {
    FunctionRecord {
        uid: 0,
        revision: 0,
        last_modified: String::new(),
        ..r.clone()
    }
}

fn exit_text(st: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match st {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(9)) => "signal: killed".into(),
            (None, Some(n)) => format!("signal: {n}"),
            _ => "exited".into(),
        },
        None => "exited".into(),
    }
}

/// An error document in Lambda's shape.
fn error_doc(kind: &str, id: &str, msg: &str) -> String {
    serde_json::json!({
        "errorType": kind,
        "errorMessage": format!("RequestId: {id} Error: {msg}"),
    })
    .to_string()
}

pub(crate) fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A random (version 4) UUID, as Lambda's request ids are.
pub fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
