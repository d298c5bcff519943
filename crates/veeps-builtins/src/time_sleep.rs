//! `time_sleep`: waits after creation (or before destruction), for things that need time to
//! settle, as Terraform's `time_sleep` does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Observed, ResourceError, Schema, Typed};

/// The `time_sleep` resource type.
pub struct TimeSleep {
    schema: Schema,
}

impl TimeSleep {
    /// The type with its schema.
    pub fn new() -> TimeSleep {
        TimeSleep {
            schema: Schema::new()
                .attr(
                    AttrSchema::optional("create_duration", Type::String)
                        .describe("how long to wait after creation, like \"30s\" or \"2m\""),
                )
                .attr(
                    AttrSchema::optional("destroy_duration", Type::String)
                        .describe("how long to wait before destruction"),
                )
                .attr(
                    AttrSchema::optional("triggers", Type::Map(Box::new(Type::String))).force_new(),
                )
                .attr(AttrSchema::computed("id", Type::String)),
        }
    }
}

impl Default for TimeSleep {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses durations like `500ms`, `30s`, `2m`, `1h`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        num.clear();
        let digits: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        if digits.is_empty() {
            return Err(format!(
                "\"{s}\" is not a duration like \"30s\", \"2m\" or \"1h30m\""
            ));
        }
        rest = &rest[digits.len()..];
        let unit: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        rest = &rest[unit.len()..];
        let n: f64 = digits
            .parse()
            .map_err(|_| format!("\"{s}\" is not a duration"))?;
        total += n * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "\"{s}\": unknown unit \"{unit}\" (use ms, s, m or h)"
                ))
            }
        };
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// `time_sleep`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SleepConfig {
    create_duration: Option<String>,
    destroy_duration: Option<String>,
    triggers: Option<BTreeMap<String, String>>,
}

/// `time_sleep`'s state.
#[derive(Debug, Serialize, Deserialize)]
pub struct SleepState {
    #[serde(flatten)]
    config: SleepConfig,
    id: String,
}

async fn sleep_for(d: Option<&str>) -> Result<(), ResourceError> {
    if let Some(d) = d {
        tokio::time::sleep(parse_duration(d).map_err(ResourceError::Invalid)?).await;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Typed for TimeSleep {
    type Config = SleepConfig;
    type State = SleepState;
    const TYPE: &'static str = "time_sleep";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        ["create_duration", "destroy_duration"]
            .iter()
            .filter_map(|a| {
                get::str(c, a)
                    .and_then(|d| parse_duration(d).err())
                    .map(|e| AttrError::on(a, e))
            })
            .collect()
    }
    async fn ensure(
        &self,
        _ctx: &Ctx,
        prior: Option<&SleepState>,
        c: &SleepConfig,
    ) -> Result<SleepState, ResourceError> {
        // It sleeps when created only; updates and restarts keep its id.
        let id = match prior {
            Some(p) => p.id.clone(),
            None => {
                sleep_for(c.create_duration.as_deref()).await?;
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    .to_string()
            }
        };
        Ok(SleepState {
            config: c.clone(),
            id,
        })
    }
    async fn read(
        &self,
        _ctx: &Ctx,
        _s: &SleepState,
    ) -> Result<Observed<SleepState>, ResourceError> {
        Ok(Observed::NotObservable)
    }
    async fn delete(&self, _ctx: &Ctx, s: &SleepState) -> Result<(), ResourceError> {
        sleep_for(s.config.destroy_duration.as_deref()).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_agrees() {
        veeps_resource::check_schema(&super::TimeSleep::new()).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("1m30s").unwrap().as_secs(), 90);
        assert_eq!(super::parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(super::parse_duration("5 minutes").is_err());
        assert!(super::parse_duration("").is_err());
    }
}
