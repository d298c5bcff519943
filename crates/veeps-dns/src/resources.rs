//! The DNS resource types, as Terraform's AWS provider spells them: `dns_zone`
//! (`aws_route53_zone`), `dns_record` (`aws_route53_record`) and `health_check`
//! (`aws_route53_health_check`).

use crate::model::{Alias, CheckSpec, Failover, RecordSpec, ZoneSpec};
use crate::Dns;
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

/// Registers the types.
pub fn register(r: &mut Registry) {
    r.register(ZoneType::new());
    r.register(RecordType::new());
    r.register(CheckType::new());
    r.register(AssociationType::new());
}

fn dns(ctx: &Ctx) -> Result<&Arc<Dns>, ResourceError> {
    ctx.service::<Arc<Dns>>("DNS")
}

fn failed(e: crate::DnsError) -> ResourceError {
    match e {
        crate::DnsError::Invalid(m) | crate::DnsError::NotFound(m) => ResourceError::Invalid(m),
        e => ResourceError::part("DNS", e),
    }
}

/// An id of `kind` for the resource at `address` of `env`: stable, upper-case, like AWS's.
fn id_of(kind: &str, env: &str, address: &str) -> String {
    let h = sha2::Sha256::digest(format!("{env}/{address}").as_bytes());
    format!("{kind}{}", hex::encode(h)[..13].to_ascii_uppercase())
}

fn name_servers(zone: &str) -> Vec<String> {
    let z = zone.trim_end_matches('.').to_ascii_lowercase();
    vec![format!("ns1.{z}"), format!("ns2.{z}")]
}

/// `dns_zone`.
pub struct ZoneType(Schema);

impl Default for ZoneType {
    fn default() -> Self {
        Self::new()
    }
}

impl ZoneType {
    /// The type with its schema.
    pub fn new() -> Self {
        ZoneType(
            Schema::new()
                .attr(AttrSchema::required("name", Type::String).force_new())
                .attr(AttrSchema::optional("comment", Type::String))
                .attr(
                    AttrSchema::optional("allow_transfer", list_of_strings()).describe(
                        "addresses and networks that may transfer the zone (AXFR over TCP)",
                    ),
                )
                .attr(
                    AttrSchema::optional("force_destroy", Type::Bool)
                        .default(false)
                        .describe("delete its record sets with it"),
                )
                .attr(AttrSchema::computed("zone_id", Type::String))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("arn", Type::String))
                .attr(AttrSchema::computed("name_servers", list_of_strings()))
                .attr(AttrSchema::computed("primary_name_server", Type::String))
                .block(BlockSchema::new(
                    "vpc",
                    Nesting::List,
                    Schema::new().attr(AttrSchema::required("vpc_id", Type::String)),
                )),
        )
    }
}

/// A `vpc` block of `dns_zone`: the zone is private to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneVpc {
    vpc_id: String,
}

/// `dns_zone`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneConfig {
    name: String,
    comment: Option<String>,
    allow_transfer: Option<Vec<String>>,
    force_destroy: bool,
    #[serde(default, deserialize_with = "list")]
    vpc: Vec<ZoneVpc>,
}

/// `dns_zone`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneState {
    #[serde(flatten)]
    config: ZoneConfig,
    zone_id: String,
    id: String,
    arn: String,
    name_servers: Vec<String>,
    primary_name_server: String,
}

fn nets(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|a| {
            a.parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("\"{a}\" is not an address or CIDR"))
        })
        .collect()
}

fn zone_spec(ctx: &Ctx, c: &ZoneConfig) -> Result<ZoneSpec, ResourceError> {
    Ok(ZoneSpec {
        id: id_of("Z", &ctx.env, &ctx.address),
        env: ctx.env.clone(),
        name: c.name.trim_end_matches('.').to_ascii_lowercase(),
        vpcs: c.vpc.iter().map(|v| v.vpc_id.clone()).collect(),
        allow_transfer: nets(c.allow_transfer.as_deref().unwrap_or_default())
            .map_err(ResourceError::Invalid)?,
        name_servers: name_servers(&c.name),
        serial: 0,
    })
}

