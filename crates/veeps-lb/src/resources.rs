//! The load balancing resource types, in Terraform's shapes: `load_balancer`, `listener`,
//! `listener_rule`, `target_group`, `target_group_attachment` and `certificate`.

use crate::model::{
    parse_matcher, Action, AttachmentSpec, BasicAuth, Condition, HealthSpec, LbSpec, ListenerSpec,
    Protocol, RuleSpec, TgSpec,
};
use crate::service::Lbs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::strings;
use veeps_resource::list_of_strings as list_str;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Observed, Registry, ResourceError,
    Schema, Typed,
};

/// Registers the load balancing types.
pub fn register(r: &mut Registry) {
    r.register(LbType(lb_schema()));
    r.register(ListenerType(listener_schema()));
    r.register(RuleType(rule_schema()));
    r.register(TgType(tg_schema()));
    r.register(AttachType(attach_schema()));
    r.register(CertType(cert_schema()));
}

fn lbs(ctx: &Ctx) -> Result<&Arc<Lbs>, ResourceError> {
    ctx.service::<Arc<Lbs>>("load balancer")
}

fn failed(e: impl std::fmt::Display) -> ResourceError {
    ResourceError::Failed(e.to_string())
}

use veeps_resource::get::{block as single, blocks as list};

fn id(ctx: &Ctx, kind: &str) -> String {
    veeps_net::resource_id(kind, &ctx.env, &ctx.address)
}

/// `Exists(s)` if the balancer service has the `kind` object `id`, `Gone` otherwise.
fn observed<S: Clone>(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    s: &S,
) -> Result<Observed<S>, ResourceError> {
    Ok(if lbs(ctx)?.exists(kind, id) {
        Observed::Exists(s.clone())
    } else {
        Observed::Gone
    })
}

fn ids(ctx: &Ctx, kind: &str) -> BTreeMap<String, Value> {
    let i = id(ctx, kind);
    [
        ("id".to_string(), Value::String(i.clone())),
        ("arn".to_string(), Value::String(i)),
    ]
    .into()
}

fn port_ok(c: &Value, attr: &str, e: &mut Vec<AttrError>) {
    if let Some(p) = get::num(c, attr) {
        if p.fract() != 0.0 || !(1.0..=65535.0).contains(&p) {
            e.push(AttrError::on(
                attr,
                format!("is {p}; a port is a whole number from 1 to 65535"),
            ));
        }
    }
}

fn protocol(p: &str) -> Protocol {
    if p.eq_ignore_ascii_case("HTTPS") {
        Protocol::Https
    } else {
        Protocol::Http
    }
}

fn protocol_ok(c: &Value, attr: &str, path: &[&str], e: &mut Vec<AttrError>) {
    if let Some(p) = get::str(c, attr) {
        if !p.eq_ignore_ascii_case("HTTP") && !p.eq_ignore_ascii_case("HTTPS") {
            let mut full: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            full.push(attr.into());
            e.push(AttrError {
                path: full,
                message: format!("\"{p}\" must be HTTP or HTTPS"),
            });
        }
    }
}

// ---------- load_balancer ----------

fn lb_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("name", Type::String).force_new())
        .attr(
            AttrSchema::optional("internal", Type::Bool)
                .default(false)
                .force_new(),
        )
        .attr(AttrSchema::required("subnets", list_str()))
        .attr(AttrSchema::optional("security_groups", list_str()))
        .attr(AttrSchema::optional("idle_timeout", Type::Number).default(60.0))
        .attr(AttrSchema::optional("access_logs", Type::Bool).default(true))
        .attr(AttrSchema::computed("id", Type::String))
        .attr(AttrSchema::computed("arn", Type::String))
        .attr(AttrSchema::computed("dns_name", Type::String).describe("the balancer's address"))
}

/// `load_balancer`.
pub struct LbType(Schema);

/// `load_balancer`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LbConfig {
    name: String,
    internal: bool,
    subnets: Vec<String>,
    security_groups: Option<Vec<String>>,
    idle_timeout: u64,
    access_logs: bool,
}

/// `load_balancer`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LbState {
    #[serde(flatten)]
    config: LbConfig,
    id: String,
    arn: String,
    dns_name: String,
}

fn lb_spec(ctx: &Ctx, c: &LbConfig) -> LbSpec {
    LbSpec {
        id: id(ctx, "lb"),
        env: ctx.env.clone(),
        name: c.name.clone(),
        internal: c.internal,
        subnets: c.subnets.clone(),
        security_groups: c.security_groups.clone().unwrap_or_default(),
        idle_timeout: c.idle_timeout,
        access_logs: c.access_logs,
    }
}

