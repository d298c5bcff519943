//! The Lambda API on the AWS endpoint, wire-compatible with AWS's `2015-03-31` for what
//! veeps serves: Invoke (`RequestResponse`, `Event`, `DryRun`; `X-Amz-Log-Type: Tail`;
//! `Qualifier`), GetFunction and ListFunctions. Requests are signed with SigV4 by veeps
//! access keys (the root pair, users' keys, roles' temporary credentials) and authorised
//! with IAM (`lambda:InvokeFunction`, `lambda:GetFunction`, `lambda:ListFunctions`). Errors
//! come in Lambda's shapes: the code in `x-amzn-ErrorType`, the message in the body.

use crate::{FunctionRecord, Functions, InvokeError};
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use veeps_iam::sigv4::pct_decode;
use veeps_resource::edge::{AwsService, Request, Response};

/// The largest request payload (Lambda's 6 MB for synchronous invocations).
pub const MAX_REQUEST: usize = 6 * 1024 * 1024;
/// The largest payload of an asynchronous invocation (Lambda's 1 MB... now 256 KB; veeps
/// takes AWS's current 1 MB).
pub const MAX_EVENT: usize = 1024 * 1024;

/// Who may call, with which secret.
pub trait Credentials: Send + Sync {
    /// The principal (`None` for the root key) and secret of an access key id, and
    /// whether it needs a session token (which must then hash to what was issued).
    fn lookup(&self, access_key: &str) -> Option<Caller>;
    /// Whether `caller` may do `action` on `resource` from `source`.
    fn allowed(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        source: std::net::IpAddr,
    ) -> bool;
}

/// Whether a session token is the one issued with the key.
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A caller's identity and secret.
#[derive(Clone)]
pub struct Caller {
    /// `None` for the root key; else the user or `role/NAME`.
    pub principal: Option<String>,
    /// The secret that signs.
    pub secret: String,
    /// A role session's token check.
    pub token_ok: Option<TokenCheck>,
}

/// The Lambda API.
pub struct LambdaApi {
    functions: Arc<Functions>,
    creds: Arc<dyn Credentials>,
    /// KiB of request bodies held at once, all requests together.
    buffered: Arc<tokio::sync::Semaphore>,
}

/// Request bodies held at once, all requests together (beyond it: 429).
pub const MAX_BUFFERED: usize = 256 * 1024 * 1024;

impl LambdaApi {
    /// The API over `functions`, with callers' keys and policies from `creds`.
    pub fn new(functions: Arc<Functions>, creds: Arc<dyn Credentials>) -> LambdaApi {
        LambdaApi {
            functions,
            creds,
            buffered: Arc::new(tokio::sync::Semaphore::new(MAX_BUFFERED / 1024)),
        }
    }

    /// Whether a request names a key that exists: checked before its body is read, so an
    /// unknown caller costs no memory.
    fn known_caller(&self, headers: &axum::http::HeaderMap) -> bool {
        let auth = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let key = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .unwrap_or_default();
        !key.is_empty() && key.len() <= 128 && self.creds.lookup(key).is_some()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"Type": "User", "message": message}).to_string();
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(code) {
        h.insert("x-amzn-errortype", v);
    }
    h.insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&crate::uuid4()).expect("a uuid is a header value"),
    );
    r
}

fn throttled(reason: &str) -> Response {
    let body = serde_json::json!({"Reason": reason, "Type": "User", "message": "Rate Exceeded."})
        .to_string();
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequestsException",
        "",
    );
    *r.body_mut() = Bytes::from(body);
    r
}

fn query_param(q: &str, name: &str) -> Option<String> {
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (pct_decode(k) == name).then(|| pct_decode(v))
    })
}

fn configuration(f: &FunctionRecord) -> serde_json::Value {
    serde_json::json!({
        "FunctionName": f.name,
        "FunctionArn": f.arn(),
        "Runtime": f.runtime,
        "Role": f.role.clone().map(|r| format!("arn:veeps:iam::role/{r}")),
        "Handler": f.handler,
        "CodeSize": f.code_size,
        "Description": "",
        "Timeout": f.timeout_secs,
        "MemorySize": f.memory_mb,
        "LastModified": f.last_modified,
        "CodeSha256": f.code_sha256,
        "Version": "$LATEST",
        "Environment": {"Variables": f.environment},
        "EphemeralStorage": {"Size": f.tmp_mb},
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": if f.image.is_some() { "Image" } else { "Zip" },
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
    })
}

