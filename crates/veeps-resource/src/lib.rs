//! The resource contract.
//!
//! Every resource type is a [`Resource`]: a [`Schema`] (attribute types; required, optional
//! or computed; which attributes force replacement; which are sensitive), optional extra
//! validation, and a controller with `create`, `read`, `update` and `delete`. Controllers are
//! idempotent and level-triggered: each call must be safe to run again after a crash at any
//! point (create adopts what a previous attempt left; delete of something gone succeeds).
//! Data sources implement [`DataSource`]. A [`Registry`] holds them all; adding a type is one
//! module implementing the trait and one `register` line.

pub mod acme;
pub mod alias;
pub mod edge;
pub mod intrusion;
pub mod metrics;
pub mod part;
pub mod roles;
pub mod typed;

pub use part::{Part, PartError, Parts, RouteAction, Shutdown};
pub use typed::{check_schema, Observed, Typed};

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use veeps_lang::{Type, Value};

/// How an attribute gets its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrMode {
    /// Must be set in configuration.
    Required,
    /// May be set; null (or its default) otherwise.
    Optional,
    /// Set by the controller only.
    Computed,
    /// May be set; the controller fills it in when not.
    OptionalComputed,
}

/// One attribute of a schema.
#[derive(Debug, Clone)]
pub struct AttrSchema {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub ty: Type,
    /// Required, optional or computed.
    pub mode: AttrMode,
    /// A change to it replaces the resource instead of updating it in place.
    pub force_new: bool,
    /// Masked in plans, logs and listings; encrypted in state.
    pub sensitive: bool,
    /// The value used when an optional attribute is not set.
    pub default: Option<Value>,
    /// What it is for (shown in docs and errors).
    pub description: &'static str,
}

impl AttrSchema {
    fn new(name: &'static str, ty: Type, mode: AttrMode) -> AttrSchema {
        AttrSchema {
            name,
            ty,
            mode,
            force_new: false,
            sensitive: false,
            default: None,
            description: "",
        }
    }
    /// A required attribute.
    pub fn required(name: &'static str, ty: Type) -> AttrSchema {
        AttrSchema::new(name, ty, AttrMode::Required)
    }
    /// An optional attribute.
    pub fn optional(name: &'static str, ty: Type) -> AttrSchema {
        AttrSchema::new(name, ty, AttrMode::Optional)
    }
    /// A computed attribute.
    pub fn computed(name: &'static str, ty: Type) -> AttrSchema {
        AttrSchema::new(name, ty, AttrMode::Computed)
    }
    /// An optional attribute the controller fills in when it is not set.
    pub fn optional_computed(name: &'static str, ty: Type) -> AttrSchema {
        AttrSchema::new(name, ty, AttrMode::OptionalComputed)
    }
    /// Changing it forces replacement.
    pub fn force_new(mut self) -> AttrSchema {
        self.force_new = true;
        self
    }
    /// It is sensitive.
    pub fn sensitive(mut self) -> AttrSchema {
        self.sensitive = true;
        self
    }
    /// Its default.
    pub fn default(mut self, v: impl Into<Value>) -> AttrSchema {
        self.default = Some(v.into());
        self
    }
    /// Its description.
    pub fn describe(mut self, d: &'static str) -> AttrSchema {
        self.description = d;
        self
    }
    /// True if configuration may set it.
    pub fn settable(&self) -> bool {
        self.mode != AttrMode::Computed
    }
    /// True if the controller may set it.
    pub fn is_computed(&self) -> bool {
        matches!(self.mode, AttrMode::Computed | AttrMode::OptionalComputed)
    }
}

/// How many of a nested block may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// At most one; its value is an object (or null).
    Single,
    /// Any number; its value is a list of objects.
    List,
}

/// A nested block type of a schema (like `ingress { ... }`).
#[derive(Debug, Clone)]
pub struct BlockSchema {
    /// Its name.
    pub name: &'static str,
    /// One or many.
    pub nesting: Nesting,
    /// Its contents.
    pub schema: Schema,
    /// A change inside forces replacement.
    pub force_new: bool,
    /// At least this many.
    pub min_items: usize,
}

impl BlockSchema {
    /// A block that may be left out, changed in place.
    pub fn new(name: &'static str, nesting: Nesting, schema: Schema) -> BlockSchema {
        BlockSchema {
            name,
            nesting,
            schema,
            force_new: false,
            min_items: 0,
        }
    }
}

/// The schema of a resource type or block.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// Attributes.
    pub attrs: Vec<AttrSchema>,
    /// Nested block types.
    pub blocks: Vec<BlockSchema>,
}

