//! One HTTP/1.1 exchange with a target, driven by the request's own task: the request's head
//! goes out in one write, the answer's head is parsed in place (httparse, header values
//! sharing the bytes read), and its body is read from the connection as the client takes
//! it, with no connection task or channel in between. A connection whose answer ended
//! cleanly goes back to its pool when the body ends or is dropped. Framing follows RFC 9112
//! section 6: no body for HEAD, 1xx, 204 and 304; chunked when it is the last transfer
//! coding (a Content-Length beside it is ignored and the connection not reused); else
//! Content-Length (differing values are refused); else until the target closes.

use super::upstream::Conn;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode, Version};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncWriteExt, ReadBuf};

/// The largest answer head read (status line and headers), as hyper's default buffer.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may carry.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes read (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 64 * 1024;
/// How much room a read asks for.
const READ: usize = 16 * 1024;
/// Body pieces up to this size are copied out of the read buffer rather than shared.
const COPY_BELOW: usize = 4096;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The target closed before sending a byte of an answer.
    #[error("the target closed the connection before answering")]
    Closed,
    /// The target's answer breaks HTTP/1.1.
    #[error("the target's answer is malformed: {0}")]
    Malformed(&'static str),
}

impl H1Error {
    /// Whether the request cannot have been acted on by the target: nothing came back on a
    /// reused connection, so sending it again on a fresh one is safe for idempotent methods.
    pub fn nothing_came_back(&self) -> bool {
        matches!(self, H1Error::Closed)
            || matches!(self, H1Error::Io(e) if matches!(e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe))
    }
}

/// A connection to a target and what has been read from it and not yet used.
pub struct Raw {
    /// The connection.
    pub io: Conn,
    /// Bytes read past what was used.
    pub buf: BytesMut,
}

impl Raw {
    /// A fresh connection.
    pub fn new(io: Conn) -> Raw {
        Raw {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection may carry another request: the target has neither closed
    /// it nor sent anything unasked (checked without waiting).
    pub fn reusable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let tcp = match &self.io {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.get_ref().0,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Not readable as far as the runtime knows: nothing arrived, no system call needed.
        if tcp.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut b = [0u8; 1];
        let mut rb = ReadBuf::new(&mut b);
        matches!(tcp.poll_peek(&mut cx, &mut rb), Poll::Pending)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ / 4 {
            self.buf.reserve(READ);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes a request's head (it has no body).
    pub async fn send_head(&mut self, head: &[u8]) -> std::io::Result<()> {
        self.io.write_all(head).await?;
        self.io.flush().await
    }

    /// Reads an answer's head; interim (1xx) answers are passed over.
    pub async fn read_head(
        &mut self,
        head_request: bool,
    ) -> Result<(Response<()>, Framing), H1Error> {
        let mut any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match self.parse_head(head_request)? {
                    Head::Final(resp, framing) => return Ok((resp, framing)),
                    // Passed over; the next may already be here.
                    Head::Interim => continue,
                    Head::Partial => {}
                }
            }
            let n = self.fill().await?;
            if n == 0 {
                return Err(if any {
                    H1Error::Malformed("the target closed in the middle of its answer")
                } else {
                    H1Error::Closed
                });
            }
            any = true;
        }
    }

    /// Parses a head from the buffer, consuming it when complete. Room for a few headers
    /// first (the usual answer), for all that are allowed only when that is not enough.
    fn parse_head(&mut self, head_request: bool) -> Result<Head, H1Error> {
        match self.parse_head_in::<24>(head_request)? {
            Some(h) => Ok(h),
            None => self
                .parse_head_in::<MAX_HEADERS>(head_request)?
                .ok_or(H1Error::Malformed("too many headers")),
        }
    }

    /// [`Raw::parse_head`] with room for `N` headers; `None` when there are more.
    fn parse_head_in<const N: usize>(
        &mut self,
        head_request: bool,
    ) -> Result<Option<Head>, H1Error> {
        let mut hs = [httparse::EMPTY_HEADER; N];
        let mut r = httparse::Response::new(&mut hs);
        let n = match r.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => {
                return Ok(Some(Head::Partial))
            }
            Ok(httparse::Status::Partial) => return Err(H1Error::Malformed("head too large")),
            Err(httparse::Error::TooManyHeaders) => return Ok(None),
            Err(_) => return Err(H1Error::Malformed("unparseable head")),
        };
        let code = r.code.unwrap_or(0);
        let http10 = r.version == Some(0);
        // Where each header lies in the buffer, so that values share the bytes read.
        let base = self.buf.as_ptr() as usize;
        let mut at = [(0usize, 0usize, 0usize, 0usize); N];
        let count = r.headers.len();
        for (slot, h) in at.iter_mut().zip(r.headers.iter()) {
            *slot = (
                h.name.as_ptr() as usize - base,
                h.name.len(),
                h.value.as_ptr() as usize - base,
                h.value.len(),
            );
        }
        // Copied out (one small allocation), so that the read buffer stays unshared and
        // the next read reuses it rather than allocating another.
        let head = Bytes::copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(H1Error::Malformed("an upgrade nobody asked for"));
            }
            return Ok(Some(Head::Interim));
        }
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("status"))?;
        let mut headers = HeaderMap::with_capacity(count);
        for &(ns, nl, vs, vl) in &at[..count] {
            let name = HeaderName::from_bytes(&head[ns..ns + nl])
                .map_err(|_| H1Error::Malformed("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
                .map_err(|_| H1Error::Malformed("header value"))?;
            headers.append(name, value);
        }
        let framing = framing(&headers, status, head_request, http10)?;
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = if http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        *resp.headers_mut() = headers;
        Ok(Some(Head::Final(resp, framing)))
    }
}

