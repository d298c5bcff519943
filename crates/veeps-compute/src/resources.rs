//! The compute resource types: `image`, `launch_template`, `autoscaling_group` and
//! `scaling_policy`, plus the plan check that every image a template names exists.

use crate::group::{Compute, GroupSpec, HealthCheck, Refresh, Template};
use crate::image::{ImageSpec, Images};
use crate::policy::{Policies, Policy, PolicyKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::strings;
use veeps_resource::typed::decode;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, CheckError, Ctx, Nesting, Observed, PlanCheck,
    Planned, Registry, ResourceError, Schema, Typed,
};
use veeps_resource::{list_of_strings as list_str, map_of_strings as map_str};

/// Registers the compute types; `images` lets plans check image ids.
pub fn register(r: &mut Registry, images: Option<Arc<Images>>) {
    r.register(ImageType::new());
    r.register(LaunchTemplateType::new());
    r.register(GroupType::new());
    r.register(PolicyType::new());
    r.register_check(ComputeCheck { images });
}

fn compute(ctx: &Ctx) -> Result<&Arc<Compute>, ResourceError> {
    ctx.service::<Arc<Compute>>("compute")
}

fn policies(ctx: &Ctx) -> Result<&Arc<Policies>, ResourceError> {
    ctx.service::<Arc<Policies>>("scaling")
}

fn failed(e: impl std::fmt::Display) -> ResourceError {
    ResourceError::Failed(e.to_string())
}

fn whole(c: &Value, attr: &str, lo: f64, hi: f64, e: &mut Vec<AttrError>) {
    if let Some(n) = get::num(c, attr) {
        if n.fract() != 0.0 || n < lo || n > hi {
            e.push(AttrError::on(
                attr,
                format!("is {n}; it must be a whole number from {lo} to {hi}"),
            ));
        }
    }
}

/// `image`: a built, content-addressed image.
pub struct ImageType {
    schema: Schema,
}

impl Default for ImageType {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageType {
    /// The type with its schema.
    pub fn new() -> Self {
        ImageType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String))
                .attr(AttrSchema::required("source", Type::String).describe(
                    "a directory on the server's machine; relative to where the server started",
                ))
                .attr(AttrSchema::optional("build", list_str()))
                .attr(AttrSchema::optional("files", list_str()))
                .attr(AttrSchema::required("entrypoint", list_str()))
                .attr(AttrSchema::optional("env", map_str()))
                .attr(AttrSchema::optional("build_timeout", Type::Number).default(600.0))
                .attr(AttrSchema::optional("egress", list_str()).describe(
                    "HOST:PORTs build steps may connect to (package registries); without it builds have no network",
                ))
                .attr(AttrSchema::optional("auto_update", Type::String).describe(
                    "a cron expression (UTC): rebuild then, and roll a changed image out to the groups running this one",
                ))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("version", Type::Number)),
        }
    }
}

/// `image`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    name: String,
    source: String,
    build: Option<Vec<String>>,
    files: Option<Vec<String>>,
    entrypoint: Vec<String>,
    env: Option<BTreeMap<String, String>>,
    build_timeout: u64,
    #[serde(default)]
    egress: Option<Vec<String>>,
    #[serde(default)]
    auto_update: Option<String>,
}

/// `image`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageState {
    #[serde(flatten)]
    config: ImageConfig,
    id: String,
    version: u64,
}

fn image_spec(c: &ImageConfig) -> Result<ImageSpec, ResourceError> {
    let source = PathBuf::from(&c.source);
    let source = if source.is_absolute() {
        source
    } else {
        std::env::current_dir()?.join(source)
    };
    let source = std::fs::canonicalize(&source)
        .map_err(|e| ResourceError::Invalid(format!("source {}: {e}", source.display())))?;
    Ok(ImageSpec {
        name: c.name.clone(),
        source,
        build: c.build.clone().unwrap_or_default(),
        files: c.files.clone().unwrap_or_default(),
        entrypoint: c.entrypoint.clone(),
        env: c.env.clone().unwrap_or_default(),
        timeout_secs: c.build_timeout,
        egress: c.egress.clone().unwrap_or_default(),
    })
}