#[async_trait::async_trait]
impl Typed for LbType {
    type Config = LbConfig;
    type State = LbState;
    const TYPE: &'static str = "load_balancer";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(t) = get::num(c, "idle_timeout") {
            if !(1.0..=4000.0).contains(&t) {
                e.push(AttrError::on(
                    "idle_timeout",
                    format!("is {t}; give seconds from 1 to 4000"),
                ));
            }
        }
        if let Some(n) = get::str(c, "name") {
            if n.is_empty()
                || n.len() > 32
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                e.push(AttrError::on(
                    "name",
                    format!("\"{n}\": up to 32 letters, digits and hyphens"),
                ));
            }
        }
        if c.get("subnets")
            .and_then(Value::as_list)
            .is_some_and(|l| l.is_empty())
        {
            e.push(AttrError::on("subnets", "give at least one subnet"));
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        ids(ctx, "lb")
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&LbState>,
        c: &LbConfig,
    ) -> Result<LbState, ResourceError> {
        let spec = lb_spec(ctx, c);
        // An internet-facing balancer belongs in a public subnet, an internal one not.
        if let Some(s) = spec.subnets.first() {
            let net = ctx.services.get::<Arc<veeps_net::Net>>();
            if let Some(sub) = net.and_then(|n| n.subnet(s).ok()) {
                let public = sub.tier == veeps_net::Tier::Public;
                if !spec.internal && !public {
                    return Err(ResourceError::Invalid(format!(
                        "an internet-facing load balancer needs public subnets; {s} is {:?} (or set internal = true)",
                        sub.tier
                    )));
                }
            }
        }
        let addr = lbs(ctx)?.put_lb(spec.clone()).await.map_err(failed)?;
        Ok(LbState {
            config: c.clone(),
            id: spec.id.clone(),
            arn: spec.id,
            dns_name: addr,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &LbState) -> Result<Observed<LbState>, ResourceError> {
        observed(ctx, "lb", &s.id, s)
    }
    async fn delete(&self, ctx: &Ctx, s: &LbState) -> Result<(), ResourceError> {
        lbs(ctx)?.delete_lb(&s.id).await.map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &LbState) -> Result<LbState, ResourceError> {
        lbs(ctx)?
            .put_lb(lb_spec(ctx, &s.config))
            .await
            .map_err(failed)?;
        Ok(s.clone())
    }
}

// ---------- actions ----------

fn action_schema() -> Schema {
    Schema::new()
        .attr(
            AttrSchema::required("type", Type::String)
                .describe("forward, redirect or fixed-response"),
        )
        .attr(AttrSchema::optional("target_group_arn", Type::String))
        .block(BlockSchema::new(
            "forward",
            Nesting::Single,
            Schema::new()
                .block(BlockSchema::new(
                    "target_group",
                    Nesting::List,
                    Schema::new()
                        .attr(AttrSchema::required("arn", Type::String))
                        .attr(AttrSchema::optional("weight", Type::Number).default(1.0)),
                ))
                .block(BlockSchema::new(
                    "stickiness",
                    Nesting::Single,
                    Schema::new()
                        .attr(AttrSchema::optional("enabled", Type::Bool).default(false))
                        .attr(AttrSchema::optional("duration", Type::Number).default(3600.0)),
                )),
        ))
        .block(BlockSchema::new(
            "redirect",
            Nesting::Single,
            Schema::new()
                .attr(AttrSchema::optional("protocol", Type::String).default("#{protocol}"))
                .attr(AttrSchema::optional("port", Type::String).default("#{port}"))
                .attr(AttrSchema::optional("host", Type::String).default("#{host}"))
                .attr(AttrSchema::optional("path", Type::String).default("/#{path}"))
                .attr(AttrSchema::optional("query", Type::String).default("#{query}"))
                .attr(
                    AttrSchema::required("status_code", Type::String)
                        .describe("HTTP_301 or HTTP_302"),
                ),
        ))
        .block(BlockSchema::new(
            "fixed_response",
            Nesting::Single,
            Schema::new()
                .attr(AttrSchema::optional("content_type", Type::String).default("text/plain"))
                .attr(AttrSchema::optional("message_body", Type::String).default(""))
                .attr(AttrSchema::optional("status_code", Type::String).default("200")),
        ))
        .block(BlockSchema::new(
            "authenticate_basic",
            Nesting::Single,
            Schema::new()
                .attr(AttrSchema::optional("realm", Type::String).default("veeps"))
                .attr(
                    AttrSchema::required("users", veeps_resource::map_of_strings())
                        .sensitive()
                        .describe(
                            "user name to password, or to an argon2id hash of it ($argon2id$...)",
                        ),
                ),
        ))
}

/// A weighted target group of a `forward` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightedGroup {
    arn: String,
    weight: u32,
}

/// `stickiness` of a `forward` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardStickiness {
    enabled: bool,
    duration: u64,
}

/// `forward` of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardConfig {
    #[serde(default, deserialize_with = "veeps_resource::typed::list")]
    target_group: Vec<WeightedGroup>,
    stickiness: Option<ForwardStickiness>,
}

/// `redirect` of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedirectConfig {
    protocol: String,
    port: String,
    host: String,
    path: String,
    query: String,
    status_code: String,
}

/// `fixed_response` of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FixedConfig {
    content_type: String,
    message_body: String,
    status_code: String,
}

/// `authenticate_basic` of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BasicAuthConfig {
    realm: String,
    users: BTreeMap<String, String>,
}

/// A listener's `default_action` or a rule's `action`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionConfig {
    #[serde(rename = "type")]
    kind: String,
    target_group_arn: Option<String>,
    forward: Option<ForwardConfig>,
    redirect: Option<RedirectConfig>,
    fixed_response: Option<FixedConfig>,
    authenticate_basic: Option<BasicAuthConfig>,
}

/// The credentials an action asks for, passwords hashed (salted from `seed`, the
/// listener's or rule's id, so the same configuration gives the same hashes).
fn basic_auth(seed: &str, a: Option<&ActionConfig>) -> Option<BasicAuth> {
    let b = a?.authenticate_basic.as_ref()?;
    Some(BasicAuth {
        realm: b.realm.clone(),
        users: b
            .users
            .iter()
            .map(|(u, p)| (u.clone(), crate::auth::hash_password(seed, u, p)))
            .collect(),
    })
}

fn not_found() -> Action {
    Action::Fixed {
        status: 404,
        content_type: "text/plain".into(),
        body: String::new(),
    }
}

