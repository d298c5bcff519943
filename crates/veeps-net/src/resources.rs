//! The network resource types: `vpc`, `subnet`, `security_group`, `network_acl`,
//! `vpc_peering` and `network_endpoint`, and the plan check across them.

use crate::{
    resource_id, AclRule, AttachRequest, Net, NetError, NetworkAcl, SecurityGroup, SgRule, Tier,
};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::strings;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, CheckError, Ctx, Nesting, PlanCheck, Planned,
    Registry, Resource, ResourceError, Schema,
};
use veeps_resource::{list_of_strings as list_str, with_attrs as with};

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
    ResourceError::Failed(e.to_string())
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
    ($t:ident, $name:literal) => {
        impl Default for $t {
            fn default() -> Self {
                Self::new()
            }
        }
        impl $t {
            fn type_name_str() -> &'static str {
                $name
            }
        }
    };
}

/// `vpc`.
pub struct VpcType {
    schema: Schema,
}
schema_fn!(VpcType, "vpc");

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

#[async_trait::async_trait]
impl Resource for VpcType {
    fn type_name(&self) -> &'static str {
        Self::type_name_str()
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let id = id_of(ctx, "vpc");
        let cidr = parse_cidr(get::str(c, "cidr_block").unwrap_or_default())
            .map_err(ResourceError::Invalid)?;
        let vpc = net(ctx)?
            .ensure_vpc(&id, get::str(c, "name").unwrap_or_default(), cidr)
            .await
            .map_err(err)?;
        Ok(with(
            c,
            &[
                ("id", Value::String(id)),
                ("router_namespace", Value::String(vpc.router_ns)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(
            if net(ctx)?
                .vpc_exists(get::str(state, "id").unwrap_or_default())
                .await
            {
                Some(state.clone())
            } else {
                None
            },
        )
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        net(ctx)?
            .delete_vpc(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(err)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
    }
}

/// `subnet`.
pub struct SubnetType {
    schema: Schema,
}
schema_fn!(SubnetType, "subnet");

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

#[async_trait::async_trait]
impl Resource for SubnetType {
    fn type_name(&self) -> &'static str {
        Self::type_name_str()
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let id = id_of(ctx, "subnet");
        let cidr = parse_cidr(get::str(c, "cidr_block").unwrap_or_default())
            .map_err(ResourceError::Invalid)?;
        let tier = Tier::parse(get::str(c, "tier").unwrap_or_default())
            .ok_or_else(|| ResourceError::Invalid("bad tier".into()))?;
        let sn = net(ctx)?
            .ensure_subnet(&id, get::str(c, "vpc_id").unwrap_or_default(), cidr, tier)
            .await
            .map_err(err)?;
        Ok(with(
            c,
            &[
                ("id", Value::String(id)),
                ("gateway", Value::String(sn.gateway().to_string())),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(
            if net(ctx)?
                .subnet_exists(get::str(state, "id").unwrap_or_default())
                .await
            {
                Some(state.clone())
            } else {
                None
            },
        )
    }
    async fn update(&self, _ctx: &Ctx, prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        Ok(with(
            prior,
            &[("name", c.get("name").cloned().unwrap_or_default())],
        ))
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        net(ctx)?
            .delete_subnet(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(err)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
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

fn to_rule(r: &Value) -> SgRule {
    let proto = norm_proto(get::str(r, "protocol").unwrap_or_default())
        .unwrap_or("all")
        .to_string();
    let (from, to) = (
        get::num(r, "from_port").unwrap_or(0.0) as u16,
        get::num(r, "to_port").unwrap_or(0.0) as u16,
    );
    let (from, to) = if proto == "all" || (from == 0 && to == 0) {
        (0, 65535)
    } else {
        (from, to)
    };
    SgRule {
        protocol: proto,
        from_port: from,
        to_port: to,
        cidr_blocks: strings(r, "cidr_blocks")
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect(),
        security_groups: strings(r, "security_groups"),
        self_: get::bool_or(r, "self", false),
    }
}

/// `security_group`.
pub struct SecurityGroupType {
    schema: Schema,
}
schema_fn!(SecurityGroupType, "security_group");

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

fn sg_from(id: &str, c: &Value) -> SecurityGroup {
    let rules = |b: &str| {
        c.get(b)
            .and_then(Value::as_list)
            .map(|l| l.iter().map(to_rule).collect())
            .unwrap_or_default()
    };
    SecurityGroup {
        id: id.to_string(),
        vpc_id: get::str(c, "vpc_id").unwrap_or_default().to_string(),
        ingress: rules("ingress"),
        egress: rules("egress"),
    }
}

#[async_trait::async_trait]
impl Resource for SecurityGroupType {
    fn type_name(&self) -> &'static str {
        Self::type_name_str()
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let id = id_of(ctx, "sg");
        net(ctx)?.ensure_sg(sg_from(&id, c)).await.map_err(err)?;
        Ok(with(c, &[("id", Value::String(id))]))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(net(ctx)?
            .sg(get::str(state, "id").unwrap_or_default())
            .map_err(err)?
            .map(|_| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        net(ctx)?
            .delete_sg(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(err)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
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
schema_fn!(NetworkAclType, "network_acl");

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

fn acl_from(id: &str, c: &Value) -> NetworkAcl {
    let rules = |b: &str| -> Vec<AclRule> {
        c.get(b)
            .and_then(Value::as_list)
            .map(|l| {
                l.iter()
                    .map(|r| {
                        let sg = to_rule(&with(r, &[("cidr_blocks", Value::List(vec![]))]));
                        AclRule {
                            rule_no: get::num(r, "rule_no").unwrap_or(0.0) as u32,
                            allow: get::str(r, "action") == Some("allow"),
                            protocol: sg.protocol,
                            from_port: sg.from_port,
                            to_port: sg.to_port,
                            cidr: get::str(r, "cidr_block")
                                .and_then(|c| c.parse().ok())
                                .unwrap_or_default(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    NetworkAcl {
        id: id.to_string(),
        vpc_id: get::str(c, "vpc_id").unwrap_or_default().to_string(),
        subnet_ids: strings(c, "subnet_ids"),
        ingress: rules("ingress"),
        egress: rules("egress"),
    }
}

#[async_trait::async_trait]
impl Resource for NetworkAclType {
    fn type_name(&self) -> &'static str {
        Self::type_name_str()
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let id = id_of(ctx, "acl");
        net(ctx)?.ensure_acl(acl_from(&id, c)).await.map_err(err)?;
        Ok(with(c, &[("id", Value::String(id))]))
    }
    async fn read(&self, _ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(Some(state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        net(ctx)?
            .delete_acl(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(err)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
    }
}

/// `vpc_peering`.
pub struct PeeringType {
    schema: Schema,
}
schema_fn!(PeeringType, "vpc_peering");

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

#[async_trait::async_trait]
impl Resource for PeeringType {
    fn type_name(&self) -> &'static str {
        Self::type_name_str()
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let id = id_of(ctx, "pcx");
        net(ctx)?
            .ensure_peering(
                &id,
                get::str(c, "vpc_id").unwrap_or_default(),
                get::str(c, "peer_vpc_id").unwrap_or_default(),
            )
            .await
            .map_err(err)?;
        Ok(with(c, &[("id", Value::String(id))]))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(
            if net(ctx)?
                .peering_exists(get::str(state, "id").unwrap_or_default())
                .await
            {
                Some(state.clone())
            } else {
                None
            },
        )
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        net(ctx)?
            .delete_peering(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(err)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
    }
}

/// `network_endpoint`: a network interface in a subnet with its own namespace (a probe,
/// or a place to run a process).
pub struct EndpointType {
    schema: Schema,
}
schema_fn!(EndpointType, "network_endpoint");

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

#[async_trait::async_trait]
impl Resource for EndpointType {
    fn type_name(&self) -> &'static str {
        Self::type_name_str()
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id_of(ctx, "eni")))].into()
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let ep = net(ctx)?
            .attach(AttachRequest {
                name: endpoint_name(ctx),
                subnet_id: get::str(c, "subnet_id").unwrap_or_default().to_string(),
                security_groups: strings(c, "security_group_ids"),
            })
            .await
            .map_err(err)?;
        Ok(with(
            c,
            &[
                ("id", Value::String(id_of(ctx, "eni"))),
                ("address", Value::String(ep.address.to_string())),
                ("namespace", Value::String(ep.netns)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(if net(ctx)?.endpoint_exists(&endpoint_name(ctx)).await {
            Some(state.clone())
        } else {
            None
        })
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, _state: &Value) -> Result<(), ResourceError> {
        net(ctx)?.detach(&endpoint_name(ctx)).await.map_err(err)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
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