/// What a parse of the buffer found.
enum Head {
    /// A final answer's head.
    Final(Response<()>, Framing),
    /// An interim (1xx) answer, passed over.
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// How an answer's body ends, and whether its connection may carry another request after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    state: State,
    reuse: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes are left.
    Length(u64),
    /// Until the target closes.
    Close,
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of a chunk are left.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// Trailer lines, until an empty one; this many bytes read so far.
    Trailers(usize),
    /// Ended.
    Done,
}

fn framing(
    headers: &HeaderMap,
    status: StatusCode,
    head_request: bool,
    http10: bool,
) -> Result<Framing, H1Error> {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    let keep = if http10 {
        has_token(hyper::header::CONNECTION, "keep-alive")
    } else {
        !has_token(hyper::header::CONNECTION, "close")
    };
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing {
            state: State::Length(0),
            reuse: keep,
        });
    }
    let te: Vec<&HeaderValue> = headers
        .get_all(hyper::header::TRANSFER_ENCODING)
        .iter()
        .collect();
    if !te.is_empty() {
        let last = te
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.rsplit(',').next())
            .map(|t| t.trim().eq_ignore_ascii_case("chunked"))
            .unwrap_or(false);
        if last && !http10 {
            let cl = headers.contains_key(hyper::header::CONTENT_LENGTH);
            return Ok(Framing {
                state: State::ChunkSize,
                reuse: keep && !cl,
            });
        }
        return Ok(Framing {
            state: State::Close,
            reuse: false,
        });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(hyper::header::CONTENT_LENGTH) {
        let s = v
            .to_str()
            .map_err(|_| H1Error::Malformed("content-length"))?;
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(H1Error::Malformed("content-length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| H1Error::Malformed("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Malformed("differing content-lengths"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => Framing {
            state: State::Length(n),
            reuse: keep,
        },
        None => Framing {
            state: State::Close,
            reuse: false,
        },
    })
}

/// Where a connection goes when its answer has ended cleanly.
pub type Home = Box<dyn FnOnce(Raw) + Send + Sync>;

/// An answer's body, read from the target's connection as it is polled.
pub struct RawBody {
    raw: Option<Raw>,
    framing: Framing,
    home: Option<Home>,
    /// Trailer fields after the last chunk, passed on after the data.
    trailers: Option<HeaderMap>,
}

impl RawBody {
    /// The body of an answer read by `raw`, going `home` when it ends cleanly.
    pub fn new(raw: Raw, framing: Framing, home: Home) -> RawBody {
        let mut b = RawBody {
            raw: Some(raw),
            framing,
            home: Some(home),
            trailers: None,
        };
        if b.framing.state == State::Length(0) {
            b.framing.state = State::Done;
            b.release();
        }
        b
    }

    /// Sends the connection home if the answer ended cleanly and nothing follows it.
    fn release(&mut self) {
        if self.framing.state != State::Done {
            return;
        }
        if let (Some(raw), Some(home)) = (self.raw.take(), self.home.take()) {
            if self.framing.reuse && raw.buf.is_empty() {
                home(raw);
            }
        }
    }

    /// The next `n` bytes read: small pieces copied (the read buffer stays unshared and is
    /// reused), large ones handed over without a copy.
    fn data(&mut self, n: usize) -> Bytes {
        let Some(r) = self.raw.as_mut() else {
            return Bytes::new();
        };
        if n <= COPY_BELOW {
            let d = Bytes::copy_from_slice(&r.buf[..n]);
            r.buf.advance(n);
            d
        } else {
            r.buf.split_to(n).freeze()
        }
    }
}

/// A trailer line's field (`name: value`); lines that are not one are passed over.
fn trailer_field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// Finds the end of a line (`\r\n`) in `b`.
fn line_end(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        loop {
            let Some(raw) = this.raw.as_mut() else {
                return Poll::Ready(None);
            };
            let have = raw.buf.len();
            match this.framing.state {
                State::Done | State::Length(0) => {
                    this.framing.state = State::Done;
                    this.release();
                    return Poll::Ready(None);
                }
                State::Length(left) if have > 0 => {
                    let k = (have as u64).min(left);
                    this.framing.state = State::Length(left - k);
                    let d = this.data(k as usize);
                    if this.framing.state == State::Length(0) {
                        this.framing.state = State::Done;
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                State::Close if have > 0 => {
                    let d = this.data(have);
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                State::ChunkData(left) if have > 0 => {
                    let k = (have as u64).min(left);
                    this.framing.state = if k == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - k)
                    };
                    let d = this.data(k as usize);
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                State::ChunkSize => {
                    if let Some(end) = line_end(&raw.buf[..have.min(MAX_CHUNK_LINE)]) {
                        let line = &raw.buf[..end];
                        let digits = line
                            .split(|&b| b == b';')
                            .next()
                            .unwrap_or_default()
                            .trim_ascii();
                        let size = std::str::from_utf8(digits)
                            .ok()
                            .filter(|s| {
                                !s.is_empty()
                                    && s.len() <= 15
                                    && s.bytes().all(|b| b.is_ascii_hexdigit())
                            })
                            .and_then(|s| u64::from_str_radix(s, 16).ok())
                            .ok_or(H1Error::Malformed("chunk size"))?;
                        raw.buf.advance(end + 2);
                        this.framing.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::ChunkData(size)
                        };
                        continue;
                    }
                    if have >= MAX_CHUNK_LINE {
                        return Poll::Ready(Some(Err(H1Error::Malformed("chunk size line"))));
                    }
                }
                State::ChunkEnd if have >= 2 => {
                    if &raw.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(H1Error::Malformed("chunk end"))));
                    }
                    raw.buf.advance(2);
                    this.framing.state = State::ChunkSize;
                    continue;
                }
                State::Trailers(seen) => {
                    if let Some(end) = line_end(&raw.buf) {
                        if end == 0 {
                            raw.buf.advance(2);
                            this.framing.state = State::Done;
                            this.release();
                            return match this.trailers.take() {
                                Some(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                                None => Poll::Ready(None),
                            };
                        }
                        let line = raw.buf.split_to(end);
                        raw.buf.advance(2);
                        if let Some((k, v)) = trailer_field(&line) {
                            this.trailers
                                .get_or_insert_with(HeaderMap::new)
                                .append(k, v);
                        }
                        this.framing.state = State::Trailers(seen + end + 2);
                        continue;
                    }
                    if seen + have > MAX_TRAILERS {
                        return Poll::Ready(Some(Err(H1Error::Malformed("trailers too large"))));
                    }
                }
                _ => {}
            }
            // More bytes are needed.
            match raw.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.raw = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(0)) => {
                    if this.framing.state == State::Close {
                        this.framing.reuse = false;
                        this.framing.state = State::Done;
                        this.raw = None;
                        return Poll::Ready(None);
                    }
                    this.raw = None;
                    return Poll::Ready(Some(Err(H1Error::Malformed(
                        "the target closed in the middle of its answer",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.state == State::Done || self.framing.state == State::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for RawBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// Header (or trailer) fields as they go on the wire, a `name: value` line each.
pub fn encode_fields(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (k, v) in headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The head of a request without a body, in origin form, as it goes on the wire.
pub fn encode_head(parts: &hyper::http::request::Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(&parts.headers, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    /// A target on loopback that answers with `answer` (raw bytes) to whatever comes, then
    /// stays open; returns a connection to it.
    async fn target(answer: &'static [u8]) -> Raw {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut b).await;
            s.write_all(answer).await.unwrap();
            // Then closes its side (answers framed by the close end there), and waits for
            // the client to close.
            let _ = s.shutdown().await;
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut b).await;
        });
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        Raw::new(Conn::Plain(s))
    }

    async fn exchange(answer: &'static [u8], head: bool) -> Result<(u16, Vec<u8>, bool), String> {
        let mut raw = target(answer).await;
        raw.send_head(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let (resp, framing) = raw.read_head(head).await.map_err(|e| e.to_string())?;
        let back = Arc::new(Mutex::new(false));
        let b2 = back.clone();
        let body = RawBody::new(raw, framing, Box::new(move |_| *b2.lock().unwrap() = true));
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let reused = *back.lock().unwrap();
        Ok((resp.status().as_u16(), bytes.to_vec(), reused))
    }

    #[tokio::test]
    async fn answers_are_framed_as_rfc_9112_says() {
        let ok = |r: Result<(u16, Vec<u8>, bool), String>| r.unwrap();
        assert_eq!(
            ok(exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false).await),
            (200, b"hello".to_vec(), true)
        );
        // Chunked, with an extension and trailers; interim answers passed over.
        assert_eq!(
            ok(exchange(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nt: 1\r\n\r\n",
                false
            )
            .await),
            (200, b"hello!".to_vec(), true)
        );
        // Trailers pass on after the data.
        let mut raw = target(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\ngrpc-status: 0\r\nbad line\r\n\r\n",
        )
        .await;
        raw.send_head(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (_, framing) = raw.read_head(false).await.unwrap();
        let got = RawBody::new(raw, framing, Box::new(|_| {}))
            .collect()
            .await
            .unwrap();
        assert_eq!(got.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(&got.to_bytes()[..], b"hi");
        // No body for HEAD, 204 and 304, whatever the length says.
        assert_eq!(
            ok(exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true).await),
            (200, vec![], true)
        );
        assert_eq!(
            ok(exchange(b"HTTP/1.1 204 No Content\r\n\r\n", false).await),
            (204, vec![], true)
        );
        // Until close: read to the end, never reused.
        assert_eq!(
            ok(exchange(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbye", false).await),
            (200, b"bye".to_vec(), false)
        );
        // Chunked beside a length: chunked wins, the connection is not reused.
        assert_eq!(
            ok(exchange(
                b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                false
            )
            .await),
            (200, b"hi".to_vec(), false)
        );
        // Connection: close is honoured.
        assert_eq!(
            ok(exchange(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
                false
            )
            .await),
            (200, b"hi".to_vec(), false)
        );
    }

    #[tokio::test]
    async fn malformed_answers_are_errors_never_wrong_bodies() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+2\r\nhi\r\n0\r\n\r\n",
            // Cut short: fewer bytes than the length says, or no last chunk.
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhiXX0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        ] {
            let leaked: &'static [u8] = Box::leak(bad.to_vec().into_boxed_slice());
            let r = exchange(leaked, false).await;
            assert!(r.is_err(), "{:?} gave {r:?}", String::from_utf8_lossy(bad));
        }
        // Many headers are read; more than the limit are refused.
        let many = |n: usize| -> &'static [u8] {
            let mut h = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
            for i in 1..n {
                h.push_str(&format!("x-{i}: {i}\r\n"));
            }
            h.push_str("\r\nhi");
            Box::leak(h.into_bytes().into_boxed_slice())
        };
        assert_eq!(exchange(many(MAX_HEADERS), false).await.unwrap().1, b"hi");
        assert!(exchange(many(MAX_HEADERS + 1), false).await.is_err());
        // A head larger than the limit is refused, not buffered without end.
        let huge: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert!(exchange(huge, false).await.is_err());
    }

    #[tokio::test]
    async fn a_target_that_closes_before_answering_is_told_apart() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw::new(Conn::Plain(s));
        // Wait until the close has arrived; then the connection is not reusable.
        let mut b = [0u8; 1];
        while s_peek(&raw, &mut b).await != 0 {}
        assert!(!raw.reusable());
        let _ = raw.send_head(b"GET / HTTP/1.1\r\n\r\n").await;
        let e = raw.read_head(false).await.unwrap_err();
        assert!(e.nothing_came_back(), "{e}");
    }

    async fn s_peek(raw: &Raw, b: &mut [u8]) -> usize {
        match &raw.io {
            Conn::Plain(s) => s.peek(b).await.unwrap_or(0),
            Conn::Tls(_) => 0,
        }
    }
}
