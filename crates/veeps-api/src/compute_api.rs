//! Images, groups, instances and activities over HTTP.

use crate::obs_api::{bad, fail};
use crate::server::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use veeps_compute::image::{BuildError, ImageSpec};

/// Every built image.
pub(crate) async fn images(State(st): State<AppState>) -> Response {
    let list: Vec<serde_json::Value> = st
        .compute
        .images
        .list()
        .into_iter()
        .map(|i| {
            serde_json::json!({"id": i.id, "name": i.name, "version": i.version,
                "entrypoint": i.entrypoint, "size": i.size, "created": i.created})
        })
        .collect();
    Json(list).into_response()
}

/// Builds an image (or finds it built); 422 with the build log when the build fails.
pub(crate) async fn build(State(st): State<AppState>, Json(spec): Json<ImageSpec>) -> Response {
    if spec.name.is_empty() {
        return bad("name: give the image a name");
    }
    match st.compute.images.build(&spec).await {
        Ok(img) => Json(img).into_response(),
        Err(BuildError::Invalid(m)) => bad(m),
        Err(e @ BuildError::Failed { .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(crate::ApiError {
                error: e.to_string(),
                text: None,
                diagnostics: vec![],
            }),
        )
            .into_response(),
        Err(e) => fail(e.to_string()),
    }
}

/// The groups of an environment with their instances (`?group=NAME` for one).
pub(crate) async fn instances(
    State(st): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let groups: Vec<serde_json::Value> = st
        .compute
        .records(&env)
        .into_iter()
        .filter(|r| q.get("group").is_none_or(|g| *g == r.spec.name))
        .map(|r| {
            serde_json::json!({"id": r.spec.id, "name": r.spec.name, "desired": r.desired,
                "min_size": r.spec.min_size, "max_size": r.spec.max_size,
                "image_id": r.spec.template.image_id, "instances": r.instances})
        })
        .collect();
    Json(groups).into_response()
}

/// A group's activities, oldest first.
pub(crate) async fn activity(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    match st
        .compute
        .records(&env)
        .into_iter()
        .find(|r| r.spec.name == name)
    {
        Some(r) => Json(r.activities).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(crate::ApiError {
                error: format!(
                    "no group \"{name}\" in environment \"{env}\"; see `veeps instances {env}`"
                ),
                text: None,
                diagnostics: vec![],
            }),
        )
            .into_response(),
    }
}