#[async_trait::async_trait]
impl Typed for ZoneType {
    type Config = ZoneConfig;
    type State = ZoneState;
    const TYPE: &'static str = "dns_zone";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(n) = get::str(c, "name") {
            if let Err(m) = crate::catalog::parse_name(n) {
                e.push(AttrError::on("name", m));
            } else if !n.contains('.') && n.trim_end_matches('.').is_empty() {
                e.push(AttrError::on("name", "give a domain, like example.com"));
            }
        }
        if let Err(m) = nets(&get::strings(c, "allow_transfer")) {
            e.push(AttrError::on("allow_transfer", m));
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        let id = id_of("Z", &ctx.env, &ctx.address);
        let mut out: BTreeMap<String, Value> = [
            ("zone_id".to_string(), Value::string(&id)),
            ("id".to_string(), Value::string(&id)),
            (
                "arn".to_string(),
                Value::string(format!("arn:veeps:dns:::hostedzone/{id}")),
            ),
        ]
        .into();
        if let Some(n) = get::str(c, "name") {
            let ns = name_servers(n);
            out.insert("primary_name_server".into(), Value::string(&ns[0]));
            out.insert(
                "name_servers".into(),
                Value::List(ns.into_iter().map(Value::String).collect()),
            );
        }
        out
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&ZoneState>,
        c: &ZoneConfig,
    ) -> Result<ZoneState, ResourceError> {
        let spec = zone_spec(ctx, c)?;
        let z = dns(ctx)?.put_zone(spec).await.map_err(failed)?;
        Ok(ZoneState {
            config: c.clone(),
            zone_id: z.id.clone(),
            arn: format!("arn:veeps:dns:::hostedzone/{}", z.id),
            id: z.id,
            primary_name_server: z.name_servers[0].clone(),
            name_servers: z.name_servers,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &ZoneState) -> Result<Observed<ZoneState>, ResourceError> {
        Ok(match dns(ctx)?.zone(&s.zone_id) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &ZoneState) -> Result<(), ResourceError> {
        let d = dns(ctx)?;
        if s.config.force_destroy {
            for r in d.records().into_iter().filter(|r| r.zone_id == s.zone_id) {
                d.delete_record(&r.id).await.map_err(failed)?;
            }
        }
        d.delete_zone(&s.zone_id).await.map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &ZoneState) -> Result<ZoneState, ResourceError> {
        if dns(ctx)?.zone(&s.zone_id).is_some() {
            return Ok(s.clone());
        }
        self.ensure(ctx, Some(s), &s.config).await
    }
}

/// `dns_record`.
pub struct RecordType(Schema);

impl Default for RecordType {
    fn default() -> Self {
        Self::new()
    }
}

const TYPES: [&str; 8] = ["A", "AAAA", "CNAME", "TXT", "MX", "SRV", "CAA", "NS"];

impl RecordType {
    /// The type with its schema.
    pub fn new() -> Self {
        RecordType(
            Schema::new()
                .attr(AttrSchema::required("zone_id", Type::String).force_new())
                .attr(
                    AttrSchema::required("name", Type::String)
                        .force_new()
                        .describe("a name in the zone; the zone's name is added when missing"),
                )
                .attr(AttrSchema::required("type", Type::String).force_new())
                .attr(AttrSchema::optional("ttl", Type::Number))
                .attr(AttrSchema::optional("records", list_of_strings()))
                .attr(AttrSchema::optional("set_identifier", Type::String).force_new())
                .attr(AttrSchema::optional("health_check_id", Type::String))
                .attr(AttrSchema::computed("fqdn", Type::String))
                .attr(AttrSchema::computed("id", Type::String))
                .block(BlockSchema {
                    name: "alias",
                    nesting: Nesting::Single,
                    schema: Schema::new()
                        .attr(AttrSchema::required("name", Type::String).describe(
                            "a load balancer's dns_name, id or arn: answered with its address as it changes",
                        ))
                        .attr(AttrSchema::optional("zone_id", Type::String))
                        .attr(
                            AttrSchema::optional("evaluate_target_health", Type::Bool)
                                .default(false),
                        ),
                    force_new: false,
                    min_items: 0,
                })
                .block(BlockSchema {
                    name: "weighted_routing_policy",
                    nesting: Nesting::Single,
                    schema: Schema::new().attr(AttrSchema::required("weight", Type::Number)),
                    force_new: false,
                    min_items: 0,
                })
                .block(BlockSchema {
                    name: "failover_routing_policy",
                    nesting: Nesting::Single,
                    schema: Schema::new()
                        .attr(AttrSchema::required("type", Type::String).describe("PRIMARY or SECONDARY")),
                    force_new: false,
                    min_items: 0,
                }),
        )
    }
}

/// `alias` of `dns_record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasConfig {
    name: String,
    zone_id: Option<String>,
    evaluate_target_health: bool,
}

/// `weighted_routing_policy` of `dns_record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightConfig {
    weight: u32,
}

