//! The load balancing resource types, in Terraform's shapes: `load_balancer`, `listener`,
//! `listener_rule`, `target_group`, `target_group_attachment` and `certificate`.

use crate::model::{
    parse_matcher, Action, AttachmentSpec, Condition, HealthSpec, LbSpec, ListenerSpec, Protocol,
    RuleSpec, TgSpec,
};
use crate::service::Lbs;
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::get::strings;
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Registry, Resource, ResourceError,
    Schema,
};
use veeps_resource::{list_of_strings as list_str, with_attrs as with};

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

fn protocol(s: Option<&str>) -> Protocol {
    if s.is_some_and(|p| p.eq_ignore_ascii_case("HTTPS")) {
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

fn lb_spec(ctx: &Ctx, c: &Value) -> LbSpec {
    LbSpec {
        id: id(ctx, "lb"),
        env: ctx.env.clone(),
        name: get::str(c, "name").unwrap_or_default().into(),
        internal: get::bool_or(c, "internal", false),
        subnets: strings(c, "subnets"),
        security_groups: strings(c, "security_groups"),
        idle_timeout: get::num(c, "idle_timeout").unwrap_or(60.0) as u64,
        access_logs: get::bool_or(c, "access_logs", true),
    }
}

#[async_trait::async_trait]
impl Resource for LbType {
    fn type_name(&self) -> &'static str {
        "load_balancer"
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
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
        Ok(with(
            c,
            &[
                ("id", Value::String(spec.id.clone())),
                ("arn", Value::String(spec.id)),
                ("dns_name", Value::String(addr)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(lbs(ctx)?
            .exists("lb", get::str(state, "id").unwrap_or_default())
            .then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        lbs(ctx)?
            .delete_lb(get::str(state, "id").unwrap_or_default())
            .await
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        lbs(ctx)?
            .put_lb(lb_spec(ctx, state))
            .await
            .map_err(failed)?;
        Ok(state.clone())
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
}

fn action(a: &Value) -> Action {
    match get::str(a, "type").unwrap_or("forward") {
        "redirect" => {
            let r = single(a, "redirect");
            let s = |k: &str, d: &str| r.and_then(|r| get::str(r, k)).unwrap_or(d).to_string();
            Action::Redirect {
                protocol: s("protocol", "#{protocol}"),
                port: s("port", "#{port}"),
                host: s("host", "#{host}"),
                path: s("path", "/#{path}"),
                query: s("query", "#{query}"),
                status: if s("status_code", "HTTP_301").ends_with("302") {
                    302
                } else {
                    301
                },
            }
        }
        "fixed-response" => {
            let f = single(a, "fixed_response");
            let s = |k: &str, d: &str| f.and_then(|r| get::str(r, k)).unwrap_or(d).to_string();
            Action::Fixed {
                status: s("status_code", "200").parse().unwrap_or(200),
                content_type: s("content_type", "text/plain"),
                body: s("message_body", ""),
            }
        }
        _ => {
            let mut groups = vec![];
            if let Some(t) = get::str(a, "target_group_arn") {
                groups.push((t.to_string(), 1));
            }
            let fw = single(a, "forward");
            for tg in fw.map(|f| list(f, "target_group")).unwrap_or_default() {
                if let Some(arn) = get::str(tg, "arn") {
                    groups.push((
                        arn.to_string(),
                        get::num(tg, "weight").unwrap_or(1.0) as u32,
                    ));
                }
            }
            let st = fw.and_then(|f| single(f, "stickiness"));
            let stickiness_secs = match st {
                Some(s) if get::bool_or(s, "enabled", false) => {
                    get::num(s, "duration").unwrap_or(3600.0) as u64
                }
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

fn listener_spec(ctx: &Ctx, c: &Value) -> ListenerSpec {
    let mut certs: Vec<String> = get::str(c, "certificate_arn")
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    certs.extend(strings(c, "certificate_arns"));
    ListenerSpec {
        id: id(ctx, "listener"),
        lb_id: get::str(c, "load_balancer_arn").unwrap_or_default().into(),
        port: get::num(c, "port").unwrap_or(80.0) as u16,
        protocol: protocol(get::str(c, "protocol")),
        certificates: certs,
        default_action: single(c, "default_action")
            .map(action)
            .unwrap_or(Action::Fixed {
                status: 404,
                content_type: "text/plain".into(),
                body: String::new(),
            }),
        host_port: get::num(c, "host_port").map(|p| p as u16),
    }
}

#[async_trait::async_trait]
impl Resource for ListenerType {
    fn type_name(&self) -> &'static str {
        "listener"
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
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
        Ok(with(
            c,
            &[("id", Value::String(i.clone())), ("arn", Value::String(i))],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(lbs(ctx)?
            .exists("listener", get::str(state, "id").unwrap_or_default())
            .then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        lbs(ctx)?
            .delete("listener", get::str(state, "id").unwrap_or_default())
            .await
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        lbs(ctx)?
            .put_listener(listener_spec(ctx, state))
            .await
            .map_err(failed)?;
        Ok(state.clone())
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

fn conditions(c: &Value) -> Vec<Condition> {
    let mut out = vec![];
    for cond in list(c, "condition") {
        let vals = |b: &str| single(cond, b).map(|v| strings(v, "values"));
        if let Some(v) = vals("host_header") {
            out.push(Condition::Host(v));
        }
        if let Some(v) = vals("path_pattern") {
            out.push(Condition::Path(v));
        }
        if let Some(v) = vals("http_request_method") {
            out.push(Condition::Method(v));
        }
        if let Some(v) = vals("source_ip") {
            out.push(Condition::SourceIp(v));
        }
        if let Some(h) = single(cond, "http_header") {
            out.push(Condition::Header {
                name: get::str(h, "http_header_name").unwrap_or_default().into(),
                values: strings(h, "values"),
            });
        }
        let qs: Vec<(String, String)> = list(cond, "query_string")
            .into_iter()
            .map(|q| {
                (
                    get::str(q, "key").unwrap_or("").to_string(),
                    get::str(q, "value").unwrap_or("").to_string(),
                )
            })
            .collect();
        if !qs.is_empty() {
            out.push(Condition::Query(qs));
        }
    }
    out
}

/// `listener_rule`.
pub struct RuleType(Schema);

fn rule_spec(ctx: &Ctx, c: &Value) -> RuleSpec {
    RuleSpec {
        id: id(ctx, "rule"),
        listener_id: get::str(c, "listener_arn").unwrap_or_default().into(),
        priority: get::num(c, "priority").unwrap_or(1.0) as u32,
        conditions: conditions(c),
        action: single(c, "action").map(action).unwrap_or(Action::Fixed {
            status: 404,
            content_type: "text/plain".into(),
            body: String::new(),
        }),
    }
}

#[async_trait::async_trait]
impl Resource for RuleType {
    fn type_name(&self) -> &'static str {
        "listener_rule"
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
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
        Ok(with(
            c,
            &[("id", Value::String(i.clone())), ("arn", Value::String(i))],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(lbs(ctx)?
            .exists("rule", get::str(state, "id").unwrap_or_default())
            .then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        lbs(ctx)?
            .delete("rule", get::str(state, "id").unwrap_or_default())
            .await
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        lbs(ctx)?
            .put_rule(rule_spec(ctx, state))
            .await
            .map_err(failed)?;
        Ok(state.clone())
    }
}

// ---------- target_group ----------

fn tg_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("name", Type::String))
        .attr(AttrSchema::required("port", Type::Number))
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

fn tg_spec(ctx: &Ctx, c: &Value) -> TgSpec {
    let h = single(c, "health_check");
    let hs = |k: &str, d: &str| h.and_then(|h| get::str(h, k)).unwrap_or(d).to_string();
    let hn = |k: &str, d: f64| h.and_then(|h| get::num(h, k)).unwrap_or(d);
    let st = single(c, "stickiness");
    TgSpec {
        id: id(ctx, "tg"),
        name: get::str(c, "name").unwrap_or_default().into(),
        protocol: protocol(get::str(c, "protocol")),
        port: get::num(c, "port").unwrap_or(80.0) as u16,
        health: HealthSpec {
            path: hs("path", "/"),
            port: hs("port", "traffic-port").parse().ok(),
            protocol: protocol(Some(&hs("protocol", "HTTP"))),
            interval: hn("interval", 30.0),
            timeout: hn("timeout", 5.0),
            healthy_threshold: hn("healthy_threshold", 5.0) as u32,
            unhealthy_threshold: hn("unhealthy_threshold", 2.0) as u32,
            matcher: hs("matcher", "200"),
        },
        deregistration_delay: get::num(c, "deregistration_delay").unwrap_or(300.0) as u64,
        algorithm: get::str(c, "load_balancing_algorithm_type")
            .unwrap_or("round_robin")
            .into(),
        stickiness_secs: match st {
            Some(s) if get::bool_or(s, "enabled", false) => {
                get::num(s, "cookie_duration").unwrap_or(86400.0) as u64
            }
            _ => 0,
        },
    }
}

#[async_trait::async_trait]
impl Resource for TgType {
    fn type_name(&self) -> &'static str {
        "target_group"
    }
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        port_ok(c, "port", &mut e);
        protocol_ok(c, "protocol", &[], &mut e);
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let t = tg_spec(ctx, c);
        let i = t.id.clone();
        lbs(ctx)?.put_tg(t).await.map_err(failed)?;
        Ok(with(
            c,
            &[("id", Value::String(i.clone())), ("arn", Value::String(i))],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(lbs(ctx)?
            .exists("tg", get::str(state, "id").unwrap_or_default())
            .then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        lbs(ctx)?
            .delete("tg", get::str(state, "id").unwrap_or_default())
            .await
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        lbs(ctx)?
            .put_tg(tg_spec(ctx, state))
            .await
            .map_err(failed)?;
        Ok(state.clone())
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

fn attach_spec(ctx: &Ctx, c: &Value) -> AttachmentSpec {
    AttachmentSpec {
        id: id(ctx, "tga"),
        tg_id: get::str(c, "target_group_arn").unwrap_or_default().into(),
        target: get::str(c, "target_id").unwrap_or_default().into(),
        port: get::num(c, "port").map(|p| p as u16),
    }
}

#[async_trait::async_trait]
impl Resource for AttachType {
    fn type_name(&self) -> &'static str {
        "target_group_attachment"
    }
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
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let a = attach_spec(ctx, c);
        let i = a.id.clone();
        lbs(ctx)?.put_attachment(a).await.map_err(failed)?;
        Ok(with(c, &[("id", Value::String(i))]))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(lbs(ctx)?
            .exists("attach", get::str(state, "id").unwrap_or_default())
            .then(|| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        lbs(ctx)?
            .delete("attach", get::str(state, "id").unwrap_or_default())
            .await
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        lbs(ctx)?
            .put_attachment(attach_spec(ctx, state))
            .await
            .map_err(failed)?;
        Ok(state.clone())
    }
}

// ---------- certificate ----------

fn cert_schema() -> Schema {
    Schema::new()
        .attr(AttrSchema::required("domain_name", Type::String).force_new())
        .attr(AttrSchema::optional("subject_alternative_names", list_str()).force_new())
        .attr(AttrSchema::computed("id", Type::String))
        .attr(AttrSchema::computed("arn", Type::String))
        .attr(AttrSchema::computed("certificate_pem", Type::String))
        .attr(AttrSchema::computed("not_after", Type::String))
}

/// `certificate`: issued by veeps' CA.
pub struct CertType(Schema);

fn names(c: &Value) -> Vec<String> {
    let mut n = vec![get::str(c, "domain_name").unwrap_or_default().to_string()];
    for s in strings(c, "subject_alternative_names") {
        if !n.contains(&s) {
            n.push(s);
        }
    }
    n
}

#[async_trait::async_trait]
impl Resource for CertType {
    fn type_name(&self) -> &'static str {
        "certificate"
    }
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
        e
    }
    fn plan_computed(&self, ctx: &Ctx, _c: &Value) -> BTreeMap<String, Value> {
        ids(ctx, "cert")
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let i = id(ctx, "cert");
        let svc = lbs(ctx)?;
        let issued = match svc.certs.get(&i) {
            Some(x) if x.names == names(c) => x,
            _ => {
                let x = svc.certs.issue(&i, &names(c)).map_err(failed)?;
                // A replacement keeps the id: listeners using it serve the new one now.
                svc.refresh_certificates().await.map_err(failed)?;
                x
            }
        };
        let leaf = issued
            .chain_pem
            .split("-----END CERTIFICATE-----")
            .next()
            .unwrap_or("")
            .to_string()
            + "-----END CERTIFICATE-----\n";
        Ok(with(
            c,
            &[
                ("id", Value::String(i.clone())),
                ("arn", Value::String(i)),
                ("certificate_pem", Value::String(leaf)),
                ("not_after", Value::String(issued.not_after)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        Ok(lbs(ctx)?
            .certs
            .get(get::str(state, "id").unwrap_or_default())
            .map(|_| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        lbs(ctx)?
            .certs
            .delete(get::str(state, "id").unwrap_or_default())
            .map_err(failed)
    }
    async fn reconcile(&self, ctx: &Ctx, state: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, state).await
    }
}