fn action(a: &ActionConfig) -> Action {
    match (a.kind.as_str(), &a.redirect, &a.fixed_response) {
        ("redirect", Some(r), _) => Action::Redirect {
            protocol: r.protocol.clone(),
            port: r.port.clone(),
            host: r.host.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            status: if r.status_code.ends_with("302") {
                302
            } else {
                301
            },
        },
        ("fixed-response", _, Some(f)) => Action::Fixed {
            status: f.status_code.parse().unwrap_or(200),
            content_type: f.content_type.clone(),
            body: f.message_body.clone(),
        },
        ("redirect" | "fixed-response", _, _) => not_found(),
        _ => {
            let mut groups: Vec<(String, u32)> =
                a.target_group_arn.iter().map(|t| (t.clone(), 1)).collect();
            if let Some(fw) = &a.forward {
                groups.extend(fw.target_group.iter().map(|g| (g.arn.clone(), g.weight)));
            }
            let stickiness_secs = match a.forward.as_ref().and_then(|f| f.stickiness.as_ref()) {
                Some(s) if s.enabled => s.duration,
                _ => 0,
            };
            Action::Forward {
                groups,
                stickiness_secs,
            }
        }
    }
}

fn check_action(a: &Value, path: &str, e: &mut Vec<AttrError>) {
    let at = |k: &[&str]| {
        let mut p = vec![path.to_string()];
        p.extend(k.iter().map(|s| s.to_string()));
        p
    };
    match get::str(a, "type") {
        Some("forward") => {
            let has = get::str(a, "target_group_arn").is_some()
                || a.get("target_group_arn").is_some_and(Value::is_unknown)
                || single(a, "forward").is_some_and(|f| !list(f, "target_group").is_empty());
            if !has {
                e.push(AttrError { path: at(&["type"]), message: "a forward action needs target_group_arn or forward { target_group { ... } }".into() });
            }
            for tg in single(a, "forward")
                .map(|f| list(f, "target_group"))
                .unwrap_or_default()
            {
                if let Some(w) = get::num(tg, "weight") {
                    if w.fract() != 0.0 || !(0.0..=999.0).contains(&w) {
                        e.push(AttrError {
                            path: at(&["forward", "target_group", "weight"]),
                            message: format!("is {w}; a weight is a whole number from 0 to 999"),
                        });
                    }
                }
            }
        }
        Some("redirect") => match single(a, "redirect") {
            None => e.push(AttrError {
                path: at(&["type"]),
                message: "a redirect action needs a redirect { status_code = \"HTTP_301\" } block"
                    .into(),
            }),
            Some(r) => {
                if let Some(s) = get::str(r, "status_code") {
                    if s != "HTTP_301" && s != "HTTP_302" {
                        e.push(AttrError {
                            path: at(&["redirect", "status_code"]),
                            message: format!("\"{s}\" must be HTTP_301 or HTTP_302"),
                        });
                    }
                }
            }
        },
        Some("fixed-response") => {
            let f = single(a, "fixed_response");
            if let Some(s) = f.and_then(|f| get::str(f, "status_code")) {
                if !s.parse::<u16>().is_ok_and(|c| (200..=599).contains(&c)) {
                    e.push(AttrError {
                        path: at(&["fixed_response", "status_code"]),
                        message: format!("\"{s}\" must be a status code from 200 to 599"),
                    });
                }
            }
            if f.is_none() {
                e.push(AttrError {
                    path: at(&["type"]),
                    message: "a fixed-response action needs a fixed_response { ... } block".into(),
                });
            }
        }
        Some(t) => e.push(AttrError {
            path: at(&["type"]),
            message: format!("\"{t}\" must be forward, redirect or fixed-response"),
        }),
        None => {}
    }
    if let Some(b) = single(a, "authenticate_basic") {
        if let Some(users) = b.get("users").and_then(Value::as_object) {
            if users.is_empty() {
                e.push(AttrError {
                    path: at(&["authenticate_basic", "users"]),
                    message: "names no user; give at least one: users = { alice = \"...\" }".into(),
                });
            }
            for (u, p) in users {
                if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) {
                    e.push(AttrError {
                        path: at(&["authenticate_basic", "users"]),
                        message: format!(
                            "\"{u}\" cannot be a user name: it must be non-empty, without a colon (RFC 7617)"
                        ),
                    });
                }
                match p.as_str() {
                    Some("") => e.push(AttrError {
                        path: at(&["authenticate_basic", "users"]),
                        message: format!("the password of \"{u}\" is empty"),
                    }),
                    Some(v) => {
                        if let Some(why) = crate::auth::check_hash(v) {
                            e.push(AttrError {
                                path: at(&["authenticate_basic", "users"]),
                                message: format!("the hash of \"{u}\" {why}"),
                            });
                        }
                    }
                    None => {}
                }
            }
        }
    }
}

// ---------- listener ----------

fn listener_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("load_balancer_arn", Type::String).force_new())
        .attr(AttrSchema::required("port", Type::Number))
        .attr(AttrSchema::optional("protocol", Type::String).default("HTTP"))
        .attr(AttrSchema::optional("certificate_arn", Type::String))
        .attr(
            AttrSchema::optional("certificate_arns", list_str())
                .describe("more certificates, chosen by SNI"),
        )
        .attr(
            AttrSchema::optional("host_port", Type::Number)
                .describe("also serve on this port of 127.0.0.1"),
        )
        .attr(AttrSchema::computed("id", Type::String))
        .attr(AttrSchema::computed("arn", Type::String))
        .block(BlockSchema {
            name: "default_action",
            nesting: Nesting::Single,
            schema: action_schema(),
            force_new: false,
            min_items: 1,
        })
}