fn ok_json(v: serde_json::Value) -> Response {
    let mut r = Response::new(Bytes::from(v.to_string()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

#[async_trait::async_trait]
impl AwsService for LambdaApi {
    fn service(&self) -> &'static str {
        "lambda"
    }

    fn claims(&self, host: &str, path: &str) -> bool {
        path.starts_with("/2015-03-31/") || crate::url::function_of_host(host).is_some()
    }

    async fn call(&self, req: Request, peer: std::net::SocketAddr) -> Response {
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                &format!("Request must be smaller than {MAX_REQUEST} bytes for the InvokeFunction operation"),
            )
        };
        if declared.is_some_and(|n| n > MAX_REQUEST as u64) {
            let mut r = too_large();
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
            return r;
        }
        // Who may send a body: anyone to a public function URL; otherwise a known key.
        let host = parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // A function URL's configuration, read once for the whole request.
        let url = crate::url::function_of_host(&host).map(|f| (f, self.functions.url(f)));
        let public = url
            .as_ref()
            .and_then(|(_, c)| c.as_ref())
            .is_some_and(|u| u.auth == "NONE");
        if !public && !self.known_caller(&parts.headers) {
            let (code, msg) = if parts.headers.contains_key("authorization") {
                (
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )
            } else {
                (
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                )
            };
            let mut r = error(StatusCode::FORBIDDEN, code, msg);
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
            return r;
        }
        // The body is held whole (it is signed whole): within a budget for all requests.
        let kib = (declared.unwrap_or(MAX_REQUEST as u64) as usize)
            .div_ceil(1024)
            .max(1);
        let Ok(_held) = self.buffered.clone().try_acquire_many_owned(kib as u32) else {
            let mut r = throttled("ConcurrentInvocationLimitExceeded");
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
            return r;
        };
        let body = match http_body_util::Limited::new(body, MAX_REQUEST)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                let mut r = too_large();
                r.headers_mut()
                    .insert("connection", HeaderValue::from_static("close"));
                return r;
            }
        };
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        if let Some((function, cfg)) = url {
            return self.url_call(function, cfg, &parts, body, peer).await;
        }
        // Who is calling.
        let caller = match self.authenticate(&parts, &body) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let method = parts.method.as_str();
        match (method, &segs[..]) {
            ("GET", ["", "2015-03-31", "functions"]) => {
                if !self
                    .creds
                    .allowed(&caller, "lambda:ListFunctions", "*", peer.ip())
                {
                    return denied(&caller, "lambda:ListFunctions", "*");
                }
                let list: Vec<serde_json::Value> =
                    self.functions.list().iter().map(configuration).collect();
                ok_json(serde_json::json!({"Functions": list}))
            }
            ("GET", ["", "2015-03-31", "functions", name]) => {
                let name = pct_decode(name);
                let f = match self
                    .functions
                    .resolve(&name, query_param(&query, "Qualifier").as_deref())
                {
                    Ok(f) => f,
                    Err(e) => return invoke_error(e),
                };
                if !self
                    .creds
                    .allowed(&caller, "lambda:GetFunction", &f.arn(), peer.ip())
                {
                    return denied(&caller, "lambda:GetFunction", &f.arn());
                }
                ok_json(serde_json::json!({
                    "Configuration": configuration(&f),
                    "Code": {"RepositoryType": "S3"},
                }))
            }
            ("POST", ["", "2015-03-31", "functions", name, "invocations"]) => {
                self.invoke(
                    &pct_decode(name),
                    &query,
                    &parts.headers,
                    body,
                    &caller,
                    peer,
                )
                .await
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                &format!("veeps does not serve {method} {path}"),
            ),
        }
    }
}

impl LambdaApi {
    /// The caller of a signed request, or the refusal.
    fn authenticate(
        &self,
        parts: &axum::http::request::Parts,
        body: &[u8],
    ) -> Result<Caller, Box<Response>> {
        let headers: Vec<(&str, &[u8])> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let mut caller = None;
        veeps_iam::sigv4::verify(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query().unwrap_or_default(),
            headers.iter().copied(),
            body,
            veeps_obs::service::now() / 1000,
            |key| {
                let c = self.creds.lookup(key)?;
                let secret = c.secret.clone();
                caller = Some(c);
                Some(secret)
            },
        )
        .map_err(|e| Box::new(error(StatusCode::FORBIDDEN, e.code(), &e.to_string())))?;
        let caller = caller.expect("a verified signature had a caller");
        if let Some(check) = &caller.token_ok {
            let token = parts
                .headers
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !check(token) {
                return Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )));
            }
        }
        Ok(caller)
    }

    /// A request to a function URL.
    async fn url_call(
        &self,
        function: &str,
        cfg: Option<crate::url::UrlConfig>,
        parts: &axum::http::request::Parts,
        body: Bytes,
        peer: std::net::SocketAddr,
    ) -> Response {
        let (Some(cfg), Some(f)) = (cfg, self.functions.get(function)) else {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "no function URL here",
            );
        };
        if cfg.auth == "AWS_IAM" {
            let caller = match self.authenticate(parts, &body) {
                Ok(c) => c,
                Err(r) => return *r,
            };
            if !self
                .creds
                .allowed(&caller, "lambda:InvokeFunctionUrl", &f.arn(), peer.ip())
            {
                return denied(&caller, "lambda:InvokeFunctionUrl", &f.arn());
            }
        }
        let ev = crate::url::event(function, parts, &body, peer);
        match self
            .functions
            .invoke(
                function,
                Bytes::from(ev.to_string()),
                crate::Call::default(),
            )
            .await
        {
            Ok(out) => crate::url::answer(&out.payload, out.function_error.is_some()),
            Err(e) => invoke_error(e),
        }
    }
}

