//! `random_id`: random bytes for unique names, stable across applies.

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Observed, ResourceError, Schema, Typed};

/// The `random_id` resource type.
pub struct RandomId {
    schema: Schema,
}

impl RandomId {
    /// The type with its schema.
    pub fn new() -> RandomId {
        RandomId {
            schema: Schema::new()
                .attr(
                    AttrSchema::required("byte_length", Type::Number)
                        .force_new()
                        .describe("number of random bytes"),
                )
                .attr(
                    AttrSchema::optional("prefix", Type::String)
                        .force_new()
                        .describe("prepended to hex and b64 forms"),
                )
                .attr(
                    AttrSchema::optional("keepers", Type::Map(Box::new(Type::String))).force_new(),
                )
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("hex", Type::String))
                .attr(AttrSchema::computed("dec", Type::String))
                .attr(AttrSchema::computed("b64_url", Type::String))
                .attr(AttrSchema::computed("b64_std", Type::String)),
        }
    }
}

impl Default for RandomId {
    fn default() -> Self {
        Self::new()
    }
}

/// The bytes as a decimal number.
fn to_decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0];
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            let v = *d as u32 * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    digits.iter().rev().map(|d| (b'0' + d) as char).collect()
}

/// `random_id`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdConfig {
    byte_length: u32,
    prefix: Option<String>,
    keepers: Option<BTreeMap<String, String>>,
}

/// `random_id`'s state.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdState {
    #[serde(flatten)]
    config: IdConfig,
    id: String,
    hex: String,
    dec: String,
    b64_url: String,
    b64_std: String,
}

#[async_trait::async_trait]
impl Typed for RandomId {
    type Config = IdConfig;
    type State = IdState;
    const TYPE: &'static str = "random_id";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        match get::num(c, "byte_length") {
            Some(n) if !(1.0..=1024.0).contains(&n) || n.fract() != 0.0 => vec![AttrError::on(
                "byte_length",
                "must be a whole number from 1 to 1024",
            )],
            _ => vec![],
        }
    }
    async fn ensure(
        &self,
        _ctx: &Ctx,
        prior: Option<&IdState>,
        c: &IdConfig,
    ) -> Result<IdState, ResourceError> {
        let config = c.clone();
        // Every setting forces replacement: a prior state keeps its bytes.
        if let Some(p) = prior {
            return Ok(IdState {
                config,
                id: p.id.clone(),
                hex: p.hex.clone(),
                dec: p.dec.clone(),
                b64_url: p.b64_url.clone(),
                b64_std: p.b64_std.clone(),
            });
        }
        let mut bytes = vec![0u8; c.byte_length.clamp(1, 1024) as usize];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let prefix = c.prefix.as_deref().unwrap_or("");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        Ok(IdState {
            config,
            b64_url: format!("{prefix}{url}"),
            id: url,
            b64_std: format!(
                "{prefix}{}",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            ),
            hex: format!("{prefix}{}", hex::encode(&bytes)),
            dec: format!("{prefix}{}", to_decimal(&bytes)),
        })
    }
    async fn read(&self, _ctx: &Ctx, _s: &IdState) -> Result<Observed<IdState>, ResourceError> {
        Ok(Observed::NotObservable)
    }
    async fn delete(&self, _ctx: &Ctx, _s: &IdState) -> Result<(), ResourceError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_agrees() {
        veeps_resource::check_schema(&super::RandomId::new()).unwrap();
    }

    #[test]
    fn decimal() {
        assert_eq!(super::to_decimal(&[1, 0]), "256");
        assert_eq!(
            super::to_decimal(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "4722366482869645213695"
        );
    }
}