/// `listener`.
pub struct ListenerType(Schema);

/// `listener`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerConfig {
    load_balancer_arn: String,
    port: u16,
    protocol: String,
    certificate_arn: Option<String>,
    certificate_arns: Option<Vec<String>>,
    host_port: Option<u16>,
    default_action: Option<ActionConfig>,
}

/// `listener`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerState {
    #[serde(flatten)]
    config: ListenerConfig,
    id: String,
    arn: String,
}

fn listener_spec(ctx: &Ctx, c: &ListenerConfig) -> ListenerSpec {
    let mut certs: Vec<String> = c.certificate_arn.iter().cloned().collect();
    certs.extend(c.certificate_arns.iter().flatten().cloned());
    let lid = id(ctx, "listener");
    ListenerSpec {
        default_auth: basic_auth(&lid, c.default_action.as_ref()),
        id: lid,
        lb_id: c.load_balancer_arn.clone(),
        port: c.port,
        protocol: protocol(&c.protocol),
        certificates: certs,
        default_action: c
            .default_action
            .as_ref()
            .map(action)
            .unwrap_or_else(not_found),
        host_port: c.host_port,
    }
}

#[async_trait::async_trait]
impl Typed for ListenerType {
    type Config = ListenerConfig;
    type State = ListenerState;
    const TYPE: &'static str = "listener";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        port_ok(c, "port", &mut e);
        port_ok(c, "host_port", &mut e);
        protocol_ok(c, "protocol", &[], &mut e);
        let https = get::str(c, "protocol").is_some_and(|p| p.eq_ignore_ascii_case("HTTPS"));
        let has_cert = c.get("certificate_arn").is_some_and(|v| !v.is_null())
            || c.get("certificate_arns")
                .and_then(Value::as_list)
                .is_some_and(|l| !l.is_empty());
        if https && !has_cert {
            e.push(AttrError::on(
                "protocol",
                "an HTTPS listener needs certificate_arn (a certificate resource's arn)",
            ));
        }
        if let Some(a) = single(c, "default_action") {
            check_action(a, "default_action", &mut e);
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        ids(ctx, "listener")
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&ListenerState>,
        c: &ListenerConfig,
    ) -> Result<ListenerState, ResourceError> {
        let l = listener_spec(ctx, c);
        let svc = lbs(ctx)?;
        if !svc.exists("lb", &l.lb_id) {
            return Err(ResourceError::Invalid(format!(
                "load balancer {} does not exist; use load_balancer.NAME.arn",
                l.lb_id
            )));
        }
        let i = l.id.clone();
        svc.put_listener(l).await.map_err(failed)?;
        Ok(ListenerState {
            config: c.clone(),
            id: i.clone(),
            arn: i,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &ListenerState,
    ) -> Result<Observed<ListenerState>, ResourceError> {
        observed(ctx, "listener", &s.id, s)
    }
    async fn delete(&self, ctx: &Ctx, s: &ListenerState) -> Result<(), ResourceError> {
        lbs(ctx)?.delete("listener", &s.id).await.map_err(failed)
    }
    async fn reconcile(
        &self,
        ctx: &Ctx,
        s: &ListenerState,
    ) -> Result<ListenerState, ResourceError> {
        lbs(ctx)?
            .put_listener(listener_spec(ctx, &s.config))
            .await
            .map_err(failed)?;
        Ok(s.clone())
    }
}

// ---------- listener_rule ----------

fn values_block(name: &'static str) -> BlockSchema {
    BlockSchema::new(
        name,
        Nesting::Single,
        Schema::new().attr(AttrSchema::required("values", list_str())),
    )
}

fn rule_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("listener_arn", Type::String).force_new())
        .attr(AttrSchema::required("priority", Type::Number))
        .attr(AttrSchema::computed("id", Type::String))
        .attr(AttrSchema::computed("arn", Type::String))
        .block(BlockSchema {
            name: "action",
            nesting: Nesting::Single,
            schema: action_schema(),
            force_new: false,
            min_items: 1,
        })
        .block(BlockSchema {
            name: "condition",
            nesting: Nesting::List,
            schema: Schema::new()
                .block(values_block("host_header"))
                .block(values_block("path_pattern"))
                .block(values_block("http_request_method"))
                .block(values_block("source_ip"))
                .block(BlockSchema::new(
                    "http_header",
                    Nesting::Single,
                    Schema::new()
                        .attr(AttrSchema::required("http_header_name", Type::String))
                        .attr(AttrSchema::required("values", list_str())),
                ))
                .block(BlockSchema::new(
                    "query_string",
                    Nesting::List,
                    Schema::new()
                        .attr(AttrSchema::optional("key", Type::String))
                        .attr(AttrSchema::required("value", Type::String)),
                )),
            force_new: false,
            min_items: 1,
        })
}

/// A condition block holding `values`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValuesConfig {
    values: Vec<String>,
}

/// `http_header` of a condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeaderConfig {
    http_header_name: String,
    values: Vec<String>,
}

/// `query_string` of a condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryConfig {
    key: Option<String>,
    value: String,
}

/// One `condition` of a rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConditionConfig {
    host_header: Option<ValuesConfig>,
    path_pattern: Option<ValuesConfig>,
    http_request_method: Option<ValuesConfig>,
    source_ip: Option<ValuesConfig>,
    http_header: Option<HeaderConfig>,
    #[serde(default, deserialize_with = "veeps_resource::typed::list")]
    query_string: Vec<QueryConfig>,
}

