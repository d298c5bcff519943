//! The engine: from configuration to running resources.
//!
//! Data flows one way: a bundle is parsed ([`veeps_lang`]), its [`graph::Graph`] built and
//! checked, then [`walk::Walk`] evaluates every node in dependency order against the prior
//! state (refreshed through each controller's `read`, which is how drift shows), producing a
//! [`plan::Plan`]. Apply takes the environment's lock, re-plans, refuses if the plan differs
//! from the approved one, then walks again performing each change through the controllers,
//! independent resources in parallel, recording each instance in the store as soon as it
//! changes. Removed resources are destroyed last, dependents first.

pub mod graph;
mod refactor;
pub use veeps_lang::config::environment_name;
pub use veeps_wire::plan;
pub use veeps_wire::plan::{address_tail, VAR_FILE_PREFIX};
pub mod walk;

use base64::Engine as _;
use plan::{Action, Event, OutputChange, Plan, ResourceChange};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use veeps_kms::Kms;
use veeps_lang::config::{load_config, Bundle, Config};
use veeps_lang::diag::{did_you_mean, Diagnostic, Diagnostics, Loc, SourceFile};
use veeps_lang::eval::{eval, EmptyScope, Expr};
use veeps_lang::Value;
use veeps_resource::{Ctx, EnvOutputsService, EnvironmentOutputs, Registry, Resource, Services};
use veeps_state::{
    EnvRecord, HistoryEntry, LockInfo, OutputRecord, ResourceRecord, ResourceStatus, Store, Summary,
};
use walk::{Mode, RootInput, Walk};

