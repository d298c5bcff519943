//! The client's side of HTTP/1.1 for the common request, on the connection's own task: a
//! head without a body or an upgrade is parsed in place (httparse, header values sharing
//! one copy of the head), routed, and answered with its head and body in one write when
//! the body is at hand. Anything else (a body, an upgrade, `Expect`, `CONNECT`, a request
//! target that is not a path, a head that is malformed or too large) hands the connection,
//! with every byte read so far, to hyper's server for the rest of its life, so that each
//! rarer case keeps hyper's handling and its error answers.
//!
//! Framing of answers follows RFC 9112 section 6: none for HEAD, 1xx, 204 and 304; the
//! answer's own Content-Length, else the body's known length, else chunked (HTTP/1.1) or
//! until close (HTTP/1.0). A body that ends short of or runs past its length closes the
//! connection, as does an error in the middle of it.

use super::{drained, handle, Ctx, ProxyBody, DRAIN_IDLE};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// The largest request head read here; a larger one goes to hyper, which refuses it (431)
/// at the same size.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a request may carry (hyper's own limit).
const MAX_HEADERS: usize = 100;
/// How much room a read asks for.
const READ: usize = 8 * 1024;
/// Body pieces up to this size are copied beside the head (one write); larger ones are
/// written as they are.
const COPY_BELOW: usize = 16 * 1024;

/// Serves requests on `io` until it closes, fails or times out (`None`), or until a request
/// this path does not take arrives: then the connection comes back with what was read, for
/// hyper to serve from that request on.
pub async fn serve<S>(
    ctx: &Arc<Ctx>,
    mut io: S,
    client: SocketAddr,
    idle: Duration,
) -> Option<Rewind<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(READ);
    let mut out = Vec::with_capacity(1024);
    let mut drain = Box::pin(drained(ctx.draining.clone()));
    let mut draining = false;
    loop {
        // A whole head, in `idle` at most (or DRAIN_IDLE once the process hands over).
        let mut deadline = Instant::now() + if draining { DRAIN_IDLE.min(idle) } else { idle };
        let (req, keep) = loop {
            if !buf.is_empty() {
                match parse(&mut buf) {
                    Parsed::Simple(req, keep) => break (*req, keep),
                    Parsed::Other => return Some(Rewind::new(buf.freeze(), io, idle)),
                    Parsed::Partial => {}
                }
            }
            if buf.capacity() - buf.len() < READ / 4 {
                buf.reserve(READ);
            }
            let idle_now = !draining && buf.is_empty();
            let read = tokio::time::timeout_at(
                deadline,
                std::future::poll_fn(|cx| {
                    tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut buf)
                }),
            );
            tokio::select! {
                biased;
                r = read => match r {
                    Ok(Ok(n)) if n > 0 => {}
                    // Closed, failed or too slow: nothing to answer (as hyper).
                    _ => return None,
                },
                _ = &mut drain, if idle_now => {
                    draining = true;
                    deadline = deadline.min(Instant::now() + DRAIN_IDLE);
                }
            }
        };
        let head_request = req.method() == Method::HEAD;
        let version = req.version();
        let resp = handle(ctx.clone(), req, client).await;
        match write_answer(&mut io, &mut out, resp, head_request, version, keep, idle).await {
            Ok(true) => {}
            _ => {
                let _ = tokio::time::timeout(idle, io.shutdown()).await;
                return None;
            }
        }
    }
}

/// What a parse of the read buffer found.
enum Parsed {
    /// A request this path serves, and whether its connection may carry another.
    Simple(Box<Request<ProxyBody>>, bool),
    /// A request for hyper (or bytes hyper will refuse).
    Other,
    /// Not a whole head yet.
    Partial,
}