fn denied(caller: &Caller, action: &str, resource: &str) -> Response {
    let who = caller.principal.as_deref().unwrap_or("root");
    error(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        &format!("User: {who} is not authorized to perform: {action} on resource: {resource}"),
    )
}

fn invoke_error(e: InvokeError) -> Response {
    match e {
        InvokeError::NotFound(n) => error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {n}"),
        ),
        InvokeError::Throttled(reason) => throttled(reason),
        InvokeError::Service(m) => error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", &m),
    }
}

impl LambdaApi {
    async fn invoke(
        &self,
        name: &str,
        query: &str,
        headers: &axum::http::HeaderMap,
        body: Bytes,
        caller: &Caller,
        peer: std::net::SocketAddr,
    ) -> Response {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let f = match self
            .functions
            .resolve(name, query_param(query, "Qualifier").as_deref())
        {
            Ok(f) => f,
            Err(e) => return invoke_error(e),
        };
        if !self
            .creds
            .allowed(caller, "lambda:InvokeFunction", &f.arn(), peer.ip())
        {
            return denied(caller, "lambda:InvokeFunction", &f.arn());
        }
        if !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            let e = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                &format!("Could not parse request body into json: {e}"),
            );
        }
        let kind = h("x-amz-invocation-type").unwrap_or_else(|| "RequestResponse".into());
        match kind.as_str() {
            "DryRun" => {
                let mut r = Response::new(Bytes::new());
                *r.status_mut() = StatusCode::NO_CONTENT;
                return r;
            }
            "RequestResponse" | "Event" => {}
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    &format!("InvocationType {other} is not one of RequestResponse, Event, DryRun"),
                )
            }
        }
        let tail = match h("x-amz-log-type").as_deref() {
            None | Some("None") => false,
            Some("Tail") if kind == "RequestResponse" => true,
            Some("Tail") => false,
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    &format!("LogType {other} is not one of None, Tail"),
                )
            }
        };
        let client_context = h("x-amz-client-context");
        if kind == "Event" {
            if body.len() > MAX_EVENT {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestTooLargeException",
                    &format!("Request must be smaller than {MAX_EVENT} bytes for the InvokeFunction operation"),
                );
            }
            let _ = client_context;
            return match self.functions.enqueue(&f.key(), body) {
                Ok(id) => {
                    let mut r = Response::new(Bytes::new());
                    *r.status_mut() = StatusCode::ACCEPTED;
                    if let Ok(v) = HeaderValue::from_str(&id) {
                        r.headers_mut().insert("x-amzn-requestid", v);
                    }
                    r
                }
                Err(e) => invoke_error(e),
            };
        }
        let call = crate::Call {
            client_context,
            tail,
        };
        match self.functions.invoke(&f.key(), body, call).await {
            Ok(out) => {
                let mut r = Response::new(out.payload);
                let hs = r.headers_mut();
                hs.insert("content-type", HeaderValue::from_static("application/json"));
                if let Ok(v) = HeaderValue::from_str(&f.version) {
                    hs.insert("x-amz-executed-version", v);
                }
                if let Ok(v) = HeaderValue::from_str(&out.request_id) {
                    hs.insert("x-amzn-requestid", v);
                }
                if let Some(fe) = out.function_error {
                    hs.insert("x-amz-function-error", HeaderValue::from_static(fe));
                }
                if tail {
                    use base64::Engine;
                    let b = base64::engine::general_purpose::STANDARD.encode(out.log_tail);
                    if let Ok(v) = HeaderValue::from_str(&b) {
                        hs.insert("x-amz-log-result", v);
                    }
                }
                r
            }
            Err(e) => invoke_error(e),
        }
    }
}
