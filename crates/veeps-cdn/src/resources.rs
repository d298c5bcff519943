//! `cdn_distribution`, as Terraform's AWS provider spells `aws_cloudfront_distribution`
//! (the parts veeps serves): origins, a default and ordered cache behaviours with their
//! TTLs and forwarded values, aliases with a certificate, custom error responses, the
//! default root object and the viewer protocol policy.

use crate::model::{Behavior, CustomError, DistSpec, Distribution, OriginSpec};
use crate::policy::Ttls;
use crate::service::{Cdn, CdnError};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::typed::list;
use veeps_resource::{
    get, list_of_strings, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Observed, Registry,
    ResourceError, Schema, Typed,
};

/// Registers the type.
pub fn register(r: &mut Registry) {
    r.register(DistributionType::new());
}

fn cdn(ctx: &Ctx) -> Result<&Arc<Cdn>, ResourceError> {
    ctx.service::<Arc<Cdn>>("CDN")
}

fn failed(e: CdnError) -> ResourceError {
    match e {
        CdnError::Invalid(m) | CdnError::NotFound(m) => ResourceError::Invalid(m),
        e => ResourceError::part("CDN", e),
    }
}

/// A distribution's id: `E` and 13 characters, stable for its address, like CloudFront's.
fn id_of(env: &str, address: &str) -> String {
    let h = sha2::Sha256::digest(format!("{env}/{address}").as_bytes());
    format!("E{}", hex::encode(h)[..13].to_ascii_uppercase())
}

/// Its own name.
pub fn domain_of(id: &str) -> String {
    format!("{}.cdn.localhost", id.to_ascii_lowercase())
}

const METHODS: [&str; 7] = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"];
const POLICIES: [&str; 3] = ["allow-all", "redirect-to-https", "https-only"];

fn behavior_schema(ordered: bool) -> Schema {
    let mut s = Schema::new();
    if ordered {
        s = s.attr(AttrSchema::required("path_pattern", Type::String));
    }
    s.attr(AttrSchema::required("target_origin_id", Type::String))
        .attr(
            AttrSchema::optional("allowed_methods", list_of_strings())
                .describe("GET and HEAD by default; others are passed on uncached"),
        )
        .attr(AttrSchema::optional("cached_methods", list_of_strings()))
        .attr(AttrSchema::optional("min_ttl", Type::Number).default(0.0))
        .attr(AttrSchema::optional("default_ttl", Type::Number).default(86400.0))
        .attr(AttrSchema::optional("max_ttl", Type::Number).default(31536000.0))
        .attr(AttrSchema::optional("compress", Type::Bool).default(false))
        .attr(
            AttrSchema::optional("viewer_protocol_policy", Type::String)
                .default("allow-all")
                .describe("allow-all, redirect-to-https or https-only"),
        )
        .block(BlockSchema::new(
            "forwarded_values",
            Nesting::Single,
            Schema::new()
                .attr(AttrSchema::optional("query_string", Type::Bool).default(false))
                .attr(AttrSchema::optional("headers", list_of_strings()))
                .block(BlockSchema::new(
                    "cookies",
                    Nesting::Single,
                    Schema::new()
                        .attr(
                            AttrSchema::optional("forward", Type::String)
                                .default("none")
                                .describe("none, all or whitelist"),
                        )
                        .attr(AttrSchema::optional("whitelisted_names", list_of_strings())),
                )),
        ))
}

/// `cdn_distribution`.
pub struct DistributionType(Schema);

impl Default for DistributionType {
    fn default() -> Self {
        Self::new()
    }
}