/// Whether a comma-separated header value lists `token`.
fn lists(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a head from `buf`, consuming it when this path takes the request. Room for a few
/// headers first (the usual request), for all that are allowed only when that is not
/// enough.
fn parse(buf: &mut BytesMut) -> Parsed {
    match parse_in::<24>(buf) {
        Some(p) => p,
        None => parse_in::<MAX_HEADERS>(buf).unwrap_or(Parsed::Other),
    }
}

/// [`parse`] with room for `N` headers; `None` when there are more.
fn parse_in<const N: usize>(buf: &mut BytesMut) -> Option<Parsed> {
    let mut hs = [httparse::EMPTY_HEADER; N];
    let mut r = httparse::Request::new(&mut hs);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Some(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return None,
        _ => return Some(Parsed::Other),
    };
    let version = match r.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Some(Parsed::Other),
    };
    let (Some(method), Some(path)) = (r.method, r.path) else {
        return Some(Parsed::Other);
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Some(Parsed::Other);
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Some(Parsed::Other);
    };
    let (mut host, mut close, mut keep_alive) = (false, false, false);
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // A body: hyper's. (An empty one is no body.)
            if h.value.is_empty() || h.value.iter().any(|&b| b != b'0') {
                return Some(Parsed::Other);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Some(Parsed::Other);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if lists(h.value, "upgrade") {
                return Some(Parsed::Other);
            }
            close |= lists(h.value, "close");
            keep_alive |= lists(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"host") {
            host = true;
        }
    }
    // HTTP/1.1 requires a Host: hyper answers its absence.
    if version == Version::HTTP_11 && !host {
        return Some(Parsed::Other);
    }
    // Where each piece lies in the buffer, so that the URI and values share one copy.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let path_at = at(path.as_bytes());
    let mut spans = [((0usize, 0usize), (0usize, 0usize)); N];
    let count = r.headers.len();
    for (slot, h) in spans.iter_mut().zip(r.headers.iter()) {
        *slot = (at(h.name.as_bytes()), at(h.value));
    }
    // Copied out (one small allocation), so that the read buffer stays unshared and the
    // next read reuses it.
    let head = Bytes::copy_from_slice(&buf[..n]);
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_at.0..path_at.0 + path_at.1)) else {
        return Some(Parsed::Other);
    };
    let mut headers = HeaderMap::with_capacity(count);
    for &((ns, nl), (vs, vl)) in &spans[..count] {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[ns..ns + nl]),
            HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)),
        ) else {
            return Some(Parsed::Other);
        };
        headers.append(name, value);
    }
    buf.advance(n);
    let mut req = Request::new(super::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    let keep = if version == Version::HTTP_10 {
        keep_alive && !close
    } else {
        !close
    };
    Some(Parsed::Simple(Box::new(req), keep))
}

/// How an answer's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body is sent.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Today's `Date` value, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

/// Writes an answer; returns whether the connection may carry another request.
async fn write_answer<S>(
    io: &mut S,
    out: &mut Vec<u8>,
    resp: Response<ProxyBody>,
    head_request: bool,
    version: Version,
    keep: bool,
    idle: Duration,
) -> std::io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let mut keep = keep
        && !parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| lists(v.as_bytes(), "close"));
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    // A Content-Length that does not parse is not passed on.
    if declared.is_none() {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let mut framing = if status.is_informational() || status == StatusCode::NO_CONTENT {
        parts.headers.remove(header::CONTENT_LENGTH);
        Framing::None
    } else if head_request || status == StatusCode::NOT_MODIFIED {
        if declared.is_none() && status != StatusCode::NOT_MODIFIED {
            if let Some(n) = body.size_hint().exact() {
                parts.headers.insert(header::CONTENT_LENGTH, n.into());
            }
        }
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        parts.headers.insert(header::CONTENT_LENGTH, n.into());
        Framing::Length(n)
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        keep = false;
        Framing::Close
    };
    parts.headers.remove(header::TRANSFER_ENCODING);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    super::h1::encode_fields(&parts.headers, out);
    if framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::CONNECTION) {
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    if framing == Framing::None {
        drop(body);
        write(io, out, idle).await?;
        io.flush().await?;
        return Ok(keep);
    }
    let mut sent = 0u64;
    let mut trailers: Option<HeaderMap> = None;
    loop {
        // A piece at hand joins what waits in `out`; else `out` goes first, so that the
        // head of a slow body is not held back.
        let frame = match std::future::poll_fn(|cx: &mut Context<'_>| {
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(f) => Poll::Ready(Some(f)),
                Poll::Pending => Poll::Ready(None),
            }
        })
        .await
        {
            Some(f) => f,
            None => {
                if !out.is_empty() {
                    write(io, out, idle).await?;
                    out.clear();
                }
                io.flush().await?;
                match tokio::time::timeout(idle, body.frame()).await {
                    Ok(f) => f,
                    Err(_) => return Ok(false),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "an answer's body failed");
                framing = Framing::Close;
                break;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(t);
                    }
                    continue;
                }
            },
        };
        if data.is_empty() {
            continue;
        }
        let data = match framing {
            Framing::Length(n) => {
                let left = n.saturating_sub(sent);
                if data.len() as u64 > left {
                    // More than declared: what fits, then the connection ends.
                    framing = Framing::Close;
                    sent = n;
                    let cut = data.slice(..left as usize);
                    put(io, out, cut, idle).await?;
                    break;
                }
                data
            }
            Framing::Chunked => {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                put(io, out, data, idle).await?;
                out.extend_from_slice(b"\r\n");
                continue;
            }
            _ => data,
        };
        sent += data.len() as u64;
        put(io, out, data, idle).await?;
    }
    match framing {
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n");
            if let Some(t) = &trailers {
                super::h1::encode_fields(t, out);
            }
            out.extend_from_slice(b"\r\n");
        }
        Framing::Length(n) if sent != n => keep = false,
        Framing::Close => keep = false,
        _ => {}
    }
    if !out.is_empty() {
        write(io, out, idle).await?;
        out.clear();
    }
    io.flush().await?;
    Ok(keep)
}