impl Schema {
    /// An empty schema.
    pub fn new() -> Schema {
        Schema::default()
    }
    /// Adds an attribute.
    pub fn attr(mut self, a: AttrSchema) -> Schema {
        self.attrs.push(a);
        self
    }
    /// Adds a block type.
    pub fn block(mut self, b: BlockSchema) -> Schema {
        self.blocks.push(b);
        self
    }
    /// The attribute called `name`.
    pub fn get(&self, name: &str) -> Option<&AttrSchema> {
        self.attrs.iter().find(|a| a.name == name)
    }
    /// The block type called `name`.
    pub fn get_block(&self, name: &str) -> Option<&BlockSchema> {
        self.blocks.iter().find(|b| b.name == name)
    }
    /// Names of sensitive attributes (top level).
    pub fn sensitive_attrs(&self) -> Vec<&'static str> {
        self.attrs
            .iter()
            .filter(|a| a.sensitive)
            .map(|a| a.name)
            .collect()
    }
}

/// A validation failure of one attribute, found by a type's own checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrError {
    /// The attribute (and block) path, like `["ingress", "0", "from_port"]`.
    pub path: Vec<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl AttrError {
    /// An error on attribute `name`.
    pub fn on(name: &str, message: impl Into<String>) -> AttrError {
        AttrError {
            path: vec![name.to_string()],
            message: message.into(),
        }
    }
}

/// Why a controller call failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The operation failed; the message says why.
    #[error("{0}")]
    Failed(String),
    /// The configuration cannot be realised as given.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// An attribute (or the whole value, when `attr` is empty) does not have the shape its
    /// type declares.
    #[error("{type_name}{}: {message}", if attr.is_empty() { String::new() } else { format!(".{attr}") })]
    Attr {
        /// The resource type.
        type_name: String,
        /// The attribute's path, like `ingress[0].from_port`.
        attr: String,
        /// What is wrong.
        message: String,
    },
    /// An operation of a part failed; the source is kept.
    #[error("{context}: {source}")]
    Part {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An I/O error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ResourceError {
    /// A failure of `context`, keeping its source error.
    pub fn part(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ResourceError {
        ResourceError::Part {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

/// Shared services the engine hands to controllers (networking, key management, state
/// readers...), looked up by type. Later parts add theirs without changing the contract.
#[derive(Clone, Default)]
pub struct Services(Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl Services {
    /// Adds a service.
    pub fn with<T: Any + Send + Sync>(mut self, v: T) -> Services {
        Arc::make_mut(&mut self.0).insert(TypeId::of::<T>(), Arc::new(v));
        self
    }
    /// Finds a service by type.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Services({} registered)", self.0.len())
    }
}

/// What a controller call knows about where it runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The environment.
    pub env: String,
    /// The resource instance's address, like `module.net.random_id.x[0]`.
    pub address: String,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// Shared services.
    pub services: Services,
}

impl Ctx {
    /// A shared service, or an error naming it when the server runs without it.
    pub fn service<T: Any + Send + Sync>(&self, what: &str) -> Result<&T, ResourceError> {
        self.services
            .get::<T>()
            .ok_or_else(|| ResourceError::Failed(format!("the {what} service is not running")))
    }
}

/// The type `list(string)`.
pub fn list_of_strings() -> Type {
    Type::List(Box::new(Type::String))
}

/// The type `map(string)`.
pub fn map_of_strings() -> Type {
    Type::Map(Box::new(Type::String))
}

/// Reads the outputs of applied environments (for `data "environment"`).
pub trait EnvironmentOutputs: Send + Sync {
    /// The outputs of `env`, or `None` if it has never been applied.
    fn outputs(&self, env: &str) -> Result<Option<BTreeMap<String, Value>>, String>;
}

/// A handle to [`EnvironmentOutputs`], as stored in [`Services`].
#[derive(Clone)]
pub struct EnvOutputsService(pub Arc<dyn EnvironmentOutputs>);

/// A managed resource type: schema plus controller.
#[async_trait::async_trait]
pub trait Resource: Send + Sync + 'static {
    /// The type name used in configuration, like `random_id`.
    fn type_name(&self) -> &'static str;
    /// Its schema.
    fn schema(&self) -> &Schema;
    /// Checks beyond types, on the known parts of a configuration.
    fn validate(&self, _config: &Value) -> Vec<AttrError> {
        Vec::new()
    }
    /// Creates the object. Returns the full state (configuration plus computed attributes).
    async fn create(&self, ctx: &Ctx, config: &Value) -> Result<Value, ResourceError>;
    /// Reads the real object. `None` when it no longer exists.
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError>;
    /// Changes attributes that do not force replacement. Returns the new state.
    async fn update(
        &self,
        ctx: &Ctx,
        prior: &Value,
        config: &Value,
    ) -> Result<Value, ResourceError>;
    /// Deletes the object. Deleting something already gone succeeds.
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError>;
    /// Computed attributes known before apply (like ids derived from the address), so
    /// plans can show them and cross-resource checks can use them.
    fn plan_computed(&self, _ctx: &Ctx, _config: &Value) -> BTreeMap<String, Value> {
        BTreeMap::new()
    }
    /// Brings the real object back in line with recorded state after a server restart
    /// (recreating what is missing, adopting what exists). Returns the state to record.
    async fn reconcile(&self, _ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        Ok(state.clone())
    }
    /// The layout version of the state this type records.
    fn schema_version(&self) -> u64 {
        1
    }
    /// Turns state recorded at layout version `from` (older than [`Resource::schema_version`])
    /// into the current layout.
    fn upgrade(&self, from: u64, _state: Value) -> Result<Value, ResourceError> {
        Err(ResourceError::Invalid(format!(
            "no upgrade from state layout {from} of {} to {}",
            self.type_name(),
            self.schema_version()
        )))
    }
}

/// A planned resource instance, as cross-resource checks see it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Its type.
    pub type_name: String,
    /// Its address.
    pub address: String,
    /// Its planned attributes (unknown ones as `Value::Unknown`).
    pub value: Value,
}

/// A problem found by a [`PlanCheck`]: the instance (index into the slice) and attribute.
#[derive(Debug, Clone)]
pub struct CheckError {
    /// Index of the instance in the slice given to the check.
    pub index: usize,
    /// The attribute at fault, if one is.
    pub attr: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// A check across the planned instances of an environment (like "a subnet lies inside its
/// VPC"), run after every plan.
pub trait PlanCheck: Send + Sync + 'static {
    /// Returns every problem found.
    fn check(&self, planned: &[Planned]) -> Vec<CheckError>;
}

/// A data source type: reads something that exists.
#[async_trait::async_trait]
pub trait DataSource: Send + Sync + 'static {
    /// The type name used in configuration.
    fn type_name(&self) -> &'static str;
    /// Its schema.
    fn schema(&self) -> &Schema;
    /// Reads it. Returns `Value::Unknown` for attributes that cannot be known yet.
    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, ResourceError>;
}

/// Every resource and data source type the engine knows.
#[derive(Clone, Default)]
pub struct Registry {
    resources: BTreeMap<&'static str, Arc<dyn Resource>>,
    data: BTreeMap<&'static str, Arc<dyn DataSource>>,
    checks: Vec<Arc<dyn PlanCheck>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }
    /// Registers a resource type.
    pub fn register(&mut self, r: impl Resource) -> &mut Registry {
        self.resources.insert(r.type_name(), Arc::new(r));
        self
    }
    /// Registers a data source type.
    pub fn register_data(&mut self, d: impl DataSource) -> &mut Registry {
        self.data.insert(d.type_name(), Arc::new(d));
        self
    }
    /// Registers a cross-resource check.
    pub fn register_check(&mut self, c: impl PlanCheck) -> &mut Registry {
        self.checks.push(Arc::new(c));
        self
    }
    /// Every cross-resource check.
    pub fn checks(&self) -> &[Arc<dyn PlanCheck>] {
        &self.checks
    }
    /// The resource type called `name`.
    pub fn resource(&self, name: &str) -> Option<&Arc<dyn Resource>> {
        self.resources.get(name)
    }
    /// The data source type called `name`.
    pub fn data(&self, name: &str) -> Option<&Arc<dyn DataSource>> {
        self.data.get(name)
    }
    /// Every resource type name.
    pub fn resource_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.resources.keys().copied()
    }
    /// Every data source type name.
    pub fn data_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.data.keys().copied()
    }
}