/// Errors of planning and applying.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is wrong; each diagnostic names `file:line:col`.
    #[error("{0}")]
    Config(Diagnostics),
    /// The store failed, or the environment is locked.
    #[error(transparent)]
    State(#[from] veeps_state::StateError),
    /// Key management failed.
    #[error(transparent)]
    Kms(#[from] veeps_kms::KmsError),
    /// The plan is not the one that was approved.
    #[error("the plan changed since it was shown (someone applied, or resources changed outside veeps); review the new plan and apply again")]
    PlanChanged,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<Diagnostics> for EngineError {
    fn from(d: Diagnostics) -> Self {
        EngineError::Config(d)
    }
}

/// A request to plan or apply an environment.
#[derive(Debug, Clone)]
pub struct Request {
    /// The environment.
    pub env: String,
    /// Its configuration.
    pub bundle: Bundle,
    /// `-var NAME=VALUE` values.
    pub vars: Vec<(String, String)>,
    /// Who asks.
    pub caller: String,
    /// What is recorded in history (`apply`, `destroy`, `rollback to 3`).
    pub operation: String,
    /// The time of the plan being applied (what `plantimestamp()` is); now when none.
    pub plan_time: Option<String>,
}

/// Recorded state of an environment, decrypted and refreshed.
#[derive(Default)]
pub struct Prior {
    pub(crate) records: BTreeMap<String, PriorRes>,
    pub(crate) gone: BTreeMap<String, String>,
    pub(crate) drift: Vec<ResourceChange>,
}

impl Prior {
    pub(crate) fn get(&self, address: &str) -> Option<&PriorRes> {
        self.records.get(address)
    }
}

pub(crate) struct PriorRes {
    pub(crate) record: ResourceRecord,
    pub(crate) attrs: Value,
    pub(crate) refreshed: bool,
}

/// The engine of one server.
pub struct Engine {
    /// Resource types.
    pub registry: Arc<Registry>,
    /// The store.
    pub store: Arc<Store>,
    /// Keys.
    pub kms: Arc<Kms>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Services for controllers.
    pub services: Services,
    /// This server boot (locks of other boots are stale).
    pub boot_id: String,
    pub(crate) permits: tokio::sync::Semaphore,
}

struct StoreOutputs {
    store: Arc<Store>,
    kms: Arc<Kms>,
}

impl EnvironmentOutputs for StoreOutputs {
    fn outputs(&self, env: &str) -> Result<Option<BTreeMap<String, Value>>, String> {
        let Some(rec) = self.store.env(env).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if rec.version == 0 {
            return Ok(None);
        }
        let mut out = BTreeMap::new();
        for (k, o) in rec.outputs {
            out.insert(
                k,
                decrypt_json(&self.kms, env, &o.value).map_err(|e| e.to_string())?,
            );
        }
        Ok(Some(out))
    }
}

/// How many controller operations run at once.
pub const PARALLELISM: usize = 10;

impl Engine {
    /// An engine over a store and keys; `services` are handed to controllers.
    pub fn new(
        data_dir: PathBuf,
        registry: Registry,
        store: Arc<Store>,
        kms: Arc<Kms>,
        services: Services,
        boot_id: String,
    ) -> Arc<Engine> {
        let services = services.with(EnvOutputsService(Arc::new(StoreOutputs {
            store: store.clone(),
            kms: kms.clone(),
        })));
        Arc::new(Engine {
            registry: Arc::new(registry),
            store,
            kms,
            data_dir,
            services,
            boot_id,
            permits: tokio::sync::Semaphore::new(PARALLELISM),
        })
    }

    fn ctx(&self, env: &str, address: &str) -> Ctx {
        Ctx {
            env: env.to_string(),
            address: address.to_string(),
            data_dir: self.data_dir.clone(),
            services: self.services.clone(),
        }
    }

    /// Records a resource instance (sensitive attributes encrypted).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn save(
        &self,
        env: &str,
        rt: &Arc<dyn Resource>,
        address: &str,
        attrs: &Value,
        deps: &[String],
        status: ResourceStatus,
        cbd: bool,
        masked: &BTreeSet<String>,
        identity: Option<&str>,
    ) -> Result<(), String> {
        // Schema-sensitive attributes, and those whose configuration derives from a
        // sensitive value (a sensitive variable, another resource's sensitive attribute).
        let mut sensitive: BTreeSet<&str> = rt.schema().sensitive_attrs().into_iter().collect();
        sensitive.extend(masked.iter().map(String::as_str));
        let json = encrypt_attrs(&self.kms, env, attrs, &sensitive).map_err(|e| e.to_string())?;
        let rec = ResourceRecord {
            address: address.to_string(),
            type_name: rt.type_name().to_string(),
            attrs: json,
            dependencies: deps.to_vec(),
            status,
            create_before_destroy: cbd,
            schema_version: rt.schema_version(),
            updated_at: veeps_state::now(),
            identity: identity.filter(|i| *i != address).map(str::to_string),
        };
        self.store
            .put_resource(env, &rec)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn forget(&self, env: &str, address: &str) -> Result<(), String> {
        self.store
            .delete_resource(env, address)
            .map_err(|e| e.to_string())
    }

    /// Loads the recorded state of `env`, refreshing each resource through its controller.
    async fn load_prior(&self, env: &str, refresh: bool) -> Result<Prior, EngineError> {
        let mut prior = Prior::default();
        let records = self.store.resources(env)?;
        let reads = records.into_iter().map(|rec| async move {
            let rt = self.registry.resource(&rec.type_name).cloned();
            let attrs =
                current_layout(rt.as_ref(), &rec, decrypt_json(&self.kms, env, &rec.attrs)?)?;
            let mut res = PriorRes {
                record: rec,
                attrs,
                refreshed: false,
            };
            if !refresh
                || res.record.status != ResourceStatus::Ready
                || res.record.address.ends_with("#deposed")
            {
                return Ok::<_, EngineError>((res, None));
            }
            let Some(rt) = rt else { return Ok((res, None)) };
            let ctx = self.ctx(env, res.record.identity());
            let read = {
                let _p = self.permits.acquire().await;
                rt.read(&ctx, &res.attrs).await
            };
            match read {
                Ok(None) => Ok((res, Some(None))),
                Ok(Some(v)) => {
                    if v != res.attrs {
                        let masked: BTreeSet<String> = rt
                            .schema()
                            .sensitive_attrs()
                            .into_iter()
                            .map(String::from)
                            .collect();
                        let before = mask_attrs(&res.attrs, &masked);
                        let after = mask_attrs(&v, &masked);
                        res.attrs = v;
                        res.refreshed = true;
                        return Ok((res, Some(Some((before, after)))));
                    }
                    Ok((res, None))
                }
                Err(e) => Err(EngineError::Other(format!(
                    "reading {}: {e}",
                    res.record.address
                ))),
            }
        });
        for r in futures::future::join_all(reads).await {
            let (res, drift) = r?;
            let address = res.record.address.clone();
            match drift {
                Some(None) => {
                    prior.drift.push(ResourceChange {
                        address: address.clone(),
                        type_name: res.record.type_name.clone(),
                        action: Action::Delete,
                        before: None,
                        after: None,
                        replace_paths: vec![],
                        reason: None,
                    });
                    prior
                        .gone
                        .insert(address.clone(), "it was deleted outside veeps".into());
                    // Forget it, so apply creates it again.
                    continue;
                }
                Some(Some((before, after))) => {
                    prior.drift.push(ResourceChange {
                        address: address.clone(),
                        type_name: res.record.type_name.clone(),
                        action: Action::Update,
                        before: Some(before),
                        after: Some(after),
                        replace_paths: vec![],
                        reason: None,
                    });
                }
                None => {}
            }
            prior.records.insert(address, res);
        }
        Ok(prior)
    }

    /// Plans `req` (or its destruction).
    pub async fn plan(self: &Arc<Self>, req: &Request, destroy: bool) -> Result<Plan, EngineError> {
        let (plan, _, _) = self.compute(req, destroy).await?;
        Ok(plan)
    }

    async fn compute(
        self: &Arc<Self>,
        req: &Request,
        destroy: bool,
    ) -> Result<(Plan, Prior, Option<Config>), EngineError> {
        let config = load_config(Arc::new(req.bundle.clone()))?;
        check_env_name(&config, &req.env)?;
        let mut prior = self.load_prior(&req.env, true).await?;
        let plan_time = req
            .plan_time
            .clone()
            .unwrap_or_else(veeps_lang::funcs::time::now);
        let mut refactor = if destroy {
            refactor::Refactor::default()
        } else {
            refactor::apply_moves(&config, &mut prior)?
        };
        let mut changes = vec![];
        let mut outputs = vec![];
        let env_rec = self.store.env(&req.env)?.unwrap_or_default();
        if destroy {
            for (addr, p) in &prior.records {
                if let Some(rc) = config_for(&config, addr) {
                    if rc.lifecycle.prevent_destroy {
                        return Err(Diagnostics::from(Diagnostic::at(&rc.loc, format!("{addr} has lifecycle.prevent_destroy set and cannot be destroyed")).with_detail("Remove prevent_destroy from its configuration first.")).into());
                    }
                }
                changes.push(delete_change(self, addr, p));
            }
            for name in env_rec.outputs.keys() {
                outputs.push(OutputChange {
                    name: name.clone(),
                    action: Action::Delete,
                    after: serde_json::Value::Null,
                    sensitive: false,
                });
            }
        } else {
            let inputs = root_inputs(&config, &req.vars, false)?;
            let walk = Arc::new(Walk::new(
                Mode::Plan,
                config.clone(),
                self.registry.clone(),
                req.env.clone(),
                inputs,
                std::mem::take(&mut Prior::default()),
                Some(self.clone()),
                None,
            ));
            // The walk needs the prior state; hand it over and take it back after.
            let walk = {
                let mut w =
                    Arc::try_unwrap(walk).unwrap_or_else(|_| unreachable!("not shared yet"));
                w.prior = prior;
                w.plan_time = plan_time.clone();
                Arc::new(w)
            };
            let result = walk.clone().run().await;
            let mut prior = Arc::try_unwrap(walk).map(|w| w.prior).unwrap_or_default();
            if !result.errors.is_empty() {
                return Err(EngineError::Config(result.errors));
            }
            refactor.warnings.extend(result.warnings.iter().cloned());
            let orphans: Vec<String> = prior
                .records
                .keys()
                .filter(|a| !result.claimed.contains(*a))
                .cloned()
                .collect();
            refactor.forgotten = refactor::removed_and_imports(&config, &prior, &orphans)?;
            for a in &refactor.forgotten {
                prior.records.remove(a);
            }
            changes = result
                .changes
                .into_iter()
                .filter(|c| c.action != Action::NoOp)
                .collect();
            for (addr, p) in &prior.records {
                if !result.claimed.contains(addr) {
                    if let Some(rc) = config_for(&config, addr) {
                        if rc.lifecycle.prevent_destroy {
                            return Err(Diagnostics::from(Diagnostic::at(&rc.loc, format!("{addr} has lifecycle.prevent_destroy set, but the plan destroys it"))).into());
                        }
                    }
                    changes.push(delete_change(self, addr, p));
                }
            }
            for (name, (v, sensitive)) in &result.outputs {
                let old = env_rec
                    .outputs
                    .get(name)
                    .map(|o| decrypt_json(&self.kms, &req.env, &o.value))
                    .transpose()?;
                let action = match old {
                    None => Action::Create,
                    Some(o) if &o == v && !v.has_unknown() => Action::NoOp,
                    Some(_) => Action::Update,
                };
                let shown = if *sensitive {
                    walk::mask_value(v)
                } else {
                    v.clone()
                };
                outputs.push(OutputChange {
                    name: name.clone(),
                    action,
                    after: shown.to_plan_json(),
                    sensitive: *sensitive,
                });
            }
            for name in env_rec.outputs.keys() {
                if !result.outputs.contains_key(name) {
                    outputs.push(OutputChange {
                        name: name.clone(),
                        action: Action::Delete,
                        after: serde_json::Value::Null,
                        sensitive: false,
                    });
                }
            }
            changes.sort_by(|a, b| a.address.cmp(&b.address));
            let plan = finish_plan(
                &req.env,
                changes,
                prior.drift.clone(),
                outputs,
                destroy,
                refactor,
                plan_time,
            );
            return Ok((plan, prior, Some(config)));
        }
        changes.sort_by(|a, b| a.address.cmp(&b.address));
        let plan = finish_plan(
            &req.env,
            changes,
            prior.drift.clone(),
            outputs,
            destroy,
            refactor,
            plan_time,
        );
        Ok((plan, prior, Some(config)))
    }

    /// Applies `req` (or destroys it), streaming progress to `events`. With
    /// `expected_hash`, refuses to proceed if the plan is not the approved one.
    pub async fn apply(
        self: &Arc<Self>,
        req: Request,
        destroy: bool,
        expected_hash: Option<String>,
        events: UnboundedSender<Event>,
    ) -> Result<(), EngineError> {
        let lock = LockInfo {
            id: hex::encode(rand::random::<[u8; 8]>()),
            who: req.caller.clone(),
            operation: if destroy {
                "destroy".into()
            } else {
                req.operation.clone()
            },
            since: veeps_state::now(),
            boot_id: self.boot_id.clone(),
        };
        self.store.lock(&req.env, &lock)?;
        let _guard = LockGuard {
            store: self.store.clone(),
            env: req.env.clone(),
            id: lock.id.clone(),
        };
        let (plan, prior, config) = self.compute(&req, destroy).await?;
        if let Some(h) = expected_hash {
            if h != plan.hash {
                return Err(EngineError::PlanChanged);
            }
        }
        self.kms.ensure_env_key(&req.env)?;
        let started = Instant::now();
        let mut summary = Summary::default();
        let mut errors: Vec<String> = vec![];
        let mut outputs_map = serde_json::Map::new();
        let mut new_outputs: Option<BTreeMap<String, OutputRecord>> = None;
        tracing::info!(env = %req.env, changes = plan.changes.len(), destroy, "apply started");
        // Drifted resources that are gone are forgotten now; apply creates them again.
        for addr in prior.gone.keys() {
            self.store.delete_resource(&req.env, addr)?;
        }
        if destroy {
            let all: Vec<&PriorRes> = prior.records.values().collect();
            let failures = self
                .delete_in_order(&req.env, all, &events, &mut summary)
                .await;
            errors.extend(failures.into_iter().map(|(a, e)| format!("{a}: {e}")));
            if errors.is_empty() {
                new_outputs = Some(BTreeMap::new());
            }
        } else {
            let config = config.expect("a plan has a configuration");
            // Moves and forgetting first, in one transaction: the walk below sees objects
            // at their new addresses.
            if !plan.moved.is_empty() || !plan.forgotten.is_empty() {
                let moves: Vec<(String, String)> = plan
                    .moved
                    .iter()
                    .map(|m| (m.from.clone(), m.to.clone()))
                    .collect();
                self.store
                    .move_resources(&req.env, &moves, &plan.forgotten)?;
            }
            let inputs = root_inputs(&config, &req.vars, false)?;
            let mut walk = Walk::new(
                Mode::Apply,
                config,
                self.registry.clone(),
                req.env.clone(),
                inputs,
                Prior::default(),
                Some(self.clone()),
                Some(events.clone()),
            );
            walk.prior = prior;
            walk.plan_time = plan.time.clone();
            let walk = Arc::new(walk);
            let result = walk.clone().run().await;
            let prior = Arc::try_unwrap(walk).map(|w| w.prior).unwrap_or_default();
            let failed: BTreeSet<&String> = result.failures.iter().map(|(a, _)| a).collect();
            for c in &result.changes {
                if failed.contains(&c.address) {
                    continue;
                }
                match c.action {
                    Action::Create => summary.add += 1,
                    Action::Update => summary.change += 1,
                    Action::Replace => {
                        summary.add += 1;
                        summary.destroy += 1
                    }
                    _ => {}
                }
            }
            for d in &result.errors.0 {
                errors.push(match d.position() {
                    Some(p) => format!("{p}: {}", d.summary),
                    None => d.summary.clone(),
                });
            }
            if result.errors.is_empty() {
                let orphans: Vec<&PriorRes> = prior
                    .records
                    .iter()
                    .filter(|(a, _)| !result.claimed.contains(*a))
                    .map(|(_, p)| p)
                    .collect();
                let failures = self
                    .delete_in_order(&req.env, orphans, &events, &mut summary)
                    .await;
                errors.extend(failures.into_iter().map(|(a, e)| format!("{a}: {e}")));
                let mut outs = BTreeMap::new();
                for (name, (v, sensitive)) in &result.outputs {
                    let json = if *sensitive {
                        encrypt_value(&self.kms, &req.env, v)?
                    } else {
                        state_json(v)
                    };
                    outs.insert(
                        name.clone(),
                        OutputRecord {
                            value: json,
                            sensitive: *sensitive,
                        },
                    );
                    outputs_map.insert(
                        name.clone(),
                        if *sensitive {
                            serde_json::json!({"$sensitive": true})
                        } else {
                            v.to_json()
                        },
                    );
                }
                new_outputs = Some(outs);
            }
        }
        let status = if errors.is_empty() {
            "ok"
        } else if summary.add + summary.change + summary.destroy > 0 {
            "partial"
        } else {
            "failed"
        };
        let version = self.store.append_history(
            &req.env,
            HistoryEntry {
                version: 0,
                time: veeps_state::now(),
                caller: req.caller.clone(),
                operation: if destroy {
                    "destroy".into()
                } else {
                    req.operation.clone()
                },
                status: status.into(),
                summary,
                errors: errors.clone(),
                bundle: serde_json::to_value(without_var_files(&req.bundle))
                    .map_err(|e| EngineError::Other(e.to_string()))?,
                vars: req
                    .vars
                    .iter()
                    .map(|(k, _)| (k.clone(), "(sealed)".to_string()))
                    .collect(),
                sealed: Some(seal_inputs(&self.kms, &req.env, &req.bundle, &req.vars)?),
            },
        )?;
        let mut rec = self.store.env(&req.env)?.unwrap_or_else(|| EnvRecord {
            name: req.env.clone(),
            created_at: veeps_state::now(),
            ..Default::default()
        });
        rec.version = version;
        rec.updated_at = veeps_state::now();
        if let Some(o) = new_outputs {
            rec.outputs = o;
        }
        self.store.put_env(&rec)?;
        tracing::info!(env = %req.env, version, status, elapsed = ?started.elapsed(), "apply finished");
        let _ = events.send(Event::Complete {
            version,
            status: status.into(),
            summary,
            errors,
            outputs: outputs_map,
        });
        Ok(())
    }

    /// Deletes `items`, each only after everything that depends on it.
    async fn delete_in_order(
        &self,
        env: &str,
        items: Vec<&PriorRes>,
        events: &UnboundedSender<Event>,
        summary: &mut Summary,
    ) -> Vec<(String, String)> {
        let mut remaining: Vec<&PriorRes> = items;
        let mut failures = vec![];
        while !remaining.is_empty() {
            let nodes: Vec<String> = remaining
                .iter()
                .map(|p| strip_keys(&p.record.address))
                .collect();
            let mut ready: Vec<&PriorRes> = vec![];
            let mut wait: Vec<&PriorRes> = vec![];
            for (i, p) in remaining.iter().enumerate() {
                let me = &nodes[i];
                let needed = remaining.iter().enumerate().any(|(j, other)| {
                    j != i && &nodes[j] != me && other.record.dependencies.iter().any(|d| d == me)
                });
                if needed {
                    wait.push(p);
                } else {
                    ready.push(p);
                }
            }
            if ready.is_empty() {
                ready = std::mem::take(&mut wait);
            }
            let results = futures::future::join_all(ready.iter().map(|p| async move {
                let address = &p.record.address;
                let started = Instant::now();
                let _ = events.send(Event::Start {
                    address: address.clone(),
                    action: Action::Delete,
                });
                let r = match self.registry.resource(&p.record.type_name) {
                    Some(rt) => {
                        let _permit = self.permits.acquire().await;
                        rt.delete(&self.ctx(env, p.record.identity()), &p.attrs)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    None => Err(format!("unknown resource type \"{}\"", p.record.type_name)),
                };
                let r = r.and_then(|_| {
                    self.store
                        .delete_resource(env, address)
                        .map_err(|e| e.to_string())
                });
                match &r {
                    Ok(()) => {
                        let _ = events.send(Event::Done {
                            address: address.clone(),
                            action: Action::Delete,
                            elapsed: started.elapsed().as_secs_f64(),
                            id: None,
                        });
                    }
                    Err(e) => {
                        let _ = events.send(Event::Failed {
                            address: address.clone(),
                            action: Action::Delete,
                            error: e.clone(),
                        });
                    }
                }
                (address.clone(), r)
            }))
            .await;
            let mut any_failed = false;
            for (a, r) in results {
                match r {
                    Ok(()) => summary.destroy += 1,
                    Err(e) => {
                        any_failed = true;
                        failures.push((a, e));
                    }
                }
            }
            if any_failed || wait.is_empty() {
                break;
            }
            remaining = wait;
        }
        failures
    }

    /// After a restart: brings every recorded resource of every environment back in line
    /// with its state (dependencies first), through each controller's `reconcile`.
    pub async fn reconcile_all(self: &Arc<Self>) -> Vec<(String, String)> {
        let mut failures = vec![];
        let Ok(envs) = self.store.envs() else {
            return failures;
        };
        for env in envs {
            let prior = match self.load_prior(&env.name, false).await {
                Ok(p) => p,
                Err(e) => {
                    failures.push((env.name.clone(), e.to_string()));
                    continue;
                }
            };
            let mut remaining: Vec<&PriorRes> = prior
                .records
                .values()
                .filter(|p| {
                    p.record.status == ResourceStatus::Ready
                        && !p.record.address.ends_with("#deposed")
                })
                .collect();
            while !remaining.is_empty() {
                let nodes: BTreeSet<String> = remaining
                    .iter()
                    .map(|p| strip_keys(&p.record.address))
                    .collect();
                let (ready, wait): (Vec<&PriorRes>, Vec<&PriorRes>) =
                    remaining.iter().partition(|p| {
                        p.record
                            .dependencies
                            .iter()
                            .all(|d| !nodes.contains(d) || *d == strip_keys(&p.record.address))
                    });
                let ready = if ready.is_empty() {
                    wait.clone()
                } else {
                    ready
                };
                let wait: Vec<&PriorRes> = remaining
                    .iter()
                    .filter(|p| !ready.iter().any(|r| std::ptr::eq(**p, *r)))
                    .copied()
                    .collect();
                let env_name = env.name.as_str();
                let results = futures::future::join_all(ready.iter().map(|p| async move {
                    let Some(rt) = self.registry.resource(&p.record.type_name) else {
                        return Ok(());
                    };
                    let ctx = self.ctx(env_name, p.record.identity());
                    let new = rt
                        .reconcile(&ctx, &p.attrs)
                        .await
                        .map_err(|e| format!("{}: {e}", p.record.address))?;
                    if new != p.attrs || p.record.schema_version != rt.schema_version() {
                        // What was encrypted stays encrypted.
                        let masked = sealed_attrs(&p.record.attrs);
                        self.save(
                            env_name,
                            rt,
                            &p.record.address,
                            &new,
                            &p.record.dependencies,
                            ResourceStatus::Ready,
                            p.record.create_before_destroy,
                            &masked,
                            p.record.identity.as_deref(),
                        )
                        .await?;
                    }
                    Ok::<(), String>(())
                }))
                .await;
                for r in results {
                    if let Err(e) = r {
                        tracing::error!(env = %env.name, error = %e, "reconcile failed");
                        failures.push((env.name.clone(), e));
                    }
                }
                remaining = wait;
            }
        }
        failures
    }

    /// Root outputs of `env`, decrypted.
    pub fn outputs(&self, env: &str) -> Result<BTreeMap<String, (Value, bool)>, EngineError> {
        let rec = self.store.env(env)?.unwrap_or_default();
        let mut out = BTreeMap::new();
        for (k, o) in rec.outputs {
            out.insert(k, (decrypt_json(&self.kms, env, &o.value)?, o.sensitive));
        }
        Ok(out)
    }

    /// One resource instance's recorded attributes, sensitive ones masked.
    pub fn show(
        &self,
        env: &str,
        address: &str,
    ) -> Result<Option<(ResourceRecord, Value)>, EngineError> {
        let Some(rec) = self.store.resource(env, address)? else {
            return Ok(None);
        };
        let attrs = current_layout(
            self.registry.resource(&rec.type_name),
            &rec,
            decrypt_json(&self.kms, env, &rec.attrs)?,
        )?;
        // Masked: what the schema marks, and whatever was stored encrypted (derived from
        // a secret).
        let mut masked: BTreeSet<String> = self
            .registry
            .resource(&rec.type_name)
            .map(|r| {
                r.schema()
                    .sensitive_attrs()
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        masked.extend(sealed_attrs(&rec.attrs));
        let shown = mask_attrs(&attrs, &masked);
        Ok(Some((rec, Value::from_plan_json(&shown))))
    }
}

struct LockGuard {
    store: Arc<Store>,
    env: String,
    id: String,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Err(e) = self.store.unlock(&self.env, &self.id) {
            tracing::error!(env = %self.env, error = %e, "could not release the lock");
        }
    }
}

fn delete_change(engine: &Engine, addr: &str, p: &PriorRes) -> ResourceChange {
    let masked: BTreeSet<String> = engine
        .registry
        .resource(&p.record.type_name)
        .map(|r| {
            r.schema()
                .sensitive_attrs()
                .into_iter()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    ResourceChange {
        address: addr.to_string(),
        type_name: p.record.type_name.clone(),
        action: Action::Delete,
        before: Some(mask_attrs(&p.attrs, &masked)),
        after: None,
        replace_paths: vec![],
        reason: if addr.ends_with("#deposed") {
            Some("a replaced object left from an interrupted apply".into())
        } else {
            None
        },
    }
}

fn finish_plan(
    env: &str,
    changes: Vec<ResourceChange>,
    drift: Vec<ResourceChange>,
    outputs: Vec<OutputChange>,
    destroy: bool,
    refactor: refactor::Refactor,
    time: String,
) -> Plan {
    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.add += 1,
            Action::Update => summary.change += 1,
            Action::Replace => {
                summary.add += 1;
                summary.destroy += 1;
            }
            Action::Delete => summary.destroy += 1,
            Action::NoOp => {}
        }
    }
    let mut plan = Plan {
        env: env.to_string(),
        changes,
        drift,
        outputs,
        summary,
        hash: String::new(),
        destroy,
        time,
        moved: refactor.moved,
        forgotten: refactor.forgotten,
        warnings: refactor.warnings,
    };
    let digest = sha2::Sha256::digest(
        serde_json::to_vec(&(
            &plan.changes,
            &plan.outputs,
            destroy,
            &plan.moved,
            &plan.forgotten,
        ))
        .unwrap_or_default(),
    );
    plan.hash = hex::encode(&digest[..16]);
    plan
}

fn mask_attrs(v: &Value, masked: &BTreeSet<String>) -> serde_json::Value {
    match v {
        Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if masked.contains(k) && !v.is_null() {
                            serde_json::json!({"$sensitive": true})
                        } else {
                            v.to_plan_json()
                        },
                    )
                })
                .collect(),
        ),
        v => v.to_plan_json(),
    }
}

