//! IAM through the API, in process: logins with passwords and TOTP, tokens and their
//! scopes, every route authorised by the evaluator (403 naming the action and the
//! resource, audited), the root token's switch, and throttled password guessing.

use axum::body::Body;
use hyper::Request;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use veeps_api::server::{open, router, AppState};
use veeps_iam::totp;

struct Api {
    app: axum::Router,
    root: String,
    st: AppState,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> Api {
        let d = tempfile::tempdir().unwrap();
        let st = open(d.path()).unwrap();
        let root = std::fs::read_to_string(d.path().join("root.token"))
            .unwrap()
            .trim()
            .to_string();
        Api {
            app: router(st.clone()),
            root,
            st,
            _dir: d,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        self.call_from(method, path, token, body, [127, 0, 0, 1])
            .await
    }

    async fn call_from(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
        ip: [u8; 4],
    ) -> (u16, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let mut req = req.body(body).unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 1,
            ))));
        let resp = tower_service::Service::call(&mut self.app.clone(), req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
        )
    }

    async fn login(&self, user: &str, pw: &str, code: Option<&str>) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/iam/login",
            None,
            json!({"user": user, "password": pw, "code": code}),
        )
        .await
    }

    async fn token(&self, user: &str, pw: &str, code: Option<&str>) -> String {
        let (c, v) = self.login(user, pw, code).await;
        assert_eq!(c, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

const DEV: &str = r#"{"Version":"2012-10-17","Statement":[
    {"Effect":"Allow","Action":["env:Get*","env:List*","env:Plan"],"Resource":"*"},
    {"Effect":"Allow","Action":"kms:*","Resource":"arn:veeps:kms:stage:*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}
]}"#;

fn seed(st: &AppState) {
    let d = &st.iam;
    d.put_policy("iam", "dev", DEV).unwrap();
    d.put_group("iam", "developers", &["dev".into()]).unwrap();
    d.put_group("iam", "full-access", &["AdministratorAccess".into()])
        .unwrap();
    d.put_user("iam", "dana", &["developers".into()], &[], &BTreeMap::new())
        .unwrap();
    d.put_user("iam", "ada", &["full-access".into()], &[], &BTreeMap::new())
        .unwrap();
    d.set_password("dana", "dana-password-1").unwrap();
}

#[tokio::test]
async fn users_log_in_and_every_route_is_authorised_by_their_policies() {
    let api = Api::new();
    seed(&api.st);
    // Wrong passwords and unknown users look the same.
    let (c, v) = api.login("dana", "nope-nope-nope", None).await;
    assert_eq!(
        (c, v["error"].as_str().unwrap()),
        (401, "the user name, password or MFA code is wrong")
    );
    assert_eq!(api.login("nobody", "dana-password-1", None).await.0, 401);
    let dana = api.token("dana", "dana-password-1", None).await;
    let (c, who) = api
        .call("GET", "/v1/iam/whoami", Some(&dana), Value::Null)
        .await;
    assert_eq!(
        (c, who["user"].as_str(), who["mfa"].as_bool()),
        (200, Some("dana"), Some(false))
    );
    // Allowed by her group's policy.
    assert_eq!(
        api.call("GET", "/v1/envs", Some(&dana), Value::Null)
            .await
            .0,
        200
    );
    let head = api.call("HEAD", "/v1/envs", Some(&dana), Value::Null).await;
    assert_eq!(head.0, 200);
    // Denied: 403 naming the action and the resource.
    let (c, v) = api
        .call("POST", "/v1/system/down", Some(&dana), Value::Null)
        .await;
    assert_eq!(c, 403);
    assert_eq!(
        v["error"].as_str().unwrap(),
        "user/dana may not system:Shutdown on arn:veeps:system::server: no policy attached to the user or its groups allows it"
    );
    let (c, v) = api
        .call(
            "POST",
            "/v1/kms/prod/encrypt",
            Some(&dana),
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(c, 403);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("kms:Encrypt on arn:veeps:kms:prod:key/default"),
        "{v}"
    );
    // MFA required by the policy's condition: refused on a session without it.
    let (c, v) = api
        .call(
            "POST",
            "/v1/kms/stage/encrypt",
            Some(&dana),
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(c, 403, "{v}");
    // Other users' credentials are out of reach; her own are self-service.
    assert_eq!(
        api.call("GET", "/v1/iam/users/ada", Some(&dana), Value::Null)
            .await
            .0,
        403
    );
    assert_eq!(
        api.call("GET", "/v1/iam/users/dana", Some(&dana), Value::Null)
            .await
            .0,
        200
    );
    // The denial is in the audit log, with who and what.
    let audit = api.st.store.audit(50).unwrap();
    assert!(
        audit.iter().any(|e| e.who == "user/dana"
            && e.result == 403
            && e.action == "POST /v1/system/down (system:Shutdown on arn:veeps:system::server)"),
        "{audit:?}"
    );
    assert!(audit
        .iter()
        .any(|e| e.who == "user/nobody" && e.action == "POST /v1/iam/login" && e.result == 401));

    // An MFA device: created, enabled with two consecutive codes, then required.
    let (c, dev) = api
        .call("POST", "/v1/iam/users/dana/mfa", Some(&dana), Value::Null)
        .await;
    assert_eq!(c, 200, "{dev}");
    let secret = totp::unbase32(dev["secret"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (c1, c2) = (
        totp::code_at(&secret, now - 30),
        totp::code_at(&secret, now),
    );
    let (c, v) = api
        .call(
            "POST",
            "/v1/iam/users/dana/mfa/enable",
            Some(&dana),
            json!({"code1": c1, "code2": c2}),
        )
        .await;
    assert_eq!(c, 204, "{v}");
    let (c, v) = api.login("dana", "dana-password-1", None).await;
    assert_eq!(
        (c, v["error"].as_str().unwrap()),
        (
            401,
            "this user has an MFA device: give its current code (--code)"
        )
    );
    let next = totp::code_at(&secret, now + 30);
    let dana_mfa = api.token("dana", "dana-password-1", Some(&next)).await;
    let (c, v) = api
        .call(
            "POST",
            "/v1/kms/stage/encrypt",
            Some(&dana_mfa),
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(c, 200, "{v}");
    // Logging out revokes the session.
    assert_eq!(
        api.call("POST", "/v1/iam/logout", Some(&dana_mfa), Value::Null)
            .await
            .0,
        204
    );
    assert_eq!(
        api.call("GET", "/v1/envs", Some(&dana_mfa), Value::Null)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn scoped_tokens_expire_and_never_reach_past_their_scope() {
    let api = Api::new();
    seed(&api.st);
    let (c, v) = api
        .call(
            "POST",
            "/v1/iam/users/ada/tokens",
            Some(&api.root),
            json!({"ttl_seconds": 600, "scope": ["env:Get*", "env:List*"], "description": "dashboards"}),
        )
        .await;
    assert_eq!(c, 200, "{v}");
    let t = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        api.call("GET", "/v1/envs", Some(&t), Value::Null).await.0,
        200
    );
    let (c, v) = api
        .call("POST", "/v1/system/down", Some(&t), Value::Null)
        .await;
    assert_eq!(c, 403);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .ends_with("the token's scope does not include the action"),
        "{v}"
    );
    // A token made with a scoped token stays inside that scope.
    let (c, _) = api
        .call(
            "POST",
            "/v1/iam/users/ada/tokens",
            Some(&t),
            json!({"scope": ["system:*"]}),
        )
        .await;
    assert_eq!(c, 403);
    let (c, v) = api
        .call(
            "GET",
            "/v1/iam/users/ada/tokens",
            Some(&api.root),
            Value::Null,
        )
        .await;
    assert_eq!(c, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert!(
        v.to_string().find(&t[t.len() - 20..]).is_none(),
        "secrets are never listed"
    );
    let id = v[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/v1/iam/users/ada/tokens/{id}"),
            Some(&api.root),
            Value::Null
        )
        .await
        .0,
        204
    );
    assert_eq!(
        api.call("GET", "/v1/envs", Some(&t), Value::Null).await.0,
        401
    );
    let (c, _) = api
        .call(
            "POST",
            "/v1/iam/users/ada/tokens",
            Some(&api.root),
            json!({"ttl_seconds": 1}),
        )
        .await;
    assert_eq!(c, 400);
}

#[tokio::test]
async fn the_root_token_can_be_disabled_once_an_administrator_can_log_in() {
    let api = Api::new();
    seed(&api.st);
    let (c, v) = api
        .call(
            "POST",
            "/v1/iam/root-token",
            Some(&api.root),
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(c, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no user with a password"),
        "{v}"
    );
    let (c, _) = api
        .call(
            "POST",
            "/v1/iam/users/ada/password",
            Some(&api.root),
            json!({"password": "short"}),
        )
        .await;
    assert_eq!(c, 400);
    let (c, v) = api
        .call(
            "POST",
            "/v1/iam/users/ada/password",
            Some(&api.root),
            json!({"password": "ada-password-1"}),
        )
        .await;
    assert_eq!(c, 204, "{v}");
    assert_eq!(
        api.call(
            "POST",
            "/v1/iam/root-token",
            Some(&api.root),
            json!({"disabled": true})
        )
        .await
        .0,
        204
    );
    let (c, v) = api
        .call("GET", "/v1/envs", Some(&api.root), Value::Null)
        .await;
    assert_eq!(c, 401);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("the root token is disabled"),
        "{v}"
    );
    let ada = api.token("ada", "ada-password-1", None).await;
    assert_eq!(
        api.call("GET", "/v1/envs", Some(&ada), Value::Null).await.0,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/v1/iam/root-token",
            Some(&ada),
            json!({"disabled": false})
        )
        .await
        .0,
        204
    );
    assert_eq!(
        api.call("GET", "/v1/envs", Some(&api.root), Value::Null)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn password_guessing_from_one_address_is_throttled() {
    let api = Api::new();
    seed(&api.st);
    for _ in 0..veeps_iam::http::Throttle::MAX {
        let (c, _) = api
            .call_from(
                "POST",
                "/v1/iam/login",
                None,
                json!({"user": "dana", "password": "guess-guess"}),
                [10, 9, 9, 9],
            )
            .await;
        assert_eq!(c, 401);
    }
    let (c, _) = api
        .call_from(
            "POST",
            "/v1/iam/login",
            None,
            json!({"user": "dana", "password": "dana-password-1"}),
            [10, 9, 9, 9],
        )
        .await;
    assert_eq!(c, 429);
    // Anonymous callers cannot send large bodies, nor passwords that cost much to hash.
    let (c, _) = api
        .call_from(
            "POST",
            "/v1/iam/login",
            None,
            json!({"user": "dana", "password": "x".repeat(100_000)}),
            [10, 9, 9, 7],
        )
        .await;
    assert_eq!(c, 413);
    let (c, _) = api
        .call_from(
            "POST",
            "/v1/iam/login",
            None,
            json!({"user": "dana", "password": "x".repeat(2_000)}),
            [10, 9, 9, 7],
        )
        .await;
    assert_eq!(c, 400);
    // Another address is not affected.
    let (c, _) = api
        .call_from(
            "POST",
            "/v1/iam/login",
            None,
            json!({"user": "dana", "password": "dana-password-1"}),
            [10, 9, 9, 8],
        )
        .await;
    assert_eq!(c, 200);
    // Users' own password change needs the current one.
    let dana = api.token("dana", "dana-password-1", None).await;
    let (c, _) = api
        .call(
            "POST",
            "/v1/iam/password",
            Some(&dana),
            json!({"password": "dana-password-2", "current": "wrong"}),
        )
        .await;
    assert_eq!(c, 401);
    let (c, v) = api
        .call(
            "POST",
            "/v1/iam/password",
            Some(&dana),
            json!({"password": "dana-password-2", "current": "dana-password-1"}),
        )
        .await;
    assert_eq!(c, 204, "{v}");
    assert_eq!(api.login("dana", "dana-password-2", None).await.0, 200);
}
