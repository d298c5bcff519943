//! The network resource types: `vpc`, `subnet`, `security_group`, `network_acl`,
//! `vpc_peering` and `network_endpoint`, and the plan check across them.

use crate::{
    resource_id, AclRule, AttachRequest, Net, NetError, NetworkAcl, SecurityGroup, SgRule, Tier,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::strings;
use veeps_resource::list_of_strings as list_str;
use veeps_resource::typed::list;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, CheckError, Ctx, Nesting, Observed, PlanCheck,
    Planned, Registry, ResourceError, Schema, Typed,
};

/// Registers every network type and the network plan check.
pub fn register(r: &mut Registry) {
    r.register(VpcType::new());
    r.register(SubnetType::new());
    r.register(SecurityGroupType::new());
    r.register(NetworkAclType::new());
    r.register(PeeringType::new());
    r.register(EndpointType::new());
    r.register_check(NetCheck);
}

fn net(ctx: &Ctx) -> Result<&Arc<Net>, ResourceError> {
    ctx.service::<Arc<Net>>("network")
}

fn err(e: NetError) -> ResourceError {
    ResourceError::part("network", e)
}

fn exists<S>(yes: bool, s: S) -> Observed<S> {
    if yes {
        Observed::Exists(s)
    } else {
        Observed::Gone
    }
}

fn s(v: &str) -> Type {
    let _ = v;
    Type::String
}

fn id_of(ctx: &Ctx, kind: &str) -> String {
    resource_id(kind, &ctx.env, &ctx.address)
}

/// Parses an IPv4 CIDR block, as written.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net, String> {
    let n: Ipv4Net = s
        .parse()
        .map_err(|_| format!("\"{s}\" is not an IPv4 CIDR block like \"10.0.0.0/16\""))?;
    if n.network() != n.addr() {
        return Err(format!(
            "\"{s}\" has host bits set; the block is {}",
            n.trunc()
        ));
    }
    Ok(n)
}

fn check_cidr(c: &Value, attr: &str, min: u8, max: u8, errs: &mut Vec<AttrError>) {
    if let Some(v) = get::str(c, attr) {
        match parse_cidr(v) {
            Ok(n) if n.prefix_len() < min || n.prefix_len() > max => errs.push(AttrError::on(
                attr,
                format!("must be between /{min} and /{max}, got /{}", n.prefix_len()),
            )),
            Ok(_) => {}
            Err(e) => errs.push(AttrError::on(attr, e)),
        }
    }
}

macro_rules! schema_fn {
    ($t:ident) => {
        impl Default for $t {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

/// `vpc`.
pub struct VpcType {
    schema: Schema,
}
schema_fn!(VpcType);

impl VpcType {
    /// The type with its schema.
    pub fn new() -> Self {
        VpcType {
            schema: Schema::new()
                .attr(
                    AttrSchema::required("cidr_block", s("cidr"))
                        .force_new()
                        .describe("the VPC's range, /16 to /28"),
                )
                .attr(AttrSchema::required("name", Type::String))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("router_namespace", Type::String)),
        }
    }
}

/// `vpc`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpcConfig {
    cidr_block: String,
    name: String,
}

/// `vpc`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpcState {
    #[serde(flatten)]
    config: VpcConfig,
    id: String,
    router_namespace: String,
}

#[async_trait::async_trait]
impl Typed for VpcType {
    type Config = VpcConfig;
    type State = VpcState;
    const TYPE: &'static str = "vpc";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        check_cidr(c, "cidr_block", 16, 28, &mut e);
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id_of(ctx, "vpc")))].into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&VpcState>,
        c: &VpcConfig,
    ) -> Result<VpcState, ResourceError> {
        let id = id_of(ctx, "vpc");
        let cidr = parse_cidr(&c.cidr_block).map_err(ResourceError::Invalid)?;
        let vpc = net(ctx)?
            .ensure_vpc(&id, &c.name, cidr)
            .await
            .map_err(err)?;
        Ok(VpcState {
            config: c.clone(),
            id,
            router_namespace: vpc.router_ns,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &VpcState) -> Result<Observed<VpcState>, ResourceError> {
        Ok(exists(net(ctx)?.vpc_exists(&s.id).await, s.clone()))
    }
    async fn delete(&self, ctx: &Ctx, s: &VpcState) -> Result<(), ResourceError> {
        net(ctx)?.delete_vpc(&s.id).await.map_err(err)
    }
}

/// `subnet`.
pub struct SubnetType {
    schema: Schema,
}
schema_fn!(SubnetType);

impl SubnetType {
    /// The type with its schema.
    pub fn new() -> Self {
        SubnetType {
            schema: Schema::new()
                .attr(AttrSchema::required("vpc_id", Type::String).force_new())
                .attr(AttrSchema::required("cidr_block", Type::String).force_new())
                .attr(
                    AttrSchema::required("tier", Type::String)
                        .force_new()
                        .describe("public, private-app or private-persistence"),
                )
                .attr(AttrSchema::optional("name", Type::String))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("gateway", Type::String)),
        }
    }
}

