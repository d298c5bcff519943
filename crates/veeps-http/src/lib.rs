//! Listeners that face hostile clients. Every HTTP listener of veeps serves through
//! [`serve`]: a cap on open connections (further clients wait in the kernel's backlog, so
//! one listener's flood cannot take the process's file descriptors from another), a
//! deadline for reading a request's headers (which also ends idle keep-alive connections),
//! and a deadline on inactivity (no byte either way) that ends slow-body clients.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Time to read a request's headers, and to wait for the next request on an idle
    /// keep-alive connection.
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed (`None`: never,
    /// for APIs whose answers may legitimately pause, like a streamed apply).
    pub inactivity_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(15),
            inactivity_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Raises the soft limit on open files to the hard limit (the default soft limit of 1,024
/// is too small for a server); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    veeps_sys::proc::raise_fd_limit()
}

/// Connections one listener may hold: an eighth of the open-file limit (raised first),
/// between 16 and 4,096, so that every listener of the process fits at once.
pub fn per_listener_connections() -> usize {
    (raise_fd_limit() / 8).clamp(16, 4096) as usize
}

/// A listener's TLS configuration.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// A TLS configuration for a listener: the certificate chain and key (PEM), HTTP/2 and
/// HTTP/1.1 offered by ALPN.
pub fn tls_config(chain_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate: {e}"))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| format!("the key: {e}"))?
        .ok_or("no private key in the PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves HTTP/1 and HTTP/2 on `listener` within `limits` until the task is dropped;
/// `make` builds the service for a connection from the client's address.
pub async fn serve<M, S, B>(
    listener: tokio::net::TcpListener,
    name: &'static str,
    limits: Limits,
    make: M,
) where
    M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, name, limits, None, make).await
}

/// [`serve`] over TLS: the handshake must finish within the header deadline.
pub async fn serve_tls<M, S, B>(
    listener: tokio::net::TcpListener,
    name: &'static str,
    limits: Limits,
    tls: Arc<rustls::ServerConfig>,
    make: M,
) where
    M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, name, limits, Some(acceptor), make).await
}

async fn serve_with<M, S, B>(
    listener: tokio::net::TcpListener,
    name: &'static str,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    make: M,
) where
    M: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let mut warned = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                warned = false;
                p
            }
            Err(_) => {
                if !warned {
                    tracing::warn!(
                        listener = name,
                        max = limits.max_connections,
                        "connection limit reached; new clients wait"
                    );
                    warned = true;
                }
                match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or memory: wait rather than spin.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        // A second descriptor of the socket (a dup, still registered once with the
        // runtime), for the lingering close after hyper is done.
        let linger = match s.as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpStream::from(fd),
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "could not set up a connection");
                continue;
            }
        };
        let svc = make(peer);
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let last = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let io = Watched {
                inner: s,
                last: last.clone(),
                started,
            };
            let done = match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), svc);
                    drive(conn, limits, &last, started).await
                }
                Some(acc) => {
                    match tokio::time::timeout(limits.header_timeout, acc.accept(io)).await {
                        Ok(Ok(t)) => {
                            let conn = builder.serve_connection_with_upgrades(
                                hyper_util::rt::TokioIo::new(t),
                                svc,
                            );
                            drive(conn, limits, &last, started).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            false
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake too slow");
                            false
                        }
                    }
                }
            };
            if done {
                linger_close(linger).await;
            } else {
                tracing::debug!(listener = name, %peer, "closed a connection early");
            }
        });
    }
}

/// Serves a connection to its end (true) or until it was inactive too long (false).
async fn drive<F: std::future::Future>(
    conn: F,
    limits: Limits,
    last: &AtomicU64,
    started: Instant,
) -> bool {
    match limits.inactivity_timeout {
        None => {
            let _ = conn.await;
            true
        }
        Some(idle) => {
            tokio::select! {
                _ = conn => true,
                _ = quiet_for(last, started, idle) => false,
            }
        }
    }
}

/// How long a closing connection waits for its client to take the answer.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// Bytes sent on `s` that its peer has not acknowledged yet (the FIN counts as one).
fn unacknowledged(s: &tokio::net::TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    veeps_sys::proc::unacknowledged(s.as_raw_fd())
}

