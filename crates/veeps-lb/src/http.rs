//! Load balancers over HTTP, as this part's own routes (behind the API's authentication):
//! each balancer's target groups and their targets' health.

use crate::service::Lbs;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use veeps_resource::RouteAction;

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[RouteAction::new(
    "GET",
    "/v1/envs/{env}/targets",
    "lb:ListTargets",
    "arn:veeps:lb:{env}:target/*",
)];

/// `/v1/envs/{env}/targets`.
pub fn routes(lbs: Arc<Lbs>) -> Router {
    Router::new()
        .route("/v1/envs/{env}/targets", get(targets))
        .with_state(lbs)
}

/// Every balancer of an environment, its target groups and their targets.
async fn targets(State(lbs): State<Arc<Lbs>>, Path(env): Path<String>) -> Response {
    Json(lbs.target_health(Some(&env))).into_response()
}