/// `failover_routing_policy` of `dns_record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverConfig {
    #[serde(rename = "type")]
    kind: String,
}

/// `dns_record`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordConfig {
    zone_id: String,
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: Option<u32>,
    records: Option<Vec<String>>,
    set_identifier: Option<String>,
    health_check_id: Option<String>,
    alias: Option<AliasConfig>,
    weighted_routing_policy: Option<WeightConfig>,
    failover_routing_policy: Option<FailoverConfig>,
}

/// `dns_record`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordState {
    #[serde(flatten)]
    config: RecordConfig,
    fqdn: String,
    id: String,
}

/// The record's owner name: `name`, with the zone's added when it is not already in it.
fn fqdn(name: &str, zone: &str) -> String {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    let z = zone.trim_end_matches('.').to_ascii_lowercase();
    if n == z || n.ends_with(&format!(".{z}")) {
        n
    } else if n.is_empty() || n == "@" {
        z
    } else {
        format!("{n}.{z}")
    }
}

fn record_id(c: &RecordConfig, owner: &str) -> String {
    // As the AWS provider: ZONE_NAME_TYPE[_SET].
    let mut id = format!("{}_{}_{}", c.zone_id, owner, c.rtype);
    if let Some(s) = &c.set_identifier {
        id.push('_');
        id.push_str(s);
    }
    id
}