fn conditions(c: &[ConditionConfig]) -> Vec<Condition> {
    let mut out = vec![];
    for cond in c {
        let vals = |v: &Option<ValuesConfig>| v.as_ref().map(|v| v.values.clone());
        if let Some(v) = vals(&cond.host_header) {
            out.push(Condition::Host(v));
        }
        if let Some(v) = vals(&cond.path_pattern) {
            out.push(Condition::Path(v));
        }
        if let Some(v) = vals(&cond.http_request_method) {
            out.push(Condition::Method(v));
        }
        if let Some(v) = vals(&cond.source_ip) {
            out.push(Condition::SourceIp(v));
        }
        if let Some(h) = &cond.http_header {
            out.push(Condition::Header {
                name: h.http_header_name.clone(),
                values: h.values.clone(),
            });
        }
        if !cond.query_string.is_empty() {
            out.push(Condition::Query(
                cond.query_string
                    .iter()
                    .map(|q| (q.key.clone().unwrap_or_default(), q.value.clone()))
                    .collect(),
            ));
        }
    }
    out
}

/// `listener_rule`.
pub struct RuleType(Schema);

/// `listener_rule`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleConfig {
    listener_arn: String,
    priority: u32,
    action: Option<ActionConfig>,
    #[serde(default, deserialize_with = "veeps_resource::typed::list")]
    condition: Vec<ConditionConfig>,
}

/// `listener_rule`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleState {
    #[serde(flatten)]
    config: RuleConfig,
    id: String,
    arn: String,
}

fn rule_spec(ctx: &Ctx, c: &RuleConfig) -> RuleSpec {
    let rid = id(ctx, "rule");
    RuleSpec {
        auth: basic_auth(&rid, c.action.as_ref()),
        id: rid,
        listener_id: c.listener_arn.clone(),
        priority: c.priority,
        conditions: conditions(&c.condition),
        action: c.action.as_ref().map(action).unwrap_or_else(not_found),
    }
}

#[async_trait::async_trait]
impl Typed for RuleType {
    type Config = RuleConfig;
    type State = RuleState;
    const TYPE: &'static str = "listener_rule";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(p) = get::num(c, "priority") {
            if p.fract() != 0.0 || !(1.0..=50000.0).contains(&p) {
                e.push(AttrError::on(
                    "priority",
                    format!("is {p}; a priority is a whole number from 1 to 50000"),
                ));
            }
        }
        if let Some(a) = single(c, "action") {
            check_action(a, "action", &mut e);
        }
        for (i, cond) in list(c, "condition").into_iter().enumerate() {
            let n = [
                "host_header",
                "path_pattern",
                "http_request_method",
                "source_ip",
                "http_header",
                "query_string",
            ]
            .iter()
            .filter(|b| match cond.get(b) {
                Some(Value::List(l)) => !l.is_empty(),
                Some(Value::Null) | None => false,
                Some(_) => true,
            })
            .count();
            if n != 1 {
                e.push(AttrError { path: vec!["condition".into(), i.to_string()], message: "each condition takes exactly one of host_header, path_pattern, http_request_method, source_ip, http_header, query_string".into() });
            }
            if let Some(s) = single(cond, "source_ip") {
                for v in strings(s, "values") {
                    if v.parse::<ipnet::IpNet>().is_err() {
                        e.push(AttrError {
                            path: vec![
                                "condition".into(),
                                i.to_string(),
                                "source_ip".into(),
                                "values".into(),
                            ],
                            message: format!("\"{v}\" is not a CIDR block like 10.0.0.0/16"),
                        });
                    }
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        ids(ctx, "rule")
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&RuleState>,
        c: &RuleConfig,
    ) -> Result<RuleState, ResourceError> {
        let r = rule_spec(ctx, c);
        let svc = lbs(ctx)?;
        if !svc.exists("listener", &r.listener_id) {
            return Err(ResourceError::Invalid(format!(
                "listener {} does not exist; use listener.NAME.arn",
                r.listener_id
            )));
        }
        let i = r.id.clone();
        svc.put_rule(r).await.map_err(failed)?;
        Ok(RuleState {
            config: c.clone(),
            id: i.clone(),
            arn: i,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &RuleState) -> Result<Observed<RuleState>, ResourceError> {
        observed(ctx, "rule", &s.id, s)
    }
    async fn delete(&self, ctx: &Ctx, s: &RuleState) -> Result<(), ResourceError> {
        lbs(ctx)?.delete("rule", &s.id).await.map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, s: &RuleState) -> Result<RuleState, ResourceError> {
        lbs(ctx)?
            .put_rule(rule_spec(ctx, &s.config))
            .await
            .map_err(failed)?;
        Ok(s.clone())
    }
}

// ---------- target_group ----------

fn tg_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("name", Type::String))
        .attr(AttrSchema::optional("port", Type::Number).default(80.0))
        .attr(
            AttrSchema::optional("target_type", Type::String)
                .default("instance")
                .describe("instance (addresses, group instances) or lambda (a function)"),
        )
        .attr(AttrSchema::optional("function", Type::String).describe(
            "the function a lambda target group invokes (function.NAME.name, or NAME:QUALIFIER)",
        ))
        .attr(AttrSchema::optional("lambda_multi_value_headers_enabled", Type::Bool).default(false))
        .attr(AttrSchema::optional("protocol", Type::String).default("HTTP"))
        .attr(AttrSchema::optional("vpc_id", Type::String))
        .attr(AttrSchema::optional("deregistration_delay", Type::Number).default(300.0))
        .attr(
            AttrSchema::optional("load_balancing_algorithm_type", Type::String)
                .default("round_robin"),
        )
        .attr(AttrSchema::computed("id", Type::String))
        .attr(AttrSchema::computed("arn", Type::String))
        .block(BlockSchema::new(
            "health_check",
            Nesting::Single,
            Schema::new()
                .attr(AttrSchema::optional("path", Type::String).default("/"))
                .attr(AttrSchema::optional("port", Type::String).default("traffic-port"))
                .attr(AttrSchema::optional("protocol", Type::String).default("HTTP"))
                .attr(AttrSchema::optional("interval", Type::Number).default(30.0))
                .attr(AttrSchema::optional("timeout", Type::Number).default(5.0))
                .attr(AttrSchema::optional("healthy_threshold", Type::Number).default(5.0))
                .attr(AttrSchema::optional("unhealthy_threshold", Type::Number).default(2.0))
                .attr(AttrSchema::optional("matcher", Type::String).default("200")),
        ))
        .block(BlockSchema::new(
            "stickiness",
            Nesting::Single,
            Schema::new()
                .attr(AttrSchema::optional("enabled", Type::Bool).default(false))
                .attr(AttrSchema::optional("type", Type::String).default("lb_cookie"))
                .attr(AttrSchema::optional("cookie_duration", Type::Number).default(86400.0)),
        ))
}

/// `target_group`.
pub struct TgType(Schema);

/// `health_check` of a target group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthConfig {
    path: String,
    port: String,
    protocol: String,
    interval: f64,
    timeout: f64,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    matcher: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/".into(),
            port: "traffic-port".into(),
            protocol: "HTTP".into(),
            interval: 30.0,
            timeout: 5.0,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }
}

