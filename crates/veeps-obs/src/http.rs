//! API handlers of metrics, logs, alarms and deliveries.
//! Served as this part's own routes, behind the API's authentication.

use crate::logs::{LogLine, LogQuery};
use crate::tsdb::{Labels, Selector, Stat};
use crate::{parse_duration_ms, Obs};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use veeps_resource::part::reply::{self, bad, fail};
use veeps_resource::RouteAction;

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/metrics",
        "obs:ListMetrics",
        "arn:veeps:obs:{env}:metric/*",
    ),
    RouteAction::new(
        "POST",
        "/v1/envs/{env}/metrics",
        "obs:PutMetricData",
        "arn:veeps:obs:{env}:metric/*",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/metrics/query",
        "obs:QueryMetrics",
        "arn:veeps:obs:{env}:metric/*",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/logs",
        "logs:SearchLogs",
        "arn:veeps:logs:{env}:log-group/*",
    ),
    RouteAction::new(
        "POST",
        "/v1/envs/{env}/logs",
        "logs:PutLogEvents",
        "arn:veeps:logs:{env}:log-group/*",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/alarms",
        "obs:ListAlarms",
        "arn:veeps:obs:{env}:alarm/*",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/alarms/{name}",
        "obs:GetAlarm",
        "arn:veeps:obs:{env}:alarm/{name}",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/topics/{name}/deliveries",
        "obs:ListDeliveries",
        "arn:veeps:obs:{env}:topic/{name}",
    ),
];

/// Metrics, logs, alarms and topics' deliveries under `/v1/envs/{env}/`.
pub fn routes(obs: Arc<Obs>) -> Router {
    Router::new()
        .route(
            "/v1/envs/{env}/metrics",
            get(metrics_list).post(metrics_ingest),
        )
        .route("/v1/envs/{env}/metrics/query", get(metrics_query))
        .route("/v1/envs/{env}/logs", get(logs_search).post(logs_ingest))
        .route("/v1/envs/{env}/alarms", get(alarms))
        .route("/v1/envs/{env}/alarms/{name}", get(alarm))
        .route("/v1/envs/{env}/topics/{name}/deliveries", get(deliveries))
        .with_state(obs)
}

fn now() -> i64 {
    crate::service::now()
}

async fn metrics_list(State(obs): State<Arc<Obs>>, Path(env): Path<String>) -> Response {
    let list: Vec<veeps_wire::MetricName> = obs
        .tsdb
        .list(Some(&env))
        .into_iter()
        .map(|(name, labels)| veeps_wire::MetricName { name, labels })
        .collect();
    Json(list).into_response()
}

