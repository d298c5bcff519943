//! IAM's API: logins, users' credentials (passwords, MFA devices, tokens), the root
//! token's switch and policy simulation. Every route but the login sits behind the API's
//! authentication, which hands handlers the caller as a [`Principal`].

use crate::directory::{Denial, Directory, IamError, Principal, Token};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use veeps_resource::part::reply::{bad, error, fail, not_found};
use veeps_resource::RouteAction;
use veeps_wire::iam::*;

/// The route a caller reaches without a token.
pub const LOGIN: &str = "/v1/iam/login";

/// The IAM action and resource of each route; `{caller}` is the calling user.
pub const ACTIONS: &[RouteAction] = &[
    RouteAction::new("POST", LOGIN, "iam:Login", "*"),
    RouteAction::new(
        "GET",
        "/v1/iam/whoami",
        "sts:GetCallerIdentity",
        "arn:veeps:iam::user/{caller}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/logout",
        "iam:DeleteToken",
        "arn:veeps:iam::user/{caller}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/password",
        "iam:ChangePassword",
        "arn:veeps:iam::user/{caller}",
    ),
    RouteAction::new("GET", "/v1/iam/users", "iam:ListUsers", "*"),
    RouteAction::new(
        "GET",
        "/v1/iam/users/{name}",
        "iam:GetUser",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/users/{name}/password",
        "iam:UpdateLoginProfile",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/users/{name}/mfa",
        "iam:CreateVirtualMFADevice",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/users/{name}/mfa/enable",
        "iam:EnableMFADevice",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "DELETE",
        "/v1/iam/users/{name}/mfa",
        "iam:DeactivateMFADevice",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "GET",
        "/v1/iam/users/{name}/tokens",
        "iam:ListTokens",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/users/{name}/tokens",
        "iam:CreateToken",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "DELETE",
        "/v1/iam/users/{name}/tokens/{id}",
        "iam:DeleteToken",
        "arn:veeps:iam::user/{name}",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/root-token",
        "iam:UpdateRootToken",
        "arn:veeps:iam::root",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/simulate",
        "iam:SimulatePrincipalPolicy",
        "*",
    ),
    RouteAction::new(
        "POST",
        "/v1/iam/roles/{name}/assume",
        "sts:AssumeRole",
        "arn:veeps:iam::role/{name}",
    ),
];

/// Who a login named, for the audit trail (set on the login's answer).
#[derive(Debug, Clone)]
pub struct LoginName(pub String);

/// Failed logins per source: after [`Throttle::MAX`] in a minute, a source waits for the
/// minute to end (a password guess costs an argon2 hash; the ban policy bans for longer).
#[derive(Default)]
pub struct Throttle(Mutex<HashMap<IpAddr, (i64, u32)>>);

impl Throttle {
    /// Failures a source may have per minute.
    pub const MAX: u32 = 10;

    fn blocked(&self, ip: IpAddr, now: i64) -> bool {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&ip)
            .is_some_and(|(at, n)| now - at < 60 && *n >= Self::MAX)
    }

    fn failed(&self, ip: IpAddr, now: i64) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 100_000 {
            g.retain(|_, (at, _)| now - *at < 60);
        }
        let e = g.entry(ip).or_insert((now, 0));
        if now - e.0 >= 60 {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

#[derive(Clone)]
struct Routes {
    dir: Arc<Directory>,
    throttle: Arc<Throttle>,
    /// At most two password hashes at once: logins cannot take every core.
    hashing: Arc<tokio::sync::Semaphore>,
}

/// IAM's routes.
pub fn routes(dir: Arc<Directory>) -> Router {
    Router::new()
        // The one route anonymous callers reach: a login is small.
        .route(
            LOGIN,
            post(login).layer(axum::extract::DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/v1/iam/whoami", get(whoami))
        .route("/v1/iam/logout", post(logout))
        .route("/v1/iam/password", post(change_own_password))
        .route("/v1/iam/users", get(users))
        .route("/v1/iam/users/{name}", get(user))
        .route("/v1/iam/users/{name}/password", post(set_password))
        .route(
            "/v1/iam/users/{name}/mfa",
            post(create_mfa).delete(remove_mfa),
        )
        .route("/v1/iam/users/{name}/mfa/enable", post(enable_mfa))
        .route(
            "/v1/iam/users/{name}/tokens",
            get(tokens).post(create_token),
        )
        .route("/v1/iam/users/{name}/tokens/{id}", delete(delete_token))
        .route("/v1/iam/root-token", post(root_token))
        .route("/v1/iam/simulate", post(simulate))
        .route("/v1/iam/roles/{name}/assume", post(assume_role))
        .with_state(Routes {
            dir,
            throttle: Arc::new(Throttle::default()),
            hashing: Arc::new(tokio::sync::Semaphore::new(2)),
        })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn iam_err(e: IamError) -> Response {
    match e {
        IamError::Missing { .. } => not_found(e.to_string()),
        IamError::Invalid(_) | IamError::Owned { .. } => bad(e.to_string()),
        IamError::BadCredentials | IamError::MfaRequired => {
            error(StatusCode::UNAUTHORIZED, e.to_string())
        }
        IamError::Store(_) | IamError::Kms(_) => fail(e.to_string()),
    }
}

/// Runs a blocking directory call (hashes, store writes) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IamError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(iam_err),
        Err(_) => Err(fail("the IAM call failed")),
    }
}

fn info(t: &Token) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        user: t.user.clone(),
        kind: t.kind.clone(),
        created: t.created,
        expires: t.expires,
        scope: t.scope.clone(),
        mfa: t.mfa,
        description: t.description.clone(),
    }
}

