//! The `db_cluster` resource type.

use crate::model::{check_parameters, ClusterSpec, Restore};
use crate::service::{DbError, Dbs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Observed, Registry, ResourceError,
    Schema, Typed,
};

/// Registers `db_cluster`.
pub fn register(r: &mut Registry) {
    let mut restore = BlockSchema::new(
        "restore_from",
        Nesting::Single,
        Schema::new()
            .attr(AttrSchema::optional("snapshot", Type::String))
            .attr(AttrSchema::optional("cluster", Type::String))
            .attr(
                AttrSchema::optional("to_time", Type::String)
                    .describe("RFC 3339; latest when left out"),
            ),
    );
    restore.force_new = true;
    r.register(ClusterType(
        Schema::new()
            .attr(AttrSchema::required("name", Type::String).force_new())
            .attr(
                AttrSchema::optional("engine_version", Type::String)
                    .default("15")
                    .force_new(),
            )
            .attr(AttrSchema::optional("instance_count", Type::Number).default(1.0))
            .attr(AttrSchema::optional("cpu", Type::Number).default(1.0))
            .attr(
                AttrSchema::optional("memory", Type::Number)
                    .default(1024.0)
                    .describe("MiB per node"),
            )
            .attr(AttrSchema::required("subnets", Type::List(Box::new(Type::String))).force_new())
            .attr(AttrSchema::optional(
                "security_groups",
                Type::List(Box::new(Type::String)),
            ))
            .attr(
                AttrSchema::optional("database_name", Type::String)
                    .default("postgres")
                    .force_new(),
            )
            .attr(
                AttrSchema::optional("master_username", Type::String)
                    .default("postgres")
                    .force_new(),
            )
            .attr(AttrSchema::required("master_password", Type::String).sensitive())
            .attr(
                AttrSchema::optional("port", Type::Number)
                    .default(5432.0)
                    .force_new(),
            )
            .attr(AttrSchema::optional("backup_retention_days", Type::Number).default(1.0))
            .attr(AttrSchema::optional("backup_window", Type::String).default("03:00-04:00"))
            .attr(AttrSchema::optional("synchronous_replicas", Type::Number).default(0.0))
            .attr(AttrSchema::optional(
                "parameters",
                Type::Map(Box::new(Type::String)),
            ))
            .attr(AttrSchema::optional("deletion_protection", Type::Bool).default(false))
            .attr(AttrSchema::optional("dns_names", veeps_resource::list_of_strings()).describe(
                "names clients connect by (records of yours pointing at the endpoints): put on the nodes' certificates",
            ))
            .attr(
                AttrSchema::optional("final_snapshot", Type::Bool)
                    .default(false)
                    .describe("take a snapshot before the cluster is destroyed"),
            )
            .attr(AttrSchema::computed("id", Type::String))
            .attr(AttrSchema::computed("arn", Type::String))
            .attr(AttrSchema::computed("endpoint", Type::String))
            .attr(AttrSchema::computed("reader_endpoint", Type::String))
            .block(restore),
    ));
}

fn dbs(ctx: &Ctx) -> Result<&Arc<Dbs>, ResourceError> {
    ctx.service::<Arc<Dbs>>("database")
}

fn err(e: DbError) -> ResourceError {
    match e {
        DbError::Invalid(m) => ResourceError::Invalid(m),
        other => ResourceError::part("database", other),
    }
}

fn num(c: &Value, k: &str, d: f64) -> f64 {
    get::num(c, k).unwrap_or(d)
}

/// The cluster a (possibly partly unknown) configuration describes, for validation.
fn partial_spec(c: &Value) -> ClusterSpec {
    ClusterSpec {
        env: String::new(),
        name: get::str(c, "name").unwrap_or_default().into(),
        engine_version: get::str(c, "engine_version").unwrap_or("15").into(),
        instance_count: num(c, "instance_count", 1.0).max(1.0) as u32,
        cpu: num(c, "cpu", 1.0),
        memory_mb: num(c, "memory", 1024.0).max(64.0) as u64,
        subnets: get::strings(c, "subnets"),
        security_groups: get::strings(c, "security_groups"),
        database_name: get::str(c, "database_name").unwrap_or("postgres").into(),
        master_username: get::str(c, "master_username").unwrap_or("postgres").into(),
        port: num(c, "port", 5432.0) as u16,
        backup_retention_days: num(c, "backup_retention_days", 1.0).max(0.0) as u32,
        backup_window: get::str(c, "backup_window").unwrap_or("03:00-04:00").into(),
        synchronous_replicas: num(c, "synchronous_replicas", 0.0).max(0.0) as u32,
        parameters: get::string_map(c, "parameters"),
        restore: None,
        dns_names: get::strings(c, "dns_names"),
    }
}

