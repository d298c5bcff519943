//! Adding a part: one crate implementing `Part`, one line in the server's list (here, the
//! list's extension point). Its resource types, services and routes are then the server's,
//! behind the API's authentication.

use axum::body::Body;
use hyper::Request;
use std::sync::Arc;
use veeps_api::server::{open_with, router, ExtraParts, ServerOptions};
use veeps_resource::{Part, Registry};

/// A trivial part: one route.
struct Hello;

impl Part for Hello {
    fn name(&self) -> &'static str {
        "hello"
    }
    fn after(&self) -> &'static [&'static str] {
        &["obs"]
    }
    fn register(&self, _r: &mut Registry) {}
    fn routes(&self) -> Option<axum::Router> {
        Some(axum::Router::new().route("/v1/hello", axum::routing::get(|| async { "hello" })))
    }
}

async fn call(app: &axum::Router, token: Option<&str>) -> (u16, String) {
    let mut req = Request::get("/v1/hello");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(Body::empty()).unwrap();
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
    let token = std::fs::read_to_string(d.path().join("root.token")).unwrap();
    let app = router(state);
    assert_eq!(call(&app, Some(token.trim())).await, (200, "hello".into()));
    assert_eq!(call(&app, None).await.0, 401);
    assert_eq!(call(&app, Some("veeps_wrong")).await.0, 401);
}