/// `subnet`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubnetConfig {
    vpc_id: String,
    cidr_block: String,
    tier: String,
    name: Option<String>,
}

/// `subnet`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubnetState {
    #[serde(flatten)]
    config: SubnetConfig,
    id: String,
    gateway: String,
}

#[async_trait::async_trait]
impl Typed for SubnetType {
    type Config = SubnetConfig;
    type State = SubnetState;
    const TYPE: &'static str = "subnet";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        check_cidr(c, "cidr_block", 16, 28, &mut e);
        if let Some(t) = get::str(c, "tier") {
            if Tier::parse(t).is_none() {
                e.push(AttrError::on("tier", format!("\"{t}\" is not a tier; use \"public\", \"private-app\" or \"private-persistence\"")));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        let mut m: BTreeMap<String, Value> =
            [("id".to_string(), Value::String(id_of(ctx, "subnet")))].into();
        if let Some(n) = get::str(c, "cidr_block").and_then(|v| parse_cidr(v).ok()) {
            m.insert(
                "gateway".into(),
                Value::String(std::net::Ipv4Addr::from(u32::from(n.network()) + 1).to_string()),
            );
        }
        m
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&SubnetState>,
        c: &SubnetConfig,
    ) -> Result<SubnetState, ResourceError> {
        let id = id_of(ctx, "subnet");
        let cidr = parse_cidr(&c.cidr_block).map_err(ResourceError::Invalid)?;
        let tier = Tier::parse(&c.tier).ok_or_else(|| {
            ResourceError::Invalid(format!("subnet.tier: \"{}\" is not a tier", c.tier))
        })?;
        let sn = net(ctx)?
            .ensure_subnet(&id, &c.vpc_id, cidr, tier)
            .await
            .map_err(err)?;
        Ok(SubnetState {
            config: c.clone(),
            id,
            gateway: sn.gateway().to_string(),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &SubnetState,
    ) -> Result<Observed<SubnetState>, ResourceError> {
        Ok(exists(net(ctx)?.subnet_exists(&s.id).await, s.clone()))
    }
    async fn delete(&self, ctx: &Ctx, s: &SubnetState) -> Result<(), ResourceError> {
        net(ctx)?.delete_subnet(&s.id).await.map_err(err)
    }
}

fn rule_schema() -> Schema {
    Schema::new()
        .attr(
            AttrSchema::required("protocol", Type::String).describe("tcp, udp, icmp, or all (-1)"),
        )
        .attr(AttrSchema::optional("from_port", Type::Number).default(0.0))
        .attr(AttrSchema::optional("to_port", Type::Number).default(0.0))
        .attr(AttrSchema::optional("cidr_blocks", list_str()))
        .attr(AttrSchema::optional("security_groups", list_str()))
        .attr(AttrSchema::optional("self", Type::Bool).default(false))
        .attr(AttrSchema::optional("description", Type::String))
}

fn norm_proto(p: &str) -> Option<&'static str> {
    match p {
        "tcp" | "6" => Some("tcp"),
        "udp" | "17" => Some("udp"),
        "icmp" | "1" => Some("icmp"),
        "all" | "-1" => Some("all"),
        _ => None,
    }
}

fn check_ports(block: &str, i: usize, r: &Value, errs: &mut Vec<AttrError>) {
    let path = |a: &str| vec![block.to_string(), i.to_string(), a.to_string()];
    let proto = get::str(r, "protocol").unwrap_or_default();
    if norm_proto(proto).is_none() {
        errs.push(AttrError {
            path: path("protocol"),
            message: format!("\"{proto}\" is not a protocol; use tcp, udp, icmp or all"),
        });
    }
    let from = get::num(r, "from_port").unwrap_or(0.0);
    let to = get::num(r, "to_port").unwrap_or(0.0);
    for (n, v) in [("from_port", from), ("to_port", to)] {
        if !(0.0..=65535.0).contains(&v) || v.fract() != 0.0 {
            errs.push(AttrError {
                path: path(n),
                message: format!("must be a port from 0 to 65535, got {v}"),
            });
        }
    }
    if from > to {
        errs.push(AttrError {
            path: path("from_port"),
            message: format!(
                "the port range {from}-{to} is impossible: from_port is above to_port"
            ),
        });
    }
}

/// One `ingress` or `egress` rule of a security group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleConfig {
    protocol: String,
    from_port: u16,
    to_port: u16,
    cidr_blocks: Option<Vec<String>>,
    security_groups: Option<Vec<String>>,
    #[serde(rename = "self")]
    self_: bool,
    description: Option<String>,
}

/// The protocol and port range a rule means ("all", or both ports 0, is every port).
fn ports(protocol: &str, from: u16, to: u16) -> (String, u16, u16) {
    let proto = norm_proto(protocol).unwrap_or("all").to_string();
    if proto == "all" || (from == 0 && to == 0) {
        (proto, 0, 65535)
    } else {
        (proto, from, to)
    }
}

fn to_rule(r: &RuleConfig) -> SgRule {
    let (protocol, from_port, to_port) = ports(&r.protocol, r.from_port, r.to_port);
    SgRule {
        protocol,
        from_port,
        to_port,
        cidr_blocks: r
            .cidr_blocks
            .iter()
            .flatten()
            .filter_map(|c| c.parse().ok())
            .collect(),
        security_groups: r.security_groups.clone().unwrap_or_default(),
        self_: r.self_,
    }
}

/// `security_group`.
pub struct SecurityGroupType {
    schema: Schema,
}
schema_fn!(SecurityGroupType);

impl SecurityGroupType {
    /// The type with its schema.
    pub fn new() -> Self {
        SecurityGroupType {
            schema: Schema::new()
                .attr(AttrSchema::required("vpc_id", Type::String).force_new())
                .attr(AttrSchema::optional("name", Type::String))
                .attr(AttrSchema::optional("description", Type::String))
                .attr(AttrSchema::computed("id", Type::String))
                .block(BlockSchema {
                    name: "ingress",
                    nesting: Nesting::List,
                    schema: rule_schema(),
                    force_new: false,
                    min_items: 0,
                })
                .block(BlockSchema {
                    name: "egress",
                    nesting: Nesting::List,
                    schema: rule_schema(),
                    force_new: false,
                    min_items: 0,
                }),
        }
    }
}

/// `security_group`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SgConfig {
    vpc_id: String,
    name: Option<String>,
    description: Option<String>,
    #[serde(default, deserialize_with = "list")]
    ingress: Vec<RuleConfig>,
    #[serde(default, deserialize_with = "list")]
    egress: Vec<RuleConfig>,
}

