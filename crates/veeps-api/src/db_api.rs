//! Database clusters over HTTP: status, events, switchover, backups, snapshots, restores,
//! and the connection settings of an operator's `psql`.

use crate::obs_api::{bad, fail};
use crate::server::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use veeps_db::service::DbError;

fn db_err(e: DbError) -> Response {
    match e {
        DbError::Invalid(m) => bad(m),
        DbError::NotFound(m) => (
            StatusCode::NOT_FOUND,
            Json(crate::ApiError {
                error: m,
                text: None,
                diagnostics: vec![],
            }),
        )
            .into_response(),
        DbError::Failed(m) => fail(m),
    }
}

/// Each node's role, health, lag and process.
pub(crate) async fn status(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    match st.dbs.status(&env, &name).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => db_err(e),
    }
}

/// The cluster's activity log.
pub(crate) async fn events(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    Json(st.dbs.events(&env, &name)).into_response()
}

/// A planned switchover (`{"to": NODE}` optional).
pub(crate) async fn failover(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let to = body.get("to").and_then(|v| v.as_str());
    match st.dbs.switchover(&env, &name, to).await {
        Ok(m) => Json(serde_json::json!({ "message": m })).into_response(),
        Err(e) => db_err(e),
    }
}

/// Base backups.
pub(crate) async fn backups(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    match st.dbs.cluster(&env, &name) {
        Ok(Some(_)) => Json(st.dbs.backups(&env, &name)).into_response(),
        Ok(None) => db_err(DbError::NotFound(format!("no cluster {name} in {env}"))),
        Err(e) => db_err(e),
    }
}

/// Takes a snapshot now (`{"name": NAME}`).
pub(crate) async fn snapshot(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let Some(label) = body.get("name").and_then(|v| v.as_str()) else {
        return bad("name: give the snapshot a name");
    };
    match st.dbs.snapshot(&env, &name, label).await {
        Ok(b) => Json(b).into_response(),
        Err(e) => db_err(e),
    }
}

/// Point-in-time restore into a new cluster
/// (`{"new_cluster": NAME, "to_time": RFC3339?, "snapshot": NAME?}`).
pub(crate) async fn restore(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let s = |k: &str| body.get(k).and_then(|v| v.as_str());
    let Some(new) = s("new_cluster") else {
        return bad("new_cluster: name the cluster to restore into");
    };
    match st
        .dbs
        .restore_new(&env, &name, s("to_time"), s("snapshot"), new)
        .await
    {
        Ok(rec) => Json(serde_json::json!({
            "cluster": rec.spec.name,
            "endpoint": format!("{}:{}", rec.writer_ep.0, rec.spec.port),
            "reader_endpoint": format!("{}:{}", rec.reader_ep.0, rec.spec.port),
        }))
        .into_response(),
        Err(e) => db_err(e),
    }
}

/// Deletes a cluster made by a restore (clusters from configuration go with `destroy`).
pub(crate) async fn delete(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    let managed = st
        .store
        .resources(&env)
        .unwrap_or_default()
        .into_iter()
        .any(|r| {
            r.type_name == "db_cluster"
                && r.attrs.get("name").and_then(|v| v.as_str()) == Some(name.as_str())
        });
    if managed {
        return bad(format!(
            "{name} is declared in {env}'s configuration; remove it there and apply"
        ));
    }
    match st.dbs.delete(&env, &name).await {
        Ok(()) => Json(serde_json::json!({ "deleted": name })).into_response(),
        Err(e) => db_err(e),
    }
}

/// Where and how an operator's `psql` connects (`?reader=true` for the reader endpoint).
pub(crate) async fn psql(
    State(st): State<AppState>,
    Path((env, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let reader = q.get("reader").is_some_and(|v| v == "true");
    match st.dbs.psql_target(&env, &name, reader) {
        Ok((netns, vars)) => Json(serde_json::json!({
            "netns": netns,
            "env": vars.into_iter().collect::<HashMap<_, _>>(),
        }))
        .into_response(),
        Err(e) => db_err(e),
    }
}
