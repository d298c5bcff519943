//! Image auto-updates: an `image` with `auto_update` (a cron expression, UTC) is built again
//! on that schedule, reaching only its egress allow list. When the files come out the
//! same, nothing happens. When they differ, the build becomes the image's next version and
//! every group of the environment running an earlier build of the same inputs rolls it out
//! through its instance refresh (batches, health checks, rollback). The rollout holds the
//! environment's lock, as an apply does; a later plan shows the new image as a change made
//! outside of it, and nothing to do.

use crate::group::{ComputeError, GroupSpec, Template};
use crate::image::{BuildError, Image, ImageSpec};
use crate::policy::Cron;
use crate::Compute;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veeps_state::{LockInfo, Store};

const K_UPDATE: &str = "compute/autoupdate/";
/// How long a rollout waits for the environment's lock (held by an apply) before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// An image that updates itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Its environment.
    pub env: String,
    /// Its resource address.
    pub address: String,
    /// What to build.
    pub spec: ImageSpec,
    /// When (a cron expression, UTC).
    pub schedule: String,
    /// How the last run went.
    #[serde(default)]
    pub last: Option<Outcome>,
    /// The last run that made a new version.
    #[serde(default)]
    pub last_update: Option<Outcome>,
}

/// How one auto-update went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// When it finished (RFC 3339).
    pub at: String,
    /// `unchanged`, `updated` or `failed`.
    pub result: String,
    /// What happened, in words.
    pub detail: String,
    /// The image the inputs stand for now.
    #[serde(default)]
    pub image_id: Option<String>,
}

/// The registrations, kept in the store.
pub struct Updates {
    store: Arc<Store>,
    /// Registrations being run now.
    running: Mutex<HashSet<String>>,
    /// The cron slot each last ran in.
    fired: Mutex<HashMap<String, i64>>,
}

fn key(env: &str, address: &str) -> String {
    format!("{K_UPDATE}{env}/{address}")
}

impl Updates {
    /// The registrations of a server.
    pub fn new(store: Arc<Store>) -> Updates {
        Updates {
            store,
            running: Mutex::new(HashSet::new()),
            fired: Mutex::new(HashMap::new()),
        }
    }

    /// Records (or changes) an image's schedule; its last outcome stays.
    pub fn register(
        &self,
        env: &str,
        address: &str,
        spec: ImageSpec,
        schedule: &str,
    ) -> Result<(), ComputeError> {
        Cron::parse(schedule).map_err(ComputeError::Invalid)?;
        let k = key(env, address);
        let prev = self.get(env, address);
        let reg = Registration {
            env: env.to_string(),
            address: address.to_string(),
            spec,
            schedule: schedule.to_string(),
            last: prev.as_ref().and_then(|r| r.last.clone()),
            last_update: prev.and_then(|r| r.last_update),
        };
        self.store
            .kv_put(&k, &reg)
            .map_err(|e| ComputeError::Store(e.to_string()))
    }

    /// Forgets an image's schedule.
    pub fn unregister(&self, env: &str, address: &str) -> Result<(), ComputeError> {
        self.store
            .kv_delete(&key(env, address))
            .map_err(|e| ComputeError::Store(e.to_string()))
    }

    /// One registration.
    pub fn get(&self, env: &str, address: &str) -> Option<Registration> {
        self.store.kv_get(&key(env, address)).ok().flatten()
    }

    /// Every registration (of one environment, when given), by address.
    pub fn list(&self, env: Option<&str>) -> Vec<Registration> {
        let mut all: Vec<Registration> = self
            .store
            .kv_scan::<Registration>(K_UPDATE)
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default();
        all.retain(|r| env.is_none_or(|e| r.env == e));
        all.sort_by(|a, b| (&a.env, &a.address).cmp(&(&b.env, &b.address)));
        all
    }

    fn finish(&self, reg: &Registration, outcome: &Outcome) {
        // Only while it is still registered: a deleted image stays deleted.
        if let Some(mut now) = self.get(&reg.env, &reg.address) {
            now.last = Some(outcome.clone());
            if outcome.result == "updated" {
                now.last_update = Some(outcome.clone());
            }
            if let Err(e) = self.store.kv_put(&key(&reg.env, &reg.address), &now) {
                tracing::warn!(error = %e, "recording an auto-update");
            }
        }
    }

    /// The registrations due at `unix_secs` that have not run in its slot yet.
    fn due(&self, unix_secs: i64) -> Vec<Registration> {
        let mut fired = self.fired.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        for r in self.list(None) {
            let Ok(cron) = Cron::parse(&r.schedule) else {
                continue;
            };
            let slot = if cron.has_seconds {
                unix_secs
            } else {
                unix_secs.div_euclid(60)
            };
            let k = key(&r.env, &r.address);
            if !cron.matches(unix_secs) || fired.get(&k) == Some(&slot) || running.contains(&k) {
                continue;
            }
            fired.insert(k, slot);
            out.push(r);
        }
        out
    }
}

/// Marks a registration as running while it lives.
struct Running<'a>(&'a Updates, String);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// Holds an environment's lock while it lives.
struct EnvLock<'a>(&'a Store, String, String);

impl Drop for EnvLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock(&self.1, &self.2);
    }
}