/// `restore_from` of `db_cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreConfig {
    snapshot: Option<String>,
    cluster: Option<String>,
    to_time: Option<String>,
}

/// `db_cluster`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterConfig {
    name: String,
    engine_version: String,
    instance_count: u32,
    cpu: f64,
    memory: u64,
    subnets: Vec<String>,
    security_groups: Option<Vec<String>>,
    database_name: String,
    master_username: String,
    master_password: String,
    port: u16,
    backup_retention_days: u32,
    backup_window: String,
    synchronous_replicas: u32,
    parameters: Option<BTreeMap<String, String>>,
    deletion_protection: bool,
    final_snapshot: bool,
    restore_from: Option<RestoreConfig>,
    #[serde(default)]
    dns_names: Option<Vec<String>>,
}

/// `db_cluster`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    #[serde(flatten)]
    config: ClusterConfig,
    id: String,
    arn: String,
    endpoint: String,
    reader_endpoint: String,
}

fn spec(env: &str, c: &ClusterConfig) -> ClusterSpec {
    ClusterSpec {
        env: env.into(),
        name: c.name.clone(),
        engine_version: c.engine_version.clone(),
        instance_count: c.instance_count.max(1),
        cpu: c.cpu,
        memory_mb: c.memory.max(64),
        subnets: c.subnets.clone(),
        security_groups: c.security_groups.clone().unwrap_or_default(),
        database_name: c.database_name.clone(),
        master_username: c.master_username.clone(),
        port: c.port,
        backup_retention_days: c.backup_retention_days,
        backup_window: c.backup_window.clone(),
        synchronous_replicas: c.synchronous_replicas,
        parameters: c.parameters.clone().unwrap_or_default(),
        restore: c.restore_from.as_ref().map(|r| Restore {
            snapshot: r.snapshot.clone(),
            source_cluster: r.cluster.clone(),
            to_time: r.to_time.clone(),
        }),
        dns_names: c.dns_names.clone().unwrap_or_default(),
    }
}