/// Keeps the image's auto-update registration in step with its configuration.
fn register_update(ctx: &Ctx, c: &ImageConfig) -> Result<(), ResourceError> {
    let comp = compute(ctx)?;
    match &c.auto_update {
        Some(cron) => comp
            .updates
            .register(&ctx.env, &ctx.address, image_spec(c)?, cron)
            .map_err(failed),
        None => comp
            .updates
            .unregister(&ctx.env, &ctx.address)
            .map_err(failed),
    }
}

#[async_trait::async_trait]
impl Typed for ImageType {
    type Config = ImageConfig;
    type State = ImageState;
    const TYPE: &'static str = "image";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if c.get("entrypoint")
            .and_then(Value::as_list)
            .is_some_and(|l| l.is_empty())
        {
            e.push(AttrError::on(
                "entrypoint",
                "give the command that starts an instance, like [\"./app\"]",
            ));
        }
        for f in strings(c, "files") {
            if f.starts_with('/') || f.split('/').any(|p| p == "..") || f.is_empty() {
                e.push(AttrError::on(
                    "files",
                    format!("\"{f}\" must be a relative path inside the build directory"),
                ));
            }
        }
        whole(c, "build_timeout", 1.0, 86_400.0, &mut e);
        if let Err(m) = crate::egress::parse_all(&strings(c, "egress")) {
            e.push(AttrError::on("egress", m));
        }
        if let Some(cron) = get::str(c, "auto_update") {
            if let Err(m) = crate::policy::Cron::parse(cron) {
                e.push(AttrError::on(
                    "auto_update",
                    format!("{m}; for nightly at 03:00 UTC write \"0 3 * * *\""),
                ));
            }
        }
        e
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&ImageState>,
        c: &ImageConfig,
    ) -> Result<ImageState, ResourceError> {
        let img = compute(ctx)?
            .images
            .build(&image_spec(c)?)
            .await
            .map_err(failed)?;
        register_update(ctx, c)?;
        Ok(ImageState {
            config: c.clone(),
            id: img.id,
            version: u64::from(img.version),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &ImageState) -> Result<Observed<ImageState>, ResourceError> {
        let images = &compute(ctx)?.images;
        let Some(img) = images.get(&s.id) else {
            return Ok(Observed::Gone);
        };
        // An auto-update's newer build of the same inputs is what the image now is.
        let mut now = s.clone();
        if let Some(newer) = images.latest_of(img.lineage()) {
            now.id = newer.id;
            now.version = u64::from(newer.version);
        }
        // A changed source shows as drift: the inputs no longer match.
        match image_spec(&s.config).and_then(|sp| crate::image::image_id(&sp).map_err(failed)) {
            Ok(inputs) if inputs != img.lineage() => {
                now.config.source = "(changed on disk)".into();
            }
            _ => {}
        }
        Ok(Observed::Exists(now))
    }
    async fn delete(&self, ctx: &Ctx, _s: &ImageState) -> Result<(), ResourceError> {
        // Images stay in the store (versions are kept; instances may still run them).
        compute(ctx)?
            .updates
            .unregister(&ctx.env, &ctx.address)
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &ImageState) -> Result<ImageState, ResourceError> {
        if compute(ctx)?.images.get(&s.id).is_some() {
            register_update(ctx, &s.config)?;
            return Ok(s.clone());
        }
        self.ensure(ctx, Some(s), &s.config).await
    }
}

/// `launch_template`: what instances run and with what limits.
pub struct LaunchTemplateType {
    schema: Schema,
}

impl Default for LaunchTemplateType {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchTemplateType {
    /// The type with its schema.
    pub fn new() -> Self {
        LaunchTemplateType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String))
                .attr(AttrSchema::required("image_id", Type::String))
                .attr(
                    AttrSchema::optional("cpu", Type::Number)
                        .default(1.0)
                        .describe("CPUs, like 0.5"),
                )
                .attr(
                    AttrSchema::optional("memory", Type::Number)
                        .default(512.0)
                        .describe("MiB"),
                )
                .attr(AttrSchema::optional("pids", Type::Number).default(512.0))
                .attr(AttrSchema::optional("environment", map_str()))
                .attr(AttrSchema::optional("port", Type::Number))
                .attr(AttrSchema::optional("health_check_path", Type::String))
                .attr(AttrSchema::optional("database_url", Type::String).sensitive())
                .attr(AttrSchema::optional("internal_lb_url", Type::String))
                .attr(
                    AttrSchema::optional("secrets", map_str())
                        .sensitive()
                        .describe("environment variables decrypted only when an instance starts: `kmscrypt::` values (`veeps kms encrypt`) or sensitive values"),
                )
                .attr(AttrSchema::optional("iam_role", Type::String).describe(
                    "an iam_role whose temporary credentials instances get, renewed before they expire (through $AWS_CONFIG_FILE's credential_process)",
                ))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(
                    AttrSchema::computed("latest_version", Type::String)
                        .describe("changes with every change of what instances run"),
                ),
        }
    }
}

