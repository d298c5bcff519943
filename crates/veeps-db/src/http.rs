//! Database clusters over HTTP, as this part's own routes (behind the API's authentication):
//! status, events, switchover, backups, snapshots, restores, deletion of restored clusters,
//! and the connection settings of an operator's `psql`.

use crate::service::DbError;
use crate::Dbs;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use veeps_resource::part::reply;
use veeps_resource::RouteAction;

/// The IAM action and resource of each route.
pub const ACTIONS: &[RouteAction] = &[
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/db/{name}",
        "db:DescribeCluster",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "DELETE",
        "/v1/envs/{env}/db/{name}",
        "db:DeleteCluster",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/db/{name}/events",
        "db:ListEvents",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/envs/{env}/db/{name}/failover",
        "db:Failover",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/db/{name}/backups",
        "db:ListBackups",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/envs/{env}/db/{name}/backups",
        "db:CreateSnapshot",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/envs/{env}/db/{name}/restore",
        "db:Restore",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
    RouteAction::new(
        "GET",
        "/v1/envs/{env}/db/{name}/psql",
        "db:Connect",
        "arn:veeps:db:{env}:cluster/{name}",
    ),
];

/// The routes under `/v1/envs/{env}/db/{name}`.
pub fn routes(dbs: Arc<Dbs>) -> Router {
    Router::new()
        .route("/v1/envs/{env}/db/{name}", get(status).delete(delete))
        .route("/v1/envs/{env}/db/{name}/events", get(events))
        .route("/v1/envs/{env}/db/{name}/failover", post(failover))
        .route(
            "/v1/envs/{env}/db/{name}/backups",
            get(backups).post(snapshot),
        )
        .route("/v1/envs/{env}/db/{name}/restore", post(restore))
        .route("/v1/envs/{env}/db/{name}/psql", get(psql))
        .with_state(dbs)
}

fn db_err(e: DbError) -> Response {
    match e {
        DbError::Invalid(m) => reply::bad(m),
        DbError::NotFound(m) => reply::not_found(m),
        DbError::Failed(m) => reply::fail(m),
    }
}

type Db = State<Arc<Dbs>>;
type Cluster = Path<(String, String)>;

/// Each node's role, health, lag and process.
async fn status(State(dbs): Db, Path((env, name)): Cluster) -> Response {
    match dbs.status(&env, &name).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => db_err(e),
    }
}

/// The cluster's activity log.
async fn events(State(dbs): Db, Path((env, name)): Cluster) -> Response {
    let list: Vec<veeps_wire::DbEvent> = dbs
        .events(&env, &name)
        .into_iter()
        .map(|e| veeps_wire::DbEvent {
            ts: e.ts,
            kind: e.kind,
            message: e.message,
        })
        .collect();
    Json(list).into_response()
}

fn backup_view(b: crate::backup::Backup) -> veeps_wire::DbBackup {
    veeps_wire::DbBackup {
        name: b.name,
        time_ms: b.time_ms,
        size: b.size,
        kind: b.kind,
    }
}

/// A planned switchover (`{"to": NODE}` optional).
async fn failover(
    State(dbs): Db,
    Path((env, name)): Cluster,
    Json(body): Json<veeps_wire::DbFailover>,
) -> Response {
    match dbs.switchover(&env, &name, body.to.as_deref()).await {
        Ok(message) => Json(veeps_wire::Done { message }).into_response(),
        Err(e) => db_err(e),
    }
}

/// Base backups.
async fn backups(State(dbs): Db, Path((env, name)): Cluster) -> Response {
    match dbs.cluster(&env, &name) {
        Ok(Some(_)) => Json(
            dbs.backups(&env, &name)
                .into_iter()
                .map(backup_view)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(None) => db_err(DbError::NotFound(format!("no cluster {name} in {env}"))),
        Err(e) => db_err(e),
    }
}

/// Takes a snapshot now (`{"name": NAME}`).
async fn snapshot(
    State(dbs): Db,
    Path((env, name)): Cluster,
    Json(body): Json<veeps_wire::DbSnapshot>,
) -> Response {
    let Some(label) = body.name.as_deref() else {
        return reply::bad("name: give the snapshot a name");
    };
    match dbs.snapshot(&env, &name, label).await {
        Ok(b) => Json(backup_view(b)).into_response(),
        Err(e) => db_err(e),
    }
}

/// Point-in-time restore into a new cluster
/// (`{"new_cluster": NAME, "to_time": RFC3339?, "snapshot": NAME?}`).
async fn restore(
    State(dbs): Db,
    Path((env, name)): Cluster,
    Json(body): Json<veeps_wire::DbRestore>,
) -> Response {
    let Some(new) = body.new_cluster.as_deref() else {
        return reply::bad("new_cluster: name the cluster to restore into");
    };
    match dbs
        .restore_new(
            &env,
            &name,
            body.to_time.as_deref(),
            body.snapshot.as_deref(),
            new,
        )
        .await
    {
        Ok(rec) => Json(veeps_wire::DbRestored {
            cluster: rec.spec.name.clone(),
            endpoint: format!("{}:{}", rec.writer_ep.0, rec.spec.port),
            reader_endpoint: format!("{}:{}", rec.reader_ep.0, rec.spec.port),
        })
        .into_response(),
        Err(e) => db_err(e),
    }
}

/// Deletes a cluster made by a restore (clusters from configuration go with `destroy`).
async fn delete(State(dbs): Db, Path((env, name)): Cluster) -> Response {
    if dbs.declared(&env, &name) {
        return reply::bad(format!(
            "{name} is declared in {env}'s configuration; remove it there and apply"
        ));
    }
    match dbs.delete(&env, &name).await {
        Ok(()) => Json(veeps_wire::Done {
            message: format!("deleted {name}"),
        })
        .into_response(),
        Err(e) => db_err(e),
    }
}

/// Where and how an operator's `psql` connects (`?reader=true` for the reader endpoint).
async fn psql(
    State(dbs): Db,
    Path((env, name)): Cluster,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let reader = q.get("reader").is_some_and(|v| v == "true");
    match dbs.psql_target(&env, &name, reader) {
        Ok((netns, vars)) => Json(veeps_wire::PsqlTarget {
            netns,
            env: vars.into_iter().collect(),
        })
        .into_response(),
        Err(e) => db_err(e),
    }
}