#[async_trait::async_trait]
impl Typed for RecordType {
    type Config = RecordConfig;
    type State = RecordState;
    const TYPE: &'static str = "dns_record";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        let rtype = get::str(c, "type").map(str::to_ascii_uppercase);
        if let Some(t) = &rtype {
            if !TYPES.contains(&t.as_str()) {
                e.push(AttrError::on(
                    "type",
                    format!("\"{t}\" is not served; one of {}", TYPES.join(", ")),
                ));
            }
        }
        let alias = get::block(c, "alias").is_some();
        let records = c.get("records").is_some_and(|v| !v.is_null());
        if alias && records {
            e.push(AttrError::on(
                "records",
                "give records or an alias, not both",
            ));
        }
        if alias && c.get("ttl").is_some_and(|v| !v.is_null()) {
            e.push(AttrError::on(
                "ttl",
                "an alias takes its target's TTL; remove ttl",
            ));
        }
        if alias && rtype.as_deref().is_some_and(|t| t != "A" && t != "AAAA") {
            e.push(AttrError::on(
                "alias",
                "an alias answers A and AAAA records",
            ));
        }
        if !alias && !records {
            e.push(AttrError::on(
                "records",
                "give the record's values (or an alias)",
            ));
        }
        if !alias && c.get("ttl").is_none_or(|v| v.is_null()) {
            e.push(AttrError::on("ttl", "give a TTL in seconds, like 300"));
        }
        if let Some(t) = get::num(c, "ttl") {
            if !(0.0..=2_147_483_647.0).contains(&t) || t.fract() != 0.0 {
                e.push(AttrError::on("ttl", format!("{t} is not a TTL in seconds")));
            }
        }
        if let (Some(t), false) = (&rtype, c.get("records").is_some_and(Value::has_unknown)) {
            if let Ok(rt) = t.parse::<hickory_proto::rr::RecordType>() {
                for v in get::strings(c, "records") {
                    if let Err(m) = crate::catalog::parse_value(rt, &v) {
                        e.push(AttrError::on("records", m));
                    }
                }
            }
        }
        let weighted = get::block(c, "weighted_routing_policy");
        let failover = get::block(c, "failover_routing_policy");
        if weighted.is_some() && failover.is_some() {
            e.push(AttrError::on(
                "failover_routing_policy",
                "one routing policy per record set",
            ));
        }
        if (weighted.is_some() || failover.is_some())
            && c.get("set_identifier").is_none_or(|v| v.is_null())
        {
            e.push(AttrError::on(
                "set_identifier",
                "a record set with a routing policy needs a set_identifier",
            ));
        }
        if let Some(w) = weighted.and_then(|w| get::num(w, "weight")) {
            if !(0.0..=255.0).contains(&w) || w.fract() != 0.0 {
                e.push(AttrError::on(
                    "weighted_routing_policy",
                    format!("weight {w} must be a whole number from 0 to 255"),
                ));
            }
        }
        if let Some(t) = failover.and_then(|f| get::str(f, "type")) {
            if t != "PRIMARY" && t != "SECONDARY" {
                e.push(AttrError::on(
                    "failover_routing_policy",
                    format!("type \"{t}\" must be PRIMARY or SECONDARY"),
                ));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        let (Some(zone_id), Some(name)) = (get::str(c, "zone_id"), get::str(c, "name")) else {
            return BTreeMap::new();
        };
        let Some(zone) = ctx.services.get::<Arc<Dns>>().and_then(|d| d.zone(zone_id)) else {
            return BTreeMap::new();
        };
        let owner = fqdn(name, &zone.name);
        let mut out = BTreeMap::new();
        out.insert("fqdn".to_string(), Value::string(&owner));
        if let Ok(rc) = veeps_resource::typed::decode::<RecordConfig>(Self::TYPE, c) {
            out.insert("id".to_string(), Value::string(record_id(&rc, &owner)));
        }
        out
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        prior: Option<&RecordState>,
        c: &RecordConfig,
    ) -> Result<RecordState, ResourceError> {
        let d = dns(ctx)?;
        let zone = d.zone(&c.zone_id).ok_or_else(|| {
            ResourceError::Invalid(format!(
                "zone {} does not exist; use dns_zone.NAME.zone_id",
                c.zone_id
            ))
        })?;
        let owner = fqdn(&c.name, &zone.name);
        let id = record_id(c, &owner);
        let alias = match &c.alias {
            Some(a) => {
                let target = d.resolve_alias(&a.name).ok_or_else(|| {
                    ResourceError::Invalid(format!(
                        "alias.name: \"{}\" is no load balancer's dns_name, id or arn",
                        a.name
                    ))
                })?;
                Some(Alias {
                    target,
                    evaluate_target_health: a.evaluate_target_health,
                })
            }
            None => None,
        };
        let spec = RecordSpec {
            id: id.clone(),
            zone_id: c.zone_id.clone(),
            name: owner.clone(),
            rtype: c.rtype.to_ascii_uppercase(),
            ttl: c.ttl.unwrap_or(60),
            values: c.records.clone().unwrap_or_default(),
            alias,
            set_identifier: c.set_identifier.clone(),
            weight: c.weighted_routing_policy.as_ref().map(|w| w.weight),
            failover: c.failover_routing_policy.as_ref().map(|f| {
                if f.kind == "SECONDARY" {
                    Failover::Secondary
                } else {
                    Failover::Primary
                }
            }),
            health_check_id: c.health_check_id.clone(),
        };
        d.put_record(spec).await.map_err(failed)?;
        if let Some(p) = prior.filter(|p| p.id != id) {
            d.delete_record(&p.id).await.map_err(failed)?;
        }
        Ok(RecordState {
            config: c.clone(),
            fqdn: owner,
            id,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &RecordState,
    ) -> Result<Observed<RecordState>, ResourceError> {
        Ok(match dns(ctx)?.record(&s.id) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &RecordState) -> Result<(), ResourceError> {
        dns(ctx)?.delete_record(&s.id).await.map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &RecordState) -> Result<RecordState, ResourceError> {
        if dns(ctx)?.record(&s.id).is_some() {
            return Ok(s.clone());
        }
        self.ensure(ctx, Some(s), &s.config).await
    }
}

/// `health_check`.
pub struct CheckType(Schema);

impl Default for CheckType {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckType {
    /// The type with its schema.
    pub fn new() -> Self {
        CheckType(
            Schema::new()
                .attr(AttrSchema::required("type", Type::String).describe("HTTP, HTTPS or TCP"))
                .attr(AttrSchema::optional("ip_address", Type::String))
                .attr(AttrSchema::optional("fqdn", Type::String))
                .attr(AttrSchema::optional("port", Type::Number))
                .attr(AttrSchema::optional("resource_path", Type::String).default("/"))
                .attr(
                    AttrSchema::optional("request_interval", Type::Number)
                        .default(30.0)
                        .describe("seconds between probes (1 to 30)"),
                )
                .attr(AttrSchema::optional("failure_threshold", Type::Number).default(3.0))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("arn", Type::String)),
        )
    }
}

/// `health_check`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckConfig {
    #[serde(rename = "type")]
    kind: String,
    ip_address: Option<String>,
    fqdn: Option<String>,
    port: Option<u16>,
    resource_path: String,
    request_interval: u64,
    failure_threshold: u32,
}

/// `health_check`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckState {
    #[serde(flatten)]
    config: CheckConfig,
    id: String,
    arn: String,
}

#[async_trait::async_trait]
impl Typed for CheckType {
    type Config = CheckConfig;
    type State = CheckState;
    const TYPE: &'static str = "health_check";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(t) = get::str(c, "type") {
            if !["HTTP", "HTTPS", "TCP"].contains(&t) {
                e.push(AttrError::on(
                    "type",
                    format!("\"{t}\" must be HTTP, HTTPS or TCP"),
                ));
            }
        }
        let ip = c.get("ip_address").is_some_and(|v| !v.is_null());
        let name = c.get("fqdn").is_some_and(|v| !v.is_null());
        if !ip && !name {
            e.push(AttrError::on(
                "ip_address",
                "give ip_address or fqdn to probe",
            ));
        }
        if let Some(a) = get::str(c, "ip_address") {
            if a.parse::<std::net::IpAddr>().is_err() {
                e.push(AttrError::on(
                    "ip_address",
                    format!("\"{a}\" is not an IP address"),
                ));
            }
        }
        if let Some(n) = get::num(c, "request_interval") {
            if !(1.0..=30.0).contains(&n) || n.fract() != 0.0 {
                e.push(AttrError::on(
                    "request_interval",
                    "give whole seconds from 1 to 30",
                ));
            }
        }
        if let Some(n) = get::num(c, "failure_threshold") {
            if !(1.0..=10.0).contains(&n) || n.fract() != 0.0 {
                e.push(AttrError::on(
                    "failure_threshold",
                    "give a whole number from 1 to 10",
                ));
            }
        }
        if let Some(p) = get::num(c, "port") {
            if !(1.0..=65535.0).contains(&p) || p.fract() != 0.0 {
                e.push(AttrError::on("port", format!("{p} is not a port")));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        let id = id_of("hc-", &ctx.env, &ctx.address).to_ascii_lowercase();
        [
            (
                "arn".to_string(),
                Value::string(format!("arn:veeps:dns:::healthcheck/{id}")),
            ),
            ("id".to_string(), Value::string(id)),
        ]
        .into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&CheckState>,
        c: &CheckConfig,
    ) -> Result<CheckState, ResourceError> {
        let id = id_of("hc-", &ctx.env, &ctx.address).to_ascii_lowercase();
        let port = c.port.unwrap_or(match c.kind.as_str() {
            "HTTPS" => 443,
            _ => 80,
        });
        dns(ctx)?
            .put_check(CheckSpec {
                id: id.clone(),
                env: ctx.env.clone(),
                kind: c.kind.clone(),
                host: c
                    .ip_address
                    .clone()
                    .or_else(|| c.fqdn.clone())
                    .unwrap_or_default(),
                port,
                path: c.resource_path.clone(),
                interval_secs: c.request_interval,
                failure_threshold: c.failure_threshold,
            })
            .map_err(failed)?;
        Ok(CheckState {
            config: c.clone(),
            arn: format!("arn:veeps:dns:::healthcheck/{id}"),
            id,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &CheckState) -> Result<Observed<CheckState>, ResourceError> {
        Ok(match dns(ctx)?.check(&s.id) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &CheckState) -> Result<(), ResourceError> {
        dns(ctx)?.delete_check(&s.id).map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &CheckState) -> Result<CheckState, ResourceError> {
        self.ensure(ctx, Some(s), &s.config).await
    }
}

/// `dns_zone_association`: a private zone answered in one more VPC.
pub struct AssociationType(Schema);

impl Default for AssociationType {
    fn default() -> Self {
        Self::new()
    }
}

impl AssociationType {
    /// The type with its schema.
    pub fn new() -> Self {
        AssociationType(
            Schema::new()
                .attr(AttrSchema::required("zone_id", Type::String).force_new())
                .attr(AttrSchema::required("vpc_id", Type::String).force_new())
                .attr(AttrSchema::computed("id", Type::String)),
        )
    }
}

/// `dns_zone_association`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssociationConfig {
    zone_id: String,
    vpc_id: String,
}

/// `dns_zone_association`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssociationState {
    #[serde(flatten)]
    config: AssociationConfig,
    id: String,
}

#[async_trait::async_trait]
impl Typed for AssociationType {
    type Config = AssociationConfig;
    type State = AssociationState;
    const TYPE: &'static str = "dns_zone_association";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        match (get::str(c, "zone_id"), get::str(c, "vpc_id")) {
            (Some(z), Some(v)) => [("id".to_string(), Value::string(format!("{z}:{v}")))].into(),
            _ => BTreeMap::new(),
        }
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&AssociationState>,
        c: &AssociationConfig,
    ) -> Result<AssociationState, ResourceError> {
        let id = format!("{}:{}", c.zone_id, c.vpc_id);
        dns(ctx)?
            .put_association(crate::Association {
                id: id.clone(),
                zone_id: c.zone_id.clone(),
                vpc_id: c.vpc_id.clone(),
            })
            .await
            .map_err(failed)?;
        Ok(AssociationState {
            config: c.clone(),
            id,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &AssociationState,
    ) -> Result<Observed<AssociationState>, ResourceError> {
        Ok(match dns(ctx)?.association(&s.id) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &AssociationState) -> Result<(), ResourceError> {
        dns(ctx)?.delete_association(&s.id).await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_agree_with_config_and_state() {
        veeps_resource::check_schema(&ZoneType::new()).unwrap();
        veeps_resource::check_schema(&RecordType::new()).unwrap();
        veeps_resource::check_schema(&CheckType::new()).unwrap();
        veeps_resource::check_schema(&AssociationType::new()).unwrap();
    }

    #[test]
    fn names_are_completed_with_the_zone() {
        assert_eq!(fqdn("www", "example.com"), "www.example.com");
        assert_eq!(fqdn("www.example.com.", "example.com"), "www.example.com");
        assert_eq!(fqdn("Example.com", "example.com"), "example.com");
        assert_eq!(fqdn("", "example.com"), "example.com");
    }
}
