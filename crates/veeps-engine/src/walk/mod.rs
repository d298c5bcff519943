//! Walking the graph: evaluating every node in dependency order, deciding what each
//! resource instance needs, and (in apply mode) doing it through the controllers.

mod expand;
mod instance;
mod objects;

use expand::expansion;
pub use expand::DEFAULT_MAX_INSTANCES;
pub use objects::decode_body;
pub(crate) use objects::mask_value;
use objects::*;

use crate::graph::{Graph, Kind, NodeId};
use crate::plan::{Action, Event, ResourceChange};
use crate::{Engine, Prior};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;
use veeps_lang::config::{BodyConfig, Bundle, Config, Lifecycle, ModuleConfig, ResourceConfig};
use veeps_lang::diag::{did_you_mean, Diagnostic, Diagnostics, Loc};
use veeps_lang::eval::{calls_sensitive, eval, Expr, Scope};
use veeps_lang::value::{convert, Type, Value};
use veeps_resource::{AttrMode, Ctx, Nesting, Registry, Resource, Schema};
use veeps_state::ResourceStatus;

/// What a walk does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check the configuration only: no state, no controllers.
    Validate,
    /// Compute changes against (refreshed) state.
    Plan,
    /// Make the changes.
    Apply,
}

/// An instance key of a resource or module.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstKey {
    /// No `count` or `for_each`.
    None,
    /// `count`.
    Int(usize),
    /// `for_each`.
    Str(String),
}

impl InstKey {
    fn suffix(&self) -> String {
        match self {
            InstKey::None => String::new(),
            InstKey::Int(i) => format!("[{i}]"),
            InstKey::Str(s) => format!("[{}]", serde_json::Value::String(s.clone())),
        }
    }
}

/// A module instance: the calls and keys leading to it.
pub type ModKey = Vec<(String, InstKey)>;

fn mod_prefix(mk: &ModKey) -> String {
    mk.iter()
        .map(|(n, k)| format!("module.{n}{}.", k.suffix()))
        .collect()
}

#[derive(Debug, Clone)]
enum Expansion {
    Single,
    Count(usize),
    Each(Vec<(String, Value)>),
}

impl Expansion {
    fn keys(&self) -> Vec<(InstKey, Option<(Value, Value)>)> {
        match self {
            Expansion::Single => vec![(InstKey::None, None)],
            Expansion::Count(n) => (0..*n)
                .map(|i| (InstKey::Int(i), Some((Value::from(i as i64), Value::Null))))
                .collect(),
            Expansion::Each(kv) => kv
                .iter()
                .map(|(k, v)| {
                    (
                        InstKey::Str(k.clone()),
                        Some((Value::String(k.clone()), v.clone())),
                    )
                })
                .collect(),
        }
    }
    fn aggregate(&self, mut items: BTreeMap<InstKey, Value>) -> Value {
        match self {
            Expansion::Single => items.remove(&InstKey::None).unwrap_or(Value::Null),
            Expansion::Count(_) => Value::List(items.into_values().collect()),
            Expansion::Each(_) => Value::Object(
                items
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            if let InstKey::Str(s) = k {
                                s
                            } else {
                                String::new()
                            },
                            v,
                        )
                    })
                    .collect(),
            ),
        }
    }
}

#[derive(Default)]
struct ModState {
    inputs: BTreeMap<String, Value>,
    vars: BTreeMap<String, Value>,
    locals: BTreeMap<String, Value>,
    resources: BTreeMap<String, Value>,
    data: BTreeMap<String, Value>,
    outputs: BTreeMap<String, Value>,
    calls: BTreeMap<String, Expansion>,
}

#[derive(Default)]
struct Values {
    mods: HashMap<ModKey, ModState>,
}

impl Values {
    fn instances(&self, path: &[String]) -> Vec<ModKey> {
        let mut out: Vec<ModKey> = vec![vec![]];
        for name in path {
            let mut next = vec![];
            for mk in &out {
                if let Some(exp) = self.mods.get(mk).and_then(|s| s.calls.get(name)) {
                    for (k, _) in exp.keys() {
                        let mut c = mk.clone();
                        c.push((name.clone(), k));
                        next.push(c);
                    }
                }
            }
            out = next;
        }
        out
    }
}

struct EvalScope<'a> {
    vals: &'a Values,
    mk: &'a ModKey,
    module: &'a ModuleConfig,
    bundle: &'a Bundle,
    /// The environment (what `terraform.workspace` names).
    env: &'a str,
    each: Option<&'a (Value, Value)>,
    count: bool,
    /// What `self` is (in a postcondition).
    this: Option<&'a Value>,
    /// Whether this is apply, when `timestamp()` and `uuid()` are known.
    applying: bool,
    /// What `plantimestamp()` is.
    plan_time: &'a str,
    /// The walk, for what is sensitive.
    walk: &'a Walk,
}

