//! `POST /v1/envs/{env}/cdn/{id}/invalidations`: forget a distribution's objects under
//! paths, at once (authenticated and audited as every API call is; never an anonymous
//! PURGE at the edge).

use crate::service::{Cdn, CdnError};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::Arc;
use veeps_resource::part::reply::{bad, error, not_found};
use veeps_resource::RouteAction;

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[RouteAction::new(
    "POST",
    "/v1/envs/{env}/cdn/{id}/invalidations",
    "cdn:CreateInvalidation",
    "arn:veeps:cdn:{env}:distribution/{id}",
)];

/// An invalidation's request and answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Invalidation {
    /// Paths (`/index.html`, `/images/*`).
    pub paths: Vec<String>,
    /// Objects forgotten (in the answer).
    #[serde(default)]
    pub objects: usize,
}

/// The routes.
pub fn routes(cdn: Arc<Cdn>) -> Router {
    Router::new()
        .route("/v1/envs/{env}/cdn/{id}/invalidations", post(invalidate))
        .with_state(cdn)
}

async fn invalidate(
    State(cdn): State<Arc<Cdn>>,
    Path((env, id)): Path<(String, String)>,
    Json(mut req): Json<Invalidation>,
) -> Response {
    // A distribution is named by its id or, within the environment, its domain name.
    let found = cdn
        .list()
        .into_iter()
        .find(|d| d.dist.env == env && (d.dist.id == id || d.dist.domain == id));
    let Some(d) = found else {
        return not_found(format!("environment {env} has no distribution {id}"));
    };
    match cdn.invalidate(&d.dist.id, &req.paths).await {
        Ok(n) => {
            req.objects = n;
            Json(req).into_response()
        }
        Err(CdnError::Invalid(m)) => bad(m),
        Err(CdnError::NotFound(m)) => not_found(m),
        Err(e) => error(axum::http::StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
