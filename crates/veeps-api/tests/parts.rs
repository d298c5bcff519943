//! Adding a part: one crate implementing `Part`, one line in the server's list (here, the
//! list's extension point). Its resource types, services and routes are then the server's,
//! behind the API's authentication. A resource type is a `Config` and a `State` struct, a
//! `Typed` impl, and one `register` line.

use axum::body::Body;
use hyper::Request;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use veeps_api::server::{open_with, router, ExtraParts, ServerOptions};
use veeps_lang::{Type, Value};
use veeps_resource::{
    check_schema, AttrSchema, Ctx, Observed, Part, Registry, ResourceError, Schema, Typed,
};

/// A trivial part: one route and one resource type.
struct Hello;

/// `greeting`: a resource type whose state is computed from its configuration.
struct Greeting(Schema);

#[derive(Clone, Serialize, Deserialize)]
struct GreetingConfig {
    name: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct GreetingState {
    #[serde(flatten)]
    config: GreetingConfig,
    text: String,
}

#[async_trait::async_trait]
impl Typed for Greeting {
    type Config = GreetingConfig;
    type State = GreetingState;
    const TYPE: &'static str = "greeting";
    fn schema(&self) -> &Schema {
        &self.0
    }
    async fn ensure(
        &self,
        _ctx: &Ctx,
        _prior: Option<&GreetingState>,
        c: &GreetingConfig,
    ) -> Result<GreetingState, ResourceError> {
        Ok(GreetingState {
            config: c.clone(),
            text: format!("hello, {}", c.name),
        })
    }
    async fn read(
        &self,
        _ctx: &Ctx,
        _s: &GreetingState,
    ) -> Result<Observed<GreetingState>, ResourceError> {
        Ok(Observed::NotObservable)
    }
    async fn delete(&self, _ctx: &Ctx, _s: &GreetingState) -> Result<(), ResourceError> {
        Ok(())
    }
}

fn greeting() -> Greeting {
    Greeting(
        Schema::new()
            .attr(AttrSchema::required("name", Type::String))
            .attr(AttrSchema::computed("text", Type::String)),
    )
}

impl Part for Hello {
    fn name(&self) -> &'static str {
        "hello"
    }
    fn after(&self) -> &'static [&'static str] {
        &["obs"]
    }
    fn register(&self, r: &mut Registry) {
        r.register(greeting());
    }
    fn routes(&self) -> Option<axum::Router> {
        Some(
            axum::Router::new()
                .route("/v1/hello", axum::routing::get(|| async { "hello" }))
                .route("/v1/unnamed", axum::routing::get(|| async { "unnamed" })),
        )
    }
    fn actions(&self) -> &'static [veeps_resource::RouteAction] {
        const A: &[veeps_resource::RouteAction] = &[veeps_resource::RouteAction::new(
            "GET",
            "/v1/hello",
            "system:GetHello",
            "*",
        )];
        A
    }
}

async fn call(app: &axum::Router, token: Option<&str>) -> (u16, String) {
    call_path(app, "/v1/hello", token).await
}

async fn call_path(app: &axum::Router, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

/// `req` through the router, as from 127.0.0.1: the status and the body.
async fn send(app: &axum::Router, mut req: Request<Body>) -> (u16, String) {
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            1,
        ))));
    let resp = tower_service::Service::call(&mut app.clone(), req)
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

#[tokio::test]
async fn a_new_part_is_one_line_and_its_routes_sit_behind_the_api_token() {
    let d = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        extra_parts: ExtraParts(vec![Arc::new(Hello)]),
        ..Default::default()
    };
    let state = open_with(d.path(), opts).unwrap();
    let names = state.parts.names();
    assert!(
        names.iter().position(|n| *n == "hello") > names.iter().position(|n| *n == "obs"),
        "{names:?}"
    );
    // Its type is the engine's, typed end to end: a misspelt attribute fails here.
    check_schema(&greeting()).unwrap();
    let rt = state.engine.registry.resource("greeting").unwrap().clone();
    let ctx = Ctx {
        env: "e".into(),
        address: "greeting.x".into(),
        data_dir: d.path().to_path_buf(),
        services: Default::default(),
    };
    let config = Value::Object([("name".to_string(), Value::string("veeps"))].into());
    let created = rt.create(&ctx, &config).await.unwrap();
    assert_eq!(created.get("text"), Some(&Value::string("hello, veeps")));
    let bad = Value::Object([("name".to_string(), Value::from(1i64))].into());
    let e = rt.create(&ctx, &bad).await.unwrap_err().to_string();
    assert!(e.contains("greeting.name"), "{e}");
    let token = std::fs::read_to_string(d.path().join("root.token")).unwrap();
    let app = router(state);
    assert_eq!(call(&app, Some(token.trim())).await, (200, "hello".into()));
    assert_eq!(call(&app, None).await.0, 401);
    // A route without an IAM action is refused to everyone, root included.
    let (code, body) = call_path(&app, "/v1/unnamed", Some(token.trim())).await;
    assert_eq!(code, 500);
    assert!(body.contains("GET /v1/unnamed has no IAM action"), "{body}");
    assert_eq!(call(&app, Some("veeps_wrong")).await.0, 401);
}

/// An apply whose approved plan's time is not a plan's time is refused before anything
/// runs (it would become `plantimestamp()`); one with a plan's time goes through.
#[tokio::test]
async fn an_apply_with_a_malformed_plan_time_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let state = open_with(d.path(), ServerOptions::default()).unwrap();
    let token = std::fs::read_to_string(d.path().join("root.token")).unwrap();
    let app = router(state);
    let apply = |plan_time: &str| {
        let body = serde_json::json!({
            "bundle": {"root": ".", "files": {"main.hcl": "output \"t\" { value = plantimestamp() }\n"}},
            "plan_time": plan_time,
        });
        let req = Request::post("/v1/envs/e/apply")
            .header("authorization", format!("Bearer {}", token.trim()))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let app = app.clone();
        async move { send(&app, req).await }
    };
    for bad in [
        "yesterday",
        "2026-01-02 03:04:05Z",
        "2026-01-02T03:04:05",
        "\u{0}",
    ] {
        let (code, body) = apply(bad).await;
        assert_eq!(code, 400, "{bad:?}: {body}");
        assert!(body.contains("plan_time must be a plan's time"), "{body}");
    }
    let (code, body) = apply("2026-01-02T03:04:05Z").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("2026-01-02T03:04:05Z"), "{body}");
}