/// Closes a connection the way a careful server does (nginx calls it lingering close): send
/// what is queued and a FIN, then read and discard what the client still sends until it has
/// acknowledged everything or closed too, for at most [`LINGER_TIME`]. Closing a socket with
/// unread bytes in it makes the kernel send a reset that discards whatever of the answer
/// the client has not received yet: a client whose body was refused unread (an error before
/// the body, or `Expect: 100-continue` answered early) would lose the error itself.
async fn linger_close(s: std::net::TcpStream) {
    let _ = s.shutdown(std::net::Shutdown::Write);
    let Ok(s) = tokio::net::TcpStream::from_std(s) else {
        return;
    };
    let drain = async {
        let mut buf = [0u8; 16384];
        while unacknowledged(&s) > 0 {
            tokio::select! {
                r = s.readable() => {
                    if r.is_err() {
                        return;
                    }
                    match s.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Completes once no byte has moved for `idle`.
async fn quiet_for(last: &AtomicU64, started: Instant, idle: Duration) {
    loop {
        let at = Duration::from_millis(last.load(Ordering::Relaxed));
        let since = started.elapsed().saturating_sub(at);
        if since >= idle {
            return;
        }
        tokio::time::sleep(idle - since).await;
    }
}

pin_project_lite::pin_project! {
    /// A stream that notes when a byte last moved.
    struct Watched<T> {
        #[pin]
        inner: T,
        last: Arc<AtomicU64>,
        started: Instant,
    }
}

impl<T> Watched<T> {
    fn touch(last: &AtomicU64, started: Instant) {
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.project();
        let before = buf.filled().len();
        let r = me.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            Self::touch(me.last, *me.started);
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.project();
        let r = me.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            Self::touch(me.last, *me.started);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.project();
        let r = me.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            Self::touch(me.last, *me.started);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    async fn start(limits: Limits) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, "test", limits, |_| {
            hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                    bytes::Bytes::from("ok"),
                )))
            })
        }));
        addr
    }

    fn get(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// A client that never finishes its headers is cut off, and while the cap is taken by
    /// such clients others wait, then get served once they are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_clients_are_cut_off_and_the_cap_holds() {
        let addr = start(Limits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
            inactivity_timeout: Some(Duration::from_secs(5)),
        })
        .await;
        let r = tokio::task::spawn_blocking(move || {
            let mut slow: Vec<std::net::TcpStream> = (0..2)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nhost").unwrap();
                    s
                })
                .collect();
            // The server closes both slow connections by itself.
            for s in &mut slow {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(n == 0 || text.contains("408"), "{text}");
            }
            get(addr)
        })
        .await
        .unwrap();
        assert!(r.contains("200 OK") && r.ends_with("ok"), "{r}");
    }

    /// A server that refuses a large body unread (an error before the body) still delivers
    /// its whole answer: the close lingers instead of resetting the connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_given_before_the_body_is_not_lost_to_a_reset() {
        const ANSWER: usize = 4 << 20;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l, "test", Limits::default(), |_| {
            hyper::service::service_fn(|_req| async {
                let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(vec![
                        b'e';
                        ANSWER
                    ])));
                *r.status_mut() = hyper::StatusCode::NOT_IMPLEMENTED;
                Ok::<_, std::convert::Infallible>(r)
            })
        }));
        let got = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let body = 8usize << 20;
            s.write_all(
                format!("PUT /k HTTP/1.1\r\nhost: x\r\ncontent-length: {body}\r\n\r\n").as_bytes(),
            )
            .unwrap();
            // The client goes on sending its body while it reads the answer, as HTTP
            // clients do; the server never reads the body.
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let chunk = vec![b'b'; 64 << 10];
                for _ in 0..body / chunk.len() {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
            let mut out = Vec::new();
            let r = s.read_to_end(&mut out);
            let _ = writer.join();
            (r.map_err(|e| e.kind()), out)
        })
        .await
        .unwrap();
        let (r, out) = got;
        let text = String::from_utf8_lossy(&out[..out.len().min(200)]).to_string();
        assert!(text.starts_with("HTTP/1.1 501"), "{text}");
        let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = out[head..].iter().filter(|&&b| b == b'e').count();
        assert_eq!(
            (r, body),
            (Ok(out.len()), ANSWER),
            "the answer was cut short"
        );
    }
}
