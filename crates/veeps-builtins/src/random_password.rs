//! `random_password`: a generated secret, stable across applies, sensitive everywhere.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Observed, ResourceError, Schema, Typed};

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

/// `random_password`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordConfig {
    length: u32,
    special: bool,
    upper: bool,
    lower: bool,
    numeric: bool,
    min_special: u32,
    min_upper: u32,
    min_lower: u32,
    min_numeric: u32,
    override_special: Option<String>,
    keepers: Option<BTreeMap<String, String>>,
}

/// `random_password`'s state.
#[derive(Debug, Serialize, Deserialize)]
pub struct PasswordState {
    #[serde(flatten)]
    config: PasswordConfig,
    result: String,
    id: String,
}

fn generate(c: &PasswordConfig) -> Result<String, ResourceError> {
    let len = c.length.min(4096) as usize;
    let special_set = c.override_special.as_deref().unwrap_or(SPECIAL);
    let classes: [(bool, &str, u32); 4] = [
        (c.upper, UPPER, c.min_upper),
        (c.lower, LOWER, c.min_lower),
        (c.numeric, NUMERIC, c.min_numeric),
        (c.special, special_set, c.min_special),
    ];
    let mut rng = rand::rngs::OsRng;
    let mut out: Vec<char> = Vec::with_capacity(len);
    let mut all: Vec<char> = Vec::new();
    for (on, set, min) in classes {
        if !on || set.is_empty() {
            continue;
        }
        let chars: Vec<char> = set.chars().collect();
        for _ in 0..min.min(4096) {
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
impl Typed for RandomPassword {
    type Config = PasswordConfig;
    type State = PasswordState;
    const TYPE: &'static str = "random_password";
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
    async fn ensure(
        &self,
        _ctx: &Ctx,
        prior: Option<&PasswordState>,
        c: &PasswordConfig,
    ) -> Result<PasswordState, ResourceError> {
        // Every setting forces replacement: a prior state keeps its password.
        let result = match prior {
            Some(p) => p.result.clone(),
            None => generate(c)?,
        };
        Ok(PasswordState {
            config: c.clone(),
            result,
            id: "none".into(),
        })
    }
    async fn read(
        &self,
        _ctx: &Ctx,
        _s: &PasswordState,
    ) -> Result<Observed<PasswordState>, ResourceError> {
        Ok(Observed::NotObservable)
    }
    async fn delete(&self, _ctx: &Ctx, _s: &PasswordState) -> Result<(), ResourceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn honours_classes_and_minimums() {
        check_schema(&RandomPassword::new()).unwrap();
        let c = PasswordConfig {
            length: 20,
            special: false,
            upper: true,
            lower: true,
            numeric: true,
            min_special: 0,
            min_upper: 0,
            min_lower: 0,
            min_numeric: 5,
            override_special: None,
            keepers: None,
        };
        let p = generate(&c).unwrap();
        assert_eq!(p.chars().count(), 20);
        assert!(p.chars().filter(|c| c.is_ascii_digit()).count() >= 5);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(!RandomPassword::new()
            .validate(&Value::Object(
                [
                    ("length".to_string(), Value::from(3i64)),
                    ("min_upper".to_string(), Value::from(4i64))
                ]
                .into()
            ))
            .is_empty());
    }
}
