//! Bodies in and out: streaming request bodies into the store on a blocking thread while
//! verifying their checksums, and streaming stored bodies out.

use super::*;

/// Bodies up to this size are read whole on the lookup's thread and sent in one piece.
pub(super) const SMALL: u64 = 256 * 1024;

/// A body to send: whole, or read as it goes.
pub(super) enum SendBody {
    Whole(Bytes),
    Stream(Box<crate::store::BlobReader>),
}

/// What the async side sends the blocking writer.
pub(super) enum Piece {
    Data(Bytes),
    /// The body ended where it should: only then is the end of the channel an end of body.
    End,
}

/// A blocking reader over chunks sent from the async side. A channel closed without
/// [`Piece::End`] (the client went away, the request was dropped) is an error, never a
/// short body.
pub(super) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Piece>>,
    cur: Bytes,
    ended: bool,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Piece::Data(b))) => self.cur = b,
                Some(Ok(Piece::End)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                None => return Err(std::io::Error::other(StoreError::IncompleteBody)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// The `x-amz-checksum-*` algorithms S3 accepts.
pub(super) const CHECKSUMS: &[&str] = &["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// Verifies a body's `x-amz-checksum-*` values, from its headers or its trailer, as it is
/// read: a mismatch fails the read at the end, so nothing is committed.
pub(super) struct Verify<R> {
    inner: R,
    hasher: s3s::checksum::ChecksumHasher,
    headers: hyper::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
}

/// The hashers for the checksums a request names (none: bytes pass through unchecked).
pub(super) fn hasher_for(headers: &hyper::HeaderMap) -> S3Result<s3s::checksum::ChecksumHasher> {
    use s3s::crypto::Checksum as _;
    let trailer = headers
        .get("x-amz-trailer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let named = |alg: &str| {
        let h = format!("x-amz-checksum-{alg}");
        headers.contains_key(h.as_str()) || trailer.split(',').any(|t| t.trim() == h)
    };
    for (name, _) in headers.iter() {
        if let Some(alg) = name.as_str().strip_prefix("x-amz-checksum-") {
            if alg != "type" && alg != "algorithm" && !CHECKSUMS.contains(&alg) {
                return Err(s3_error!(
                    InvalidRequest,
                    "unknown checksum algorithm {alg}"
                ));
            }
        }
    }
    Ok(s3s::checksum::ChecksumHasher {
        crc32: named("crc32").then(s3s::crypto::Crc32::new),
        crc32c: named("crc32c").then(s3s::crypto::Crc32c::new),
        crc64nvme: named("crc64nvme").then(s3s::crypto::Crc64Nvme::new),
        sha1: named("sha1").then(s3s::crypto::Sha1::new),
        sha256: named("sha256").then(s3s::crypto::Sha256::new),
    })
}

impl<R> Verify<R> {
    /// Compares what was computed with what the client sent.
    fn finish(&mut self) -> Result<(), StoreError> {
        let got = std::mem::take(&mut self.hasher).finalize();
        let trailer: hyper::HeaderMap = self
            .trailers
            .as_ref()
            .and_then(|t| t.read(|h| h.clone()))
            .unwrap_or_default();
        for (alg, value) in [
            ("crc32", &got.checksum_crc32),
            ("crc32c", &got.checksum_crc32c),
            ("crc64nvme", &got.checksum_crc64nvme),
            ("sha1", &got.checksum_sha1),
            ("sha256", &got.checksum_sha256),
        ] {
            let Some(value) = value else { continue };
            let h = format!("x-amz-checksum-{alg}");
            let want = self
                .headers
                .get(h.as_str())
                .or_else(|| trailer.get(h.as_str()))
                .and_then(|v| v.to_str().ok());
            match want {
                Some(w) if w.trim() == value => {}
                Some(_) => return Err(StoreError::ChecksumMismatch(alg.to_ascii_uppercase())),
                None => {
                    return Err(StoreError::ChecksumMismatch(format!(
                        "{} (named by x-amz-trailer but not sent)",
                        alg.to_ascii_uppercase()
                    )))
                }
            }
        }
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish().map_err(std::io::Error::other)?;
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// [`stream_into`] through a [`Verify`] of the checksums the request names.
pub(super) async fn stream_verified<T: Send + 'static>(
    body: Option<StreamingBlob>,
    headers: hyper::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
    write: impl FnOnce(Verify<ChannelReader>) -> Result<T, StoreError> + Send + 'static,
) -> S3Result<T> {
    let hasher = hasher_for(&headers)?;
    stream_into(body, move |r| {
        write(Verify {
            inner: r,
            hasher,
            headers,
            trailers,
        })
    })
    .await
}

/// Streams `body` into `write` (run on a blocking thread with a reader of the body).
pub(super) async fn stream_into<T: Send + 'static>(
    body: Option<StreamingBlob>,
    write: impl FnOnce(ChannelReader) -> Result<T, StoreError> + Send + 'static,
) -> S3Result<T> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Piece>>(8);
    let writer = tokio::task::spawn_blocking(move || {
        write(ChannelReader {
            rx,
            cur: Bytes::new(),
            ended: false,
        })
    });
    let mut whole = true;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let item = chunk
                .map(Piece::Data)
                .map_err(|e| std::io::Error::other(e.to_string()));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                whole = false;
                break;
            }
        }
    }
    if whole {
        let _ = tx.send(Ok(Piece::End)).await;
    }
    drop(tx);
    writer
        .await
        .map_err(|e| s3_error!(InternalError, "{e}"))?
        .map_err(err)
}

