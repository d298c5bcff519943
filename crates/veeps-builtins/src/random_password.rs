//! `random_password`: a generated secret, stable across applies, sensitive everywhere.

use rand::seq::SliceRandom;
use rand::Rng;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Resource, ResourceError, Schema};

/// The `random_password` resource type.
pub struct RandomPassword {
    schema: Schema,
}

impl RandomPassword {
    /// The type with its schema.
    pub fn new() -> RandomPassword {
        let flag = |n| {
            AttrSchema::optional(n, Type::Bool)
                .default(true)
                .force_new()
        };
        let min = |n| {
            AttrSchema::optional(n, Type::Number)
                .default(0.0)
                .force_new()
        };
        RandomPassword {
            schema: Schema::new()
                .attr(
                    AttrSchema::required("length", Type::Number)
                        .force_new()
                        .describe("number of characters"),
                )
                .attr(flag("special"))
                .attr(flag("upper"))
                .attr(flag("lower"))
                .attr(flag("numeric"))
                .attr(min("min_special"))
                .attr(min("min_upper"))
                .attr(min("min_lower"))
                .attr(min("min_numeric"))
                .attr(
                    AttrSchema::optional("override_special", Type::String)
                        .force_new()
                        .describe("the special characters to use"),
                )
                .attr(
                    AttrSchema::optional("keepers", Type::Map(Box::new(Type::String)))
                        .force_new()
                        .describe("a new password is generated when these change"),
                )
                .attr(AttrSchema::computed("result", Type::String).sensitive())
                .attr(AttrSchema::computed("id", Type::String)),
        }
    }
}

impl Default for RandomPassword {
    fn default() -> Self {
        Self::new()
    }
}

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const NUMERIC: &str = "0123456789";
const SPECIAL: &str = "!#$%&*()-_=+[]{}<>:?";

fn generate(c: &Value) -> Result<String, ResourceError> {
    let len = get::num(c, "length").unwrap_or(0.0) as usize;
    let special_set = get::str(c, "override_special")
        .unwrap_or(SPECIAL)
        .to_string();
    let classes: Vec<(bool, String, usize)> = vec![
        (
            get::bool_or(c, "upper", true),
            UPPER.into(),
            get::num(c, "min_upper").unwrap_or(0.0) as usize,
        ),
        (
            get::bool_or(c, "lower", true),
            LOWER.into(),
            get::num(c, "min_lower").unwrap_or(0.0) as usize,
        ),
        (
            get::bool_or(c, "numeric", true),
            NUMERIC.into(),
            get::num(c, "min_numeric").unwrap_or(0.0) as usize,
        ),
        (
            get::bool_or(c, "special", true),
            special_set,
            get::num(c, "min_special").unwrap_or(0.0) as usize,
        ),
    ];
    let mut rng = rand::rngs::OsRng;
    let mut out: Vec<char> = Vec::with_capacity(len);
    let mut all: Vec<char> = Vec::new();
    for (on, set, min) in &classes {
        if !on || set.is_empty() {
            continue;
        }
        let chars: Vec<char> = set.chars().collect();
        for _ in 0..*min {
            out.push(chars[rng.gen_range(0..chars.len())]);
        }
        all.extend(chars);
    }
    if all.is_empty() {
        return Err(ResourceError::Invalid(
            "every character class is disabled".into(),
        ));
    }
    while out.len() < len {
        out.push(all[rng.gen_range(0..all.len())]);
    }
    out.shuffle(&mut rng);
    Ok(out.into_iter().collect())
}

#[async_trait::async_trait]
impl Resource for RandomPassword {
    fn type_name(&self) -> &'static str {
        "random_password"
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut errs = vec![];
        if let Some(len) = get::num(c, "length") {
            if !(1.0..=4096.0).contains(&len) || len.fract() != 0.0 {
                errs.push(AttrError::on(
                    "length",
                    "must be a whole number from 1 to 4096",
                ));
            }
            let mins: f64 = ["min_upper", "min_lower", "min_numeric", "min_special"]
                .iter()
                .filter_map(|n| get::num(c, n))
                .sum();
            if mins > len {
                errs.push(AttrError::on(
                    "length",
                    format!("is {len}, less than the sum of the min_* settings ({mins})"),
                ));
            }
        }
        if ["upper", "lower", "numeric", "special"]
            .iter()
            .all(|n| c.get(n) == Some(&Value::Bool(false)))
        {
            errs.push(AttrError::on(
                "special",
                "at least one of upper, lower, numeric and special must be true",
            ));
        }
        errs
    }
    async fn create(&self, _ctx: &Ctx, config: &Value) -> Result<Value, ResourceError> {
        let mut s = config.as_object().cloned().unwrap_or_default();
        s.insert("result".into(), Value::String(generate(config)?));
        s.insert("id".into(), Value::string("none"));
        Ok(Value::Object(s))
    }
    async fn read(&self, _ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(Some(state.clone()))
    }
    async fn update(
        &self,
        _ctx: &Ctx,
        prior: &Value,
        config: &Value,
    ) -> Result<Value, ResourceError> {
        Ok(crate::merge_config(prior, config))
    }
    async fn delete(&self, _ctx: &Ctx, _state: &Value) -> Result<(), ResourceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_classes_and_minimums() {
        let c = Value::Object(
            [
                ("length", 20.0.into()),
                ("special", false.into()),
                ("min_numeric", 5.0.into()),
                ("upper", true.into()),
                ("lower", true.into()),
                ("numeric", true.into()),
            ]
            .into_iter()
            .map(|(k, v): (&str, Value)| (k.to_string(), v))
            .collect(),
        );
        let p = generate(&c).unwrap();
        assert_eq!(p.chars().count(), 20);
        assert!(p.chars().filter(|c| c.is_ascii_digit()).count() >= 5);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!RandomPassword::new()
            .validate(&Value::Object(
                [
                    ("length".to_string(), Value::Number(3.0)),
                    ("min_upper".to_string(), Value::Number(4.0))
                ]
                .into()
            ))
            .is_empty());
    }
}