async fn login(
    State(r): State<Routes>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Json(req): Json<LoginRequest>,
) -> Response {
    let name: String = req.user.chars().take(64).collect();
    if req.password.len() > 1024 || req.user.len() > 64 {
        return bad("a user name has at most 64 characters, a password at most 1024");
    }
    let mark = |mut resp: Response| {
        resp.extensions_mut().insert(LoginName(name.clone()));
        resp
    };
    let ip = peer.ip();
    if r.throttle.blocked(ip, now()) {
        return mark(error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address; wait a minute",
        ));
    }
    let Ok(_permit) = r.hashing.clone().acquire_owned().await else {
        return mark(fail("the server is shutting down"));
    };
    let dir = r.dir.clone();
    let ttl = req.duration_seconds.unwrap_or(12 * 3600);
    let out = blocking(move || dir.login(&req.user, &req.password, req.code.as_deref(), ttl)).await;
    mark(match out {
        Ok(i) => {
            tracing::info!(user = %i.record.user, mfa = i.record.mfa, "login");
            Json(NewToken {
                info: info(&i.record),
                token: i.token,
            })
            .into_response()
        }
        Err(resp) => {
            if resp.status() == StatusCode::UNAUTHORIZED {
                r.throttle.failed(ip, now());
            }
            resp
        }
    })
}

async fn whoami(Extension(p): Extension<Principal>, State(r): State<Routes>) -> Response {
    let t = p.token.as_ref().and_then(|id| r.dir.token(id));
    Json(Identity {
        user: p.user.clone().unwrap_or_else(|| "root".into()),
        arn: match &p.user {
            Some(u) => crate::directory::user_arn(u),
            None => "arn:veeps:iam::root".into(),
        },
        mfa: p.mfa_at.is_some(),
        token: p.token.clone(),
        expires: t.map(|t| t.expires),
    })
    .into_response()
}

async fn logout(Extension(p): Extension<Principal>, State(r): State<Routes>) -> Response {
    let Some(id) = p.token else {
        return bad("the root token has no session to end");
    };
    let dir = r.dir.clone();
    match blocking(move || dir.revoke(&id)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e,
    }
}

async fn change_own_password(
    Extension(p): Extension<Principal>,
    State(r): State<Routes>,
    Json(req): Json<PasswordRequest>,
) -> Response {
    let Some(user) = p.user else {
        return bad("root has no password; set a user's with POST /v1/iam/users/NAME/password");
    };
    if !r.dir.password_policy().allow_users_to_change_password {
        return error(
            StatusCode::FORBIDDEN,
            "the password policy does not let users change their own password; ask an administrator",
        );
    }
    let Ok(_permit) = r.hashing.clone().acquire_owned().await else {
        return fail("the server is shutting down");
    };
    let dir = r.dir.clone();
    let out = blocking(move || {
        let u = dir.user(&user).ok_or(IamError::BadCredentials)?;
        let current = req.current.unwrap_or_default();
        if !u
            .password
            .as_deref()
            .is_some_and(|h| crate::password::verify(&current, h))
        {
            return Err(IamError::BadCredentials);
        }
        dir.set_password(&user, &req.password)
    })
    .await;
    match out {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e,
    }
}

fn user_info(dir: &Directory, u: crate::directory::User) -> UserInfo {
    UserInfo {
        arn: crate::directory::user_arn(&u.name),
        groups: dir
            .groups_of(&u.name)
            .map(|g| g.into_iter().collect())
            .unwrap_or_default(),
        policies: dir
            .policies_of(&u.name)
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        password: u.password.is_some(),
        mfa: u.mfa.as_ref().is_some_and(|m| m.enabled),
        ssh_public_keys: u.ssh_keys,
        env: u.env,
        name: u.name,
    }
}

async fn users(State(r): State<Routes>) -> Response {
    let dir = r.dir.clone();
    match blocking(move || {
        Ok(dir
            .users()?
            .into_iter()
            .map(|u| user_info(&dir, u))
            .collect::<Vec<_>>())
    })
    .await
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => e,
    }
}

