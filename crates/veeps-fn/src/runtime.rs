//! The Lambda Runtime API (`2018-06-01`) one execution environment talks to: `GET
//! invocation/next` hands it the next event (a long poll), `POST invocation/ID/response`
//! and `POST invocation/ID/error` end that invocation, `POST init/error` reports a failed
//! start. Served from veeps on a listener inside the environment's own network namespace.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The largest response or error body a function may send (Lambda's 6 MB).
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// One event for the environment.
pub struct Invocation {
    /// The request id.
    pub id: String,
    /// The event.
    pub payload: Bytes,
    /// The function's ARN as invoked.
    pub arn: String,
    /// The function's timeout.
    pub timeout: std::time::Duration,
    /// A base64 client context, if the caller gave one.
    pub client_context: Option<String>,
    /// The log's START line, written before the runtime gets the event.
    pub start_line: String,
    /// Told when the environment takes the event.
    pub started: tokio::sync::oneshot::Sender<Instant>,
    /// Told how it ended.
    pub done: tokio::sync::oneshot::Sender<Outcome>,
}

/// How an invocation ended, as the runtime reported it.
#[derive(Debug)]
pub enum Outcome {
    /// `response`: the function's answer.
    Response(Bytes),
    /// `error`: its error document and type.
    Error(Bytes, String),
    /// `init/error` during the start.
    InitError(Bytes, String),
    /// An answer larger than [`MAX_PAYLOAD`].
    TooLarge,
}

struct Current {
    id: String,
    done: tokio::sync::oneshot::Sender<Outcome>,
}

/// What the Runtime API and the invoker share for one environment.
pub struct Channel {
    next: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Invocation>>,
    current: Mutex<Option<Current>>,
    /// Set at the first `next`: the start (init) is over.
    pub ready: Mutex<Option<Instant>>,
    /// An `init/error` came before any invocation.
    pub init_failed: Mutex<Option<(Bytes, String)>>,
    /// Writes START lines in the environment's log.
    pub starter: Mutex<Option<crate::logs::Starter>>,
}

impl Channel {
    /// A channel and the sender events go in by.
    pub fn new() -> (Arc<Channel>, tokio::sync::mpsc::Sender<Invocation>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (
            Arc::new(Channel {
                next: tokio::sync::Mutex::new(rx),
                current: Mutex::new(None),
                ready: Mutex::new(None),
                init_failed: Mutex::new(None),
                starter: Mutex::new(None),
            }),
            tx,
        )
    }

    /// Ends the invocation in progress (if any) with `o`; false if none was.
    pub fn finish(&self, o: Outcome) -> bool {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match cur {
            Some(c) => {
                let _ = c.done.send(o);
                true
            }
            None => false,
        }
    }

    fn finish_id(&self, id: &str, o: Outcome) -> bool {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|c| c.id == id) {
            let c = cur.take().expect("checked");
            let _ = c.done.send(o);
            true
        } else {
            false
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, kind: &str, msg: &str) -> Resp {
    json(
        status,
        serde_json::json!({"errorMessage": msg, "errorType": kind}).to_string(),
    )
}

fn accepted() -> Resp {
    json(StatusCode::ACCEPTED, "{\"status\":\"OK\"}".into())
}

/// Connections at once from one environment.
const MAX_CONNECTIONS: usize = 16;

/// A connection that acknowledges every segment at once. Runtimes' HTTP clients (hyper's
/// default connector, as `lambda_runtime` uses) leave Nagle's algorithm on and send a
/// response's headers and body in two segments: the body waits for the headers'
/// acknowledgement, which a delayed ACK holds back for 40 ms. Quick ACKs are re-armed after
/// every read, as Linux clears them.
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if r.is_ready() {
            let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves the Runtime API on `listener` (the environment's) until the task is dropped.
/// The only client is the environment itself: a few connections, and long polls that may
/// wait as long as it stays warm.
pub async fn serve(listener: tokio::net::TcpListener, ch: Arc<Channel>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let ch = ch.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let ch = ch.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&ch, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(QuickAck(s)), svc)
                .await;
        });
    }
}

