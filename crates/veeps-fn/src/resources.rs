//! The `function` type.

use crate::{FunctionRecord, Functions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::typed::Observed;
use veeps_resource::{
    get, map_of_strings, AttrError, AttrSchema, Ctx, Registry, ResourceError, Schema, Typed,
};

/// Registers the types.
pub fn register(r: &mut Registry) {
    r.register(FunctionType::new());
    r.register(ScheduleType::new());
    r.register(UrlType::new());
    r.register(AliasType::new());
}

/// `function_alias`: a name for a published version, or for two with weights (a canary).
pub struct AliasType {
    schema: Schema,
}

impl AliasType {
    fn new() -> Self {
        AliasType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::required("function", Type::String).force_new())
                .attr(AttrSchema::required("function_version", Type::String))
                .attr(AttrSchema::computed("arn", Type::String))
                .block(veeps_resource::BlockSchema::new(
                    "routing_config",
                    veeps_resource::Nesting::Single,
                    Schema::new().attr(AttrSchema::required(
                        "additional_version_weights",
                        Type::Map(Box::new(Type::Number)),
                    )),
                )),
        }
    }
}

/// `routing_config` of `function_alias`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutingConfig {
    additional_version_weights: BTreeMap<String, f64>,
}

/// `function_alias`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasConfig {
    name: String,
    function: String,
    function_version: String,
    #[serde(default)]
    routing_config: Option<RoutingConfig>,
}

/// `function_alias`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasState {
    #[serde(flatten)]
    config: AliasConfig,
    arn: String,
}

#[async_trait::async_trait]
impl Typed for AliasType {
    type Config = AliasConfig;
    type State = AliasState;
    const TYPE: &'static str = "function_alias";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(n) = get::str(c, "name") {
            let ok = !n.is_empty()
                && n.len() <= 128
                && !n.chars().all(|c| c.is_ascii_digit())
                && n != "$LATEST"
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                e.push(AttrError::on(
                    "name",
                    format!("\"{n}\" must be letters, digits, - or _, not only digits (those name versions)"),
                ));
            }
        }
        if let Some(Value::Object(w)) =
            get::block(c, "routing_config").and_then(|b| b.get("additional_version_weights"))
        {
            if w.len() > 1 {
                e.push(AttrError::on(
                    "routing_config.additional_version_weights",
                    "an alias routes to at most one additional version",
                ));
            }
            for (v, weight) in w {
                match weight {
                    Value::Number(x) if (0.0..=1.0).contains(&x.to_f64()) => {}
                    Value::Number(x) => e.push(AttrError::on(
                        "routing_config.additional_version_weights",
                        format!("version {v}: {x} is not a share from 0 to 1"),
                    )),
                    _ => {}
                }
            }
        }
        e
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&AliasState>,
        c: &AliasConfig,
    ) -> Result<AliasState, ResourceError> {
        let f = functions(ctx)?;
        let rec = f.get(&c.function).ok_or_else(|| ResourceError::Attr {
            type_name: "function_alias".into(),
            attr: "function".into(),
            message: format!(
                "no function {}; refer to one, like function = function.x.name",
                c.function
            ),
        })?;
        let additional = c
            .routing_config
            .as_ref()
            .and_then(|r| r.additional_version_weights.iter().next())
            .map(|(v, w)| (v.clone(), *w));
        f.put_alias(&crate::AliasRecord {
            function: c.function.clone(),
            name: c.name.clone(),
            version: c.function_version.clone(),
            additional,
        })
        .map_err(|m| ResourceError::Attr {
            type_name: "function_alias".into(),
            attr: "function_version".into(),
            message: m,
        })?;
        Ok(AliasState {
            config: c.clone(),
            arn: format!("{}:{}", rec.arn(), c.name),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &AliasState) -> Result<Observed<AliasState>, ResourceError> {
        Ok(
            match functions(ctx)?.alias(&s.config.function, &s.config.name) {
                Some(_) => Observed::Exists(s.clone()),
                None => Observed::Gone,
            },
        )
    }
    async fn delete(&self, ctx: &Ctx, s: &AliasState) -> Result<(), ResourceError> {
        functions(ctx)?
            .delete_alias(&s.config.function, &s.config.name)
            .map_err(ResourceError::Failed)
    }
}

/// `function_url`: an HTTP address that invokes a function.
pub struct UrlType {
    schema: Schema,
}

impl UrlType {
    fn new() -> Self {
        UrlType {
            schema: Schema::new()
                .attr(AttrSchema::required("function", Type::String).force_new())
                .attr(
                    AttrSchema::optional("authorization_type", Type::String)
                        .default(Value::string("NONE"))
                        .describe("NONE (public) or AWS_IAM (SigV4-signed by a caller allowed lambda:InvokeFunctionUrl)"),
                )
                .attr(AttrSchema::computed("function_url", Type::String)),
        }
    }
}

/// `function_url`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlConfig {
    function: String,
    authorization_type: String,
}

