//! The observability resource types: `alarm`, `topic` and `log_group`.

use crate::alarm::{Comparison, MissingData};
use crate::service::{AlarmSpec, Obs};
use crate::topics::Subscription;
use crate::tsdb::Stat;
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::strings;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Registry, Resource, ResourceError,
    Schema,
};
use veeps_resource::{list_of_strings as list_str, with_attrs as with};

/// Registers the observability types.
pub fn register(r: &mut Registry) {
    r.register(AlarmType::new());
    r.register(TopicType::new());
    r.register(LogGroupType::new());
}

fn obs(ctx: &Ctx) -> Result<&Arc<Obs>, ResourceError> {
    ctx.service::<Arc<Obs>>("observability")
}

/// `alarm`: CloudWatch-style alarm on a metric.
pub struct AlarmType {
    schema: Schema,
}

impl Default for AlarmType {
    fn default() -> Self {
        Self::new()
    }
}

impl AlarmType {
    /// The type with its schema.
    pub fn new() -> Self {
        AlarmType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::required("metric", Type::String))
                .attr(AttrSchema::optional(
                    "labels",
                    Type::Map(Box::new(Type::String)),
                ))
                .attr(AttrSchema::optional("statistic", Type::String).default("avg"))
                .attr(
                    AttrSchema::optional("period", Type::Number)
                        .default(60.0)
                        .describe("seconds, a multiple of 10"),
                )
                .attr(AttrSchema::optional("evaluation_periods", Type::Number).default(1.0))
                .attr(AttrSchema::optional("datapoints_to_alarm", Type::Number))
                .attr(AttrSchema::required("comparison_operator", Type::String))
                .attr(AttrSchema::required("threshold", Type::Number))
                .attr(AttrSchema::optional("treat_missing_data", Type::String).default("missing"))
                .attr(AttrSchema::optional("alarm_actions", list_str()))
                .attr(AttrSchema::optional("ok_actions", list_str()))
                .attr(AttrSchema::optional(
                    "insufficient_data_actions",
                    list_str(),
                ))
                .attr(AttrSchema::optional("description", Type::String))
                .attr(AttrSchema::computed("id", Type::String)),
        }
    }
}

fn spec(c: &Value) -> Result<AlarmSpec, String> {
    let n = get::num(c, "evaluation_periods").unwrap_or(1.0) as usize;
    Ok(AlarmSpec {
        metric: get::str(c, "metric").unwrap_or_default().to_string(),
        labels: c
            .get("labels")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        statistic: get::str(c, "statistic").unwrap_or("avg").to_string(),
        period: get::num(c, "period").unwrap_or(60.0) as u64,
        evaluation_periods: n,
        datapoints_to_alarm: get::num(c, "datapoints_to_alarm")
            .map(|m| m as usize)
            .unwrap_or(n),
        comparison: Comparison::parse(get::str(c, "comparison_operator").unwrap_or_default())
            .ok_or("bad comparison_operator")?,
        threshold: get::num(c, "threshold").unwrap_or(0.0),
        missing: MissingData::parse(get::str(c, "treat_missing_data").unwrap_or("missing"))
            .ok_or("bad treat_missing_data")?,
        alarm_actions: strings(c, "alarm_actions"),
        ok_actions: strings(c, "ok_actions"),
        insufficient_data_actions: strings(c, "insufficient_data_actions"),
        description: get::str(c, "description").unwrap_or_default().to_string(),
    })
}

#[async_trait::async_trait]
impl Resource for AlarmType {
    fn type_name(&self) -> &'static str {
        "alarm"
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(s) = get::str(c, "statistic") {
            if let Err(m) = Stat::parse(s) {
                e.push(AttrError::on("statistic", m));
            }
        }
        if let Some(s) = get::str(c, "comparison_operator") {
            if Comparison::parse(s).is_none() {
                e.push(AttrError::on("comparison_operator", format!("\"{s}\" must be GreaterThanThreshold, GreaterThanOrEqualToThreshold, LessThanThreshold or LessThanOrEqualToThreshold")));
            }
        }
        if let Some(s) = get::str(c, "treat_missing_data") {
            if MissingData::parse(s).is_none() {
                e.push(AttrError::on(
                    "treat_missing_data",
                    format!("\"{s}\" must be missing, ignore, breaching or notBreaching"),
                ));
            }
        }
        if let Some(p) = get::num(c, "period") {
            if p < 10.0 || p % 10.0 != 0.0 {
                e.push(AttrError::on(
                    "period",
                    format!("is {p}; it must be a multiple of 10 seconds (the metrics resolution)"),
                ));
            }
        }
        let n = get::num(c, "evaluation_periods").unwrap_or(1.0);
        if !(1.0..=1000.0).contains(&n) {
            e.push(AttrError::on(
                "evaluation_periods",
                "must be from 1 to 1000",
            ));
        }
        if let Some(m) = get::num(c, "datapoints_to_alarm") {
            if m < 1.0 || m > n {
                e.push(AttrError::on(
                    "datapoints_to_alarm",
                    format!("is {m}; it must be from 1 to evaluation_periods ({n})"),
                ));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "id".to_string(),
            Value::String(format!(
                "alarm:{}:{}",
                ctx.env,
                get::str(c, "name").unwrap_or_default()
            )),
        )]
        .into()
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let name = get::str(c, "name").unwrap_or_default();
        obs(ctx)?
            .put_alarm(&ctx.env, name, spec(c).map_err(ResourceError::Invalid)?)
            .map_err(|e| ResourceError::Failed(e.to_string()))?;
        Ok(with(
            c,
            &[("id", Value::String(format!("alarm:{}:{name}", ctx.env)))],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let exists = obs(ctx)?
            .alarm(&ctx.env, get::str(state, "name").unwrap_or_default())
            .map_err(|e| ResourceError::Failed(e.to_string()))?
            .is_some();
        Ok(exists.then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        obs(ctx)?
            .delete_alarm(&ctx.env, get::str(state, "name").unwrap_or_default())
            .map_err(|e| ResourceError::Failed(e.to_string()))
    }
}

/// `topic`: a notification topic with subscriptions.
pub struct TopicType {
    schema: Schema,
}

impl Default for TopicType {
    fn default() -> Self {
        Self::new()
    }
}

impl TopicType {
    /// The type with its schema.
    pub fn new() -> Self {
        TopicType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::computed("id", Type::String))
                .block(BlockSchema {
                    name: "subscription",
                    nesting: Nesting::List,
                    schema: Schema::new()
                        .attr(
                            AttrSchema::required("protocol", Type::String)
                                .describe("webhook, email or slack"),
                        )
                        .attr(AttrSchema::required("endpoint", Type::String)),
                    force_new: false,
                    min_items: 0,
                }),
        }
    }
}