async fn metrics_query(
    State(obs): State<Arc<Obs>>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(sel) = q.get("q") else {
        return bad(
            "the q parameter (a selector like host_cpu_usage_percent{env=\"prod\"}) is required",
        );
    };
    let mut sel = match Selector::parse(sel) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if !sel.matchers.iter().any(|m| m.label == "env") {
        sel.matchers.push(crate::tsdb::Matcher {
            label: "env".into(),
            value: env.clone(),
            negate: false,
        });
    }
    let since = match parse_duration_ms(q.get("since").map(String::as_str).unwrap_or("1h")) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let period = match q.get("period").map(|p| p.parse::<i64>()) {
        None => 60,
        Some(Ok(p)) if p > 0 => p,
        _ => return bad("period must be a positive number of seconds"),
    };
    let stat = match Stat::parse(q.get("stat").map(String::as_str).unwrap_or("avg")) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let to = now();
    let from = (to - since).div_euclid(period * 1000) * period * 1000;
    let tsdb = obs.tsdb.clone();
    match tokio::task::spawn_blocking(move || tsdb.query(&sel, from, to, period * 1000, stat)).await
    {
        Ok(Ok(r)) => Json(
            r.into_iter()
                .map(|s| veeps_wire::MetricSeries {
                    name: s.name,
                    labels: s.labels,
                    points: s.points,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(e)) => bad(e.to_string()),
        Err(e) => fail(e.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct IngestSamples {
    samples: Vec<IngestSample>,
}

#[derive(Deserialize)]
struct IngestSample {
    name: String,
    #[serde(default)]
    labels: Labels,
    value: f64,
    #[serde(default)]
    ts: Option<i64>,
}

async fn metrics_ingest(
    State(obs): State<Arc<Obs>>,
    Path(env): Path<String>,
    Json(body): Json<IngestSamples>,
) -> Response {
    let mut n = 0;
    for s in body.samples {
        if Selector::parse(&s.name).map(|x| x.matchers.is_empty()) != Ok(true) {
            return bad(format!("invalid metric name \"{}\"", s.name));
        }
        let mut labels = s.labels;
        labels.insert("env".into(), env.clone());
        if obs
            .tsdb
            .append(&s.name, &labels, s.ts.unwrap_or_else(now), s.value)
            .is_ok()
        {
            n += 1;
        }
    }
    Json(serde_json::json!({"accepted": n})).into_response()
}

#[derive(Deserialize)]
pub(crate) struct IngestLines {
    lines: Vec<IngestLine>,
}

#[derive(Deserialize)]
struct IngestLine {
    group: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    stream: Option<String>,
    text: String,
    #[serde(default)]
    ts: Option<i64>,
}

async fn logs_ingest(
    State(obs): State<Arc<Obs>>,
    Path(env): Path<String>,
    Json(body): Json<IngestLines>,
) -> Response {
    let n = body.lines.len();
    if body.lines.iter().any(|l| l.group.is_empty()) {
        return bad("each line needs a group");
    }
    let obs = obs.clone();
    let write = move || {
        for l in body.lines {
            obs.log(LogLine {
                ts: l.ts.unwrap_or_else(now),
                env: env.clone(),
                group: l.group,
                source: l.source,
                stream: l.stream.unwrap_or_else(|| "log".into()),
                text: l.text,
            });
        }
    };
    match tokio::task::spawn_blocking(write).await {
        Ok(()) => Json(serde_json::json!({"accepted": n})).into_response(),
        Err(e) => fail(e.to_string()),
    }
}

/// Searches logs; with `follow=true`, keeps streaming new matching lines (NDJSON).
async fn logs_search(
    State(obs): State<Arc<Obs>>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let since = match parse_duration_ms(q.get("since").map(String::as_str).unwrap_or("1h")) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000usize);
    let query = LogQuery {
        env,
        source: q.get("source").cloned().unwrap_or_default(),
        from: now() - since,
        to: i64::MAX,
        grep: q.get("grep").filter(|g| !g.is_empty()).cloned(),
        limit,
    };
    let follow = q.get("follow").is_some_and(|f| f == "true");
    // Subscribe before searching so no line falls between the two.
    let mut rx = obs.logs.subscribe();
    let logs = obs.logs.clone();
    let q2 = query.clone();
    let found = match tokio::task::spawn_blocking(move || logs.search(&q2)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return fail(e.to_string()),
        Err(e) => return fail(e.to_string()),
    };
    if !follow {
        return Json(found).into_response();
    }
    let last = found.last().map(|l| l.ts).unwrap_or(0);
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::convert::Infallible>>(256);
    tokio::spawn(async move {
        for l in found {
            if tx.send(Ok(line_bytes(&l))).await.is_err() {
                return;
            }
        }
        loop {
            match rx.recv().await {
                Ok(l) => {
                    if l.ts >= last
                        && query.matches(&l)
                        && tx.send(Ok(line_bytes(&l))).await.is_err()
                    {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    let stream =
        futures::stream::unfold(
            out,
            |mut out| async move { out.recv().await.map(|x| (x, out)) },
        );
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| fail("response"))
}

fn line_bytes(l: &LogLine) -> Vec<u8> {
    let mut v = serde_json::to_vec(l).unwrap_or_default();
    v.push(b'\n');
    v
}

/// The wire view of an alarm.
fn alarm_view(a: crate::service::AlarmRecord) -> veeps_wire::AlarmView {
    let word = |s: crate::alarm::AlarmState| {
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    veeps_wire::AlarmView {
        env: a.env,
        name: a.name,
        spec: serde_json::to_value(&a.spec).unwrap_or_default(),
        state: word(a.state),
        reason: a.reason,
        evaluated_at: a.evaluated_at,
        history: a
            .history
            .into_iter()
            .map(|t| veeps_wire::AlarmTransition {
                time: t.time,
                from: word(t.from),
                to: word(t.to),
                reason: t.reason,
            })
            .collect(),
    }
}

async fn alarms(State(obs): State<Arc<Obs>>, Path(env): Path<String>) -> Response {
    match obs.alarms(&env) {
        Ok(a) => Json(a.into_iter().map(alarm_view).collect::<Vec<_>>()).into_response(),
        Err(e) => fail(e.to_string()),
    }
}

async fn alarm(State(obs): State<Arc<Obs>>, Path((env, name)): Path<(String, String)>) -> Response {
    match obs.alarm(&env, &name) {
        Ok(Some(a)) => Json(alarm_view(a)).into_response(),
        Ok(None) => reply::not_found(format!(
            "no alarm \"{name}\" in environment \"{env}\"; see `veeps alarms {env}`"
        )),
        Err(e) => fail(e.to_string()),
    }
}

async fn deliveries(
    State(obs): State<Arc<Obs>>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    match obs.deliveries(&env, &name) {
        Ok(d) => Json(
            d.into_iter()
                .map(|d| veeps_wire::DeliveryView {
                    seq: d.seq,
                    time: d.time,
                    subscription: veeps_wire::SubscriptionView {
                        protocol: d.subscription.protocol,
                        endpoint: d.subscription.endpoint,
                    },
                    subject: d.subject,
                    status: d.status,
                    attempts: d.attempts,
                    error: d.error,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => fail(e.to_string()),
    }
}