/// `function_url`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlState {
    #[serde(flatten)]
    config: UrlConfig,
    function_url: String,
}

#[async_trait::async_trait]
impl Typed for UrlType {
    type Config = UrlConfig;
    type State = UrlState;
    const TYPE: &'static str = "function_url";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        match get::str(c, "authorization_type") {
            Some(a) if a != "NONE" && a != "AWS_IAM" => vec![AttrError::on(
                "authorization_type",
                format!("\"{a}\" is neither NONE nor AWS_IAM"),
            )],
            _ => vec![],
        }
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&UrlState>,
        c: &UrlConfig,
    ) -> Result<UrlState, ResourceError> {
        let f = functions(ctx)?;
        match f.get(&c.function) {
            Some(r) if r.env == ctx.env => {}
            _ => {
                return Err(ResourceError::Attr {
                    type_name: "function_url".into(),
                    attr: "function".into(),
                    message: format!(
                        "no function {} in this environment; refer to one, like function = function.x.name",
                        c.function
                    ),
                })
            }
        }
        f.put_url(&crate::url::UrlConfig {
            function: c.function.clone(),
            auth: c.authorization_type.clone(),
        })
        .map_err(ResourceError::Failed)?;
        Ok(UrlState {
            config: c.clone(),
            function_url: f.url_of(&c.function),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &UrlState) -> Result<Observed<UrlState>, ResourceError> {
        Ok(match functions(ctx)?.url(&s.config.function) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &UrlState) -> Result<(), ResourceError> {
        functions(ctx)?
            .delete_url(&s.config.function)
            .map_err(ResourceError::Failed)
    }
}

/// `schedule`: invokes a function at a rate or on a cron expression, as EventBridge does.
pub struct ScheduleType {
    schema: Schema,
}

impl ScheduleType {
    fn new() -> Self {
        ScheduleType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(
                    AttrSchema::required("expression", Type::String)
                        .describe("rate(5 minutes), or cron(MIN HOUR DOM MONTH DOW YEAR) in UTC"),
                )
                .attr(AttrSchema::required("function", Type::String))
                .attr(
                    AttrSchema::optional("input", Type::String)
                        .describe("the event (JSON); without it, EventBridge's scheduled event"),
                )
                .attr(AttrSchema::optional("enabled", Type::Bool).default(Value::Bool(true)))
                .attr(AttrSchema::computed("arn", Type::String)),
        }
    }
}

/// `schedule`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleConfig {
    name: String,
    expression: String,
    function: String,
    #[serde(default)]
    input: Option<String>,
    enabled: bool,
}

/// `schedule`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleState {
    #[serde(flatten)]
    config: ScheduleConfig,
    arn: String,
}