/// `launch_template`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateConfig {
    name: String,
    image_id: String,
    cpu: f64,
    memory: u64,
    pids: u64,
    environment: Option<BTreeMap<String, String>>,
    port: Option<u16>,
    health_check_path: Option<String>,
    database_url: Option<String>,
    internal_lb_url: Option<String>,
    secrets: Option<BTreeMap<String, String>>,
    #[serde(default)]
    iam_role: Option<String>,
}

/// `launch_template`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateState {
    #[serde(flatten)]
    config: TemplateConfig,
    id: String,
    latest_version: String,
}

fn template(ctx: &Ctx, c: &TemplateConfig) -> Template {
    let mut env = c.environment.clone().unwrap_or_default();
    if let Some(u) = &c.database_url {
        env.insert("DATABASE_URL".into(), u.clone());
    }
    if let Some(u) = &c.internal_lb_url {
        env.insert("INTERNAL_LB_URL".into(), u.clone());
    }
    Template {
        id: veeps_net::resource_id("lt", &ctx.env, &ctx.address),
        image_id: c.image_id.clone(),
        cpu: c.cpu,
        memory_mb: c.memory,
        pids: c.pids,
        env,
        port: c.port,
        health_check_path: c.health_check_path.clone(),
        secrets_digest: Template::digest_of(c.secrets.as_ref().unwrap_or(&BTreeMap::new())),
        secrets: c.secrets.clone().unwrap_or_default(),
        iam_role: c.iam_role.clone(),
    }
}

/// `t` with every secret a `kmscrypt::` value of `ctx`'s environment: plain ones (from
/// sensitive values) are sealed now, encrypted ones are checked to decrypt there.
fn sealed(ctx: &Ctx, comp: &Compute, mut t: Template) -> Result<Template, ResourceError> {
    if let Some(role) = &t.iam_role {
        if !comp.role_exists(role) {
            return Err(ResourceError::Invalid(format!(
                "launch_template.iam_role: no iam_role named {role}; declare it and refer to it (iam_role = iam_role.x.name) so that it is created first"
            )));
        }
    }
    for (name, v) in t.secrets.iter_mut() {
        if veeps_kms::is_kmscrypt(v) {
            comp.kms.decrypt_value(&ctx.env, v).map_err(|_| {
                ResourceError::Invalid(format!(
                    "launch_template.secrets.{name}: this kmscrypt:: value was not encrypted for environment {} (use `veeps kms encrypt {}`)",
                    ctx.env, ctx.env
                ))
            })?;
        } else {
            *v = comp
                .kms
                .encrypt_value(&ctx.env, v)
                .map_err(|e| ResourceError::part("sealing a secret", e))?;
        }
    }
    Ok(t)
}

