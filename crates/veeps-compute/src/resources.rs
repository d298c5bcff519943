//! The compute resource types: `image`, `launch_template`, `autoscaling_group` and
//! `scaling_policy`, plus the plan check that every image a template names exists.

use crate::group::{Compute, GroupSpec, HealthCheck, Refresh, Template};
use crate::image::{ImageSpec, Images};
use crate::policy::{Policies, Policy, PolicyKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::{string_map, strings};
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, CheckError, Ctx, Nesting, PlanCheck, Planned,
    Registry, Resource, ResourceError, Schema,
};
use veeps_resource::{list_of_strings as list_str, map_of_strings as map_str, with_attrs as with};

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
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("version", Type::Number)),
        }
    }
}

fn image_spec(c: &Value) -> Result<ImageSpec, ResourceError> {
    let source = PathBuf::from(get::str(c, "source").unwrap_or_default());
    let source = if source.is_absolute() {
        source
    } else {
        std::env::current_dir()?.join(source)
    };
    let source = std::fs::canonicalize(&source)
        .map_err(|e| ResourceError::Invalid(format!("source {}: {e}", source.display())))?;
    Ok(ImageSpec {
        name: get::str(c, "name").unwrap_or_default().to_string(),
        source,
        build: strings(c, "build"),
        files: strings(c, "files"),
        entrypoint: strings(c, "entrypoint"),
        env: string_map(c, "env"),
        timeout_secs: get::num(c, "build_timeout").unwrap_or(600.0) as u64,
    })
}