/// Adds `data` to what waits in `out`: copied when small, else written after it.
async fn put<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    data: Bytes,
    idle: Duration,
) -> std::io::Result<()> {
    if data.len() <= COPY_BELOW {
        out.extend_from_slice(&data);
        return Ok(());
    }
    if !out.is_empty() {
        write(io, out, idle).await?;
        out.clear();
    }
    write(io, &data, idle).await
}

/// Writes all of `b`, in `idle` at most (a client that reads nothing is let go).
async fn write<S: AsyncWrite + Unpin>(io: &mut S, b: &[u8], idle: Duration) -> std::io::Result<()> {
    tokio::time::timeout(idle, io.write_all(b))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// A connection handed to hyper, with the bytes already read from it in front. A write
/// that cannot go on for the idle timeout fails (hyper has no such limit of its own), so a
/// client that stops reading is let go on this path too.
pub struct Rewind<S> {
    pre: Bytes,
    io: S,
    idle: Duration,
    /// Since when writes have been waiting for the client.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Rewind<S> {
    /// `io`, whose next reads give `pre` first, and whose writes may wait `idle` at most.
    pub fn new(pre: Bytes, io: S, idle: Duration) -> Rewind<S> {
        Rewind {
            pre,
            io,
            idle,
            stall: None,
        }
    }

    /// A write's outcome: progress clears the stall, waiting starts or checks it.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        let idle = self.idle;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if std::future::Future::poll(stall.as_mut(), cx).is_ready() {
            self.stall = None;
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Frames of a body, for tests.
#[cfg(test)]
pub(super) fn frames(v: Vec<hyper::body::Frame<Bytes>>) -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::StreamBody::new(futures::stream::iter(
        v.into_iter().map(Ok::<_, super::BoxError>),
    ))
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;

    fn parsed(raw: &str) -> (Parsed, usize) {
        let mut b = BytesMut::from(raw.as_bytes());
        let p = parse(&mut b);
        (p, b.len())
    }

    fn simple(raw: &str) -> (Request<ProxyBody>, bool, usize) {
        match parsed(raw) {
            (Parsed::Simple(r, keep), left) => (*r, keep, left),
            (Parsed::Other, _) => panic!("taken as hyper's: {raw:?}"),
            (Parsed::Partial, _) => panic!("partial: {raw:?}"),
        }
    }

    #[test]
    fn plain_heads_are_taken_whole_and_the_rest_is_left_for_the_next() {
        let (r, keep, left) = simple(
            "GET /a/b?c=d%20e HTTP/1.1\r\nHost: shop.test:8080\r\nX-Many: 1\r\nx-many: 2\r\n\
             Content-Length: 0\r\n\r\nGET /next",
        );
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri().path(), "/a/b");
        assert_eq!(r.uri().query(), Some("c=d%20e"));
        assert_eq!(r.version(), Version::HTTP_11);
        assert_eq!(r.headers()["host"], "shop.test:8080");
        let many: Vec<_> = r.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["1", "2"]);
        assert!(r.body().is_end_stream());
        assert!(keep);
        assert_eq!(left, "GET /next".len());
        // Keep-alive as each version has it.
        assert!(!simple("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").1);
        assert!(!simple("GET / HTTP/1.0\r\n\r\n").1);
        assert!(simple("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").1);
        // More headers than the first try has room for.
        let mut many = "GET / HTTP/1.1\r\nHost: x\r\n".to_string();
        for i in 0..60 {
            many.push_str(&format!("x-h{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(simple(&many).0.headers().len(), 61);
    }

    #[test]
    fn bodies_upgrades_and_bad_heads_go_to_hyper_untouched() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 00x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GARBAGE\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        ] {
            let (p, left) = parsed(raw);
            assert!(matches!(p, Parsed::Other), "{raw:?}");
            assert_eq!(left, raw.len(), "{raw:?}: bytes consumed");
        }
        let mut over = "GET / HTTP/1.1\r\nHost: x\r\n".to_string();
        for i in 0..=MAX_HEADERS {
            over.push_str(&format!("x-h{i}: {i}\r\n"));
        }
        over.push_str("\r\n");
        assert!(matches!(parsed(&over).0, Parsed::Other));
        // Not whole yet, until the limit.
        assert!(matches!(
            parsed("GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parsed::Partial
        ));
        let big = format!("GET / HTTP/1.1\r\nx-big: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parsed(&big).0, Parsed::Other));
    }

    async fn answer(
        resp: Response<ProxyBody>,
        head: bool,
        version: Version,
        keep: bool,
    ) -> (String, bool) {
        let mut io: Vec<u8> = vec![];
        let mut out = vec![];
        let keep = write_answer(
            &mut io,
            &mut out,
            resp,
            head,
            version,
            keep,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        (String::from_utf8(io).unwrap(), keep)
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: ProxyBody) -> Response<ProxyBody> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    fn data(parts: &[&str]) -> ProxyBody {
        frames(
            parts
                .iter()
                .map(|p| Frame::data(Bytes::from(p.to_string())))
                .collect(),
        )
    }

    /// The wire form of each answer, and whether its connection is kept after.
    #[tokio::test]
    async fn answers_are_framed_as_rfc_9112_says_and_a_bad_body_ends_the_connection() {
        use super::super::{empty, full};
        const D: (&str, &str) = ("date", "d");
        let v10 = Version::HTTP_10;
        let v11 = Version::HTTP_11;
        let trailed = {
            let mut t = HeaderMap::new();
            t.insert("x-sum", HeaderValue::from_static("9"));
            frames(vec![
                Frame::data(Bytes::from("ab")),
                Frame::data(Bytes::from("cde")),
                Frame::trailers(t),
            ])
        };
        let failing = http_body_util::StreamBody::new(futures::stream::iter(vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Err::<Frame<Bytes>, super::super::BoxError>("target reset".into()),
        ]))
        .boxed();
        let big = "z".repeat(3 * COPY_BELOW);
        let big_wire = format!(
            "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n\
             1\r\na\r\n{:x}\r\n{big}\r\n1\r\nb\r\n0\r\n\r\n",
            big.len()
        );
        // (what it is, status, headers, body, HEAD, version, kept by the client, wire, kept)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, u16, Vec<(&str, &str)>, ProxyBody, bool, Version, bool, String, bool)> = vec![
            ("a known length", 200, vec![D, ("x-a", "1")], full("hello"), false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello".into(), true),
            ("unknown length: chunked, trailers last", 200, vec![D], trailed, false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\nx-sum: 9\r\n\r\n".into(), true),
            ("HTTP/1.0, unknown length: until close", 200, vec![D], data(&["ab", "c"]), false, v10, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\nconnection: close\r\n\r\nabc".into(), false),
            ("HTTP/1.0 kept alive says so", 204, vec![D], empty(), false, v10, true,
             "HTTP/1.1 204 No Content\r\ndate: d\r\nconnection: keep-alive\r\n\r\n".into(), true),
            ("HEAD: the body's length, no body", 200, vec![D], full("hello"), true, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 5\r\n\r\n".into(), true),
            ("HEAD: the target's length", 200, vec![D, ("content-length", "42")], empty(), true, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 42\r\n\r\n".into(), true),
            ("204: no length, no body", 204, vec![D, ("content-length", "3")], data(&["abc"]), false, v11, true,
             "HTTP/1.1 204 No Content\r\ndate: d\r\n\r\n".into(), true),
            ("304: its length, no body", 304, vec![D, ("content-length", "3")], data(&["abc"]), false, v11, true,
             "HTTP/1.1 304 Not Modified\r\ndate: d\r\ncontent-length: 3\r\n\r\n".into(), true),
            ("the answer closes", 200, vec![D, ("connection", "close")], full("x"), false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx".into(), false),
            ("the client closes", 200, vec![D], full("x"), false, v11, false,
             "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx".into(), false),
            ("longer than declared: cut", 200, vec![D, ("content-length", "3")], data(&["ab", "cdef"]), false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 3\r\n\r\nabc".into(), false),
            ("shorter than declared", 200, vec![D, ("content-length", "9")], data(&["ab"]), false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 9\r\n\r\nab".into(), false),
            ("a length that does not parse: chunked", 200, vec![D, ("content-length", "x")], data(&["ab"]), false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n".into(), true),
            ("failing in the middle: no last chunk", 200, vec![D], failing, false, v11, true,
             "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n".into(), false),
            ("large pieces written as they are", 200, vec![D], data(&["a", &big, "b"]), false, v11, true,
             big_wire, true),
        ];
        for (what, status, headers, body, head, version, keep, wire, kept) in cases {
            let got = answer(resp(status, &headers, body), head, version, keep).await;
            assert_eq!(got, (wire, kept), "{what}");
        }
        // Without a Date of its own, the answer gets today's.
        let (w, _) = answer(resp(200, &[], full("x")), false, v11, true).await;
        assert!(
            w.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ndate: "),
            "{w}"
        );
        assert!(w.ends_with(" GMT\r\n\r\nx"), "{w}");
    }

    #[tokio::test]
    async fn a_rewound_connection_reads_what_was_read_first() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewind::new(Bytes::from_static(b"first "), a, Duration::from_secs(5));
        b.write_all(b"then").await.unwrap();
        drop(b);
        let mut got = String::new();
        r.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "first then");
    }
}