fn subs(c: &Value) -> Vec<Subscription> {
    c.get("subscription")
        .and_then(Value::as_list)
        .map(|l| {
            l.iter()
                .map(|s| Subscription {
                    protocol: get::str(s, "protocol").unwrap_or_default().to_string(),
                    endpoint: get::str(s, "endpoint").unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Resource for TopicType {
    fn type_name(&self) -> &'static str {
        "topic"
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        for (i, s) in subs(c).iter().enumerate() {
            let path = |a: &str| vec!["subscription".to_string(), i.to_string(), a.to_string()];
            match s.protocol.as_str() {
                "webhook" | "slack"
                    if !(s.endpoint.starts_with("http://")
                        || s.endpoint.starts_with("https://")
                        || s.endpoint.is_empty()) =>
                {
                    e.push(AttrError {
                        path: path("endpoint"),
                        message: format!("\"{}\" must be an http:// or https:// URL", s.endpoint),
                    })
                }
                "email" if !s.endpoint.is_empty() && !s.endpoint.contains('@') => {
                    e.push(AttrError {
                        path: path("endpoint"),
                        message: format!("\"{}\" is not an email address", s.endpoint),
                    })
                }
                "webhook" | "slack" | "email" | "" => {}
                other => e.push(AttrError {
                    path: path("protocol"),
                    message: format!("\"{other}\" must be webhook, email or slack"),
                }),
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "id".to_string(),
            Value::String(format!(
                "topic:{}:{}",
                ctx.env,
                get::str(c, "name").unwrap_or_default()
            )),
        )]
        .into()
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let name = get::str(c, "name").unwrap_or_default();
        obs(ctx)?
            .put_topic(&ctx.env, name, &subs(c))
            .map_err(|e| ResourceError::Failed(e.to_string()))?;
        Ok(with(
            c,
            &[("id", Value::String(format!("topic:{}:{name}", ctx.env)))],
        ))
    }
    async fn read(&self, _ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(Some(state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        obs(ctx)?
            .delete_topic(&ctx.env, get::str(state, "name").unwrap_or_default())
            .map_err(|e| ResourceError::Failed(e.to_string()))
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
    }
}

/// `log_group`: a log group's retention.
pub struct LogGroupType {
    schema: Schema,
}

impl Default for LogGroupType {
    fn default() -> Self {
        Self::new()
    }
}

impl LogGroupType {
    /// The type with its schema.
    pub fn new() -> Self {
        LogGroupType {
            schema: Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::optional("retention_days", Type::Number).default(30.0))
                .attr(AttrSchema::computed("id", Type::String)),
        }
    }
}

#[async_trait::async_trait]
impl Resource for LogGroupType {
    fn type_name(&self) -> &'static str {
        "log_group"
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        match get::num(c, "retention_days") {
            Some(d) if !(1.0..=3653.0).contains(&d) || d.fract() != 0.0 => vec![AttrError::on(
                "retention_days",
                "must be a whole number of days from 1 to 3653",
            )],
            _ => vec![],
        }
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        [(
            "id".to_string(),
            Value::String(format!(
                "log-group:{}:{}",
                ctx.env,
                get::str(c, "name").unwrap_or_default()
            )),
        )]
        .into()
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let name = get::str(c, "name").unwrap_or_default();
        obs(ctx)?.logs.set_retention(
            &ctx.env,
            name,
            get::num(c, "retention_days").unwrap_or(30.0) as u32,
        );
        Ok(with(
            c,
            &[("id", Value::String(format!("log-group:{}:{name}", ctx.env)))],
        ))
    }
    async fn read(&self, _ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(Some(state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, _ctx: &Ctx, _state: &Value) -> Result<(), ResourceError> {
        Ok(())
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
    }
}