impl Scope for EvalScope<'_> {
    fn resolve(&self, root: &str, names: &[&str], loc: &Loc) -> Result<(Value, usize), Diagnostic> {
        let empty = ModState::default();
        let st = self.vals.mods.get(self.mk).unwrap_or(&empty);
        let first = names.first().copied().unwrap_or("");
        let pick =
            |m: &BTreeMap<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::Unknown);
        Ok(match root {
            "var" => (pick(&st.vars, first), 1),
            "local" => (pick(&st.locals, first), 1),
            "data" => (
                pick(
                    &st.data,
                    &format!("{first}.{}", names.get(1).copied().unwrap_or("")),
                ),
                2,
            ),
            "module" => {
                let Some(exp) = st.calls.get(first) else {
                    return Ok((Value::Unknown, 1));
                };
                let mut items = BTreeMap::new();
                for (k, _) in exp.keys() {
                    let mut c = self.mk.clone();
                    c.push((first.to_string(), k.clone()));
                    let outs = self
                        .vals
                        .mods
                        .get(&c)
                        .map(|s| Value::Object(s.outputs.clone()))
                        .unwrap_or(Value::Unknown);
                    items.insert(k, outs);
                }
                (exp.aggregate(items), 1)
            }
            "count" if self.count => (self.each.map(|e| e.0.clone()).unwrap_or(Value::Unknown), 1),
            "each" if !self.count => match (first, self.each) {
                ("key", Some(e)) => (e.0.clone(), 1),
                ("value", Some(e)) => (e.1.clone(), 1),
                _ => {
                    return Err(Diagnostic::at(
                        loc,
                        "\"each\" is only available in a block with for_each",
                    ))
                }
            },
            "self" => match self.this {
                Some(v) => (v.clone(), 0),
                None => {
                    return Err(Diagnostic::at(
                        loc,
                        "\"self\" is only available in a postcondition",
                    ))
                }
            },
            // A workspace is what an environment is to veeps.
            "terraform" => (Value::string(self.env), 1),
            "path" => match first {
                "module" => (Value::String(self.module.dir.clone()), 1),
                "root" => (Value::String(self.bundle.root.clone()), 1),
                _ => (Value::string("."), 1),
            },
            ty => (pick(&st.resources, &format!("{ty}.{first}")), 1),
        })
    }
    /// A path as written, or else relative to the root module's directory (Terraform's
    /// working directory in the usual `cd live/stage && terraform apply`).
    fn read_file(&self, path: &str) -> Option<String> {
        self.bundle.files.get(path).cloned().or_else(|| {
            let rooted = veeps_lang::config::join_path(&self.bundle.root, path);
            self.bundle.files.get(&rooted).cloned()
        })
    }
    fn bundle(&self) -> Option<&Bundle> {
        Some(self.bundle)
    }
    fn applying(&self) -> bool {
        self.applying
    }
    fn plan_time(&self) -> Option<&str> {
        Some(self.plan_time)
    }
    fn var_type(&self, name: &str) -> Option<Type> {
        self.module.variables.get(name).map(|v| v.ty.clone())
    }
    fn is_sensitive(&self, e: &Expr) -> bool {
        self.walk.sensitive_source(self.module, e).is_some()
    }
}

/// The outcome of a walk.
#[derive(Default)]
pub struct WalkResult {
    /// Changes per resource instance (including no-ops).
    pub changes: Vec<ResourceChange>,
    /// Root module outputs: value and sensitivity.
    pub outputs: BTreeMap<String, (Value, bool)>,
    /// Addresses found in the configuration.
    pub claimed: BTreeSet<String>,
    /// Errors.
    pub errors: Diagnostics,
    /// Failures of controller operations, by address (apply).
    pub failures: Vec<(String, String)>,
    /// Failed `check` assertions, for the plan's warnings.
    pub warnings: Vec<String>,
    /// Every planned instance, with where its block and attributes are (for checks).
    pub planned: Vec<(veeps_resource::Planned, Loc, BTreeMap<String, Loc>)>,
}

/// One walk over a configuration.
pub struct Walk {
    pub(crate) mode: Mode,
    pub(crate) config: Config,
    pub(crate) registry: Arc<Registry>,
    pub(crate) env: String,
    pub(crate) root_inputs: BTreeMap<String, RootInput>,
    pub(crate) prior: Prior,
    pub(crate) engine: Option<Arc<Engine>>,
    pub(crate) events: Option<UnboundedSender<Event>>,
    vals: Mutex<Values>,
    result: Mutex<WalkResult>,
    deps_of: Mutex<HashMap<NodeId, Vec<String>>>,
    /// The plan's time: what `plantimestamp()` is, the same in the plan and its apply.
    pub(crate) plan_time: String,
}

/// A root variable's value as given: a raw `-var` string, or a value from a `.tfvars` file.
#[derive(Debug, Clone)]
pub enum RootInput {
    /// From `-var NAME=VALUE`.
    Raw(String),
    /// From a `.tfvars` file.
    Value(Value, Loc),
}