#[async_trait::async_trait]
impl Typed for ScheduleType {
    type Config = ScheduleConfig;
    type State = ScheduleState;
    const TYPE: &'static str = "schedule";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(x) = get::str(c, "expression") {
            if let Err(m) = crate::schedule::parse(x) {
                e.push(AttrError::on("expression", m));
            }
        }
        if let Some(i) = get::str(c, "input") {
            if serde_json::from_str::<serde_json::Value>(i).is_err() {
                e.push(AttrError::on(
                    "input",
                    "is not JSON; write it with jsonencode({...})",
                ));
            }
        }
        if let Some(n) = get::str(c, "name") {
            if !valid_name(n) {
                e.push(AttrError::on(
                    "name",
                    format!("\"{n}\" must be 1 to 64 letters, digits, - or _"),
                ));
            }
        }
        e
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&ScheduleState>,
        c: &ScheduleConfig,
    ) -> Result<ScheduleState, ResourceError> {
        let f = functions(ctx)?;
        if f.get(&c.function).is_none() {
            return Err(ResourceError::Attr {
                type_name: "schedule".into(),
                attr: "function".into(),
                message: format!(
                    "no function {}; refer to one, like function = function.x.name",
                    c.function
                ),
            });
        }
        f.put_schedule(crate::schedule::ScheduleRecord {
            env: ctx.env.clone(),
            name: c.name.clone(),
            expression: c.expression.clone(),
            function: c.function.clone(),
            input: c.input.clone(),
            enabled: c.enabled,
            last: veeps_obs::service::now(),
        })
        .map_err(ResourceError::Failed)?;
        Ok(ScheduleState {
            config: c.clone(),
            arn: format!("arn:veeps:events:{}:rule/{}", ctx.env, c.name),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &ScheduleState,
    ) -> Result<Observed<ScheduleState>, ResourceError> {
        Ok(match functions(ctx)?.schedule(&ctx.env, &s.config.name) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &ScheduleState) -> Result<(), ResourceError> {
        functions(ctx)?
            .delete_schedule(&ctx.env, &s.config.name)
            .map_err(ResourceError::Failed)
    }
}

fn functions(ctx: &Ctx) -> Result<&Arc<Functions>, ResourceError> {
    ctx.service::<Arc<Functions>>("functions")
}

/// Runtimes veeps runs.
pub const RUNTIMES: &[&str] = &["provided", "provided.al2", "provided.al2023", "python3.11"];

/// `function`.
pub struct FunctionType {
    schema: Schema,
}

impl Default for FunctionType {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionType {
    /// The type with its schema.
    pub fn new() -> Self {
        FunctionType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String))
                .attr(AttrSchema::optional("code", Type::String).describe(
                    "a directory or a zip file on the server's machine; relative to where the server started",
                ))
                .attr(AttrSchema::optional("image", Type::String).describe(
                    "an image (image.NAME.id) whose files are the code and whose entrypoint starts the runtime, instead of code",
                ))
                .attr(AttrSchema::optional("runtime", Type::String).default(Value::string("provided")))
                .attr(AttrSchema::optional("handler", Type::String).default(Value::string("bootstrap")))
                .attr(AttrSchema::optional("memory", Type::Number).default(128.0))
                .attr(AttrSchema::optional("timeout", Type::Number).default(3.0))
                .attr(AttrSchema::optional("ephemeral_storage", Type::Number).default(512.0))
                .attr(AttrSchema::optional("environment", map_of_strings()))
                .attr(
                    AttrSchema::optional("secrets", map_of_strings())
                        .sensitive()
                        .describe("variables decrypted only when an environment starts: `kmscrypt::` values (`veeps kms encrypt`) or sensitive values"),
                )
                .attr(AttrSchema::optional("reserved_concurrency", Type::Number))
                .attr(AttrSchema::optional("role", Type::String))
                .attr(AttrSchema::optional("maximum_retry_attempts", Type::Number).default(2.0))
                .attr(AttrSchema::optional("dead_letter_bucket", Type::String).describe(
                    "a bucket where asynchronous invocations that failed every attempt are written",
                ))
                .attr(AttrSchema::optional("dead_letter_topic", Type::String).describe(
                    "a topic of the environment told of asynchronous invocations that failed every attempt",
                ))
                .attr(AttrSchema::optional("publish", Type::Bool).default(Value::Bool(false)).describe(
                    "publish a new version whenever the code or the configuration changes",
                ))
                .attr(AttrSchema::optional("subnets", veeps_resource::list_of_strings()).describe(
                    "subnet ids: environments run in the VPC, as its security groups allow",
                ))
                .attr(AttrSchema::optional("security_groups", veeps_resource::list_of_strings()))
                .attr(AttrSchema::computed("arn", Type::String))
                .attr(AttrSchema::computed("version", Type::String))
                .attr(AttrSchema::computed("qualified_arn", Type::String))
                .attr(AttrSchema::computed("code_sha256", Type::String))
                .attr(AttrSchema::computed("code_size", Type::Number))
                .attr(AttrSchema::computed("last_modified", Type::String)),
        }
    }
}

/// `function`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionConfig {
    name: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    image: Option<String>,
    runtime: String,
    handler: String,
    memory: u64,
    timeout: u64,
    ephemeral_storage: u64,
    #[serde(default)]
    environment: Option<BTreeMap<String, String>>,
    #[serde(default)]
    secrets: Option<BTreeMap<String, String>>,
    #[serde(default)]
    reserved_concurrency: Option<u64>,
    #[serde(default)]
    role: Option<String>,
    maximum_retry_attempts: u32,
    #[serde(default)]
    dead_letter_bucket: Option<String>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    publish: bool,
    #[serde(default)]
    subnets: Option<Vec<String>>,
    #[serde(default)]
    security_groups: Option<Vec<String>>,
}

