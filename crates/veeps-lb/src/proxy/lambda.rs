//! `lambda` target groups: a request becomes the Application Load Balancer's Lambda event
//! (headers and query parameters, or their multi-value forms when the group says so; a body
//! that is not UTF-8 in base64), the function is invoked through veeps' local invoke socket,
//! and its answer (`statusCode`, `statusDescription`, `headers` or `multiValueHeaders`,
//! `body`, `isBase64Encoded`) becomes the response. As on AWS, the request and the answer
//! are at most 1 MB, and a function that fails is a 502.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Request, Response, StatusCode};
use std::collections::BTreeMap;
use std::path::Path;

/// The largest request body and answer (AWS's 1 MB).
pub const MAX_BYTES: usize = 1024 * 1024;

/// The event of a request (pure).
pub fn event(
    tg_arn: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    multi: bool,
) -> serde_json::Value {
    let mut hs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        hs.entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let mut qs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        // As AWS: the keys and values as sent (still encoded).
        qs.entry(k.to_string()).or_default().push(v.to_string());
    }
    let (body, b64) = match std::str::from_utf8(body) {
        Ok(t) => (t.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let mut ev = serde_json::json!({
        "requestContext": {"elb": {"targetGroupArn": tg_arn}},
        "httpMethod": method,
        "path": path,
        "body": body,
        "isBase64Encoded": b64,
    });
    if multi {
        ev["multiValueHeaders"] = serde_json::to_value(&hs).unwrap_or_default();
        ev["multiValueQueryStringParameters"] = serde_json::to_value(&qs).unwrap_or_default();
    } else {
        // The last value of each, as AWS sends.
        let last = |m: &BTreeMap<String, Vec<String>>| -> serde_json::Value {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::Value::String(v.last().cloned().unwrap_or_default()),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        ev["headers"] = last(&hs);
        ev["queryStringParameters"] = last(&qs);
    }
    ev
}

/// The response of a function's answer (pure); `None` when it is not one.
pub fn response(answer: &[u8]) -> Option<Response<Bytes>> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let status = v.get("statusCode")?.as_u64()?;
    let status = StatusCode::from_u16(u16::try_from(status).ok()?).ok()?;
    let body = match v.get("body") {
        Some(serde_json::Value::String(s)) if v["isBase64Encoded"].as_bool() == Some(true) => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).ok()?)
        }
        Some(serde_json::Value::String(s)) => Bytes::from(s.clone()),
        Some(serde_json::Value::Null) | None => Bytes::new(),
        Some(_) => return None,
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    let mut put = |k: &str, val: &serde_json::Value| {
        let s = match val {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let (Ok(n), Ok(x)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&s),
        ) {
            h.append(n, x);
        }
    };
    if let Some(m) = v.get("multiValueHeaders").and_then(|m| m.as_object()) {
        for (k, vals) in m {
            for val in vals.as_array().into_iter().flatten() {
                put(k, val);
            }
        }
    } else if let Some(m) = v.get("headers").and_then(|m| m.as_object()) {
        for (k, val) in m {
            put(k, val);
        }
    }
    Some(r)
}

fn text(status: StatusCode, msg: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(msg.as_bytes()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers `req` with `function`, through the socket at `socket`.
/// A request body whole, or `None` when it fails or runs past `max` bytes.
async fn read_limited(mut body: super::ProxyBody, max: usize) -> Option<Bytes> {
    let mut all = bytes::BytesMut::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.ok()?.into_data() {
            if all.len() + d.len() > max {
                return None;
            }
            all.extend_from_slice(&d);
        }
    }
    Some(all.freeze())
}

pub async fn invoke(
    socket: Option<&Path>,
    function: &str,
    tg_arn: &str,
    multi: bool,
    req: Request<super::ProxyBody>,
    timeout: std::time::Duration,
) -> Response<Bytes> {
    let Some(socket) = socket else {
        return text(StatusCode::BAD_GATEWAY, "functions are not available here");
    };
    let (parts, body) = req.into_parts();
    let Some(body) = read_limited(body, MAX_BYTES).await else {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request is larger than 1 MB",
        );
    };
    let ev = event(
        tg_arn,
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or_default(),
        &parts.headers,
        &body,
        multi,
    );
    let call = async {
        let s = tokio::net::UnixStream::connect(socket).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .ok()?;
        tokio::spawn(conn);
        let r = Request::post(format!("/functions/{function}/invocations"))
            .header(hyper::header::HOST, "functions")
            .body(Full::new(Bytes::from(ev.to_string())))
            .ok()?;
        let resp = send.send_request(r).await.ok()?;
        let failed = resp.headers().contains_key("x-amz-function-error");
        let status = resp.status();
        let answer = Limited::new(resp.into_body(), MAX_BYTES + 1024)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some((status, failed, answer))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Some((s, false, answer))) if s == StatusCode::OK => match response(&answer) {
            Some(r) if r.body().len() <= MAX_BYTES => r,
            _ => text(
                StatusCode::BAD_GATEWAY,
                "the function's answer is not a response",
            ),
        },
        Ok(Some((s, _, _))) if s == StatusCode::TOO_MANY_REQUESTS => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the function is at its concurrency limit",
        ),
        Ok(_) => text(StatusCode::BAD_GATEWAY, "the function failed"),
        Err(_) => text(
            StatusCode::GATEWAY_TIMEOUT,
            "the function did not answer in time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_answers_have_the_load_balancers_shapes() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let ev = event("arn:tg", "POST", "/p", "q=a%20b&q=c", &h, &[0xff, 0], false);
        assert_eq!(ev["headers"]["x-a"], "2");
        assert_eq!(ev["queryStringParameters"]["q"], "c");
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], "/wA=");
        let ev = event("arn:tg", "GET", "/", "q=a%20b&q=c", &h, b"hi", true);
        assert_eq!(
            ev["multiValueHeaders"]["x-a"],
            serde_json::json!(["1", "2"])
        );
        assert_eq!(
            ev["multiValueQueryStringParameters"]["q"],
            serde_json::json!(["a%20b", "c"])
        );
        assert_eq!(ev["body"], "hi");
        let r = response(
            br#"{"statusCode":201,"multiValueHeaders":{"set-cookie":["a=1","b=2"]},"body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.body().as_ref(), b"hi");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert!(response(br#"{"hello":1}"#).is_none());
    }
}