async fn user(State(r): State<Routes>, Path(name): Path<String>) -> Response {
    match r.dir.user(&name) {
        Some(u) => Json(user_info(&r.dir, u)).into_response(),
        None => not_found(format!("no user named {name}")),
    }
}

async fn set_password(
    State(r): State<Routes>,
    Path(name): Path<String>,
    Json(req): Json<PasswordRequest>,
) -> Response {
    let Ok(_permit) = r.hashing.clone().acquire_owned().await else {
        return fail("the server is shutting down");
    };
    let dir = r.dir.clone();
    match blocking(move || dir.set_password(&name, &req.password)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e,
    }
}

async fn create_mfa(State(r): State<Routes>, Path(name): Path<String>) -> Response {
    let dir = r.dir.clone();
    match blocking(move || dir.create_mfa(&name)).await {
        Ok(s) => Json(MfaDevice {
            secret: s.secret,
            uri: s.uri,
            recovery_codes: s.recovery_codes,
        })
        .into_response(),
        Err(e) => e,
    }
}

async fn enable_mfa(
    State(r): State<Routes>,
    Path(name): Path<String>,
    Json(req): Json<MfaEnable>,
) -> Response {
    let dir = r.dir.clone();
    match blocking(move || dir.enable_mfa(&name, &req.code1, &req.code2)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e,
    }
}

async fn remove_mfa(State(r): State<Routes>, Path(name): Path<String>) -> Response {
    let dir = r.dir.clone();
    match blocking(move || dir.remove_mfa(&name)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e,
    }
}

async fn tokens(State(r): State<Routes>, Path(name): Path<String>) -> Response {
    let dir = r.dir.clone();
    match blocking(move || dir.tokens_of(&name)).await {
        Ok(list) => Json(list.iter().map(info).collect::<Vec<_>>()).into_response(),
        Err(e) => e,
    }
}

async fn create_token(
    Extension(p): Extension<Principal>,
    State(r): State<Routes>,
    Path(name): Path<String>,
    Json(req): Json<TokenRequest>,
) -> Response {
    let ttl = req.ttl_seconds.unwrap_or(86_400);
    if !(60..=90 * 86_400).contains(&ttl) {
        return bad("ttl_seconds is from 60 (a minute) to 7776000 (90 days)");
    }
    // A token never reaches past the one that made it.
    let mut scope = req.scope;
    if !p.scope.is_empty() && p.user.as_deref() == Some(name.as_str()) {
        if scope.is_empty() {
            scope = p.scope.clone();
        } else if !scope
            .iter()
            .all(|s| p.scope.iter().any(|o| crate::glob(o, s, true)))
        {
            return error(
                StatusCode::FORBIDDEN,
                "a token's scope must lie within the scope of the token that creates it",
            );
        }
    }
    let dir = r.dir.clone();
    match blocking(move || dir.issue(&name, ttl, scope, false, "api", &req.description)).await {
        Ok(i) => Json(NewToken {
            info: info(&i.record),
            token: i.token,
        })
        .into_response(),
        Err(e) => e,
    }
}

async fn delete_token(
    State(r): State<Routes>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    match r.dir.token(&id) {
        Some(t) if t.user == name => {
            let dir = r.dir.clone();
            match blocking(move || dir.revoke(&id)).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => e,
            }
        }
        _ => not_found(format!("{name} has no token {id}")),
    }
}

async fn root_token(State(r): State<Routes>, Json(req): Json<RootToken>) -> Response {
    let dir = r.dir.clone();
    match blocking(move || dir.set_root_disabled(req.disabled)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e,
    }
}

async fn assume_role(
    Extension(p): Extension<Principal>,
    State(r): State<Routes>,
    Path(name): Path<String>,
    Json(req): Json<AssumeRole>,
) -> Response {
    let dir = r.dir.clone();
    let session = if req.session_name.is_empty() {
        p.label()
    } else {
        format!("{} ({})", p.label(), req.session_name)
    };
    let secs = req.duration_seconds.unwrap_or(3600);
    match blocking(move || dir.assume_role(&name, &session, secs)).await {
        Ok(c) => Json(RoleCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
            expiration: time::OffsetDateTime::from_unix_timestamp(c.expires)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default(),
        })
        .into_response(),
        Err(e) => e,
    }
}

async fn simulate(
    Extension(p): Extension<Principal>,
    State(r): State<Routes>,
    Json(req): Json<SimulateRequest>,
) -> Response {
    if r.dir.user(&req.user).is_none() {
        return not_found(format!("no user named {}", req.user));
    }
    let who = Principal {
        user: Some(req.user.clone()),
        mfa_at: req.mfa.then(now),
        scope: vec![],
        token: None,
        ..p
    };
    let d = r.dir.authorize(&who, &req.action, &req.resource);
    Json(SimulateReply {
        allowed: d.is_ok(),
        reason: d.err().map(|e: Denial| e.to_string()),
    })
    .into_response()
}