impl DistributionType {
    /// The type with its schema.
    pub fn new() -> Self {
        DistributionType(
            Schema::new()
                .attr(AttrSchema::optional("enabled", Type::Bool).default(true))
                .attr(AttrSchema::optional("comment", Type::String))
                .attr(AttrSchema::optional("aliases", list_of_strings()))
                .attr(AttrSchema::optional("default_root_object", Type::String))
                .attr(
                    AttrSchema::optional("certificate_arn", Type::String)
                        .describe("a certificate's id, for the aliases over HTTPS"),
                )
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("arn", Type::String))
                .attr(AttrSchema::computed("domain_name", Type::String))
                .attr(AttrSchema::computed("status", Type::String))
                .block(BlockSchema {
                    name: "origin",
                    nesting: Nesting::List,
                    schema: Schema::new()
                        .attr(AttrSchema::required("origin_id", Type::String))
                        .attr(AttrSchema::required("domain_name", Type::String).describe(
                            "a bucket's website_endpoint, a load balancer's dns_name, or HOST[:PORT]",
                        ))
                        .attr(AttrSchema::optional("http_port", Type::Number).default(80.0))
                        .attr(AttrSchema::optional("https_port", Type::Number).default(443.0))
                        .attr(
                            AttrSchema::optional("origin_protocol_policy", Type::String)
                                .default("http-only")
                                .describe("http-only, or https-only (verified against the system's CAs and veeps')"),
                        )
                        .attr(AttrSchema::optional("origin_path", Type::String)),
                    force_new: false,
                    min_items: 1,
                })
                .block(BlockSchema {
                    name: "default_cache_behavior",
                    nesting: Nesting::Single,
                    schema: behavior_schema(false),
                    force_new: false,
                    min_items: 1,
                })
                .block(BlockSchema::new(
                    "ordered_cache_behavior",
                    Nesting::List,
                    behavior_schema(true),
                ))
                .block(BlockSchema::new(
                    "custom_error_response",
                    Nesting::List,
                    Schema::new()
                        .attr(AttrSchema::required("error_code", Type::Number))
                        .attr(AttrSchema::optional("response_code", Type::Number))
                        .attr(AttrSchema::optional("response_page_path", Type::String))
                        .attr(
                            AttrSchema::optional("error_caching_min_ttl", Type::Number)
                                .default(10.0),
                        ),
                )),
        )
    }
}

/// `origin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OriginConfig {
    origin_id: String,
    domain_name: String,
    http_port: u16,
    https_port: u16,
    origin_protocol_policy: String,
    origin_path: Option<String>,
}

/// `cookies` of `forwarded_values`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CookiesConfig {
    forward: String,
    whitelisted_names: Option<Vec<String>>,
}

/// `forwarded_values`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedConfig {
    query_string: bool,
    headers: Option<Vec<String>>,
    cookies: Option<CookiesConfig>,
}

/// `default_cache_behavior` and `ordered_cache_behavior`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BehaviorConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_pattern: Option<String>,
    target_origin_id: String,
    allowed_methods: Option<Vec<String>>,
    cached_methods: Option<Vec<String>>,
    min_ttl: u64,
    default_ttl: u64,
    max_ttl: u64,
    compress: bool,
    viewer_protocol_policy: String,
    forwarded_values: Option<ForwardedConfig>,
}

/// `custom_error_response`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorConfig {
    error_code: u16,
    response_code: Option<u16>,
    response_page_path: Option<String>,
    error_caching_min_ttl: u64,
}

/// `cdn_distribution`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistributionConfig {
    enabled: bool,
    comment: Option<String>,
    aliases: Option<Vec<String>>,
    default_root_object: Option<String>,
    certificate_arn: Option<String>,
    #[serde(default, deserialize_with = "list")]
    origin: Vec<OriginConfig>,
    default_cache_behavior: BehaviorConfig,
    #[serde(default, deserialize_with = "list")]
    ordered_cache_behavior: Vec<BehaviorConfig>,
    #[serde(default, deserialize_with = "list")]
    custom_error_response: Vec<ErrorConfig>,
}

/// `cdn_distribution`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistributionState {
    #[serde(flatten)]
    config: DistributionConfig,
    id: String,
    arn: String,
    domain_name: String,
    status: String,
}

fn behavior(b: &BehaviorConfig) -> Behavior {
    let fv = b.forwarded_values.as_ref();
    let cookies = match fv.and_then(|f| f.cookies.as_ref()) {
        Some(c) if c.forward == "all" => vec!["*".to_string()],
        Some(c) if c.forward == "whitelist" => c.whitelisted_names.clone().unwrap_or_default(),
        _ => vec![],
    };
    let upper = |l: &Option<Vec<String>>| -> Vec<String> {
        l.clone()
            .unwrap_or_else(|| vec!["GET".into(), "HEAD".into()])
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect()
    };
    Behavior {
        pattern: b.path_pattern.clone().unwrap_or_else(|| "*".into()),
        origin: b.target_origin_id.clone(),
        ttls: Ttls {
            min: b.min_ttl,
            default: b.default_ttl,
            max: b.max_ttl,
        },
        allowed_methods: upper(&b.allowed_methods),
        cached_methods: upper(&b.cached_methods),
        query_string: fv.is_some_and(|f| f.query_string),
        headers: fv.and_then(|f| f.headers.clone()).unwrap_or_default(),
        cookies,
        compress: b.compress,
    }
}