/// `security_group`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SgState {
    #[serde(flatten)]
    config: SgConfig,
    id: String,
}

fn sg_from(id: &str, c: &SgConfig) -> SecurityGroup {
    SecurityGroup {
        id: id.to_string(),
        vpc_id: c.vpc_id.clone(),
        ingress: c.ingress.iter().map(to_rule).collect(),
        egress: c.egress.iter().map(to_rule).collect(),
    }
}

#[async_trait::async_trait]
impl Typed for SecurityGroupType {
    type Config = SgConfig;
    type State = SgState;
    const TYPE: &'static str = "security_group";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        for b in ["ingress", "egress"] {
            for (i, r) in c
                .get(b)
                .and_then(Value::as_list)
                .into_iter()
                .flatten()
                .enumerate()
            {
                check_ports(b, i, r, &mut e);
                for cidr in strings(r, "cidr_blocks") {
                    if let Err(m) = parse_cidr(&cidr) {
                        e.push(AttrError {
                            path: vec![b.into(), i.to_string(), "cidr_blocks".into()],
                            message: m,
                        });
                    }
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id_of(ctx, "sg")))].into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&SgState>,
        c: &SgConfig,
    ) -> Result<SgState, ResourceError> {
        let id = id_of(ctx, "sg");
        net(ctx)?.ensure_sg(sg_from(&id, c)).await.map_err(err)?;
        Ok(SgState {
            config: c.clone(),
            id,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &SgState) -> Result<Observed<SgState>, ResourceError> {
        Ok(exists(
            net(ctx)?.sg(&s.id).map_err(err)?.is_some(),
            s.clone(),
        ))
    }
    async fn delete(&self, ctx: &Ctx, s: &SgState) -> Result<(), ResourceError> {
        net(ctx)?.delete_sg(&s.id).await.map_err(err)
    }
}

fn acl_rule_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("rule_no", Type::Number))
        .attr(AttrSchema::required("action", Type::String).describe("allow or deny"))
        .attr(AttrSchema::required("protocol", Type::String))
        .attr(AttrSchema::optional("from_port", Type::Number).default(0.0))
        .attr(AttrSchema::optional("to_port", Type::Number).default(0.0))
        .attr(AttrSchema::required("cidr_block", Type::String))
}