#[async_trait::async_trait]
impl Resource for ImageType {
    fn type_name(&self) -> &'static str {
        "image"
    }
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
        e
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let spec = image_spec(c)?;
        let img = compute(ctx)?.images.build(&spec).await.map_err(failed)?;
        Ok(with(
            c,
            &[
                ("id", Value::String(img.id)),
                ("version", Value::from(img.version as i64)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let id = get::str(state, "id").unwrap_or_default();
        if compute(ctx)?.images.get(id).is_none() {
            return Ok(None);
        }
        // A changed source shows as drift: the id no longer matches the inputs.
        match image_spec(state).and_then(|s| crate::image::image_id(&s).map_err(failed)) {
            Ok(now) if now != id => Ok(Some(with(
                state,
                &[("source", Value::string("(changed on disk)"))],
            ))),
            _ => Ok(Some(state.clone())),
        }
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, _ctx: &Ctx, _state: &Value) -> Result<(), ResourceError> {
        // Images stay in the store (versions are kept; instances may still run them).
        Ok(())
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        let id = get::str(state, "id").unwrap_or_default();
        if compute(ctx)?.images.get(id).is_some() {
            return Ok(state.clone());
        }
        self.create(ctx, state).await
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
                .attr(AttrSchema::computed("id", Type::String))
                .attr(
                    AttrSchema::computed("latest_version", Type::String)
                        .describe("changes with every change of what instances run"),
                ),
        }
    }
}

fn template(ctx: &Ctx, c: &Value) -> Template {
    let mut env = string_map(c, "environment");
    if let Some(u) = get::str(c, "database_url") {
        env.insert("DATABASE_URL".into(), u.into());
    }
    if let Some(u) = get::str(c, "internal_lb_url") {
        env.insert("INTERNAL_LB_URL".into(), u.into());
    }
    Template {
        id: veeps_net::resource_id("lt", &ctx.env, &ctx.address),
        image_id: get::str(c, "image_id").unwrap_or_default().to_string(),
        cpu: get::num(c, "cpu").unwrap_or(1.0),
        memory_mb: get::num(c, "memory").unwrap_or(512.0) as u64,
        pids: get::num(c, "pids").unwrap_or(512.0) as u64,
        env,
        port: get::num(c, "port").map(|p| p as u16),
        health_check_path: get::str(c, "health_check_path").map(String::from),
    }
}

#[async_trait::async_trait]
impl Resource for LaunchTemplateType {
    fn type_name(&self) -> &'static str {
        "launch_template"
    }
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
            Value::String(template(ctx, c).fingerprint())
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let t = template(ctx, c);
        let c2 = compute(ctx)?;
        if c2.images.get(&t.image_id).is_none() {
            return Err(ResourceError::Invalid(format!(
                "image {} is not in the image store (see `veeps image list`)",
                t.image_id
            )));
        }
        c2.put_template(&t).map_err(failed)?;
        Ok(with(
            c,
            &[
                ("id", Value::String(t.id.clone())),
                ("latest_version", Value::String(t.fingerprint())),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let id = get::str(state, "id").unwrap_or_default();
        Ok(compute(ctx)?.template(id).map(|_| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        compute(ctx)?
            .delete_template(get::str(state, "id").unwrap_or_default())
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        compute(ctx)?
            .put_template(&template(ctx, state))
            .map_err(failed)?;
        Ok(state.clone())
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

async fn group_spec(ctx: &Ctx, c: &Value) -> Result<GroupSpec, ResourceError> {
    let comp = compute(ctx)?;
    let lt = get::str(c, "launch_template").unwrap_or_default();
    let template = comp.template(lt).ok_or_else(|| {
        ResourceError::Invalid(format!(
            "launch template {lt} does not exist; use launch_template.NAME.id"
        ))
    })?;
    let subnets = strings(c, "subnets");
    let mut extra_env = BTreeMap::new();
    if let Some(s) = subnets.first() {
        let net = comp.net();
        if let Ok(sub) = net.subnet(s) {
            if let Ok(vpc) = net.vpc(&sub.vpc_id) {
                extra_env.insert("VEEPS_VPC_NAME".to_string(), vpc.name.clone());
            }
        }
    }
    let refresh = c.get("instance_refresh").filter(|v| !v.is_null());
    let d = Refresh::default();
    Ok(GroupSpec {
        id: veeps_net::resource_id("asg", &ctx.env, &ctx.address),
        env: ctx.env.clone(),
        name: get::str(c, "name").unwrap_or_default().to_string(),
        template,
        subnets,
        security_groups: strings(c, "security_groups"),
        min_size: get::num(c, "min_size").unwrap_or(0.0) as u32,
        max_size: get::num(c, "max_size").unwrap_or(0.0) as u32,
        health_check: if get::str(c, "health_check_type") == Some("lb") {
            HealthCheck::Lb
        } else {
            HealthCheck::Process
        },
        grace_secs: get::num(c, "health_check_grace_period").unwrap_or(300.0) as u64,
        target_groups: strings(c, "target_group_arns"),
        termination_policies: strings(c, "termination_policies"),
        refresh: Refresh {
            min_healthy_percentage: refresh
                .and_then(|r| get::num(r, "min_healthy_percentage"))
                .map(|v| v as u32)
                .unwrap_or(d.min_healthy_percentage),
            create_before_destroy: refresh
                .map(|r| get::bool_or(r, "create_before_destroy", true))
                .unwrap_or(d.create_before_destroy),
            timeout_secs: refresh
                .and_then(|r| get::num(r, "timeout"))
                .map(|v| v as u64)
                .unwrap_or(d.timeout_secs),
        },
        extra_env,
    })
}

#[async_trait::async_trait]
impl Resource for GroupType {
    fn type_name(&self) -> &'static str {
        "autoscaling_group"
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let spec = group_spec(ctx, c).await?;
        let desired = get::num(c, "desired_capacity")
            .map(|d| d as u32)
            .unwrap_or(spec.min_size);
        let id = spec.id.clone();
        compute(ctx)?
            .ensure_group(spec, Some(desired), true)
            .await
            .map_err(failed)?;
        Ok(with(c, &[("id", Value::String(id))]))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let id = get::str(state, "id").unwrap_or_default();
        let exists = compute(ctx)?.record(id).is_some()
            || compute(ctx)?
                .records(&ctx.env)
                .iter()
                .any(|r| r.spec.id == id);
        Ok(exists.then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        let spec = group_spec(ctx, c).await?;
        // The desired count survives deploys: only a changed desired_capacity sets it.
        let desired = match (
            get::num(prior, "desired_capacity"),
            get::num(c, "desired_capacity"),
        ) {
            (a, Some(b)) if a != Some(b) => Some(b as u32),
            _ => None,
        };
        let id = spec.id.clone();
        compute(ctx)?
            .ensure_group(spec, desired, true)
            .await
            .map_err(failed)?;
        Ok(with(c, &[("id", Value::String(id))]))
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        compute(ctx)?
            .delete_group(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        let spec = group_spec(ctx, state).await?;
        compute(ctx)?
            .ensure_group(spec, None, false)
            .await
            .map_err(failed)?;
        Ok(state.clone())
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

fn policy(ctx: &Ctx, c: &Value) -> Result<Policy, ResourceError> {
    let name = get::str(c, "name").unwrap_or_default().to_string();
    let kind = match get::str(c, "policy_type").unwrap_or("TargetTrackingScaling") {
        "StepScaling" | "SimpleScaling" => PolicyKind::Step {
            adjustment_type: get::str(c, "adjustment_type")
                .unwrap_or("ChangeInCapacity")
                .into(),
            adjustment: get::num(c, "scaling_adjustment").unwrap_or(0.0) as i64,
        },
        "ScheduledAction" => PolicyKind::Scheduled {
            recurrence: get::str(c, "recurrence").unwrap_or_default().into(),
            min_size: get::num(c, "min_size").map(|v| v as u32),
            max_size: get::num(c, "max_size").map(|v| v as u32),
            desired: get::num(c, "desired_capacity").map(|v| v as u32),
        },
        _ if get::str(c, "predefined_metric_type") == Some("ALBRequestCountPerTarget") => {
            PolicyKind::TargetRequests {
                target: get::num(c, "target_value").unwrap_or(1000.0),
            }
        }
        _ => PolicyKind::TargetCpu {
            target: get::num(c, "target_value").unwrap_or(50.0),
        },
    };
    Ok(Policy {
        id: format!("policy:{}:{name}", ctx.env),
        name,
        group_id: get::str(c, "autoscaling_group_id")
            .unwrap_or_default()
            .into(),
        kind,
        cooldown_secs: get::num(c, "cooldown").unwrap_or(300.0) as u64,
        warmup_secs: get::num(c, "estimated_instance_warmup").unwrap_or(60.0) as u64,
    })
}

#[async_trait::async_trait]
impl Resource for PolicyType {
    fn type_name(&self) -> &'static str {
        "scaling_policy"
    }
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
            Some(n) => [(
                "id".to_string(),
                Value::String(format!("policy:{}:{n}", ctx.env)),
            )]
            .into(),
            None => BTreeMap::new(),
        }
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let p = policy(ctx, c)?;
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
        Ok(with(c, &[("id", Value::String(id))]))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let id = get::str(state, "id").unwrap_or_default();
        Ok(policies(ctx)?.exists(id).then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        let comp = compute(ctx)?;
        policies(ctx)?
            .remove(comp.store(), get::str(state, "id").unwrap_or_default())
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        let p = policy(ctx, state)?;
        policies(ctx)?
            .put(compute(ctx)?.store(), p)
            .map_err(ResourceError::Invalid)?;
        Ok(state.clone())
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
