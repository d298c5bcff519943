//! The `ban_policy` type.

use crate::{BanPolicy, Bans, Jail};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::typed::list;
use veeps_resource::{
    get, list_of_strings, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Observed, Registry,
    ResourceError, Schema, Typed,
};

/// Registers the type.
pub fn register(r: &mut Registry) {
    r.register(BanPolicyType::new());
}

fn bans(ctx: &Ctx) -> Result<&Arc<Bans>, ResourceError> {
    ctx.service::<Arc<Bans>>("intrusion detection")
}

/// `ban_policy`: jails that ban addresses after repeated failed authentications.
pub struct BanPolicyType(Schema);

impl BanPolicyType {
    /// The type with its schema.
    pub fn new() -> Self {
        BanPolicyType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(
                    AttrSchema::optional("allow", list_of_strings())
                        .describe("addresses and networks never banned (the host itself never is)"),
                )
                .block(BlockSchema::new(
                    "jail",
                    Nesting::List,
                    Schema::new()
                        .attr(AttrSchema::required("source", Type::String).describe("api or s3"))
                        .attr(AttrSchema::optional("max_retry", Type::Number).default(5.0))
                        .attr(AttrSchema::optional("find_time", Type::Number).default(600.0))
                        .attr(AttrSchema::optional("ban_time", Type::Number).default(3600.0))
                        .attr(AttrSchema::optional("increment", Type::Bool).default(true))
                        .attr(AttrSchema::optional("max_ban_time", Type::Number).default(604800.0)),
                )),
        )
    }
}

impl Default for BanPolicyType {
    fn default() -> Self {
        Self::new()
    }
}

/// `ban_policy`'s settable attributes (its state too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BanPolicyConfig {
    name: String,
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    jail: Vec<Jail>,
}

fn to_policy(env: &str, c: &BanPolicyConfig) -> Result<BanPolicy, ResourceError> {
    let allow = c
        .allow
        .iter()
        .flatten()
        .map(|a| {
            a.parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ResourceError::Invalid(format!("allow: \"{a}\" is not an address or CIDR"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BanPolicy {
        env: env.into(),
        name: c.name.clone(),
        jails: c.jail.clone(),
        allow,
    })
}

#[async_trait::async_trait]
impl Typed for BanPolicyType {
    type Config = BanPolicyConfig;
    type State = BanPolicyConfig;
    const TYPE: &'static str = "ban_policy";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut out = vec![];
        for a in get::strings(c, "allow") {
            if a.parse::<ipnet::IpNet>().is_err() && a.parse::<std::net::IpAddr>().is_err() {
                out.push(AttrError::on(
                    "allow",
                    format!("\"{a}\" is not an address or CIDR"),
                ));
            }
        }
        for (i, j) in get::blocks(c, "jail").into_iter().enumerate() {
            if let Some(s) = get::str(j, "source") {
                if !crate::SOURCES.iter().any(|(k, _)| *k == s) {
                    out.push(AttrError::on(
                        &format!("jail[{i}].source"),
                        format!(
                            "\"{s}\" is not watched here; one of: {}",
                            crate::SOURCES
                                .iter()
                                .map(|(k, what)| format!("{k} ({what})"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            for (k, lo, hi) in [
                ("max_retry", 1.0, 1000.0),
                ("find_time", 1.0, 86400.0 * 7.0),
                ("ban_time", 1.0, 86400.0 * 365.0),
                ("max_ban_time", 1.0, 86400.0 * 365.0),
            ] {
                if let Some(n) = get::num(j, k) {
                    if !(lo..=hi).contains(&n) || n.fract() != 0.0 {
                        out.push(AttrError::on(
                            &format!("jail[{i}].{k}"),
                            format!("must be a whole number from {lo} to {hi}"),
                        ));
                    }
                }
            }
        }
        out
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&BanPolicyConfig>,
        c: &BanPolicyConfig,
    ) -> Result<BanPolicyConfig, ResourceError> {
        bans(ctx)?
            .put_policy(&to_policy(&ctx.env, c)?)
            .map_err(|e| ResourceError::part("intrusion detection", e))?;
        Ok(c.clone())
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &BanPolicyConfig,
    ) -> Result<Observed<BanPolicyConfig>, ResourceError> {
        Ok(match bans(ctx)?.policy(&ctx.env, &s.name) {
            Some(p) => Observed::Exists(BanPolicyConfig {
                name: p.name,
                allow: if to_policy(&ctx.env, s).is_ok_and(|x| x.allow == p.allow) {
                    s.allow.clone()
                } else {
                    Some(p.allow.iter().map(|a| a.to_string()).collect())
                },
                jail: p.jails,
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &BanPolicyConfig) -> Result<(), ResourceError> {
        bans(ctx)?
            .delete_policy(&ctx.env, &s.name)
            .map_err(|e| ResourceError::part("intrusion detection", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_agrees_with_config_and_state() {
        veeps_resource::check_schema(&BanPolicyType::new()).unwrap();
    }
}