/// `network_acl`.
pub struct NetworkAclType {
    schema: Schema,
}
schema_fn!(NetworkAclType);

impl NetworkAclType {
    /// The type with its schema.
    pub fn new() -> Self {
        NetworkAclType {
            schema: Schema::new()
                .attr(AttrSchema::required("vpc_id", Type::String).force_new())
                .attr(AttrSchema::optional("subnet_ids", list_str()))
                .attr(AttrSchema::computed("id", Type::String))
                .block(BlockSchema {
                    name: "ingress",
                    nesting: Nesting::List,
                    schema: acl_rule_schema(),
                    force_new: false,
                    min_items: 0,
                })
                .block(BlockSchema {
                    name: "egress",
                    nesting: Nesting::List,
                    schema: acl_rule_schema(),
                    force_new: false,
                    min_items: 0,
                }),
        }
    }
}

/// One `ingress` or `egress` rule of a network ACL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclRuleConfig {
    rule_no: u32,
    action: String,
    protocol: String,
    from_port: u16,
    to_port: u16,
    cidr_block: String,
}

/// `network_acl`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclConfig {
    vpc_id: String,
    subnet_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "list")]
    ingress: Vec<AclRuleConfig>,
    #[serde(default, deserialize_with = "list")]
    egress: Vec<AclRuleConfig>,
}

/// `network_acl`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclState {
    #[serde(flatten)]
    config: AclConfig,
    id: String,
}

fn acl_from(id: &str, c: &AclConfig) -> NetworkAcl {
    let rules = |l: &[AclRuleConfig]| -> Vec<AclRule> {
        l.iter()
            .map(|r| {
                let (protocol, from_port, to_port) = ports(&r.protocol, r.from_port, r.to_port);
                AclRule {
                    rule_no: r.rule_no,
                    allow: r.action == "allow",
                    protocol,
                    from_port,
                    to_port,
                    cidr: r.cidr_block.parse().unwrap_or_default(),
                }
            })
            .collect()
    };
    NetworkAcl {
        id: id.to_string(),
        vpc_id: c.vpc_id.clone(),
        subnet_ids: c.subnet_ids.clone().unwrap_or_default(),
        ingress: rules(&c.ingress),
        egress: rules(&c.egress),
    }
}