async fn body(req: Request<hyper::body::Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_PAYLOAD)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

fn error_type(req: &Request<hyper::body::Incoming>) -> String {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
        .unwrap_or_else(|| "Unhandled".into())
}

async fn handle(ch: &Channel, req: Request<hyper::body::Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return error(StatusCode::NOT_FOUND, "InvalidRequest", "no such path");
    };
    let method = req.method().clone();
    match (method, rest) {
        (hyper::Method::GET, "invocation/next") => next(ch).await,
        (hyper::Method::POST, "init/error") => {
            let kind = error_type(&req);
            let b = body(req).await.unwrap_or_default();
            *ch.init_failed.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((b.clone(), kind.clone()));
            ch.finish(Outcome::InitError(b, kind));
            accepted()
        }
        (hyper::Method::POST, r) => {
            let Some((id, what)) = r
                .strip_prefix("invocation/")
                .and_then(|r| r.rsplit_once('/'))
            else {
                return error(StatusCode::NOT_FOUND, "InvalidRequest", "no such path");
            };
            let id = id.to_string();
            let outcome = match what {
                "response" => match body(req).await {
                    Some(b) => Outcome::Response(b),
                    None => Outcome::TooLarge,
                },
                "error" => {
                    let kind = error_type(&req);
                    match body(req).await {
                        Some(b) => Outcome::Error(b, kind),
                        None => Outcome::TooLarge,
                    }
                }
                _ => return error(StatusCode::NOT_FOUND, "InvalidRequest", "no such path"),
            };
            let too_large = matches!(outcome, Outcome::TooLarge);
            if !ch.finish_id(&id, outcome) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestID",
                    "Invalid request ID",
                );
            }
            if too_large {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    &format!("the payload exceeds {MAX_PAYLOAD} bytes"),
                );
            }
            accepted()
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidRequest",
            "method not allowed",
        ),
    }
}

async fn next(ch: &Channel) -> Resp {
    ch.ready
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Instant::now);
    // One long poll at a time takes the next event.
    let inv = {
        let mut rx = ch.next.lock().await;
        rx.recv().await
    };
    let Some(inv) = inv else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ShuttingDown",
            "the environment is stopping",
        );
    };
    let now = Instant::now();
    let deadline = veeps_sys::now_ms() + inv.timeout.as_millis() as i64;
    {
        let mut cur = ch.current.lock().unwrap_or_else(|p| p.into_inner());
        // A runtime asking for the next event without answering the last abandons it.
        if let Some(prev) = cur.take() {
            let _ = prev.done.send(Outcome::Error(
                Bytes::from_static(
                    b"{\"errorMessage\":\"the runtime asked for the next event without answering this one\",\"errorType\":\"Runtime.InvalidResponse\"}",
                ),
                "Runtime.InvalidResponse".into(),
            ));
        }
        *cur = Some(Current {
            id: inv.id.clone(),
            done: inv.done,
        });
    }
    if let Some(s) = ch
        .starter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        s.start(inv.start_line.clone());
    }
    let _ = inv.started.send(now);
    let mut r = Response::new(Full::new(inv.payload));
    let h = r.headers_mut();
    let mut set = |k: &'static str, v: &str| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &inv.id);
    set("lambda-runtime-deadline-ms", &deadline.to_string());
    set("lambda-runtime-invoked-function-arn", &inv.arn);
    // X-Ray's format: the time, then 96 bits of the request id.
    let hexid: String = inv.id.chars().filter(|c| *c != '-').take(24).collect();
    set(
        "lambda-runtime-trace-id",
        &format!(
            "Root=1-{:08x}-{hexid};Parent={};Sampled=0",
            veeps_sys::now_ms() / 1000,
            &hexid[..hexid.len().min(16)]
        ),
    );
    if let Some(cc) = &inv.client_context {
        set("lambda-runtime-client-context", cc);
    }
    r
}