/// `*` matches any run of characters, `?` any one; everything else literally.
pub fn wildcard(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            text.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    // Iterative matching with one backtrack point (linear in practice, no recursion).
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// Helpers for controllers reading their configuration.
pub mod get {
    use std::collections::BTreeMap;
    use veeps_lang::Value;

    /// The strings of a list attribute (others skipped; empty when null).
    pub fn strings(v: &Value, name: &str) -> Vec<String> {
        v.get(name)
            .and_then(Value::as_list)
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A map attribute as strings (numbers and bools written out; others skipped).
    pub fn string_map(v: &Value, name: &str) -> BTreeMap<String, String> {
        v.get(name)
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some((k.clone(), s.clone())),
                        Value::Number(_) | Value::Bool(_) => Some((k.clone(), v.to_string())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A string attribute, or `None` when null.
    pub fn str<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
        v.get(name).and_then(Value::as_str)
    }
    /// A number attribute, or `None` when null.
    pub fn num(v: &Value, name: &str) -> Option<f64> {
        v.get(name).and_then(Value::as_f64)
    }
    /// A bool attribute, or `default` when null.
    pub fn bool_or(v: &Value, name: &str, default: bool) -> bool {
        v.get(name).and_then(Value::as_bool).unwrap_or(default)
    }

    /// The one block of a single-nested block type, if given.
    pub fn block<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        match v.get(name) {
            Some(Value::List(l)) => l.first(),
            Some(Value::Null) | None => None,
            Some(o) => Some(o),
        }
    }

    /// The blocks of a block type, in order.
    pub fn blocks<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
        match v.get(name) {
            Some(Value::List(l)) => l.iter().collect(),
            Some(Value::Null) | None => vec![],
            Some(o) => vec![o],
        }
    }
}
