//! `GET /v1/bans` and `DELETE /v1/bans/{address}`.

use crate::Bans;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use std::sync::Arc;
use veeps_resource::part::reply::{bad, not_found};
use veeps_resource::RouteAction;
use veeps_wire::ban::BanInfo;

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[
    RouteAction::new("GET", "/v1/bans", "ban:ListBans", "*"),
    RouteAction::new(
        "DELETE",
        "/v1/bans/{address}",
        "ban:Unban",
        "arn:veeps:ban::address/{address}",
    ),
];

/// The routes.
pub fn routes(bans: Arc<Bans>) -> Router {
    Router::new()
        .route("/v1/bans", get(list))
        .route("/v1/bans/{address}", delete(unban))
        .with_state(bans)
}

async fn list(State(b): State<Arc<Bans>>) -> Response {
    let kernel = b.kernel();
    Json(
        b.list()
            .into_iter()
            .map(|x| BanInfo {
                address: x.group.to_string(),
                jail: x.jail,
                since: x.since,
                until: x.until,
                offences: x.offences,
                kernel,
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn unban(State(b): State<Arc<Bans>>, Path(address): Path<String>) -> Response {
    let Ok(ip) = address.parse::<std::net::IpAddr>() else {
        return bad(format!("\"{address}\" is not an IP address"));
    };
    let lifted = tokio::task::spawn_blocking(move || b.unban(ip)).await;
    if lifted.unwrap_or(false) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(format!("{address} is not banned"))
    }
}
