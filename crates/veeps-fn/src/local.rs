//! The local invoke socket (`DATA/functions/invoke.sock`, root's alone): how veeps' own
//! processes invoke a function without going through the AWS endpoint. A balancer's data
//! plane, in the balancer's network namespace, reaches it by its path. `POST
//! /functions/KEY/invocations` with the event answers the function's payload, with
//! `X-Amz-Function-Error` when it failed.

use crate::Functions;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::path::Path;
use std::sync::Arc;

/// The largest event or answer on the socket (the balancers' 1 MB, with room).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Invocations at once through the socket.
const MAX_CONNECTIONS: usize = 256;

/// The socket's path under the data directory.
pub fn socket_path(data_dir: &Path) -> std::path::PathBuf {
    veeps_resource::edge::local_invoke_socket(data_dir)
}

/// Serves the socket until the task is dropped.
pub async fn serve(functions: Arc<Functions>, path: std::path::PathBuf) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (s, _) = l.accept().await?;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let functions = functions.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let functions = functions.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&functions, req).await) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
    }
}

fn answer(status: u16, body: Bytes, error: Option<&'static str>) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    if let Some(e) = error {
        r.headers_mut().insert(
            "x-amz-function-error",
            hyper::header::HeaderValue::from_static(e),
        );
    }
    r
}

async fn handle(
    f: &Functions,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let key = match path
        .strip_prefix("/functions/")
        .and_then(|p| p.strip_suffix("/invocations"))
    {
        Some(k) if req.method() == hyper::Method::POST && !k.is_empty() => k.to_string(),
        _ => return answer(404, Bytes::from_static(b"no such path"), None),
    };
    let Ok(body) = Limited::new(req.into_body(), MAX_BODY).collect().await else {
        return answer(413, Bytes::from_static(b"the event is too large"), None);
    };
    let (name, qualifier) = match key.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (key.as_str(), None),
    };
    let rec = match f.resolve(name, qualifier) {
        Ok(r) => r,
        Err(e) => return answer(404, Bytes::from(e.to_string()), None),
    };
    match f
        .invoke(&rec.key(), body.to_bytes(), crate::Call::default())
        .await
    {
        Ok(out) => answer(200, out.payload, out.function_error),
        Err(crate::InvokeError::Throttled(_)) => {
            answer(429, Bytes::from_static(b"Rate Exceeded."), None)
        }
        Err(e) => answer(502, Bytes::from(e.to_string()), None),
    }
}