#[async_trait::async_trait]
impl Typed for LaunchTemplateType {
    type Config = TemplateConfig;
    type State = TemplateState;
    const TYPE: &'static str = "launch_template";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(v) = get::num(c, "cpu") {
            if !(0.01..=256.0).contains(&v) {
                e.push(AttrError::on(
                    "cpu",
                    format!("is {v}; give CPUs from 0.01 to 256"),
                ));
            }
        }
        whole(c, "memory", 16.0, 1_048_576.0, &mut e);
        whole(c, "pids", 8.0, 4_194_304.0, &mut e);
        whole(c, "port", 1.0, 65_535.0, &mut e);
        if let Some(p) = get::str(c, "health_check_path") {
            if !p.starts_with('/') || p.contains(char::is_whitespace) {
                e.push(AttrError::on(
                    "health_check_path",
                    format!("\"{p}\" must be a path like /health"),
                ));
            }
        }
        if let Some(Value::Object(secrets)) = c.get("secrets") {
            for name in secrets.keys() {
                let ok = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ok {
                    e.push(AttrError::on(
                        "secrets",
                        format!("\"{name}\" is not an environment variable name (letters, digits and _)"),
                    ));
                }
            }
        }
        if let Some(id) = get::str(c, "image_id") {
            if !id.starts_with("img-") {
                e.push(AttrError::on(
                    "image_id",
                    format!("\"{id}\" is not an image id (img-...); use image.NAME.id"),
                ));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        let version = if c.has_unknown() {
            Value::Unknown
        } else {
            match decode::<TemplateConfig>(Self::TYPE, c) {
                Ok(c) => Value::String(template(ctx, &c).fingerprint()),
                Err(_) => Value::Unknown,
            }
        };
        [
            (
                "id".to_string(),
                Value::String(veeps_net::resource_id("lt", &ctx.env, &ctx.address)),
            ),
            ("latest_version".to_string(), version),
        ]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&TemplateState>,
        c: &TemplateConfig,
    ) -> Result<TemplateState, ResourceError> {
        let comp = compute(ctx)?;
        let t = sealed(ctx, comp, template(ctx, c))?;
        if comp.images.get(&t.image_id).is_none() {
            return Err(ResourceError::Invalid(format!(
                "image {} is not in the image store (see `veeps image list`)",
                t.image_id
            )));
        }
        comp.put_template(&t).map_err(failed)?;
        Ok(TemplateState {
            config: c.clone(),
            latest_version: t.fingerprint(),
            id: t.id,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &TemplateState,
    ) -> Result<Observed<TemplateState>, ResourceError> {
        Ok(match compute(ctx)?.template(&s.id) {
            // An auto-update moved it to a newer build of its image.
            Some(t) if t.image_id != s.config.image_id => {
                let mut now = s.clone();
                now.config.image_id = t.image_id;
                now.latest_version = template(ctx, &now.config).fingerprint();
                Observed::Exists(now)
            }
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &TemplateState) -> Result<(), ResourceError> {
        compute(ctx)?.delete_template(&s.id).map_err(failed)
    }
    async fn reconcile(
        &self,
        ctx: &Ctx,
        s: &TemplateState,
    ) -> Result<TemplateState, ResourceError> {
        // Recorded as it was, even if its image has gone since (instances keep running).
        let comp = compute(ctx)?;
        comp.put_template(&sealed(ctx, comp, template(ctx, &s.config))?)
            .map_err(failed)?;
        Ok(s.clone())
    }
}

/// `autoscaling_group`.
pub struct GroupType {
    schema: Schema,
}

impl Default for GroupType {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupType {
    /// The type with its schema.
    pub fn new() -> Self {
        GroupType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(
                    AttrSchema::required("launch_template", Type::String)
                        .describe("a launch_template's id"),
                )
                .attr(
                    AttrSchema::optional("launch_template_version", Type::String)
                        .describe("launch_template.NAME.latest_version: a change rolls out"),
                )
                .attr(AttrSchema::required("subnets", list_str()))
                .attr(AttrSchema::optional("security_groups", list_str()))
                .attr(AttrSchema::required("min_size", Type::Number))
                .attr(AttrSchema::required("max_size", Type::Number))
                .attr(AttrSchema::optional("desired_capacity", Type::Number))
                .attr(AttrSchema::optional("health_check_type", Type::String).default("process"))
                .attr(
                    AttrSchema::optional("health_check_grace_period", Type::Number).default(300.0),
                )
                .attr(AttrSchema::optional("target_group_arns", list_str()))
                .attr(AttrSchema::optional("termination_policies", list_str()))
                .attr(AttrSchema::computed("id", Type::String))
                .block(BlockSchema {
                    name: "instance_refresh",
                    nesting: Nesting::Single,
                    schema: Schema::new()
                        .attr(
                            AttrSchema::optional("min_healthy_percentage", Type::Number)
                                .default(90.0),
                        )
                        .attr(
                            AttrSchema::optional("create_before_destroy", Type::Bool).default(true),
                        )
                        .attr(
                            AttrSchema::optional("timeout", Type::Number)
                                .default(120.0)
                                .describe("seconds new instances have to become healthy"),
                        ),
                    force_new: false,
                    min_items: 0,
                }),
        }
    }
}

const TERMINATION: [&str; 4] = [
    "Default",
    "OldestInstance",
    "NewestInstance",
    "OldestLaunchTemplate",
];

/// `instance_refresh` of `autoscaling_group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshConfig {
    min_healthy_percentage: u32,
    create_before_destroy: bool,
    timeout: u64,
}

/// `autoscaling_group`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupConfig {
    name: String,
    launch_template: String,
    launch_template_version: Option<String>,
    subnets: Vec<String>,
    security_groups: Option<Vec<String>>,
    min_size: u32,
    max_size: u32,
    desired_capacity: Option<u32>,
    health_check_type: String,
    health_check_grace_period: u64,
    target_group_arns: Option<Vec<String>>,
    termination_policies: Option<Vec<String>>,
    instance_refresh: Option<RefreshConfig>,
}

/// `autoscaling_group`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupState {
    #[serde(flatten)]
    config: GroupConfig,
    id: String,
}

async fn group_spec(ctx: &Ctx, c: &GroupConfig) -> Result<GroupSpec, ResourceError> {
    let comp = compute(ctx)?;
    let lt = &c.launch_template;
    let template = comp.template(lt).ok_or_else(|| {
        ResourceError::Invalid(format!(
            "launch template {lt} does not exist; use launch_template.NAME.id"
        ))
    })?;
    let mut extra_env = BTreeMap::new();
    if let Some(s) = c.subnets.first() {
        let net = comp.net();
        if let Ok(sub) = net.subnet(s) {
            if let Ok(vpc) = net.vpc(&sub.vpc_id) {
                extra_env.insert("VEEPS_VPC_NAME".to_string(), vpc.name.clone());
            }
        }
    }
    Ok(GroupSpec {
        id: veeps_net::resource_id("asg", &ctx.env, &ctx.address),
        env: ctx.env.clone(),
        name: c.name.clone(),
        template,
        subnets: c.subnets.clone(),
        security_groups: c.security_groups.clone().unwrap_or_default(),
        min_size: c.min_size,
        max_size: c.max_size,
        health_check: if c.health_check_type == "lb" {
            HealthCheck::Lb
        } else {
            HealthCheck::Process
        },
        grace_secs: c.health_check_grace_period,
        target_groups: c.target_group_arns.clone().unwrap_or_default(),
        termination_policies: c.termination_policies.clone().unwrap_or_default(),
        refresh: match &c.instance_refresh {
            Some(r) => Refresh {
                min_healthy_percentage: r.min_healthy_percentage,
                create_before_destroy: r.create_before_destroy,
                timeout_secs: r.timeout,
            },
            None => Refresh::default(),
        },
        extra_env,
    })
}

#[async_trait::async_trait]
impl Typed for GroupType {
    type Config = GroupConfig;
    type State = GroupState;
    const TYPE: &'static str = "autoscaling_group";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        whole(c, "min_size", 0.0, 1000.0, &mut e);
        whole(c, "max_size", 0.0, 1000.0, &mut e);
        whole(c, "desired_capacity", 0.0, 1000.0, &mut e);
        whole(c, "health_check_grace_period", 0.0, 7200.0, &mut e);
        let (min, max) = (get::num(c, "min_size"), get::num(c, "max_size"));
        if let (Some(a), Some(b)) = (min, max) {
            if a > b {
                e.push(AttrError::on(
                    "min_size",
                    format!("is {a}, more than max_size ({b})"),
                ));
            }
        }
        if let Some(d) = get::num(c, "desired_capacity") {
            if min.is_some_and(|a| d < a) || max.is_some_and(|b| d > b) {
                e.push(AttrError::on(
                    "desired_capacity",
                    format!("is {d}; it must lie between min_size and max_size"),
                ));
            }
        }
        if let Some(t) = get::str(c, "health_check_type") {
            if t != "process" && t != "lb" {
                e.push(AttrError::on(
                    "health_check_type",
                    format!("\"{t}\" must be \"process\" or \"lb\""),
                ));
            }
        }
        for p in strings(c, "termination_policies") {
            if !TERMINATION.contains(&p.as_str()) {
                e.push(AttrError::on(
                    "termination_policies",
                    format!("\"{p}\" must be one of {}", TERMINATION.join(", ")),
                ));
            }
        }
        if c.get("subnets")
            .and_then(Value::as_list)
            .is_some_and(|l| l.is_empty())
        {
            e.push(AttrError::on("subnets", "give at least one subnet"));
        }
        if let Some(r) = c.get("instance_refresh").filter(|v| !v.is_null()) {
            if let Some(p) = get::num(r, "min_healthy_percentage") {
                if !(0.0..=100.0).contains(&p) {
                    e.push(AttrError {
                        path: vec!["instance_refresh".into(), "min_healthy_percentage".into()],
                        message: format!("is {p}; it must be from 0 to 100"),
                    });
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [(
            "id".to_string(),
            Value::String(veeps_net::resource_id("asg", &ctx.env, &ctx.address)),
        )]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        prior: Option<&GroupState>,
        c: &GroupConfig,
    ) -> Result<GroupState, ResourceError> {
        let spec = group_spec(ctx, c).await?;
        // The desired count survives deploys: only a new or changed desired_capacity sets it.
        let desired = match prior {
            None => Some(c.desired_capacity.unwrap_or(spec.min_size)),
            Some(p)
                if c.desired_capacity.is_some()
                    && p.config.desired_capacity != c.desired_capacity =>
            {
                c.desired_capacity
            }
            Some(_) => None,
        };
        let id = spec.id.clone();
        compute(ctx)?
            .ensure_group(spec, desired, true)
            .await
            .map_err(failed)?;
        Ok(GroupState {
            config: c.clone(),
            id,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &GroupState) -> Result<Observed<GroupState>, ResourceError> {
        let comp = compute(ctx)?;
        let rec = comp.record(&s.id).or_else(|| {
            comp.records(&ctx.env)
                .into_iter()
                .find(|r| r.spec.id == s.id)
        });
        Ok(match rec {
            // An auto-update rolled a newer build of its image out: the version it runs.
            Some(r)
                if s.config.launch_template_version.is_some()
                    && r.spec.template.id == s.config.launch_template
                    && s.config.launch_template_version.as_deref()
                        != Some(r.spec.template.fingerprint().as_str()) =>
            {
                let mut now = s.clone();
                now.config.launch_template_version = Some(r.spec.template.fingerprint());
                Observed::Exists(now)
            }
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &GroupState) -> Result<(), ResourceError> {
        compute(ctx)?.delete_group(&s.id).await.map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &GroupState) -> Result<GroupState, ResourceError> {
        // Restart: the group's recorded desired count stands, and nothing rolls out.
        let spec = group_spec(ctx, &s.config).await?;
        compute(ctx)?
            .ensure_group(spec, None, false)
            .await
            .map_err(failed)?;
        Ok(s.clone())
    }
}

/// `scaling_policy`.
pub struct PolicyType {
    schema: Schema,
}

impl Default for PolicyType {
    fn default() -> Self {
        Self::new()
    }
}

const POLICY_TYPES: [&str; 4] = [
    "TargetTrackingScaling",
    "StepScaling",
    "SimpleScaling",
    "ScheduledAction",
];
const ADJUSTMENTS: [&str; 3] = [
    "ChangeInCapacity",
    "ExactCapacity",
    "PercentChangeInCapacity",
];

impl PolicyType {
    /// The type with its schema.
    pub fn new() -> Self {
        PolicyType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::required("autoscaling_group_id", Type::String))
                .attr(
                    AttrSchema::optional("policy_type", Type::String)
                        .default("TargetTrackingScaling"),
                )
                .attr(
                    AttrSchema::optional("target_value", Type::Number)
                        .describe("average CPU (percent), or requests per minute per instance"),
                )
                .attr(
                    AttrSchema::optional("predefined_metric_type", Type::String)
                        .default("ASGAverageCPUUtilization")
                        .describe("or ALBRequestCountPerTarget"),
                )
                .attr(
                    AttrSchema::optional("adjustment_type", Type::String)
                        .default("ChangeInCapacity"),
                )
                .attr(AttrSchema::optional("scaling_adjustment", Type::Number))
                .attr(AttrSchema::optional("recurrence", Type::String))
                .attr(AttrSchema::optional("min_size", Type::Number))
                .attr(AttrSchema::optional("max_size", Type::Number))
                .attr(AttrSchema::optional("desired_capacity", Type::Number))
                .attr(AttrSchema::optional("cooldown", Type::Number).default(300.0))
                .attr(AttrSchema::optional("estimated_instance_warmup", Type::Number).default(60.0))
                .attr(AttrSchema::computed("id", Type::String)),
        }
    }
}

/// `scaling_policy`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyConfig {
    name: String,
    autoscaling_group_id: String,
    policy_type: String,
    target_value: Option<f64>,
    predefined_metric_type: String,
    adjustment_type: String,
    scaling_adjustment: Option<i64>,
    recurrence: Option<String>,
    min_size: Option<u32>,
    max_size: Option<u32>,
    desired_capacity: Option<u32>,
    cooldown: u64,
    estimated_instance_warmup: u64,
}

/// `scaling_policy`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyState {
    #[serde(flatten)]
    config: PolicyConfig,
    id: String,
}

fn policy(ctx: &Ctx, c: &PolicyConfig) -> Policy {
    let kind = match c.policy_type.as_str() {
        "StepScaling" | "SimpleScaling" => PolicyKind::Step {
            adjustment_type: c.adjustment_type.clone(),
            adjustment: c.scaling_adjustment.unwrap_or(0),
        },
        "ScheduledAction" => PolicyKind::Scheduled {
            recurrence: c.recurrence.clone().unwrap_or_default(),
            min_size: c.min_size,
            max_size: c.max_size,
            desired: c.desired_capacity,
        },
        _ if c.predefined_metric_type == "ALBRequestCountPerTarget" => PolicyKind::TargetRequests {
            target: c.target_value.unwrap_or(1000.0),
        },
        _ => PolicyKind::TargetCpu {
            target: c.target_value.unwrap_or(50.0),
        },
    };
    Policy {
        id: policy_id(ctx, &c.name),
        name: c.name.clone(),
        group_id: c.autoscaling_group_id.clone(),
        kind,
        cooldown_secs: c.cooldown,
        warmup_secs: c.estimated_instance_warmup,
    }
}

fn policy_id(ctx: &Ctx, name: &str) -> String {
    format!("policy:{}:{name}", ctx.env)
}

#[async_trait::async_trait]
impl Typed for PolicyType {
    type Config = PolicyConfig;
    type State = PolicyState;
    const TYPE: &'static str = "scaling_policy";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        let t = get::str(c, "policy_type").unwrap_or("TargetTrackingScaling");
        let per_target = get::str(c, "predefined_metric_type") == Some("ALBRequestCountPerTarget");
        if !POLICY_TYPES.contains(&t) && c.get("policy_type").is_some_and(|v| v.as_str().is_some())
        {
            e.push(AttrError::on(
                "policy_type",
                format!("\"{t}\" must be one of {}", POLICY_TYPES.join(", ")),
            ));
        }
        match t {
            "TargetTrackingScaling" => match get::num(c, "target_value") {
                _ if get::str(c, "predefined_metric_type").is_some_and(|m| {
                    m != "ASGAverageCPUUtilization" && m != "ALBRequestCountPerTarget"
                }) =>
                {
                    e.push(AttrError::on(
                        "predefined_metric_type",
                        "must be ASGAverageCPUUtilization or ALBRequestCountPerTarget",
                    ))
                }
                Some(v) if per_target && v > 0.0 => {}
                Some(v) if per_target => e.push(AttrError::on(
                    "target_value",
                    format!("is {v}; give requests per minute per instance above 0"),
                )),
                Some(v) if v > 0.0 && v <= 100.0 => {}
                Some(v) => e.push(AttrError::on(
                    "target_value",
                    format!("is {v}; give a CPU percentage above 0 and at most 100"),
                )),
                None if c.get("target_value").is_some_and(Value::is_null) => e.push(AttrError::on(
                    "target_value",
                    "a target tracking policy needs target_value (average CPU, percent)",
                )),
                None => {}
            },
            "StepScaling" | "SimpleScaling" => {
                if let Some(a) = get::str(c, "adjustment_type") {
                    if !ADJUSTMENTS.contains(&a) {
                        e.push(AttrError::on(
                            "adjustment_type",
                            format!("\"{a}\" must be one of {}", ADJUSTMENTS.join(", ")),
                        ));
                    }
                }
                if c.get("scaling_adjustment").is_some_and(Value::is_null) {
                    e.push(AttrError::on(
                        "scaling_adjustment",
                        "a step policy needs scaling_adjustment",
                    ));
                }
            }
            "ScheduledAction" => match get::str(c, "recurrence") {
                Some(r) => {
                    if let Err(m) = crate::policy::Cron::parse(r) {
                        e.push(AttrError::on("recurrence", m));
                    }
                }
                None if c.get("recurrence").is_some_and(Value::is_null) => e.push(AttrError::on(
                    "recurrence",
                    "a scheduled action needs recurrence (a cron expression, UTC)",
                )),
                None => {}
            },
            _ => {}
        }
        whole(c, "cooldown", 0.0, 86_400.0, &mut e);
        whole(c, "estimated_instance_warmup", 0.0, 86_400.0, &mut e);
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        match get::str(c, "name") {
            Some(n) => [("id".to_string(), Value::String(policy_id(ctx, n)))].into(),
            None => BTreeMap::new(),
        }
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&PolicyState>,
        c: &PolicyConfig,
    ) -> Result<PolicyState, ResourceError> {
        let p = policy(ctx, c);
        let comp = compute(ctx)?;
        if comp.record(&p.group_id).is_none() {
            return Err(ResourceError::Invalid(format!(
                "autoscaling group {} does not exist; use autoscaling_group.NAME.id",
                p.group_id
            )));
        }
        let id = p.id.clone();
        policies(ctx)?
            .put(comp.store(), p)
            .map_err(ResourceError::Invalid)?;
        Ok(PolicyState {
            config: c.clone(),
            id,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &PolicyState,
    ) -> Result<Observed<PolicyState>, ResourceError> {
        Ok(if policies(ctx)?.exists(&s.id) {
            Observed::Exists(s.clone())
        } else {
            Observed::Gone
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &PolicyState) -> Result<(), ResourceError> {
        let comp = compute(ctx)?;
        policies(ctx)?.remove(comp.store(), &s.id).map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &PolicyState) -> Result<PolicyState, ResourceError> {
        // At start the group may not be back yet: record the policy regardless.
        policies(ctx)?
            .put(compute(ctx)?.store(), policy(ctx, &s.config))
            .map_err(ResourceError::Invalid)?;
        Ok(s.clone())
    }
}

/// Plan checks: a launch template's image exists (built already, or built by this plan).
struct ComputeCheck {
    images: Option<Arc<Images>>,
}

impl PlanCheck for ComputeCheck {
    fn check(&self, planned: &[Planned]) -> Vec<CheckError> {
        let Some(images) = &self.images else {
            return vec![];
        };
        let mut errs = vec![];
        for (i, p) in planned.iter().enumerate() {
            if p.type_name != "launch_template" {
                continue;
            }
            let Some(id) = get::str(&p.value, "image_id") else {
                continue;
            };
            if id.starts_with("img-") && images.get(id).is_none() {
                errs.push(CheckError {
                    index: i,
                    attr: Some("image_id".into()),
                    message: format!(
                        "no image {id} in the image store; build it with an `image` resource and use image.NAME.id (see `veeps image list`)"
                    ),
                });
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn schemas_agree_with_config_and_state() {
        check_schema(&ImageType::new()).unwrap();
        check_schema(&LaunchTemplateType::new()).unwrap();
        check_schema(&GroupType::new()).unwrap();
        check_schema(&PolicyType::new()).unwrap();
    }
}