fn check_env_name(config: &Config, env: &str) -> Result<(), EngineError> {
    if let Some((name, loc)) = &config.root_module().environment {
        if name != env {
            return Err(Diagnostics::from(Diagnostic::at(loc, format!("this configuration declares environment \"{name}\", but the request is for \"{env}\""))).into());
        }
    }
    Ok(())
}

/// The resource block an address belongs to (following module calls).
fn config_for<'a>(
    config: &'a Config,
    address: &str,
) -> Option<&'a veeps_lang::config::ResourceConfig> {
    let stripped = strip_keys(address);
    let mut parts: Vec<&str> = stripped.split('.').collect();
    let mut m = config.root_module();
    while parts.len() > 2 && parts[0] == "module" {
        let call = m.module_calls.get(parts[1])?;
        m = config.modules.get(&call.source.dir())?;
        parts.drain(..2);
    }
    m.resources.get(&parts.join("."))
}

/// An address without instance keys: `module.a["x"].random_id.y[0]` -> `module.a.random_id.y`.
pub fn strip_keys(address: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    let mut in_str = false;
    let mut prev = ' ';
    for c in address.chars() {
        if depth > 0 {
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                }
            } else if c == '"' {
                in_str = true;
            } else if c == ']' {
                depth -= 1;
            }
        } else if c == '[' {
            depth += 1;
        } else if c != '#' || !out.is_empty() {
            out.push(c);
        }
        prev = c;
    }
    out.split('#').next().unwrap_or("").to_string()
}

