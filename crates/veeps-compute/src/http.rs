//! Images, groups, instances and activities over HTTP, as this part's own routes (behind
//! the API's authentication).

use crate::image::{BuildError, ImageSpec};
use crate::Compute;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use veeps_resource::part::reply;
use veeps_resource::RouteAction;

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[
    RouteAction::new("GET", "/v1/images", "compute:ListImages", "*"),
    RouteAction::new(
        "POST",
        "/v1/images",
        "compute:BuildImage",
        "arn:veeps:compute::image/*",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/instances",
        "compute:ListInstances",
        "arn:veeps:compute:{env}:instance/*",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/image-updates",
        "compute:ListImageUpdates",
        "arn:veeps:compute:{env}:image/*",
    ),
    RouteAction::new(
        "POST",
        "/v1/envs/{env}/image-updates/{address}",
        "compute:UpdateImage",
        "arn:veeps:compute:{env}:image/{address}",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/groups/{name}/activity",
        "compute:GetGroupActivity",
        "arn:veeps:compute:{env}:group/{name}",
    ),
];

/// `/v1/images`, `/v1/envs/{env}/instances` and groups' activity.
pub fn routes(compute: Arc<Compute>) -> Router {
    Router::new()
        .route("/v1/images", get(images).post(build))
        .route("/v1/envs/{env}/instances", get(instances))
        .route("/v1/envs/{env}/image-updates", get(updates))
        .route(
            "/v1/envs/{env}/image-updates/{address}",
            axum::routing::post(update_now),
        )
        .route("/v1/envs/{env}/groups/{name}/activity", get(activity))
        .with_state(compute)
}

type C = State<Arc<Compute>>;

fn image_view(i: crate::image::Image) -> veeps_wire::ImageView {
    veeps_wire::ImageView {
        id: i.id,
        name: i.name,
        version: i.version as u64,
        entrypoint: i.entrypoint,
        size: i.size,
        created: i.created,
    }
}

/// Every built image.
async fn images(State(c): C) -> Response {
    let list: Vec<veeps_wire::ImageView> = c.images.list().into_iter().map(image_view).collect();
    Json(list).into_response()
}

/// Builds an image (or finds it built); 422 with the build log when the build fails.
async fn build(State(c): C, Json(spec): Json<ImageSpec>) -> Response {
    if spec.name.is_empty() {
        return reply::bad("name: give the image a name");
    }
    match c.images.build(&spec).await {
        Ok(i) => Json(image_view(i)).into_response(),
        Err(BuildError::Invalid(m)) => reply::bad(m),
        Err(e @ BuildError::Failed { .. }) => {
            reply::error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e) => reply::fail(e.to_string()),
    }
}

fn update_view(r: crate::update::Registration) -> veeps_wire::ImageUpdateView {
    let last = r.last.clone().unwrap_or(crate::update::Outcome {
        at: String::new(),
        result: String::new(),
        detail: String::new(),
        image_id: None,
    });
    let some = |s: String| (!s.is_empty()).then_some(s);
    let (last_update_at, last_update) = match r.last_update {
        Some(u) => (Some(u.at), Some(u.detail)),
        None => (None, None),
    };
    veeps_wire::ImageUpdateView {
        last_update_at,
        last_update,
        address: r.address,
        name: r.spec.name,
        schedule: r.schedule,
        egress: r.spec.egress,
        last_at: some(last.at),
        result: some(last.result),
        detail: some(last.detail),
        image_id: last.image_id,
    }
}

/// The images of an environment that rebuild themselves.
async fn updates(State(c): C, Path(env): Path<String>) -> Response {
    let list: Vec<veeps_wire::ImageUpdateView> = c
        .updates
        .list(Some(&env))
        .into_iter()
        .map(update_view)
        .collect();
    Json(list).into_response()
}

/// Runs an image's auto-update now and answers how it went.
async fn update_now(State(c): C, Path((env, address)): Path<(String, String)>) -> Response {
    match c.update_now(&env, &address).await {
        Ok(_) => match c.updates.get(&env, &address) {
            Some(r) => Json(update_view(r)).into_response(),
            None => reply::not_found(format!("{address} is no longer in environment {env}")),
        },
        Err(e) => reply::not_found(e.to_string()),
    }
}

/// The groups of an environment with their instances (`?group=NAME` for one).
async fn instances(
    State(c): C,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let groups: Vec<veeps_wire::GroupView> = c
        .records(&env)
        .into_iter()
        .filter(|r| q.get("group").is_none_or(|g| *g == r.spec.name))
        .map(|r| veeps_wire::GroupView {
            id: r.spec.id,
            name: r.spec.name,
            desired: r.desired,
            min_size: r.spec.min_size,
            max_size: r.spec.max_size,
            image_id: r.spec.template.image_id,
            instances: r
                .instances
                .into_iter()
                .map(|i| veeps_wire::InstanceView {
                    id: i.id,
                    subnet_id: i.subnet_id,
                    address: i.address,
                    fingerprint: i.fingerprint,
                    image_id: i.image_id,
                    launched_ms: i.launched_ms,
                    lifecycle: format!("{:?}", i.lifecycle),
                    pid: i.pid,
                    failures: i.failures,
                })
                .collect(),
        })
        .collect();
    Json(groups).into_response()
}

/// A group's activities, oldest first.
async fn activity(State(c): C, Path((env, name)): Path<(String, String)>) -> Response {
    match c.records(&env).into_iter().find(|r| r.spec.name == name) {
        Some(r) => Json(
            r.activities
                .into_iter()
                .map(|a| veeps_wire::ActivityView {
                    time: a.time,
                    description: a.description,
                    cause: a.cause,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        None => reply::not_found(format!(
            "no group \"{name}\" in environment \"{env}\"; see `veeps instances {env}`"
        )),
    }
}