/// `stickiness` of a target group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TgStickiness {
    enabled: bool,
    #[serde(rename = "type")]
    kind: String,
    cookie_duration: u64,
}

/// `target_group`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TgConfig {
    name: String,
    port: u16,
    target_type: String,
    #[serde(default)]
    function: Option<String>,
    lambda_multi_value_headers_enabled: bool,
    protocol: String,
    vpc_id: Option<String>,
    deregistration_delay: u64,
    load_balancing_algorithm_type: String,
    health_check: Option<HealthConfig>,
    stickiness: Option<TgStickiness>,
}

/// `target_group`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TgState {
    #[serde(flatten)]
    config: TgConfig,
    id: String,
    arn: String,
}

fn tg_spec(ctx: &Ctx, c: &TgConfig) -> TgSpec {
    let h = c.health_check.clone().unwrap_or_default();
    TgSpec {
        id: id(ctx, "tg"),
        name: c.name.clone(),
        protocol: protocol(&c.protocol),
        port: c.port,
        health: HealthSpec {
            port: h.port.parse().ok(),
            protocol: protocol(&h.protocol),
            interval: h.interval,
            timeout: h.timeout,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            matcher: h.matcher,
            path: h.path,
        },
        deregistration_delay: c.deregistration_delay,
        algorithm: c.load_balancing_algorithm_type.clone(),
        stickiness_secs: match &c.stickiness {
            Some(s) if s.enabled => s.cookie_duration,
            _ => 0,
        },
        function: (c.target_type == "lambda")
            .then(|| c.function.clone())
            .flatten(),
        multi_value_headers: c.lambda_multi_value_headers_enabled,
    }
}