impl Walk {
    /// A walk of `config`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mode: Mode,
        config: Config,
        registry: Arc<Registry>,
        env: String,
        root_inputs: BTreeMap<String, RootInput>,
        prior: Prior,
        engine: Option<Arc<Engine>>,
        events: Option<UnboundedSender<Event>>,
    ) -> Walk {
        Walk {
            mode,
            config,
            registry,
            env,
            root_inputs,
            prior,
            engine,
            events,
            vals: Mutex::default(),
            result: Mutex::default(),
            deps_of: Mutex::default(),
            plan_time: veeps_lang::funcs::time::now(),
        }
    }

    /// What expressions of module instance `mk` see (no `count`, `each` or `self`).
    fn scope<'a>(
        &'a self,
        vals: &'a Values,
        mk: &'a ModKey,
        module: &'a ModuleConfig,
    ) -> EvalScope<'a> {
        EvalScope {
            vals,
            mk,
            module,
            bundle: &self.config.bundle,
            env: &self.env,
            each: None,
            count: false,
            this: None,
            applying: self.mode == Mode::Apply,
            plan_time: &self.plan_time,
            walk: self,
        }
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }

    /// Runs the walk: every node once its dependencies are done; independent nodes in
    /// parallel. A failed node's dependents are skipped.
    pub async fn run(self: Arc<Self>) -> WalkResult {
        let graph = match Graph::build(&self.config, &self.registry) {
            Ok(g) => g,
            Err(d) => {
                let mut r = self.result.lock().expect("result lock");
                r.errors = d;
                return std::mem::take(&mut r);
            }
        };
        {
            let mut deps_of = self.deps_of.lock().expect("deps lock");
            for id in graph.nodes.keys() {
                if matches!(id.kind, Kind::Resource(_)) {
                    let deps = graph.resource_deps(id).iter().map(node_address).collect();
                    deps_of.insert(id.clone(), deps);
                }
            }
        }
        let mut remaining: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut dependents: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for (id, deps) in &graph.deps {
            if !graph.nodes.contains_key(id) {
                continue;
            }
            let real: Vec<&NodeId> = deps
                .iter()
                .filter(|d| graph.nodes.contains_key(*d))
                .collect();
            remaining.insert(id.clone(), real.len());
            for d in real {
                dependents.entry(d.clone()).or_default().push(id.clone());
            }
        }
        let mut ready: Vec<NodeId> = remaining
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| id.clone())
            .collect();
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        let modules: BTreeMap<NodeId, Arc<ModuleConfig>> = graph
            .nodes
            .iter()
            .map(|(id, info)| (id.clone(), info.module.clone()))
            .collect();
        loop {
            for id in ready.drain(..) {
                let me = self.clone();
                let m = modules[&id].clone();
                tasks.spawn(async move {
                    let r = me.node(&id, &m).await;
                    (id, r)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (id, res) = match joined {
                Ok(x) => x,
                Err(e) => {
                    self.result
                        .lock()
                        .expect("result lock")
                        .errors
                        .push(Diagnostic::new(
                            format!("internal error: a task failed: {e}"),
                            None,
                        ));
                    continue;
                }
            };
            if let Err(d) = res {
                self.result
                    .lock()
                    .expect("result lock")
                    .errors
                    .0
                    .extend(d.0);
                // Skip everything downstream.
                let mut todo = vec![id.clone()];
                while let Some(n) = todo.pop() {
                    if failed.insert(n.clone()) {
                        todo.extend(dependents.get(&n).cloned().unwrap_or_default());
                    }
                }
                continue;
            }
            for dep in dependents.get(&id).cloned().unwrap_or_default() {
                let n = remaining.get_mut(&dep).expect("node counted");
                *n -= 1;
                if *n == 0 && !failed.contains(&dep) {
                    ready.push(dep);
                }
            }
        }
        let mut r = self.result.lock().expect("result lock");
        if self.mode != Mode::Apply && r.errors.is_empty() {
            r.planned.sort_by(|a, b| a.0.address.cmp(&b.0.address));
            let planned: Vec<veeps_resource::Planned> =
                r.planned.iter().map(|p| p.0.clone()).collect();
            let mut diags = vec![];
            for check in self.registry.checks() {
                for e in check.check(&planned) {
                    let Some((p, block, attrs)) = r.planned.get(e.index) else {
                        continue;
                    };
                    let loc = e.attr.as_ref().and_then(|a| attrs.get(a)).unwrap_or(block);
                    diags.push(Diagnostic::at(loc, format!("{}: {}", p.address, e.message)));
                }
            }
            r.errors.0.extend(diags);
        }
        std::mem::take(&mut r)
    }

    async fn node(&self, id: &NodeId, m: &Arc<ModuleConfig>) -> Result<(), Diagnostics> {
        match &id.kind {
            Kind::Var(name) => self.var_node(id, m, name),
            Kind::Local(name) => self.simple_node(
                id,
                m,
                |st, v| {
                    st.locals.insert(name.clone(), v);
                },
                &m.locals[name].expr,
            ),
            Kind::Check(name) => {
                self.check_node(id, m, &m.checks[name]);
                Ok(())
            }
            Kind::Output(name) => {
                let o = &m.outputs[name];
                self.conditions_node(id, m, &o.preconditions, &format!("output \"{name}\""))?;
                self.simple_node(
                    id,
                    m,
                    |st, v| {
                        st.outputs.insert(name.clone(), v);
                    },
                    &o.value,
                )?;
                if id.path.is_empty() {
                    let v = self
                        .vals
                        .lock()
                        .expect("values")
                        .mods
                        .get(&vec![])
                        .and_then(|s| s.outputs.get(name).cloned())
                        .unwrap_or(Value::Unknown);
                    let sensitive = o.sensitive;
                    if !sensitive {
                        if let Some(src) = self.sensitive_source(m, &o.value) {
                            return Err(Diagnostic::at(&o.loc, format!("output \"{name}\" refers to sensitive values ({src})"))
                                .with_detail("Add `sensitive = true` to the output block so the value is masked.")
                                .into());
                        }
                    }
                    self.result
                        .lock()
                        .expect("result lock")
                        .outputs
                        .insert(name.clone(), (as_stored(&v), sensitive));
                }
                Ok(())
            }
            Kind::Call(name) => self.call_node(id, m, name),
            Kind::Resource(key) => self.resource_node(id, m, &m.resources[key]).await,
            Kind::Data(key) => self.data_node(id, m, &m.data[&format!("data.{key}")]).await,
        }
    }

    fn simple_node(
        &self,
        id: &NodeId,
        m: &ModuleConfig,
        store: impl Fn(&mut ModState, Value),
        e: &Expr,
    ) -> Result<(), Diagnostics> {
        let mut vals = self.vals.lock().expect("values");
        let mut diags = Diagnostics::default();
        for mk in vals.instances(&id.path) {
            let v = {
                let scope = self.scope(&vals, &mk, m);
                eval(e, &scope)
            };
            match v {
                Ok(v) => store(vals.mods.entry(mk).or_default(), v),
                Err(d) => diags.push(d),
            }
        }
        diags.into_result()
    }

    fn var_node(&self, id: &NodeId, m: &ModuleConfig, name: &str) -> Result<(), Diagnostics> {
        let decl = &m.variables[name];
        let mut vals = self.vals.lock().expect("values");
        let mut diags = Diagnostics::default();
        for mk in vals.instances(&id.path) {
            let given: Option<Value> = if id.path.is_empty() {
                match self.root_inputs.get(name) {
                    Some(RootInput::Value(v, _)) => Some(v.clone()),
                    Some(RootInput::Raw(s)) => Some(match &decl.ty {
                        Type::String | Type::Number | Type::Bool | Type::Any => {
                            Value::String(s.clone())
                        }
                        _ => match hcl_expr_value(s) {
                            Ok(v) => v,
                            Err(msg) => {
                                diags.push(Diagnostic::at(&decl.loc, format!("invalid value for variable \"{name}\" given with -var: {msg}")));
                                continue;
                            }
                        },
                    }),
                    None => None,
                }
            } else {
                vals.mods.get(&mk).and_then(|s| s.inputs.get(name).cloned())
            };
            let v = match (given, &decl.default) {
                (Some(v), _) if !v.is_null() => v,
                // A null given is the value (Terraform's nullable, true by default), unless
                // the variable says `nullable = false`: then its default, or an error.
                (Some(v), _) if decl.nullable => v,
                (Some(_), None) => {
                    diags.push(
                        Diagnostic::at(&decl.loc, format!("variable \"{name}\" may not be null"))
                            .with_detail("It is declared with `nullable = false`: give it a value, or give it a default."),
                    );
                    continue;
                }
                (_, Some(d)) => d.clone(),
                // As `terraform validate`: a root variable with no value is unknown.
                (None, None) if self.mode == Mode::Validate && id.path.is_empty() => Value::Unknown,
                (None, None) => {
                    let how = if id.path.is_empty() {
                        format!("Set it with `-var {name}=VALUE`, in a .tfvars file, or give the variable a default.")
                    } else {
                        format!(
                            "Set `{name} = ...` in the module block module.{}.",
                            id.path.join(".module.")
                        )
                    };
                    diags.push(
                        Diagnostic::at(
                            &decl.loc,
                            format!("no value for required variable \"{name}\""),
                        )
                        .with_detail(how),
                    );
                    continue;
                }
            };
            let v = match convert(&v, &decl.ty) {
                Ok(v) => v,
                Err(msg) => {
                    let at = match self.root_inputs.get(name) {
                        Some(RootInput::Value(_, loc)) if id.path.is_empty() => loc.clone(),
                        _ => decl.loc.clone(),
                    };
                    diags.push(
                        Diagnostic::at(
                            &at,
                            format!("invalid value for variable \"{name}\": {msg}"),
                        )
                        .with_detail(format!("The variable's type is {}.", decl.ty)),
                    );
                    continue;
                }
            };
            vals.mods
                .entry(mk.clone())
                .or_default()
                .vars
                .insert(name.to_string(), v.clone());
            for val in &decl.validations {
                let scope = self.scope(&vals, &mk, m);
                match eval(&val.condition, &scope) {
                    Ok(Value::Bool(true)) | Ok(Value::Unknown) => {}
                    Ok(Value::Bool(false)) => {
                        let msg = eval(&val.error_message, &scope)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_else(|| "the validation condition failed".into());
                        diags.push(
                            Diagnostic::at(
                                &val.condition.loc(),
                                format!("invalid value for variable \"{name}\": {msg}"),
                            )
                            .with_detail(format!("The value given was {v}.")),
                        );
                    }
                    Ok(other) => diags.push(Diagnostic::at(
                        &val.condition.loc(),
                        format!(
                            "a validation condition must be a bool, got {}",
                            other.type_name()
                        ),
                    )),
                    Err(d) => diags.push(d),
                }
            }
        }
        diags.into_result()
    }

    fn call_node(&self, id: &NodeId, m: &ModuleConfig, name: &str) -> Result<(), Diagnostics> {
        let call = &m.module_calls[name];
        let child_dir = call.source.dir();
        let Some(child) = self.config.modules.get(&child_dir) else {
            return Err(Diagnostic::at(
                &call.source_loc,
                format!("module source \"{child_dir}\" was not loaded"),
            )
            .into());
        };
        let mut vals = self.vals.lock().expect("values");
        let mut diags = Diagnostics::default();
        for mk in vals.instances(&id.path) {
            let exp = {
                let scope = self.scope(&vals, &mk, m);
                match expansion(call.count.as_ref(), call.for_each.as_ref(), &scope) {
                    Ok(e) => e,
                    Err(d) => {
                        diags.push(d);
                        continue;
                    }
                }
            };
            for (k, each) in exp.keys() {
                let mut inputs = BTreeMap::new();
                {
                    let scope = EvalScope {
                        each: each.as_ref(),
                        count: call.count.is_some(),
                        ..self.scope(&vals, &mk, m)
                    };
                    for (an, a) in &call.inputs {
                        if !child.variables.contains_key(an) {
                            diags.push(
                                Diagnostic::at(
                                    &a.loc,
                                    format!(
                                        "module \"{name}\" has no input variable \"{an}\".{}",
                                        did_you_mean(
                                            an,
                                            child.variables.keys().map(String::as_str)
                                        )
                                    ),
                                )
                                .with_detail(format!(
                                    "The module's variables are declared in {child_dir}."
                                )),
                            );
                            continue;
                        }
                        match eval(&a.expr, &scope) {
                            Ok(v) => {
                                inputs.insert(an.clone(), v);
                            }
                            Err(d) => diags.push(d),
                        }
                    }
                }
                let mut c = mk.clone();
                c.push((name.to_string(), k));
                vals.mods.entry(c).or_default().inputs = inputs;
            }
            vals.mods
                .entry(mk)
                .or_default()
                .calls
                .insert(name.to_string(), exp);
        }
        diags.into_result()
    }

    /// If `e` refers to a sensitive attribute or variable, names it: as Terraform marks
    /// values, through locals, module inputs and outputs, and `sensitive()`.
    fn sensitive_source(&self, m: &ModuleConfig, e: &Expr) -> Option<String> {
        self.sensitive_source_at(m, e, 0)
    }

    fn sensitive_source_at(&self, m: &ModuleConfig, e: &Expr, depth: usize) -> Option<String> {
        if depth > 32 {
            return None;
        }
        if calls_sensitive(&e.expr) {
            return Some("sensitive()".into());
        }
        // An encrypted value (`veeps kms encrypt`) is a secret wherever it goes.
        if e.text().contains("kmscrypt::") {
            return Some("a kmscrypt:: value".into());
        }
        for r in e.references().into_iter().filter(|r| !r.unmarked) {
            match r.root.as_str() {
                "var" => {
                    if let Some(v) = r.names.first().and_then(|n| m.variables.get(n)) {
                        if v.sensitive {
                            return Some(format!("var.{}", v.name));
                        }
                        // A root variable given a `kmscrypt::` value (in a .tfvars file or
                        // with -var) is a secret too.
                        let encrypted = match self.root_inputs.get(&v.name) {
                            Some(RootInput::Raw(s)) => s.contains("kmscrypt::"),
                            Some(RootInput::Value(x, _)) => x.to_string().contains("kmscrypt::"),
                            None => false,
                        };
                        if encrypted && m.dir == self.config.root {
                            return Some(format!("var.{} (a kmscrypt:: value)", v.name));
                        }
                        // A module's input is as sensitive as what a caller passes in.
                        for caller in self.config.modules.values() {
                            for call in caller.module_calls.values() {
                                if call.source.dir() != m.dir {
                                    continue;
                                }
                                if let Some(arg) = call.inputs.get(&v.name) {
                                    if let Some(s) =
                                        self.sensitive_source_at(caller, &arg.expr, depth + 1)
                                    {
                                        return Some(s);
                                    }
                                }
                            }
                        }
                    }
                }
                "local" => {
                    if let Some(l) = r.names.first().and_then(|n| m.locals.get(n)) {
                        if let Some(s) = self.sensitive_source_at(m, &l.expr, depth + 1) {
                            return Some(s);
                        }
                    }
                }
                "module" => {
                    if let (Some(c), Some(o)) = (
                        r.names.first().and_then(|n| m.module_calls.get(n)),
                        r.names.get(1),
                    ) {
                        if let Some(out) = self
                            .config
                            .modules
                            .get(&c.source.dir())
                            .and_then(|cm| cm.outputs.get(o))
                        {
                            if out.sensitive {
                                return Some(format!("module.{}.{o}", c.name));
                            }
                            if let Some(cm) = self.config.modules.get(&c.source.dir()) {
                                if let Some(s) = self.sensitive_source_at(cm, &out.value, depth + 1)
                                {
                                    return Some(s);
                                }
                            }
                        }
                    }
                }
                ty => {
                    if let (Some(name), Some(attr)) = (r.names.first(), r.names.get(1)) {
                        if let Some(rt) = self.registry.resource(ty) {
                            if rt.schema().get(attr).is_some_and(|a| a.sensitive) {
                                return Some(format!("{ty}.{name}.{attr}"));
                            }
                        }
                    }
                }
            }
        }
        None
    }

    async fn data_node(
        &self,
        id: &NodeId,
        m: &ModuleConfig,
        rc: &ResourceConfig,
    ) -> Result<(), Diagnostics> {
        let ds = self
            .registry
            .data(&rc.type_name)
            .expect("checked by the graph")
            .clone();
        let key = rc.key().trim_start_matches("data.").to_string();
        let instances = self.instances_of(id, m, rc, ds.schema())?;
        let mut per_mod: BTreeMap<ModKey, (Expansion, BTreeMap<InstKey, Value>)> = BTreeMap::new();
        let mut diags = Diagnostics::default();
        for inst in instances {
            let value = if self.mode == Mode::Validate || inst.config.has_unknown() {
                if self.mode == Mode::Apply {
                    diags.push(Diagnostic::at(&rc.loc, format!("{}: the configuration depends on values that are still unknown during apply", inst.address)));
                    continue;
                }
                with_unknown_computed(ds.schema(), &inst.config)
            } else {
                let ctx = self.ctx(&inst.address);
                match ds.read(&ctx, &inst.config).await {
                    Ok(v) => v,
                    Err(e) => {
                        diags.push(Diagnostic::at(
                            &rc.loc,
                            format!("reading {}: {e}", inst.address),
                        ));
                        continue;
                    }
                }
            };
            diags.0.extend(self.postconditions(m, rc, &inst, &value));
            per_mod
                .entry(inst.mk.clone())
                .or_insert_with(|| (inst.exp.clone(), BTreeMap::new()))
                .1
                .insert(inst.key.clone(), value);
        }
        let mut vals = self.vals.lock().expect("values");
        for (mk, (exp, items)) in per_mod {
            vals.mods
                .entry(mk)
                .or_default()
                .data
                .insert(key.clone(), exp.aggregate(items));
        }
        diags.into_result()
    }

    fn ctx(&self, address: &str) -> Ctx {
        match &self.engine {
            Some(e) => Ctx {
                env: self.env.clone(),
                address: address.to_string(),
                data_dir: e.data_dir.clone(),
                services: e.services.clone(),
            },
            None => Ctx {
                env: self.env.clone(),
                address: address.to_string(),
                data_dir: Default::default(),
                services: Default::default(),
            },
        }
    }

    /// Expands a resource block into its instances and decodes each one's configuration.
    fn instances_of(
        &self,
        id: &NodeId,
        m: &ModuleConfig,
        rc: &ResourceConfig,
        schema: &Schema,
    ) -> Result<Vec<Instance>, Diagnostics> {
        let vals = self.vals.lock().expect("values");
        let mut out = vec![];
        let mut diags = Diagnostics::default();
        let mut empty_mods = vec![];
        for mk in vals.instances(&id.path) {
            let scope = self.scope(&vals, &mk, m);
            let exp = match expansion(rc.count.as_ref(), rc.for_each.as_ref(), &scope) {
                Ok(e) => e,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            let keys = exp.keys();
            if keys.is_empty() {
                empty_mods.push((mk.clone(), exp.clone()));
            }
            for (k, each) in keys {
                let scope = EvalScope {
                    each: each.as_ref(),
                    count: rc.count.is_some(),
                    ..self.scope(&vals, &mk, m)
                };
                let address = format!("{}{}{}", mod_prefix(&mk), rc.key(), k.suffix());
                let pre: Vec<Diagnostic> = rc
                    .preconditions
                    .iter()
                    .filter_map(|c| check_condition(c, &scope, "precondition", &address).err())
                    .collect();
                if !pre.is_empty() {
                    diags.0.extend(pre);
                    continue;
                }
                match decode_body(schema, &rc.body, &scope).map(|c| as_stored(&c)) {
                    Ok(config) => out.push(Instance {
                        mk: mk.clone(),
                        key: k,
                        exp: exp.clone(),
                        address,
                        config,
                        each: each.clone(),
                    }),
                    Err(d) => diags.0.extend(d.0),
                }
            }
        }
        drop(vals);
        // A block with count = 0 still has a (empty) value.
        if !empty_mods.is_empty() {
            let mut vals = self.vals.lock().expect("values");
            for (mk, exp) in empty_mods {
                let st = vals.mods.entry(mk).or_default();
                let v = exp.aggregate(BTreeMap::new());
                if rc.mode == veeps_lang::config::Mode::Managed {
                    st.resources.insert(rc.key(), v);
                } else {
                    st.data
                        .insert(rc.key().trim_start_matches("data.").to_string(), v);
                }
            }
        }
        diags.into_result()?;
        Ok(out)
    }

    async fn resource_node(
        &self,
        id: &NodeId,
        m: &ModuleConfig,
        rc: &ResourceConfig,
    ) -> Result<(), Diagnostics> {
        let rt = self
            .registry
            .resource(&rc.type_name)
            .expect("checked by the graph")
            .clone();
        let instances = self.instances_of(id, m, rc, rt.schema())?;
        let mut diags = Diagnostics::default();
        // Type-specific validation on known values.
        for inst in &instances {
            for e in rt.validate(&inst.config) {
                let loc = e
                    .path
                    .first()
                    .and_then(|a| rc.body.attrs.get(a))
                    .map(|a| a.expr.loc())
                    .unwrap_or_else(|| rc.loc.clone());
                diags.push(Diagnostic::at(
                    &loc,
                    format!("{}: {} {}", inst.address, e.path.join("."), e.message),
                ));
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let deps = self
            .deps_of
            .lock()
            .expect("deps")
            .get(id)
            .cloned()
            .unwrap_or_default();
        let masked = self.masked_attrs(m, rc, rt.schema());
        let futs = instances.into_iter().map(|inst| {
            let rt = rt.clone();
            let deps = deps.clone();
            let masked = masked.clone();
            async move {
                let r = self.instance(&rt, rc, &inst, &deps, &masked).await;
                (inst, r)
            }
        });
        let results = futures::future::join_all(futs).await;
        let mut per_mod: BTreeMap<ModKey, (Expansion, BTreeMap<InstKey, Value>)> = BTreeMap::new();
        for (inst, r) in results {
            self.result
                .lock()
                .expect("result lock")
                .claimed
                .insert(inst.address.clone());
            match r {
                Ok(v) => {
                    diags.0.extend(self.postconditions(m, rc, &inst, &v));
                    per_mod
                        .entry(inst.mk.clone())
                        .or_insert_with(|| (inst.exp.clone(), BTreeMap::new()))
                        .1
                        .insert(inst.key.clone(), v);
                }
                Err(d) => diags.0.extend(d.0),
            }
        }
        let mut vals = self.vals.lock().expect("values");
        for (mk, (exp, items)) in per_mod {
            vals.mods
                .entry(mk)
                .or_default()
                .resources
                .insert(rc.key(), exp.aggregate(items));
        }
        diags.into_result()
    }

    /// Checks an instance's postconditions on its value (planned or applied); unknown
    /// conditions wait for apply.
    fn postconditions(
        &self,
        m: &ModuleConfig,
        rc: &ResourceConfig,
        inst: &Instance,
        value: &Value,
    ) -> Vec<Diagnostic> {
        if rc.postconditions.is_empty() || self.mode == Mode::Validate {
            return vec![];
        }
        let vals = self.vals.lock().expect("values");
        let scope = EvalScope {
            each: inst.each.as_ref(),
            count: rc.count.is_some(),
            this: Some(value),
            ..self.scope(&vals, &inst.mk, m)
        };
        rc.postconditions
            .iter()
            .filter_map(|c| check_condition(c, &scope, "postcondition", &inst.address).err())
            .collect()
    }

    /// Checks conditions that stop the walk (an output's preconditions) in every instance
    /// of the node's module.
    fn conditions_node(
        &self,
        id: &NodeId,
        m: &ModuleConfig,
        conditions: &[veeps_lang::config::Condition],
        what: &str,
    ) -> Result<(), Diagnostics> {
        if conditions.is_empty() {
            return Ok(());
        }
        let vals = self.vals.lock().expect("values");
        let mut diags = Diagnostics::default();
        for mk in vals.instances(&id.path) {
            let scope = self.scope(&vals, &mk, m);
            let at = format!("{}{what}", mod_prefix(&mk));
            for c in conditions {
                if let Err(d) = check_condition(c, &scope, "precondition", &at) {
                    diags.push(d);
                }
            }
        }
        diags.into_result()
    }

    /// A `check` block: failed assertions become warnings; nothing stops.
    fn check_node(&self, id: &NodeId, m: &ModuleConfig, check: &veeps_lang::config::Check) {
        let vals = self.vals.lock().expect("values");
        let mut warnings = vec![];
        for mk in vals.instances(&id.path) {
            let scope = self.scope(&vals, &mk, m);
            let at = format!("{}check \"{}\"", mod_prefix(&mk), check.name);
            for a in &check.asserts {
                if let Err(d) = check_condition(a, &scope, "check assertion", &at) {
                    let pos = d.position().map(|p| format!(" ({p})")).unwrap_or_default();
                    warnings.push(format!("{}{pos}", d.summary));
                }
            }
        }
        drop(vals);
        self.result
            .lock()
            .expect("result lock")
            .warnings
            .extend(warnings);
    }

    fn masked_attrs(
        &self,
        m: &ModuleConfig,
        rc: &ResourceConfig,
        schema: &Schema,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = schema
            .sensitive_attrs()
            .into_iter()
            .map(String::from)
            .collect();
        for (name, a) in &rc.body.attrs {
            if self.sensitive_source(m, &a.expr).is_some() {
                out.insert(name.clone());
            }
        }
        // A nested block is one attribute in state: any sensitive value in it seals it.
        // So does an attribute its schema marks sensitive (a password in an action's
        // `authenticate_basic`), when it is set.
        for b in &rc.body.blocks {
            let bs = schema.get_block(&b.type_name).map(|x| &x.schema);
            if self.body_is_sensitive(m, &b.body, bs) {
                out.insert(b.type_name.clone());
            }
        }
        out
    }

    fn body_is_sensitive(
        &self,
        m: &ModuleConfig,
        body: &veeps_lang::config::BodyConfig,
        schema: Option<&Schema>,
    ) -> bool {
        body.attrs.iter().any(|(name, a)| {
            schema
                .and_then(|s| s.get(name))
                .is_some_and(|x| x.sensitive)
                || self.sensitive_source(m, &a.expr).is_some()
        }) || body.blocks.iter().any(|b| {
            let bs = schema
                .and_then(|s| s.get_block(&b.type_name))
                .map(|x| &x.schema);
            self.body_is_sensitive(m, &b.body, bs)
        })
    }

    pub(crate) async fn with_progress<T>(
        &self,
        address: &str,
        action: Action,
        started: Instant,
        op: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(op);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(10),
        );
        loop {
            tokio::select! {
                r = &mut op => return r,
                _ = tick.tick() => {
                    if action != Action::NoOp {
                        self.emit(Event::Progress { address: address.to_string(), action, elapsed: started.elapsed().as_secs_f64() });
                    }
                }
            }
        }
    }
}

pub(crate) struct Instance {
    mk: ModKey,
    key: InstKey,
    exp: Expansion,
    address: String,
    config: Value,
    each: Option<(Value, Value)>,
}

/// A value as state holds it: numbers at a float64's precision unless whole (a number like
/// `1/3` computed again must equal what state kept, or every plan would show a change).
fn as_stored(v: &Value) -> Value {
    Value::from_plan_json(&v.to_plan_json())
}

/// Evaluates a `precondition`, `postcondition` or `assert`: Ok when true or not yet
/// known, else an error carrying the block's own message.
fn check_condition(
    c: &veeps_lang::config::Condition,
    scope: &dyn Scope,
    what: &str,
    at: &str,
) -> Result<(), Diagnostic> {
    let v = eval(&c.condition, scope)?;
    let ok = match &v {
        Value::Unknown => return Ok(()),
        Value::Null => {
            return Err(Diagnostic::at(
                &c.condition.loc(),
                format!("{at}: the {what}'s condition is null; it must be true or false"),
            ))
        }
        other => match convert(other, &Type::Bool) {
            Ok(Value::Bool(b)) => b,
            _ => {
                return Err(Diagnostic::at(
                    &c.condition.loc(),
                    format!(
                        "{at}: the {what}'s condition must be a bool, not {}",
                        other.type_name()
                    ),
                ))
            }
        },
    };
    if ok {
        return Ok(());
    }
    let message = match eval(&c.error_message, scope) {
        Ok(Value::String(s)) => s,
        Ok(Value::Unknown) => "(its error message is not known yet)".into(),
        Ok(other) => other.to_string(),
        Err(d) => return Err(d),
    };
    Err(Diagnostic::at(
        &c.condition.loc(),
        format!("{what} failed for {at}: {message}"),
    ))
}

/// The address of a node, without instance keys (`module.a.random_id.x`).
pub fn node_address(id: &NodeId) -> String {
    let mut s: String = id.path.iter().map(|p| format!("module.{p}.")).collect();
    match &id.kind {
        Kind::Resource(k) => s.push_str(k),
        Kind::Data(k) => s.push_str(&format!("data.{k}")),
        other => s.push_str(&format!("{other:?}")),
    }
    s
}

fn hcl_expr_value(s: &str) -> Result<Value, String> {
    let e = hcl_edit::parser::parse_expr(s).map_err(|e| e.message().to_string())?;
    let file = Arc::new(veeps_lang::diag::SourceFile {
        path: "-var".into(),
        text: s.into(),
    });
    eval(&Expr { expr: e, file }, &veeps_lang::eval::EmptyScope).map_err(|d| d.summary)
}