/// Whether a bundle path is a variable file (they may hold secrets: history seals them).
fn is_var_file(path: &str) -> bool {
    path.ends_with(".tfvars") || path.ends_with(".tfvars.json")
}

/// A bundle without its variable files.
fn without_var_files(b: &Bundle) -> Bundle {
    Bundle {
        root: b.root.clone(),
        client: b.client.clone(),
        files: b
            .files
            .iter()
            .filter(|(p, _)| !is_var_file(p))
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect(),
    }
}

/// What a rollback needs that may be secret, sealed with the environment's key.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedInputs {
    vars: Vec<(String, String)>,
    files: BTreeMap<String, String>,
}

fn seal_inputs(
    kms: &Kms,
    env: &str,
    bundle: &Bundle,
    vars: &[(String, String)],
) -> Result<String, EngineError> {
    let inputs = SealedInputs {
        vars: vars.to_vec(),
        files: bundle
            .files
            .iter()
            .filter(|(p, _)| is_var_file(p))
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect(),
    };
    let bytes = serde_json::to_vec(&inputs).map_err(|e| EngineError::Other(e.to_string()))?;
    let ct = kms.encrypt(env, &bytes, "veeps history")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ct))
}

impl Engine {
    /// The configuration and `-var` values an applied version used (decrypting what its
    /// history entry sealed), for a rollback.
    pub fn history_inputs(
        &self,
        env: &str,
        h: &veeps_state::HistoryEntry,
    ) -> Result<(Bundle, Vec<(String, String)>), EngineError> {
        let mut bundle: Bundle = serde_json::from_value(h.bundle.clone()).map_err(|e| {
            EngineError::Other(format!(
                "version {}'s configuration cannot be read: {e}",
                h.version
            ))
        })?;
        let Some(sealed) = &h.sealed else {
            return Ok((bundle, h.vars.clone()));
        };
        let ct = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|e| {
                EngineError::Other(format!("version {}'s sealed inputs: {e}", h.version))
            })?;
        let pt = self.kms.decrypt(env, &ct, "veeps history")?;
        let inputs: SealedInputs = serde_json::from_slice(&pt).map_err(|e| {
            EngineError::Other(format!("version {}'s sealed inputs: {e}", h.version))
        })?;
        bundle.files.extend(inputs.files);
        Ok((bundle, inputs.vars))
    }
}