fn spec(ctx: &Ctx, c: &DistributionConfig) -> DistSpec {
    let id = id_of(&ctx.env, &ctx.address);
    let mut behaviors: Vec<Behavior> = c.ordered_cache_behavior.iter().map(behavior).collect();
    behaviors.push(behavior(&c.default_cache_behavior));
    DistSpec {
        dist: Distribution {
            domain: domain_of(&id),
            id,
            env: ctx.env.clone(),
            aliases: c
                .aliases
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            enabled: c.enabled,
            default_root_object: c.default_root_object.clone().filter(|r| !r.is_empty()),
            redirect_to_https: c.default_cache_behavior.viewer_protocol_policy != "allow-all",
            origins: vec![],
            behaviors,
            custom_errors: c
                .custom_error_response
                .iter()
                .map(|e| CustomError {
                    error_code: e.error_code,
                    response_code: e.response_code,
                    response_page_path: e.response_page_path.clone(),
                    error_caching_min_ttl: e.error_caching_min_ttl,
                })
                .collect(),
            tls: None,
        },
        origins: c
            .origin
            .iter()
            .map(|o| OriginSpec {
                id: o.origin_id.clone(),
                domain_name: o.domain_name.clone(),
                http_port: o.http_port,
                https_port: o.https_port,
                protocol_policy: o.origin_protocol_policy.clone(),
                origin_path: o.origin_path.clone().unwrap_or_default(),
            })
            .collect(),
        certificate: c.certificate_arn.clone(),
    }
}

fn check_behavior(prefix: &str, b: &Value, e: &mut Vec<AttrError>) {
    for attr in ["allowed_methods", "cached_methods"] {
        for m in get::strings(b, attr) {
            if !METHODS.contains(&m.to_ascii_uppercase().as_str()) {
                e.push(AttrError::on(
                    &format!("{prefix}.{attr}"),
                    format!("\"{m}\" is not one of {}", METHODS.join(", ")),
                ));
            }
        }
    }
    if let Some(p) = get::str(b, "viewer_protocol_policy") {
        if !POLICIES.contains(&p) {
            e.push(AttrError::on(
                &format!("{prefix}.viewer_protocol_policy"),
                format!("\"{p}\" is not one of {}", POLICIES.join(", ")),
            ));
        }
    }
    let n = |k: &str| b.get(k).and_then(Value::as_f64);
    if let (Some(min), Some(max)) = (n("min_ttl"), n("max_ttl")) {
        if min > max {
            e.push(AttrError::on(
                &format!("{prefix}.min_ttl"),
                "min_ttl is above max_ttl",
            ));
        }
    }
}

#[async_trait::async_trait]
impl Typed for DistributionType {
    type Config = DistributionConfig;
    type State = DistributionState;
    const TYPE: &'static str = "cdn_distribution";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(b) = c.get("default_cache_behavior") {
            check_behavior("default_cache_behavior", b, &mut e);
        }
        if let Some(Value::List(l)) = c.get("ordered_cache_behavior") {
            for (i, b) in l.iter().enumerate() {
                check_behavior(&format!("ordered_cache_behavior[{i}]"), b, &mut e);
            }
        }
        if let Some(r) = get::str(c, "default_root_object") {
            if r.starts_with('/') {
                e.push(AttrError::on(
                    "default_root_object",
                    "name the object without a leading / (index.html)",
                ));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        let id = id_of(&ctx.env, &ctx.address);
        [
            ("id".to_string(), Value::string(&id)),
            (
                "arn".to_string(),
                Value::string(format!("arn:veeps:cdn:{}:distribution/{id}", ctx.env)),
            ),
            ("domain_name".to_string(), Value::string(domain_of(&id))),
            ("status".to_string(), Value::string("Deployed")),
        ]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&DistributionState>,
        c: &DistributionConfig,
    ) -> Result<DistributionState, ResourceError> {
        let s = spec(ctx, c);
        let id = s.dist.id.clone();
        let domain = s.dist.domain.clone();
        cdn(ctx)?.put(s).await.map_err(failed)?;
        Ok(DistributionState {
            config: c.clone(),
            arn: format!("arn:veeps:cdn:{}:distribution/{id}", ctx.env),
            id,
            domain_name: domain,
            status: "Deployed".into(),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &DistributionState,
    ) -> Result<Observed<DistributionState>, ResourceError> {
        Ok(match cdn(ctx)?.get(&s.id) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &DistributionState) -> Result<(), ResourceError> {
        cdn(ctx)?.delete(&s.id).await.map_err(failed)
    }
    async fn reconcile(
        &self,
        ctx: &Ctx,
        s: &DistributionState,
    ) -> Result<DistributionState, ResourceError> {
        if cdn(ctx)?.get(&s.id).is_some() {
            return Ok(s.clone());
        }
        self.ensure(ctx, Some(s), &s.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_and_the_structs_agree() {
        veeps_resource::typed::check_schema(&DistributionType::new()).unwrap();
    }
}