/// A stored body read and opened a batch of chunks (up to 512 KiB) at a time as the
/// connection asks for it, on the connection's own thread: a page-cache read and AES-GCM
/// of a fraction of a millisecond, with no hand-off between threads; one batch in memory
/// at a time. Bodies larger than [`INLINE`] are read on a blocking thread instead
/// ([`stream_out`]), so that a long read from a cold disk holds up no other connection of
/// the thread for long.
pub(super) fn stream_inline(r: crate::store::BlobReader) -> StreamingBlob {
    let mut r = Some(r);
    StreamingBlob::wrap(futures::stream::iter(std::iter::from_fn(move || {
        match r.as_mut()?.next_bytes() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                r = None;
                None
            }
            Err(e) => {
                r = None;
                Some(Err(e))
            }
        }
    })))
}

/// Bodies up to this size stream from the connection's thread ([`stream_inline`]).
pub(super) const INLINE: u64 = 4 * 1024 * 1024;

/// A body read from the store on a blocking thread, up to 512 KiB at a time. One batch
/// waits while the connection sends another: the reader keeps ahead without a wakeup per
/// chunk, and a slow client holds at most three batches.
pub(super) fn stream_out(mut r: crate::store::BlobReader) -> StreamingBlob {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    tokio::task::spawn_blocking(move || loop {
        match r.next_bytes() {
            Ok(None) => break,
            Ok(Some(b)) => {
                if tx.blocking_send(Ok(b)).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                break;
            }
        }
    });
    StreamingBlob::wrap(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectStore, PutOptions};
    use futures::StreamExt;

    /// Readers streaming an object a chunk at a time on their own thread, while it is
    /// overwritten again and again, each get one whole version: the bytes of the version
    /// they opened, never a mix, never short.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_streams_racing_overwrites_each_return_one_whole_version() {
        let d = tempfile::tempdir().unwrap();
        let state = Arc::new(veeps_state::Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(veeps_kms::Kms::open(d.path(), state.clone()).unwrap());
        let s = Arc::new(ObjectStore::open(d.path(), state, kms).unwrap());
        s.create_bucket("race", "prod").unwrap();
        // Over several 64 KiB chunks and under the inline limit; every byte is the version.
        let len = 3 * 64 * 1024 + 777;
        let body = move |v: u8| vec![v; len];
        s.put("race", "k", &body(0)[..], PutOptions::default())
            .unwrap();
        let writer = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || {
                for v in 1..=60u8 {
                    s.put("race", "k", &body(v)[..], PutOptions::default())
                        .unwrap();
                }
            })
        };
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let last = writer.is_finished();
            let (meta, r) = s.open_read("race", "k", None).unwrap();
            assert_eq!(meta.size as usize, len);
            let mut stream = stream_inline(r);
            let mut got = Vec::with_capacity(len);
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.unwrap());
                // Let the writer run between chunks.
                tokio::task::yield_now().await;
            }
            assert_eq!(got.len(), len);
            let v = got[0];
            assert!(got.iter().all(|&b| b == v), "a mix of versions");
            seen.insert(v);
            if last {
                break;
            }
        }
        writer.await.unwrap();
        assert!(seen.len() >= 2, "the readers raced no overwrite: {seen:?}");
    }
}