/// The ciphertext of a sensitive value in state is the only object whose key is exactly
/// `$sensitive`: keys of the user's own objects that start with `$` are stored with one `$`
/// more (and read back with one less), so no configuration value can pass for one.
fn escape_keys(j: serde_json::Value) -> serde_json::Value {
    match j {
        serde_json::Value::Object(o) => serde_json::Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let k = if k.starts_with('$') {
                        format!("${k}")
                    } else {
                        k
                    };
                    (k, escape_keys(v))
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(escape_keys).collect())
        }
        j => j,
    }
}

/// A value as state stores it (see [`escape_keys`]).
fn state_json(v: &Value) -> serde_json::Value {
    escape_keys(v.to_json())
}

fn encrypt_value(kms: &Kms, env: &str, v: &Value) -> Result<serde_json::Value, EngineError> {
    let bytes = serde_json::to_vec(&v.to_json()).map_err(|e| EngineError::Other(e.to_string()))?;
    let ct = kms.encrypt(env, &bytes, "veeps state")?;
    Ok(serde_json::json!({"$sensitive": base64::engine::general_purpose::STANDARD.encode(ct)}))
}

fn encrypt_attrs(
    kms: &Kms,
    env: &str,
    attrs: &Value,
    sensitive: &BTreeSet<&str>,
) -> Result<serde_json::Value, EngineError> {
    let Value::Object(o) = attrs else {
        return Ok(state_json(attrs));
    };
    let mut out = serde_json::Map::new();
    for (k, v) in o {
        let j = if sensitive.contains(k.as_str()) && !v.is_null() {
            encrypt_value(kms, env, v)?
        } else {
            state_json(v)
        };
        let k = if k.starts_with('$') {
            format!("${k}")
        } else {
            k.clone()
        };
        out.insert(k, j);
    }
    Ok(serde_json::Value::Object(out))
}