#[async_trait::async_trait]
impl Typed for TgType {
    type Config = TgConfig;
    type State = TgState;
    const TYPE: &'static str = "target_group";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        port_ok(c, "port", &mut e);
        protocol_ok(c, "protocol", &[], &mut e);
        match (get::str(c, "target_type"), c.get("function")) {
            (Some("lambda"), Some(Value::Null) | None) => e.push(AttrError::on(
                "function",
                "a lambda target group names its function: function = function.x.name",
            )),
            (Some(t), Some(f)) if t != "lambda" && !matches!(f, Value::Null) => {
                e.push(AttrError::on(
                    "function",
                    "only a target group with target_type = \"lambda\" invokes a function",
                ))
            }
            (Some(t), _) if t != "lambda" && t != "instance" && t != "ip" => e.push(AttrError::on(
                "target_type",
                format!("\"{t}\" is not instance, ip or lambda"),
            )),
            _ => {}
        }
        if let Some(a) = get::str(c, "load_balancing_algorithm_type") {
            if a != "round_robin" && a != "least_outstanding_requests" {
                e.push(AttrError::on(
                    "load_balancing_algorithm_type",
                    format!("\"{a}\" must be round_robin or least_outstanding_requests"),
                ));
            }
        }
        if let Some(d) = get::num(c, "deregistration_delay") {
            if !(0.0..=3600.0).contains(&d) {
                e.push(AttrError::on(
                    "deregistration_delay",
                    format!("is {d}; give seconds from 0 to 3600"),
                ));
            }
        }
        if let Some(h) = single(c, "health_check") {
            let at = |k: &str| vec!["health_check".to_string(), k.to_string()];
            protocol_ok(h, "protocol", &["health_check"], &mut e);
            if let Some(m) = get::str(h, "matcher") {
                if let Err(msg) = parse_matcher(m) {
                    e.push(AttrError {
                        path: at("matcher"),
                        message: msg,
                    });
                }
            }
            if let Some(p) = get::str(h, "path") {
                if !p.starts_with('/') {
                    e.push(AttrError {
                        path: at("path"),
                        message: format!("\"{p}\" must start with /"),
                    });
                }
            }
            if let Some(p) = get::str(h, "port") {
                if p != "traffic-port" && !p.parse::<u16>().is_ok_and(|v| v > 0) {
                    e.push(AttrError {
                        path: at("port"),
                        message: format!("\"{p}\" must be traffic-port or a port number"),
                    });
                }
            }
            let (i, t) = (get::num(h, "interval"), get::num(h, "timeout"));
            for (k, v, lo, hi) in [("interval", i, 0.1, 300.0), ("timeout", t, 0.1, 120.0)] {
                if let Some(v) = v {
                    if !(lo..=hi).contains(&v) {
                        e.push(AttrError {
                            path: at(k),
                            message: format!("is {v}; give seconds from {lo} to {hi}"),
                        });
                    }
                }
            }
            if let (Some(i), Some(t)) = (i, t) {
                if t >= i {
                    e.push(AttrError {
                        path: at("timeout"),
                        message: format!("is {t}; it must be less than the interval ({i})"),
                    });
                }
            }
            for k in ["healthy_threshold", "unhealthy_threshold"] {
                if let Some(v) = get::num(h, k) {
                    if v.fract() != 0.0 || !(1.0..=10.0).contains(&v) {
                        e.push(AttrError {
                            path: at(k),
                            message: format!("is {v}; give a whole number from 1 to 10"),
                        });
                    }
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        ids(ctx, "tg")
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&TgState>,
        c: &TgConfig,
    ) -> Result<TgState, ResourceError> {
        let t = tg_spec(ctx, c);
        let i = t.id.clone();
        lbs(ctx)?.put_tg(t).await.map_err(failed)?;
        Ok(TgState {
            config: c.clone(),
            id: i.clone(),
            arn: i,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &TgState) -> Result<Observed<TgState>, ResourceError> {
        observed(ctx, "tg", &s.id, s)
    }
    async fn delete(&self, ctx: &Ctx, s: &TgState) -> Result<(), ResourceError> {
        lbs(ctx)?.delete("tg", &s.id).await.map_err(failed)
    }
}

// ---------- target_group_attachment ----------

fn attach_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("target_group_arn", Type::String).force_new())
        .attr(
            AttrSchema::required("target_id", Type::String)
                .describe("an IP address")
                .force_new(),
        )
        .attr(AttrSchema::optional("port", Type::Number))
        .attr(AttrSchema::computed("id", Type::String))
}

/// `target_group_attachment`.
pub struct AttachType(Schema);

/// `target_group_attachment`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachConfig {
    target_group_arn: String,
    target_id: String,
    port: Option<u16>,
}

/// `target_group_attachment`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachState {
    #[serde(flatten)]
    config: AttachConfig,
    id: String,
}

fn attach_spec(ctx: &Ctx, c: &AttachConfig) -> AttachmentSpec {
    AttachmentSpec {
        id: id(ctx, "tga"),
        tg_id: c.target_group_arn.clone(),
        target: c.target_id.clone(),
        port: c.port,
    }
}

#[async_trait::async_trait]
impl Typed for AttachType {
    type Config = AttachConfig;
    type State = AttachState;
    const TYPE: &'static str = "target_group_attachment";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        port_ok(c, "port", &mut e);
        if let Some(t) = get::str(c, "target_id") {
            if t.parse::<std::net::IpAddr>().is_err() {
                e.push(AttrError::on(
                    "target_id",
                    format!(
                        "\"{t}\" is not an IP address (groups attach through target_group_arns)"
                    ),
                ));
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        [("id".to_string(), Value::String(id(ctx, "tga")))].into()
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&AttachState>,
        c: &AttachConfig,
    ) -> Result<AttachState, ResourceError> {
        let a = attach_spec(ctx, c);
        let id = a.id.clone();
        lbs(ctx)?.put_attachment(a).await.map_err(failed)?;
        Ok(AttachState {
            config: c.clone(),
            id,
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &AttachState,
    ) -> Result<Observed<AttachState>, ResourceError> {
        observed(ctx, "attach", &s.id, s)
    }
    async fn delete(&self, ctx: &Ctx, s: &AttachState) -> Result<(), ResourceError> {
        lbs(ctx)?.delete("attach", &s.id).await.map_err(failed)
    }
}

// ---------- certificate ----------

fn cert_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("domain_name", Type::String).force_new())
        .attr(AttrSchema::optional("subject_alternative_names", list_str()).force_new())
        .attr(
            AttrSchema::optional("validation_method", Type::String)
                .default("internal")
                .describe("internal (veeps' CA), acme_dns (DNS-01 in veeps' zones; wildcards) or acme_http"),
        )
        .attr(
            AttrSchema::optional("acme_directory", Type::String)
                .default(veeps_pki::acme::LETS_ENCRYPT)
                .describe("the ACME server's directory URL (any RFC 8555 server)"),
        )
        .attr(AttrSchema::optional("acme_ca_file", Type::String).describe(
            "a PEM file of the CA the ACME server's own TLS certificate chains to (a test CA like Pebble's)",
        ))
        .attr(AttrSchema::optional("acme_email", Type::String))
        .attr(AttrSchema::computed("id", Type::String))
        .attr(AttrSchema::computed("arn", Type::String))
        .attr(AttrSchema::computed("certificate_pem", Type::String))
        .attr(AttrSchema::computed("not_after", Type::String))
}

/// `certificate`: issued by veeps' CA.
pub struct CertType(Schema);

/// `certificate`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertConfig {
    domain_name: String,
    subject_alternative_names: Option<Vec<String>>,
    #[serde(default = "internal")]
    validation_method: String,
    #[serde(default = "lets_encrypt")]
    acme_directory: String,
    #[serde(default)]
    acme_ca_file: Option<String>,
    #[serde(default)]
    acme_email: Option<String>,
}