#[async_trait::async_trait]
impl Typed for NetworkAclType {
    type Config = AclConfig;
    type State = AclState;
    const TYPE: &'static str = "network_acl";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        for b in ["ingress", "egress"] {
            for (i, r) in c
                .get(b)
                .and_then(Value::as_list)
                .into_iter()
                .flatten()
                .enumerate()
            {
                check_ports(b, i, r, &mut e);
                if let Some(a) = get::str(r, "action") {
                    if a != "allow" && a != "deny" {
                        e.push(AttrError {
                            path: vec![b.into(), i.to_string(), "action".into()],
                            message: format!("\"{a}\" must be \"allow\" or \"deny\""),
                        });
                    }
                }
                if let Some(cidr) = get::str(r, "cidr_block") {
                    if let Err(m) = parse_cidr(cidr) {
                        e.push(AttrError {
                            path: vec![b.into(), i.to_string(), "cidr_block".into()],
                            message: m,
                        });
                    }
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id_of(ctx, "acl")))].into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&AclState>,
        c: &AclConfig,
    ) -> Result<AclState, ResourceError> {
        let id = id_of(ctx, "acl");
        net(ctx)?.ensure_acl(acl_from(&id, c)).await.map_err(err)?;
        Ok(AclState {
            config: c.clone(),
            id,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &AclState) -> Result<Observed<AclState>, ResourceError> {
        Ok(exists(net(ctx)?.acl_in_force(&s.id).await, s.clone()))
    }
    async fn delete(&self, ctx: &Ctx, s: &AclState) -> Result<(), ResourceError> {
        net(ctx)?.delete_acl(&s.id).await.map_err(err)
    }
}

/// `vpc_peering`.
pub struct PeeringType {
    schema: Schema,
}
schema_fn!(PeeringType);

impl PeeringType {
    /// The type with its schema.
    pub fn new() -> Self {
        PeeringType {
            schema: Schema::new()
                .attr(AttrSchema::required("vpc_id", Type::String).force_new())
                .attr(AttrSchema::required("peer_vpc_id", Type::String).force_new())
                .attr(AttrSchema::computed("id", Type::String)),
        }
    }
}

/// `vpc_peering`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeeringConfig {
    vpc_id: String,
    peer_vpc_id: String,
}

/// `vpc_peering`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeeringState {
    #[serde(flatten)]
    config: PeeringConfig,
    id: String,
}

#[async_trait::async_trait]
impl Typed for PeeringType {
    type Config = PeeringConfig;
    type State = PeeringState;
    const TYPE: &'static str = "vpc_peering";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        match (get::str(c, "vpc_id"), get::str(c, "peer_vpc_id")) {
            (Some(a), Some(b)) if a == b => vec![AttrError::on(
                "peer_vpc_id",
                "a VPC cannot be peered with itself",
            )],
            _ => vec![],
        }
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id_of(ctx, "pcx")))].into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&PeeringState>,
        c: &PeeringConfig,
    ) -> Result<PeeringState, ResourceError> {
        let id = id_of(ctx, "pcx");
        net(ctx)?
            .ensure_peering(&id, &c.vpc_id, &c.peer_vpc_id)
            .await
            .map_err(err)?;
        Ok(PeeringState {
            config: c.clone(),
            id,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &PeeringState,
    ) -> Result<Observed<PeeringState>, ResourceError> {
        Ok(exists(net(ctx)?.peering_exists(&s.id).await, s.clone()))
    }
    async fn delete(&self, ctx: &Ctx, s: &PeeringState) -> Result<(), ResourceError> {
        net(ctx)?.delete_peering(&s.id).await.map_err(err)
    }
}

/// `network_endpoint`: a network interface in a subnet with its own namespace (a probe,
/// or a place to run a process).
pub struct EndpointType {
    schema: Schema,
}
schema_fn!(EndpointType);

impl EndpointType {
    /// The type with its schema.
    pub fn new() -> Self {
        EndpointType {
            schema: Schema::new()
                .attr(AttrSchema::required("subnet_id", Type::String).force_new())
                .attr(AttrSchema::optional("security_group_ids", list_str()))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("address", Type::String))
                .attr(AttrSchema::computed("namespace", Type::String)),
        }
    }
}

fn endpoint_name(ctx: &Ctx) -> String {
    format!("{}/{}", ctx.env, ctx.address)
}

/// `network_endpoint`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointConfig {
    subnet_id: String,
    security_group_ids: Option<Vec<String>>,
}

/// `network_endpoint`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointState {
    #[serde(flatten)]
    config: EndpointConfig,
    id: String,
    address: String,
    namespace: String,
}