/// The attributes of a stored record that are encrypted.
pub(crate) fn sealed_attrs(j: &serde_json::Value) -> BTreeSet<String> {
    let serde_json::Value::Object(o) = j else {
        return BTreeSet::new();
    };
    o.iter()
        .filter(|(_, v)| {
            v.as_object()
                .is_some_and(|m| m.len() == 1 && m.get("$sensitive").is_some_and(|s| s.is_string()))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Recorded attributes in the layout their type writes today: older layouts go through the
/// type's upgrade (each load, until the next save records the new layout); newer ones are an
/// error, since this build cannot know what they mean.
fn current_layout(
    rt: Option<&Arc<dyn Resource>>,
    rec: &ResourceRecord,
    attrs: Value,
) -> Result<Value, EngineError> {
    let Some(rt) = rt else { return Ok(attrs) };
    let now = rt.schema_version();
    match rec.schema_version.cmp(&now) {
        std::cmp::Ordering::Equal => Ok(attrs),
        std::cmp::Ordering::Less => rt.upgrade(rec.schema_version, attrs).map_err(|e| {
            EngineError::Other(format!(
                "{}: upgrading its recorded state from layout {} to {now}: {e}",
                rec.address, rec.schema_version
            ))
        }),
        std::cmp::Ordering::Greater => Err(EngineError::Other(format!(
            "{}: its state was recorded by a newer veeps (layout {} of {}; this build knows {now}); \
             run that veeps or a newer one",
            rec.address, rec.schema_version, rec.type_name
        ))),
    }
}

/// Decodes state JSON, decrypting `{"$sensitive": ...}` values.
pub fn decrypt_json(kms: &Kms, env: &str, j: &serde_json::Value) -> Result<Value, EngineError> {
    Ok(match j {
        serde_json::Value::Object(o)
            if o.len() == 1 && o.get("$sensitive").is_some_and(|v| v.is_string()) =>
        {
            let b64 = o["$sensitive"].as_str().unwrap_or_default();
            let ct = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| EngineError::Other(format!("corrupt sensitive value: {e}")))?;
            let pt = kms.decrypt(env, &ct, "veeps state")?;
            let inner: serde_json::Value = serde_json::from_slice(&pt)
                .map_err(|e| EngineError::Other(format!("corrupt sensitive value: {e}")))?;
            Value::from_json(&inner)
        }
        serde_json::Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let k = match k.strip_prefix('$') {
                        Some(rest) if rest.starts_with('$') => rest.to_string(),
                        _ => k.clone(),
                    };
                    Ok((k, decrypt_json(kms, env, v)?))
                })
                .collect::<Result<_, EngineError>>()?,
        ),
        serde_json::Value::Array(a) => Value::List(
            a.iter()
                .map(|v| decrypt_json(kms, env, v))
                .collect::<Result<_, _>>()?,
        ),
        j => Value::from_json(j),
    })
}