/// `function`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionState {
    #[serde(flatten)]
    config: FunctionConfig,
    arn: String,
    version: String,
    qualified_arn: String,
    code_sha256: String,
    code_size: u64,
    last_modified: String,
}

fn whole(c: &Value, attr: &str, lo: f64, hi: f64, why: &str, e: &mut Vec<AttrError>) {
    if let Some(n) = get::num(c, attr) {
        if n.fract() != 0.0 || n < lo || n > hi {
            e.push(AttrError::on(
                attr,
                format!("is {n}; it must be a whole number from {lo} to {hi} ({why})"),
            ));
        }
    }
}

/// Variables a function may not set (Lambda's reserved ones).
const RESERVED_VARS: &[&str] = &[
    "_HANDLER",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Whether `n` is a valid function name (Lambda's: letters, digits, `-`, `_`; 1 to 64).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn code_path(c: &str) -> Result<PathBuf, ResourceError> {
    let p = PathBuf::from(c);
    let p = if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    };
    std::fs::canonicalize(&p).map_err(|e| ResourceError::Attr {
        type_name: "function".into(),
        attr: "code".into(),
        message: format!("{}: {e}", p.display()),
    })
}

#[async_trait::async_trait]
impl Typed for FunctionType {
    type Config = FunctionConfig;
    type State = FunctionState;
    const TYPE: &'static str = "function";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(n) = get::str(c, "name") {
            if !valid_name(n) {
                e.push(AttrError::on(
                    "name",
                    format!("\"{n}\" must be 1 to 64 letters, digits, - or _"),
                ));
            }
        }
        let given = |k: &str| c.get(k).is_some_and(|v| !matches!(v, Value::Null));
        if given("code") == given("image") {
            e.push(AttrError::on(
                "code",
                "give either code (a directory or a zip) or image (image.NAME.id)",
            ));
        }
        if let Some(r) = get::str(c, "runtime") {
            if !RUNTIMES.contains(&r) {
                e.push(AttrError::on(
                    "runtime",
                    format!(
                        "\"{r}\" is not a runtime veeps runs; use one of {}",
                        RUNTIMES.join(", ")
                    ),
                ));
            }
        }
        whole(c, "memory", 128.0, 10240.0, "MB", &mut e);
        whole(c, "timeout", 1.0, 900.0, "seconds", &mut e);
        whole(c, "ephemeral_storage", 512.0, 10240.0, "MB of /tmp", &mut e);
        whole(
            c,
            "maximum_retry_attempts",
            0.0,
            2.0,
            "retries of a failed asynchronous invocation",
            &mut e,
        );
        whole(
            c,
            "reserved_concurrency",
            0.0,
            1000.0,
            "concurrent executions",
            &mut e,
        );
        let secret_names: Vec<String> = match c.get("secrets") {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            _ => vec![],
        };
        for k in &secret_names {
            if let Some(Value::Object(vars)) = c.get("environment") {
                if vars.contains_key(k) {
                    e.push(AttrError::on(
                        "secrets",
                        format!("{k} is in environment too; a variable is one or the other"),
                    ));
                }
            }
        }
        let mut all_vars: Vec<(String, &str)> = secret_names
            .iter()
            .map(|k| (k.clone(), "secrets"))
            .collect();
        if let Some(Value::Object(vars)) = c.get("environment") {
            all_vars.extend(vars.keys().map(|k| (k.clone(), "environment")));
        }
        for (k, attr) in all_vars {
            let ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                e.push(AttrError::on(
                    attr,
                    format!("\"{k}\" is not a variable name: a letter, then letters, digits or _"),
                ));
            } else if RESERVED_VARS.contains(&k.as_str()) {
                e.push(AttrError::on(
                    attr,
                    format!("{k} is set by the runtime; choose another name"),
                ));
            }
        }
        e
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        prior: Option<&FunctionState>,
        c: &FunctionConfig,
    ) -> Result<FunctionState, ResourceError> {
        let f = functions(ctx)?;
        if let Some(role) = &c.role {
            if !f.role_exists(role) {
                return Err(ResourceError::Attr {
                    type_name: "function".into(),
                    attr: "role".into(),
                    message: format!("no role {role}; declare it with an iam_role"),
                });
            }
        }
        let (pkg, entrypoint) = match (&c.code, &c.image) {
            (_, Some(id)) => {
                let (entrypoint, _) = f.image(id).ok_or_else(|| ResourceError::Attr {
                    type_name: "function".into(),
                    attr: "image".into(),
                    message: format!("no built image {id}; refer to one, like image = image.x.id"),
                })?;
                use base64::Engine;
                use sha2::Digest;
                let sha = base64::engine::general_purpose::STANDARD
                    .encode(sha2::Sha256::digest(id.as_bytes()));
                (
                    crate::code::Package {
                        sha256: sha,
                        size: 0,
                    },
                    entrypoint,
                )
            }
            (Some(code), None) => (
                crate::code::store(&code_path(code)?, &f.code_dir()).map_err(|m| {
                    ResourceError::Attr {
                        type_name: "function".into(),
                        attr: "code".into(),
                        message: m,
                    }
                })?,
                vec![],
            ),
            (None, None) => {
                return Err(ResourceError::Attr {
                    type_name: "function".into(),
                    attr: "code".into(),
                    message: "give either code or image".into(),
                })
            }
        };
        // A renamed function is another function.
        if let Some(p) = prior {
            if p.config.name != c.name {
                f.delete(&p.config.name)
                    .await
                    .map_err(ResourceError::Failed)?;
            }
        }
        let rec = FunctionRecord {
            name: c.name.clone(),
            env: ctx.env.clone(),
            address: ctx.address.clone(),
            runtime: c.runtime.clone(),
            handler: c.handler.clone(),
            memory_mb: c.memory,
            timeout_secs: c.timeout,
            tmp_mb: c.ephemeral_storage,
            environment: c.environment.clone().unwrap_or_default(),
            reserved_concurrency: c.reserved_concurrency,
            role: c.role.clone(),
            code_sha256: pkg.sha256.clone(),
            code_size: pkg.size,
            uid: 0,
            last_modified: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            revision: 0,
            max_retry_attempts: c.maximum_retry_attempts,
            dead_letter_bucket: c.dead_letter_bucket.clone(),
            dead_letter_topic: c.dead_letter_topic.clone(),
            version: "$LATEST".into(),
            subnets: c.subnets.clone().unwrap_or_default(),
            security_groups: c.security_groups.clone().unwrap_or_default(),
            secrets: f
                .seal(&ctx.env, c.secrets.as_ref().unwrap_or(&BTreeMap::new()))
                .map_err(|m| ResourceError::Attr {
                    type_name: "function".into(),
                    attr: "secrets".into(),
                    message: m,
                })?,
            image: c.image.clone(),
            entrypoint,
            secrets_digest: {
                use sha2::Digest;
                match &c.secrets {
                    Some(m) if !m.is_empty() => hex::encode(sha2::Sha256::digest(
                        serde_json::to_string(m).unwrap_or_default().as_bytes(),
                    )),
                    _ => String::new(),
                }
            },
        };
        let rec = f.put(rec).await.map_err(ResourceError::Failed)?;
        // The latest published version (or $LATEST, never publishing).
        let version = if c.publish {
            f.publish(&c.name).map_err(ResourceError::Failed)?
        } else {
            f.versions(&c.name)
                .last()
                .map(|v| v.version.clone())
                .unwrap_or_else(|| "$LATEST".into())
        };
        Ok(FunctionState {
            config: c.clone(),
            arn: rec.arn(),
            qualified_arn: format!("{}:{version}", rec.arn()),
            version,
            code_sha256: rec.code_sha256,
            code_size: rec.code_size,
            last_modified: rec.last_modified,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &FunctionState,
    ) -> Result<Observed<FunctionState>, ResourceError> {
        let f = functions(ctx)?;
        let Some(rec) = f.get(&s.config.name) else {
            return Ok(Observed::Gone);
        };
        let mut now = s.clone();
        // Changed code on disk shows as drift.
        if let Some(code) = &s.config.code {
            let on_disk = code_path(code)
                .ok()
                .and_then(|p| crate::code::identify(&p).ok());
            if on_disk.is_some_and(|p| p.sha256 != rec.code_sha256) {
                now.config.code = Some("(changed on disk)".into());
            }
        }
        now.code_sha256 = rec.code_sha256;
        Ok(Observed::Exists(now))
    }
    async fn delete(&self, ctx: &Ctx, s: &FunctionState) -> Result<(), ResourceError> {
        functions(ctx)?
            .delete(&s.config.name)
            .await
            .map_err(ResourceError::Failed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_and_structs_agree() {
        veeps_resource::typed::check_schema(&super::FunctionType::new()).unwrap();
        veeps_resource::typed::check_schema(&super::ScheduleType::new()).unwrap();
        veeps_resource::typed::check_schema(&super::UrlType::new()).unwrap();
        veeps_resource::typed::check_schema(&super::AliasType::new()).unwrap();
    }
}