fn arn(ctx: &Ctx, name: &str) -> String {
    format!("arn:veeps:rds:{}:cluster:{name}", ctx.env)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `db_cluster`.
pub struct ClusterType(Schema);

#[async_trait::async_trait]
impl Typed for ClusterType {
    type Config = ClusterConfig;
    type State = ClusterState;
    const TYPE: &'static str = "db_cluster";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        let s = partial_spec(c);
        let set = |k: &str| c.get(k).is_some_and(|v| !v.is_null() && !v.is_unknown());
        if set("name")
            && (s.name.is_empty()
                || s.name.len() > 40
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            e.push(AttrError::on(
                "name",
                "a cluster name is 1 to 40 lowercase letters, digits and hyphens",
            ));
        }
        if set("engine_version")
            && !(s.engine_version == "15" || s.engine_version.starts_with("15."))
        {
            e.push(AttrError::on(
                "engine_version",
                format!(
                    "this host has PostgreSQL 15; engine_version \"{}\" is not available",
                    s.engine_version
                ),
            ));
        }
        if set("instance_count") && !(1..=15).contains(&s.instance_count) {
            e.push(AttrError::on(
                "instance_count",
                "a cluster has 1 to 15 instances (a writer and up to 14 readers)",
            ));
        }
        if set("synchronous_replicas")
            && set("instance_count")
            && s.synchronous_replicas >= s.instance_count
        {
            e.push(AttrError::on(
                "synchronous_replicas",
                format!(
                    "{} synchronous replicas need at least {} instances",
                    s.synchronous_replicas,
                    s.synchronous_replicas + 1
                ),
            ));
        }
        if set("cpu") && !(0.05..=64.0).contains(&s.cpu) {
            e.push(AttrError::on("cpu", "cpu is from 0.05 to 64"));
        }
        if set("memory") && get::num(c, "memory").is_some_and(|m| m < 64.0) {
            e.push(AttrError::on("memory", "memory is in MiB, at least 64"));
        }
        if set("master_username") && !is_ident(&s.master_username) {
            e.push(AttrError::on(
                "master_username",
                "a user name is lowercase letters, digits and _, starting with a letter",
            ));
        }
        if set("database_name") && !is_ident(&s.database_name) {
            e.push(AttrError::on(
                "database_name",
                "a database name is lowercase letters, digits and _, starting with a letter",
            ));
        }
        if let Some(p) = get::str(c, "master_password") {
            if p.len() < 8 || p.len() > 128 {
                e.push(AttrError::on(
                    "master_password",
                    "a master password is 8 to 128 characters long (use a random_password)",
                ));
            }
        }
        if set("backup_retention_days") && s.backup_retention_days > 35 {
            e.push(AttrError::on(
                "backup_retention_days",
                "backups are kept 0 to 35 days",
            ));
        }
        if set("backup_window") && crate::backup::parse_window(&s.backup_window).is_none() {
            e.push(AttrError::on(
                "backup_window",
                "a backup window is HH:MM-HH:MM in UTC, like 03:00-04:00",
            ));
        }
        if set("port") && !(1024.0..=65535.0).contains(&num(c, "port", 5432.0)) {
            e.push(AttrError::on("port", "the port is from 1024 to 65535"));
        }
        if let Some(Value::List(l)) = c.get("subnets") {
            if l.is_empty() {
                e.push(AttrError::on(
                    "subnets",
                    "give at least one subnet (a private persistence subnet)",
                ));
            }
        }
        for (k, m) in check_parameters(&s.parameters) {
            e.push(AttrError {
                path: vec!["parameters".into(), k],
                message: m,
            });
        }
        if let Some(r) = get::block(c, "restore_from") {
            let has = |k: &str| r.get(k).is_some_and(|v| !v.is_null());
            if has("snapshot") == has("cluster") {
                e.push(AttrError::on(
                    "restore_from",
                    "give exactly one of snapshot and cluster",
                ));
            }
            if let Some(t) = get::str(r, "to_time") {
                if time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .is_err()
                {
                    e.push(AttrError {
                        path: vec!["restore_from".into(), "to_time".into()],
                        message: format!(
                            "\"{t}\" is not an RFC 3339 time like 2026-11-25T12:00:00Z"
                        ),
                    });
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        match get::str(c, "name") {
            Some(n) => [
                ("id".to_string(), Value::string(n)),
                ("arn".to_string(), Value::String(arn(ctx, n))),
            ]
            .into(),
            None => BTreeMap::new(),
        }
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&ClusterState>,
        c: &ClusterConfig,
    ) -> Result<ClusterState, ResourceError> {
        let rec = dbs(ctx)?
            .put(spec(&ctx.env, c), &c.master_password)
            .await
            .map_err(err)?;
        Ok(ClusterState {
            config: c.clone(),
            id: rec.spec.name.clone(),
            arn: arn(ctx, &rec.spec.name),
            endpoint: rec.writer_ep.0.to_string(),
            reader_endpoint: rec.reader_ep.0.to_string(),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &ClusterState,
    ) -> Result<Observed<ClusterState>, ResourceError> {
        Ok(
            match dbs(ctx)?.cluster(&ctx.env, &s.config.name).map_err(err)? {
                Some(_) => Observed::Exists(s.clone()),
                None => Observed::Gone,
            },
        )
    }
    async fn delete(&self, ctx: &Ctx, s: &ClusterState) -> Result<(), ResourceError> {
        let name = &s.config.name;
        if s.config.deletion_protection {
            return Err(ResourceError::Invalid(format!(
                "db_cluster {name} has deletion_protection on; set it to false and apply, then destroy"
            )));
        }
        let d = dbs(ctx)?;
        if s.config.final_snapshot && d.cluster(&ctx.env, name).map_err(err)?.is_some() {
            let label = format!("final-{}", time::OffsetDateTime::now_utc().unix_timestamp());
            d.snapshot(&ctx.env, name, &label).await.map_err(err)?;
        }
        d.delete(&ctx.env, name).await.map_err(err)
    }
    async fn reconcile(&self, _ctx: &Ctx, s: &ClusterState) -> Result<ClusterState, ResourceError> {
        // The service starts recorded clusters itself; nothing to redo per resource.
        Ok(s.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_agrees_with_config_and_state() {
        let mut r = veeps_resource::Registry::new();
        super::register(&mut r);
        veeps_resource::check_schema(&super::ClusterType(
            r.resource("db_cluster").unwrap().schema().clone(),
        ))
        .unwrap();
    }
}
