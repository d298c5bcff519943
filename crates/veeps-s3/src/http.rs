//! Object storage's own API routes (behind the API's authentication): the root access key
//! for S3 clients, and running lifecycle rules now (optionally as of a later day).

use crate::api::Auth;
use crate::store::ObjectStore;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use veeps_resource::part::reply;
use veeps_resource::RouteAction;

#[derive(Clone)]
struct S3Routes {
    objects: Arc<ObjectStore>,
    auth: Arc<Auth>,
    day: Duration,
}

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[
    RouteAction::new(
        "GET",
        "/v1/s3/credentials",
        "s3:GetRootCredentials",
        "arn:veeps:s3::credentials",
    ),
    RouteAction::new(
        "POST",
        "/v1/s3/lifecycle/run",
        "s3:RunLifecycle",
        "arn:veeps:s3::lifecycle",
    ),
];

/// `/v1/s3/credentials` and `/v1/s3/lifecycle/run`.
pub fn routes(objects: Arc<ObjectStore>, auth: Arc<Auth>, day: Duration) -> Router {
    Router::new()
        .route("/v1/s3/credentials", get(credentials))
        .route("/v1/s3/lifecycle/run", post(lifecycle_run))
        .with_state(S3Routes { objects, auth, day })
}

async fn credentials(State(st): State<S3Routes>) -> Response {
    let (id, secret) = st.auth.root();
    Json(veeps_wire::S3Credentials {
        access_key_id: id.into(),
        secret_access_key: secret.into(),
    })
    .into_response()
}

/// Applies every bucket's lifecycle rules now, optionally as of a later day (to try rules
/// out without waiting); answers what was done.
async fn lifecycle_run(
    State(st): State<S3Routes>,
    Json(b): Json<veeps_wire::LifecycleRun>,
) -> Response {
    let store = st.objects.clone();
    let day = st.day.as_millis().max(1) as i64;
    let at = veeps_sys::now_ms() + i64::from(b.advance_days) * day;
    match tokio::task::spawn_blocking(move || store.run_lifecycle(at, day)).await {
        Ok(Ok(r)) => Json(veeps_wire::LifecycleReport {
            expired: r.expired,
            noncurrent_removed: r.noncurrent_removed,
            markers_removed: r.markers_removed,
            transitioned: r.transitioned,
            aborted: r.aborted,
        })
        .into_response(),
        Ok(Err(e)) => reply::fail(e.to_string()),
        Err(e) => reply::fail(e.to_string()),
    }
}
