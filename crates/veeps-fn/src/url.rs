//! Function URLs: `http://NAME.lambda-url.localhost:PORT/...` on the AWS endpoint (any host
//! of the form `NAME.lambda-url.DOMAIN`) invokes the function with Lambda's HTTP event
//! (payload format 2.0) and answers with what it returns: a `statusCode`, `headers`,
//! `cookies` and `body` (base64 when `isBase64Encoded`), or any other JSON as a 200.
//! `authorization_type = "AWS_IAM"` wants requests signed for `lambda` by a caller allowed
//! `lambda:InvokeFunctionUrl`; `NONE` is public.

use crate::Functions;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use base64::Engine;
use serde::{Deserialize, Serialize};
use veeps_resource::edge::Response;

const K_URL: &str = "fn/url/";

/// A function's URL configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UrlConfig {
    /// The function.
    pub function: String,
    /// `NONE` or `AWS_IAM`.
    pub auth: String,
}

/// The function a host names (`NAME.lambda-url.` then anything), if it does.
pub fn function_of_host(host: &str) -> Option<&str> {
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let (name, rest) = host.split_once('.')?;
    rest.starts_with("lambda-url.").then_some(name)
}

impl Functions {
    /// Records a function's URL.
    pub fn put_url(&self, c: &UrlConfig) -> Result<(), String> {
        self.store
            .kv_put(&format!("{K_URL}{}", c.function), c)
            .map_err(|e| e.to_string())
    }

    /// Removes a function's URL.
    pub fn delete_url(&self, function: &str) -> Result<(), String> {
        self.store
            .kv_delete(&format!("{K_URL}{function}"))
            .map_err(|e| e.to_string())
    }

    /// A function's URL configuration.
    pub fn url(&self, function: &str) -> Option<UrlConfig> {
        self.store
            .kv_get(&format!("{K_URL}{function}"))
            .ok()
            .flatten()
    }

    /// The URL of a function, on this server's AWS endpoint.
    pub fn url_of(&self, function: &str) -> String {
        let port = self
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|a| a.port())
            .unwrap_or(9000);
        format!("http://{function}.lambda-url.localhost:{port}/")
    }
}

/// The HTTP event (payload format 2.0) of a request.
pub fn event(
    function: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
    peer: std::net::SocketAddr,
) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    let mut cookies = vec![];
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if k == "cookie" {
            cookies.extend(v.split(';').map(|c| c.trim().to_string()));
            continue;
        }
        // Repeated headers are joined with commas, as Lambda does.
        let joined = match headers.get(k.as_str()).and_then(|x| x.as_str()) {
            Some(prev) => format!("{prev},{v}"),
            None => v,
        };
        headers.insert(k.as_str().to_string(), joined.into());
    }
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let mut params = serde_json::Map::new();
    for p in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let dec = |s: &str| veeps_iam::sigv4::pct_decode(&s.replace('+', " "));
        let (k, v) = (dec(k), dec(v));
        let joined = match params.get(&k).and_then(|x| x.as_str()) {
            Some(prev) => format!("{prev},{v}"),
            None => v,
        };
        params.insert(k, joined.into());
    }
    let text = std::str::from_utf8(body).ok();
    let (body_v, b64) = match text {
        _ if body.is_empty() => (serde_json::Value::Null, false),
        Some(t) => (t.into(), false),
        None => (
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .into(),
            true,
        ),
    };
    let now = time::OffsetDateTime::now_utc();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let mut ev = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": function,
            "domainName": host,
            "domainPrefix": function,
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": format!("{:?}", parts.version),
                "sourceIp": peer.ip().to_string(),
                "userAgent": parts.headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or_default(),
            },
            "requestId": crate::uuid4(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format(time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000")).unwrap_or_default(),
            "timeEpoch": now.unix_timestamp() * 1000 + now.millisecond() as i64,
        },
        "isBase64Encoded": b64,
    });
    if !params.is_empty() {
        ev["queryStringParameters"] = params.into();
    }
    if !cookies.is_empty() {
        ev["cookies"] = cookies.into();
    }
    if !body_v.is_null() {
        ev["body"] = body_v;
    }
    ev
}

/// The HTTP answer to what the function returned.
pub fn answer(payload: &[u8], failed: bool) -> Response {
    let plain = |status: StatusCode, body: Bytes, ctype: &'static str| {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(ctype));
        r
    };
    if failed {
        return plain(
            StatusCode::BAD_GATEWAY,
            Bytes::from_static(b"Internal Server Error"),
            "text/plain",
        );
    }
    let v: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => {
            return plain(
                StatusCode::OK,
                Bytes::copy_from_slice(payload),
                "application/json",
            )
        }
    };
    let Some(status) = v.get("statusCode").and_then(|s| s.as_u64()) else {
        return plain(
            StatusCode::OK,
            Bytes::from(v.to_string()),
            "application/json",
        );
    };
    let body = match v.get("body") {
        Some(serde_json::Value::String(s)) => {
            if v.get("isBase64Encoded").and_then(|b| b.as_bool()) == Some(true) {
                match base64::engine::general_purpose::STANDARD.decode(s) {
                    Ok(b) => Bytes::from(b),
                    Err(_) => {
                        return plain(
                            StatusCode::BAD_GATEWAY,
                            Bytes::from_static(b"the function's body is not base64"),
                            "text/plain",
                        )
                    }
                }
            } else {
                Bytes::from(s.clone())
            }
        }
        Some(serde_json::Value::Null) | None => Bytes::new(),
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    if let Some(hs) = v.get("headers").and_then(|h| h.as_object()) {
        for (k, val) in hs {
            let val = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(n), Ok(val)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&val),
            ) {
                h.append(n, val);
            }
        }
    }
    if let Some(cs) = v.get("cookies").and_then(|c| c.as_array()) {
        for c in cs.iter().filter_map(|c| c.as_str()) {
            if let Ok(val) = HeaderValue::from_str(c) {
                h.append("set-cookie", val);
            }
        }
    }
    if !h.contains_key("content-type") {
        h.insert("content-type", HeaderValue::from_static("application/json"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_their_function() {
        assert_eq!(
            function_of_host("echo.lambda-url.localhost:9000"),
            Some("echo")
        );
        assert_eq!(
            function_of_host("echo.lambda-url.example.com"),
            Some("echo")
        );
        assert_eq!(function_of_host("bucket.localhost:9000"), None);
        assert_eq!(function_of_host("localhost"), None);
    }

    #[test]
    fn answers_follow_the_functions_shape() {
        let r = answer(
            br#"{"statusCode":201,"headers":{"x-a":"1"},"cookies":["a=b"],"body":"aGk=","isBase64Encoded":true}"#,
            false,
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.body().as_ref(), b"hi");
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["set-cookie"], "a=b");
        let r = answer(br#"{"hello":"world"}"#, false);
        assert_eq!(r.status(), 200);
        assert_eq!(r.body().as_ref(), br#"{"hello":"world"}"#);
        assert_eq!(answer(b"{}", true).status(), 502);
    }
}