impl Compute {
    /// Runs due auto-updates, each in a task of its own, until the service is dropped.
    pub fn run_updates(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                for reg in me.updates.due(now) {
                    let me = me.clone();
                    tokio::spawn(async move {
                        me.update_image(&reg).await;
                    });
                }
            }
        });
    }

    /// Runs an image's auto-update now.
    pub async fn update_now(
        self: &Arc<Self>,
        env: &str,
        address: &str,
    ) -> Result<Outcome, ComputeError> {
        let reg = self.updates.get(env, address).ok_or_else(|| {
            ComputeError::NotFound(format!(
                "{address} in environment {env} has no auto_update (see `veeps image updates {env}`)"
            ))
        })?;
        Ok(self.update_image(&reg).await)
    }

    /// Builds `reg`'s image again and rolls a changed one out; records how it went.
    async fn update_image(self: &Arc<Self>, reg: &Registration) -> Outcome {
        let k = key(&reg.env, &reg.address);
        if !self
            .updates
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.clone())
        {
            return Outcome {
                at: veeps_state::now(),
                result: "failed".into(),
                detail: "an update of this image is already running".into(),
                image_id: None,
            };
        }
        let _running = Running(&self.updates, k);
        tracing::info!(env = %reg.env, image = %reg.address, "auto-update: building");
        let outcome = match self.images.rebuild(&reg.spec).await {
            Ok(None) => Outcome {
                at: veeps_state::now(),
                result: "unchanged".into(),
                detail: "the build's files are the same as the current version's".into(),
                image_id: image_id_of(&self.images, &reg.spec),
            },
            Ok(Some(img)) => match self.roll_out_image(&reg.env, &img).await {
                Ok(groups) => Outcome {
                    at: veeps_state::now(),
                    result: "updated".into(),
                    detail: if groups.is_empty() {
                        format!(
                            "built {} (version {}); no group runs it yet",
                            img.id, img.version
                        )
                    } else {
                        format!(
                            "built {} (version {}); rolled out to {}",
                            img.id,
                            img.version,
                            groups.join(", ")
                        )
                    },
                    image_id: Some(img.id),
                },
                Err(e) => Outcome {
                    at: veeps_state::now(),
                    result: "failed".into(),
                    detail: format!("built {} (version {}), but {e}", img.id, img.version),
                    image_id: Some(img.id),
                },
            },
            Err(e) => Outcome {
                at: veeps_state::now(),
                result: "failed".into(),
                detail: match e {
                    BuildError::Failed { why, .. } => {
                        format!("the build failed: {why} (the current version stays)")
                    }
                    e => format!("the build failed: {e} (the current version stays)"),
                },
                image_id: image_id_of(&self.images, &reg.spec),
            },
        };
        tracing::info!(env = %reg.env, image = %reg.address, result = %outcome.result, detail = %outcome.detail, "auto-update");
        self.updates.finish(reg, &outcome);
        outcome
    }

    /// Moves the launch templates of `env`'s groups running an earlier build of `img`'s
    /// inputs to `img`, and rolls each group out, under the environment's lock. A group
    /// whose rollout fails is rolled back, and its template with it.
    async fn roll_out_image(
        self: &Arc<Self>,
        env: &str,
        img: &Image,
    ) -> Result<Vec<String>, String> {
        let lock = LockInfo {
            id: hex::encode(rand::random::<[u8; 8]>()),
            who: "auto-update".into(),
            operation: format!("auto-update of image {}", img.name),
            since: veeps_state::now(),
            // Not this boot's: a lock left by a crash is released when veeps starts again.
            boot_id: "auto-update".into(),
        };
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match self.store().lock(env, &lock) {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the environment stayed locked: {e}; the next apply rolls it out"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
        let _lock = EnvLock(self.store(), env.to_string(), lock.id.clone());
        let lineage = img.lineage().to_string();
        let groups: Vec<GroupSpec> = self
            .records(env)
            .into_iter()
            .map(|r| r.spec)
            .filter(|s| {
                s.template.image_id != img.id
                    && self
                        .images
                        .get(&s.template.image_id)
                        .is_some_and(|i| i.lineage() == lineage && i.version < img.version)
            })
            .collect();
        let mut done = vec![];
        let mut failed = vec![];
        // As each template was (groups may share one).
        let mut olds: HashMap<String, Template> = HashMap::new();
        for spec in groups {
            let id = spec.template.id.clone();
            let Some(old) = olds.get(&id).cloned().or_else(|| self.template(&id)) else {
                continue;
            };
            olds.entry(id).or_insert_with(|| old.clone());
            let new = Template {
                image_id: img.id.clone(),
                ..old.clone()
            };
            self.put_template(&new).map_err(|e| e.to_string())?;
            let name = spec.name.clone();
            let group = GroupSpec {
                template: new,
                ..spec
            };
            match self.ensure_group(group, None, true).await {
                Ok(_) => done.push(name),
                Err(e) => {
                    let _ = self.put_template(&old);
                    failed.push(format!("{name}: {e}"));
                }
            }
        }
        if failed.is_empty() {
            Ok(done)
        } else {
            Err(format!("rolling it out failed in {}", failed.join("; ")))
        }
    }
}

fn image_id_of(images: &crate::image::Images, spec: &ImageSpec) -> Option<String> {
    let inputs = crate::image::image_id(spec).ok()?;
    images.latest_of(&inputs).map(|i| i.id)
}