#[async_trait::async_trait]
impl Typed for EndpointType {
    type Config = EndpointConfig;
    type State = EndpointState;
    const TYPE: &'static str = "network_endpoint";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id_of(ctx, "eni")))].into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&EndpointState>,
        c: &EndpointConfig,
    ) -> Result<EndpointState, ResourceError> {
        let ep = net(ctx)?
            .attach(AttachRequest {
                name: endpoint_name(ctx),
                subnet_id: c.subnet_id.clone(),
                security_groups: c.security_group_ids.clone().unwrap_or_default(),
            })
            .await
            .map_err(err)?;
        Ok(EndpointState {
            config: c.clone(),
            id: id_of(ctx, "eni"),
            address: ep.address.to_string(),
            namespace: ep.netns,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &EndpointState,
    ) -> Result<Observed<EndpointState>, ResourceError> {
        Ok(exists(
            net(ctx)?.endpoint_exists(&endpoint_name(ctx)).await,
            s.clone(),
        ))
    }
    async fn delete(&self, ctx: &Ctx, _s: &EndpointState) -> Result<(), ResourceError> {
        net(ctx)?.detach(&endpoint_name(ctx)).await.map_err(err)
    }
}

/// Checks across network resources at plan time: subnets inside their VPC and not
/// overlapping each other, peered VPCs with disjoint ranges.
pub struct NetCheck;

impl PlanCheck for NetCheck {
    fn check(&self, planned: &[Planned]) -> Vec<CheckError> {
        let mut errs = vec![];
        let cidr = |p: &Planned| get::str(&p.value, "cidr_block").and_then(|c| parse_cidr(c).ok());
        let id = |p: &Planned| get::str(&p.value, "id").map(String::from);
        let vpcs: BTreeMap<String, (usize, Ipv4Net)> = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.type_name == "vpc")
            .filter_map(|(i, p)| Some((id(p)?, (i, cidr(p)?))))
            .collect();
        let mut by_vpc: BTreeMap<String, Vec<(usize, Ipv4Net)>> = BTreeMap::new();
        for (i, p) in planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.type_name == "subnet")
        {
            let (Some(vid), Some(c)) = (get::str(&p.value, "vpc_id"), cidr(p)) else {
                continue;
            };
            if let Some((vi, vc)) = vpcs.get(vid) {
                if !vc.contains(&c) {
                    errs.push(CheckError {
                        index: i,
                        attr: Some("cidr_block".into()),
                        message: format!(
                            "the subnet {c} is not inside its VPC {} ({vc})",
                            planned[*vi].address
                        ),
                    });
                    continue;
                }
            }
            by_vpc.entry(vid.to_string()).or_default().push((i, c));
        }
        for subnets in by_vpc.values() {
            for (k, (i, a)) in subnets.iter().enumerate() {
                if let Some((j, b)) = subnets[..k]
                    .iter()
                    .find(|(_, b)| a.contains(&b.network()) || b.contains(&a.network()))
                {
                    errs.push(CheckError {
                        index: *i,
                        attr: Some("cidr_block".into()),
                        message: format!(
                            "the subnet {a} overlaps {} ({b}) in the same VPC",
                            planned[*j].address
                        ),
                    });
                }
            }
        }
        for (i, p) in planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.type_name == "vpc_peering")
        {
            let (Some(a), Some(b)) = (
                get::str(&p.value, "vpc_id"),
                get::str(&p.value, "peer_vpc_id"),
            ) else {
                continue;
            };
            if let (Some((ai, ac)), Some((bi, bc))) = (vpcs.get(a), vpcs.get(b)) {
                if ac.contains(&bc.network()) || bc.contains(&ac.network()) {
                    errs.push(CheckError {
                        index: i,
                        attr: Some("peer_vpc_id".into()),
                        message: format!(
                            "cannot peer {} ({ac}) with {} ({bc}): their ranges overlap",
                            planned[*ai].address, planned[*bi].address
                        ),
                    });
                }
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn schemas_agree_with_config_and_state() {
        check_schema(&VpcType::new()).unwrap();
        check_schema(&SubnetType::new()).unwrap();
        check_schema(&SecurityGroupType::new()).unwrap();
        check_schema(&NetworkAclType::new()).unwrap();
        check_schema(&PeeringType::new()).unwrap();
        check_schema(&EndpointType::new()).unwrap();
    }
}