fn internal() -> String {
    "internal".into()
}

fn lets_encrypt() -> String {
    veeps_pki::acme::LETS_ENCRYPT.into()
}

/// How an ACME certificate is validated, or `None` for veeps' CA.
fn acme_spec(c: &CertConfig) -> Option<veeps_pki::acme::AcmeSpec> {
    let challenge = match c.validation_method.as_str() {
        "acme_dns" => "dns-01",
        "acme_http" => "http-01",
        _ => return None,
    };
    Some(veeps_pki::acme::AcmeSpec {
        directory: c.acme_directory.clone(),
        ca_file: c.acme_ca_file.as_ref().map(std::path::PathBuf::from),
        email: c.acme_email.clone(),
        challenge: challenge.into(),
    })
}

/// `certificate`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertState {
    #[serde(flatten)]
    config: CertConfig,
    id: String,
    arn: String,
    certificate_pem: String,
    not_after: String,
}

fn names(c: &CertConfig) -> Vec<String> {
    let mut n = vec![c.domain_name.clone()];
    for s in c.subject_alternative_names.iter().flatten() {
        if !n.contains(s) {
            n.push(s.clone());
        }
    }
    n
}

/// The first certificate of a chain.
fn leaf(chain_pem: &str) -> String {
    chain_pem
        .split("-----END CERTIFICATE-----")
        .next()
        .unwrap_or("")
        .to_string()
        + "-----END CERTIFICATE-----\n"
}

#[async_trait::async_trait]
impl Typed for CertType {
    type Config = CertConfig;
    type State = CertState;
    const TYPE: &'static str = "certificate";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(d) = get::str(c, "domain_name") {
            if let Err(m) = veeps_pki::Ca::check(d) {
                e.push(AttrError::on("domain_name", m));
            }
        }
        for s in strings(c, "subject_alternative_names") {
            if let Err(m) = veeps_pki::Ca::check(&s) {
                e.push(AttrError::on("subject_alternative_names", m));
            }
        }
        let method = get::str(c, "validation_method").unwrap_or("internal");
        if !["internal", "acme_dns", "acme_http"].contains(&method) {
            e.push(AttrError::on(
                "validation_method",
                format!("\"{method}\" must be internal, acme_dns or acme_http"),
            ));
        }
        if method != "internal" {
            let mut all: Vec<String> = get::str(c, "domain_name")
                .map(String::from)
                .into_iter()
                .collect();
            all.extend(strings(c, "subject_alternative_names"));
            for n in all {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    e.push(AttrError::on(
                        "domain_name",
                        format!("{n}: an ACME certificate names DNS names, not addresses"),
                    ));
                }
                if n.starts_with("*.") && method == "acme_http" {
                    e.push(AttrError::on(
                        "validation_method",
                        format!("{n} is a wildcard: ACME CAs validate wildcards by DNS only; use acme_dns"),
                    ));
                }
            }
            if let Some(d) = get::str(c, "acme_directory") {
                if !d.starts_with("https://") {
                    e.push(AttrError::on(
                        "acme_directory",
                        format!("\"{d}\" must be an https:// URL"),
                    ));
                }
            }
        }
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        ids(ctx, "cert")
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&CertState>,
        c: &CertConfig,
    ) -> Result<CertState, ResourceError> {
        let i = id(ctx, "cert");
        let svc = lbs(ctx)?;
        let acme = acme_spec(c);
        let issued = match (svc.certs.get(&i), &acme) {
            (Some(x), _) if x.names == names(c) && x.acme == acme => x,
            (_, Some(spec)) => {
                let x = svc
                    .certs
                    .acme
                    .issue(&i, &names(c), spec)
                    .await
                    .map_err(failed)?;
                svc.certs.put(&x).map_err(failed)?;
                svc.refresh_certificates().await.map_err(failed)?;
                x
            }
            _ => {
                let x = svc.certs.issue(&i, &names(c)).map_err(failed)?;
                // A replacement keeps the id: listeners using it serve the new one now.
                svc.refresh_certificates().await.map_err(failed)?;
                x
            }
        };
        Ok(CertState {
            config: c.clone(),
            id: i.clone(),
            arn: i,
            certificate_pem: leaf(&issued.chain_pem),
            not_after: issued.not_after,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &CertState) -> Result<Observed<CertState>, ResourceError> {
        Ok(match lbs(ctx)?.certs.get(&s.id) {
            // Renewed since: the certificate it is now.
            Some(x) => Observed::Exists(CertState {
                certificate_pem: leaf(&x.chain_pem),
                not_after: x.not_after,
                ..s.clone()
            }),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &CertState) -> Result<(), ResourceError> {
        lbs(ctx)?.certs.delete(&s.id).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn schemas_agree_with_config_and_state() {
        check_schema(&LbType(lb_schema())).unwrap();
        check_schema(&ListenerType(listener_schema())).unwrap();
        check_schema(&RuleType(rule_schema())).unwrap();
        check_schema(&TgType(tg_schema())).unwrap();
        check_schema(&AttachType(attach_schema())).unwrap();
        check_schema(&CertType(cert_schema())).unwrap();
    }
}
