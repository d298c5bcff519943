//! `random_id`: random bytes for unique names, stable across applies.

use base64::Engine as _;
use rand::RngCore;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Resource, ResourceError, Schema};

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

#[async_trait::async_trait]
impl Resource for RandomId {
    fn type_name(&self) -> &'static str {
        "random_id"
    }
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
    async fn create(&self, _ctx: &Ctx, config: &Value) -> Result<Value, ResourceError> {
        let n = get::num(config, "byte_length").unwrap_or(8.0) as usize;
        let mut bytes = vec![0u8; n];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let prefix = get::str(config, "prefix").unwrap_or("");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        let mut s = config.as_object().cloned().unwrap_or_default();
        s.insert("id".into(), Value::String(url.clone()));
        s.insert("b64_url".into(), Value::String(format!("{prefix}{url}")));
        s.insert(
            "b64_std".into(),
            Value::String(format!(
                "{prefix}{}",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            )),
        );
        s.insert(
            "hex".into(),
            Value::String(format!("{prefix}{}", hex::encode(&bytes))),
        );
        s.insert(
            "dec".into(),
            Value::String(format!("{prefix}{}", to_decimal(&bytes))),
        );
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
    #[test]
    fn decimal() {
        assert_eq!(super::to_decimal(&[1, 0]), "256");
        assert_eq!(
            super::to_decimal(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            "4722366482869645213695"
        );
    }
}
