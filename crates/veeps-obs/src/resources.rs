//! The observability resource types: `alarm`, `topic` and `log_group`.

use crate::alarm::{Comparison, MissingData};
use crate::service::{AlarmSpec, Obs};
use crate::topics::Subscription;
use crate::tsdb::Stat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::list_of_strings as list_str;
use veeps_resource::typed::list;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Observed, Registry, ResourceError,
    Schema, Typed,
};

/// Registers the observability types.
pub fn register(r: &mut Registry) {
    r.register(AlarmType::new());
    r.register(TopicType::new());
    r.register(LogGroupType::new());
}

fn obs(ctx: &Ctx) -> Result<&Arc<Obs>, ResourceError> {
    ctx.service::<Arc<Obs>>("observability")
}

fn err(e: veeps_state::StateError) -> ResourceError {
    ResourceError::part("observability store", e)
}

/// The id of `kind` object `name` in `ctx`'s environment, like `alarm:prod:cpu-high`.
fn obs_id(ctx: &Ctx, kind: &str, name: &str) -> String {
    format!("{kind}:{}:{name}", ctx.env)
}

fn planned_id(ctx: &Ctx, kind: &str, c: &Value) -> BTreeMap<String, Value> {
    [(
        "id".to_string(),
        Value::String(obs_id(ctx, kind, get::str(c, "name").unwrap_or_default())),
    )]
    .into()
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

/// `alarm`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmConfig {
    name: String,
    metric: String,
    labels: Option<BTreeMap<String, String>>,
    statistic: String,
    period: u64,
    evaluation_periods: usize,
    datapoints_to_alarm: Option<usize>,
    comparison_operator: String,
    threshold: f64,
    treat_missing_data: String,
    alarm_actions: Option<Vec<String>>,
    ok_actions: Option<Vec<String>>,
    insufficient_data_actions: Option<Vec<String>>,
    description: Option<String>,
}

/// `alarm`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmState {
    #[serde(flatten)]
    config: AlarmConfig,
    id: String,
}

fn spec(c: &AlarmConfig) -> Result<AlarmSpec, ResourceError> {
    let invalid = |a: &str, v: &str| {
        ResourceError::Invalid(format!(
            "alarm.{a}: \"{v}\" is not one of the accepted values"
        ))
    };
    Ok(AlarmSpec {
        metric: c.metric.clone(),
        labels: c.labels.clone().unwrap_or_default().into_iter().collect(),
        statistic: c.statistic.clone(),
        period: c.period,
        evaluation_periods: c.evaluation_periods,
        datapoints_to_alarm: c.datapoints_to_alarm.unwrap_or(c.evaluation_periods),
        comparison: Comparison::parse(&c.comparison_operator)
            .ok_or_else(|| invalid("comparison_operator", &c.comparison_operator))?,
        threshold: c.threshold,
        missing: MissingData::parse(&c.treat_missing_data)
            .ok_or_else(|| invalid("treat_missing_data", &c.treat_missing_data))?,
        alarm_actions: c.alarm_actions.clone().unwrap_or_default(),
        ok_actions: c.ok_actions.clone().unwrap_or_default(),
        insufficient_data_actions: c.insufficient_data_actions.clone().unwrap_or_default(),
        description: c.description.clone().unwrap_or_default(),
    })
}

