//! What a group is made of: launch templates, the group as declared, its instances and
//! their states, its activity and its record in the store; and the balancers' view of
//! targets that a group with target groups consults.

use super::*;

/// What an instance runs and with what limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Template {
    /// The launch template's id.
    pub id: String,
    /// The image.
    pub image_id: String,
    /// CPUs.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Most processes and threads.
    pub pids: u64,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The app's port (`PORT`), checked for health when set.
    pub port: Option<u16>,
    /// HTTP path of the health check (with `port`).
    pub health_check_path: Option<String>,
    /// Secret environment variables, each a `kmscrypt::` value of the environment: decrypted
    /// only when an instance starts, handed to it in its environment, never stored in the
    /// clear.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// A digest of the secrets as configured: a changed secret rolls out, while sealing
    /// (a fresh nonce each time) does not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secrets_digest: String,
    /// The IAM role whose temporary credentials instances get (renewed before expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_role: Option<String>,
}

impl Template {
    /// A fingerprint: instances with another one are out of date.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut t = self.clone();
        t.secrets.clear();
        let j = serde_json::to_string(&t).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(j.as_bytes()))[..12].to_string()
    }

    /// The digest [`Template::secrets_digest`] holds for secrets as configured.
    pub fn digest_of(secrets: &BTreeMap<String, String>) -> String {
        use sha2::Digest;
        if secrets.is_empty() {
            return String::new();
        }
        let j = serde_json::to_string(secrets).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(j.as_bytes()))
    }
}

/// The load balancers' view of targets: a group with target groups enters instances into
/// service when the balancers find them healthy, and drains them before stopping them.
#[async_trait::async_trait]
pub trait TargetHealth: Send + Sync {
    /// Healthy in every balancer that knows the address as a target of these groups;
    /// `None` when none does.
    fn healthy(&self, target_groups: &[String], address: &str) -> Option<bool>;
    /// True if some balancer forwards to one of these groups.
    fn serves(&self, target_groups: &[String]) -> bool;
    /// Requests the balancers have sent to these groups so far.
    fn requests(&self, target_groups: &[String]) -> u64;
    /// Stops new requests to the address and waits for its in-flight ones (up to each
    /// group's deregistration delay).
    async fn drain(&self, target_groups: &[String], address: &str);
}

/// How instance health is judged.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum HealthCheck {
    /// The process is running.
    #[serde(rename = "process")]
    Process,
    /// The application answers its health check (the load balancer's view).
    #[serde(rename = "lb")]
    Lb,
}

/// Rolling replacement settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Refresh {
    /// Percent of the desired count that stays in service during a rollout.
    pub min_healthy_percentage: u32,
    /// Start new instances before stopping old ones.
    pub create_before_destroy: bool,
    /// Seconds new instances have to become healthy.
    pub timeout_secs: u64,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            min_healthy_percentage: 90,
            create_before_destroy: true,
            timeout_secs: 120,
        }
    }
}

/// A group as declared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupSpec {
    /// Its id (`asg-...`).
    pub id: String,
    /// The environment.
    pub env: String,
    /// Its name (the log group and `VEEPS_GROUP`).
    pub name: String,
    /// What instances run.
    pub template: Template,
    /// Subnets to spread across.
    pub subnets: Vec<String>,
    /// Security groups of every instance.
    pub security_groups: Vec<String>,
    /// Bounds.
    pub min_size: u32,
    /// Bounds.
    pub max_size: u32,
    /// Health check type.
    pub health_check: HealthCheck,
    /// Seconds after launch before health checks can fail an instance.
    pub grace_secs: u64,
    /// Load balancer target groups (registered by the load balancer part).
    pub target_groups: Vec<String>,
    /// Which instances go first when scaling in.
    pub termination_policies: Vec<String>,
    /// Rollouts.
    pub refresh: Refresh,
    /// Extra environment: VPC name and the like.
    pub extra_env: BTreeMap<String, String>,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Lifecycle {
    /// Started, not yet healthy.
    Pending,
    /// Healthy.
    InService,
    /// Being stopped.
    Terminating,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    /// `i-` and 8 hex digits.
    pub id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its address.
    pub address: String,
    /// The template fingerprint it runs.
    pub fingerprint: String,
    /// The image it runs.
    pub image_id: String,
    /// When it started (ms).
    pub launched_ms: i64,
    /// Its state.
    pub lifecycle: Lifecycle,
    /// Its supervisor's process id (the shim; the application is its grandchild, in a
    /// PID namespace and process group of its own).
    pub pid: u32,
    /// When that process started (clock ticks since boot): with `pid`, it names it for
    /// good, across restarts of veeps.
    #[serde(default)]
    pub started: u64,
    /// Consecutive failed health checks.
    #[serde(default)]
    pub failures: u32,
}

/// Something that happened to a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    /// When (RFC 3339).
    pub time: String,
    /// What.
    pub description: String,
    /// Why.
    pub cause: String,
}

/// A group's recorded state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The declaration.
    pub spec: GroupSpec,
    /// The current desired count (scaling changes it).
    pub desired: u32,
    /// Instances.
    pub instances: Vec<Instance>,
    /// The newest activities, oldest first.
    pub activities: VecDeque<Activity>,
    /// When scaling last changed `desired` (ms).
    #[serde(default)]
    pub last_scaled_ms: i64,
    /// The user (and group) id its instances run as: one of their own per group, never
    /// reused (0 until assigned, or when veeps runs without privileges).
    #[serde(default)]
    pub uid: u32,
}