/// The variable files that apply, in Terraform's order (later ones win):
/// `terraform.tfvars`, then `*.auto.tfvars` by name, then `-var-file`s as given. Other
/// `.tfvars` files (like `prod.tfvars` beside `dev.tfvars`) load only when named.
fn tfvars_files(config: &Config) -> Vec<(&String, &String)> {
    let mut files: Vec<(u8, &String, &String)> = config
        .bundle
        .files
        .iter()
        .filter(|(p, _)| veeps_lang::config::parent_dir(p) == config.root)
        .filter_map(|(p, t)| {
            let name = p.rsplit('/').next().unwrap_or(p);
            let rank = if name == "terraform.tfvars" {
                0
            } else if name.starts_with(VAR_FILE_PREFIX) {
                2
            } else if name.ends_with(".auto.tfvars") {
                1
            } else {
                return None;
            };
            Some((rank, p, t))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p, t)| (p, t)).collect()
}

/// Root variable values from the bundle's variable files and `-var` options.
fn root_inputs(
    config: &Config,
    vars: &[(String, String)],
    lenient: bool,
) -> Result<BTreeMap<String, RootInput>, Diagnostics> {
    let root = config.root_module();
    let mut out = BTreeMap::new();
    let mut diags = Diagnostics::default();
    let names = || root.variables.keys().map(String::as_str);
    for (path, text) in tfvars_files(config) {
        let file = Arc::new(SourceFile {
            path: path.clone(),
            text: text.clone(),
        });
        let body = match veeps_lang::config::parse_file(&file) {
            Ok(b) => b,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        for a in body.attributes() {
            let name = a.key.as_str();
            let loc = Loc::new(&file, hcl_edit::Span::span(&a.key));
            if !root.variables.contains_key(name) {
                diags.push(Diagnostic::at(
                    &loc,
                    format!(
                        "{path} sets \"{name}\", which is not a declared variable.{}",
                        did_you_mean(name, names())
                    ),
                ));
                continue;
            }
            match eval(
                &Expr {
                    expr: a.value.clone(),
                    file: file.clone(),
                },
                &EmptyScope,
            ) {
                Ok(v) => {
                    out.insert(name.to_string(), RootInput::Value(v, loc));
                }
                Err(d) => diags.push(d),
            }
        }
    }
    for (k, v) in vars {
        if !root.variables.contains_key(k) {
            if !lenient {
                diags.push(Diagnostic::new(
                    format!(
                        "-var {k}=...: there is no variable \"{k}\" in {}.{}",
                        config.root,
                        did_you_mean(k, names())
                    ),
                    None,
                ));
            }
            continue;
        }
        out.insert(k.clone(), RootInput::Raw(v.clone()));
    }
    diags.into_result()?;
    Ok(out)
}

/// Checks a configuration offline: syntax, types, references, cycles, schemas and
/// validations, with no state and no controllers. Unset root variables are allowed.
pub async fn validate(
    registry: Arc<Registry>,
    bundle: Bundle,
    vars: &[(String, String)],
) -> Result<(), Diagnostics> {
    let config = load_config(Arc::new(bundle))?;
    let inputs = root_inputs(&config, vars, false)?;
    let walk = Arc::new(Walk::new(
        Mode::Validate,
        config,
        registry,
        String::new(),
        inputs,
        Prior::default(),
        None,
        None,
    ));
    let r = walk.run().await;
    r.errors.into_result()
}

/// A value to show for a sensitive output or attribute.
pub fn masked() -> Value {
    Value::string("(sensitive value)")
}