#[async_trait::async_trait]
impl Typed for AlarmType {
    type Config = AlarmConfig;
    type State = AlarmState;
    const TYPE: &'static str = "alarm";
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
        planned_id(ctx, "alarm", c)
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&AlarmState>,
        c: &AlarmConfig,
    ) -> Result<AlarmState, ResourceError> {
        obs(ctx)?
            .put_alarm(&ctx.env, &c.name, spec(c)?)
            .map_err(err)?;
        Ok(AlarmState {
            config: c.clone(),
            id: obs_id(ctx, "alarm", &c.name),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &AlarmState) -> Result<Observed<AlarmState>, ResourceError> {
        Ok(
            match obs(ctx)?.alarm(&ctx.env, &s.config.name).map_err(err)? {
                Some(_) => Observed::Exists(s.clone()),
                None => Observed::Gone,
            },
        )
    }
    async fn delete(&self, ctx: &Ctx, s: &AlarmState) -> Result<(), ResourceError> {
        obs(ctx)?
            .delete_alarm(&ctx.env, &s.config.name)
            .map_err(err)
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

/// `topic`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicConfig {
    name: String,
    #[serde(default, deserialize_with = "list")]
    subscription: Vec<Subscription>,
}

/// `topic`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicState {
    #[serde(flatten)]
    config: TopicConfig,
    id: String,
}

/// The subscriptions of a (possibly partly unknown) configuration, for validation.
fn subs(c: &Value) -> Vec<Subscription> {
    get::blocks(c, "subscription")
        .into_iter()
        .map(|s| Subscription {
            protocol: get::str(s, "protocol").unwrap_or_default().to_string(),
            endpoint: get::str(s, "endpoint").unwrap_or_default().to_string(),
        })
        .collect()
}

#[async_trait::async_trait]
impl Typed for TopicType {
    type Config = TopicConfig;
    type State = TopicState;
    const TYPE: &'static str = "topic";
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
        planned_id(ctx, "topic", c)
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&TopicState>,
        c: &TopicConfig,
    ) -> Result<TopicState, ResourceError> {
        obs(ctx)?
            .put_topic(&ctx.env, &c.name, &c.subscription)
            .map_err(err)?;
        Ok(TopicState {
            config: c.clone(),
            id: obs_id(ctx, "topic", &c.name),
        })
    }
    async fn read(&self, ctx: &Ctx, s: &TopicState) -> Result<Observed<TopicState>, ResourceError> {
        Ok(
            match obs(ctx)?.topic(&ctx.env, &s.config.name).map_err(err)? {
                Some(subscription) => Observed::Exists(TopicState {
                    config: TopicConfig {
                        name: s.config.name.clone(),
                        subscription,
                    },
                    id: s.id.clone(),
                }),
                None => Observed::Gone,
            },
        )
    }
    async fn delete(&self, ctx: &Ctx, s: &TopicState) -> Result<(), ResourceError> {
        obs(ctx)?
            .delete_topic(&ctx.env, &s.config.name)
            .map_err(err)
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
impl Typed for LogGroupType {
    type Config = LogGroupConfig;
    type State = LogGroupState;
    const TYPE: &'static str = "log_group";
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
        planned_id(ctx, "log-group", c)
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&LogGroupState>,
        c: &LogGroupConfig,
    ) -> Result<LogGroupState, ResourceError> {
        obs(ctx)?
            .logs
            .set_retention(&ctx.env, &c.name, c.retention_days);
        Ok(LogGroupState {
            config: c.clone(),
            id: obs_id(ctx, "log-group", &c.name),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &LogGroupState,
    ) -> Result<Observed<LogGroupState>, ResourceError> {
        Ok(match obs(ctx)?.logs.retention(&ctx.env, &s.config.name) {
            Some(retention_days) => Observed::Exists(LogGroupState {
                config: LogGroupConfig {
                    name: s.config.name.clone(),
                    retention_days,
                },
                id: s.id.clone(),
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &LogGroupState) -> Result<(), ResourceError> {
        obs(ctx)?.logs.clear_retention(&ctx.env, &s.config.name);
        Ok(())
    }
}

/// `log_group`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogGroupConfig {
    name: String,
    retention_days: u32,
}

/// `log_group`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogGroupState {
    #[serde(flatten)]
    config: LogGroupConfig,
    id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn schemas_agree_with_config_and_state() {
        check_schema(&AlarmType::new()).unwrap();
        check_schema(&TopicType::new()).unwrap();
        check_schema(&LogGroupType::new()).unwrap();
    }
}
