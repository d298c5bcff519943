//! The sealed blob format: a body in chunks of [`CHUNK`] bytes, each sealed with AES-256-GCM
//! under the object's own data key, with the version, the chunk's number and a last-chunk
//! flag in the associated data (so chunks cannot be reordered, moved between objects or
//! cut off); written to a synced temporary file renamed into place. The cipher is ring's
//! (AES-NI, VAES and carry-less multiply where the CPU has them), sealing and opening each
//! chunk in place in one buffer.

use super::*;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

pub(super) fn nonce(chunk: u64) -> [u8; 12] {
    // Each object has its own key, so a counter nonce is unique; the version is in the AAD.
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&chunk.to_be_bytes());
    n
}

/// The body cipher under a data key.
fn body_key(key: &[u8]) -> Result<LessSafeKey, StoreError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| StoreError::Internal("a data key of the wrong length".into()))
}

/// A body open for reading, with its cipher.
pub(super) struct OpenBlob {
    file: std::fs::File,
    cipher: LessSafeKey,
}

/// Most bodies [`OpenBlobs`] keeps open (it starts again empty when full), and never more
/// than a sixteenth of the open files the process may have.
const OPEN_MAX: usize = 256;

/// Bodies of single-part versions kept open with their unwrapped keys, by version: a hot
/// object's GET costs no `open(2)`, no key unwrap and no key schedule. A body never
/// changes once written (every write is a new version), so an entry is right while its
/// version exists. An entry is dropped when its body is removed (so the disk space is
/// freed), and all are when KMS drops a key (a destroyed key reads nothing more).
pub(super) struct OpenBlobs {
    open: Mutex<HashMap<String, (u64, Arc<OpenBlob>)>>,
    max: usize,
}

impl Default for OpenBlobs {
    fn default() -> OpenBlobs {
        let limit = match veeps_sys::proc::fd_limit() {
            0 => 1024,
            n => n,
        };
        OpenBlobs {
            open: Mutex::default(),
            max: ((limit / 16) as usize).min(OPEN_MAX),
        }
    }
}

impl OpenBlobs {
    fn get(&self, version: &str, kms_generation: u64) -> Option<Arc<OpenBlob>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get(version) {
            Some((g, b)) if *g == kms_generation => Some(b.clone()),
            Some(_) => {
                open.clear();
                None
            }
            None => None,
        }
    }

    fn put(&self, version: &str, kms_generation: u64, body: Arc<OpenBlob>) {
        if self.max == 0 {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.max {
            open.clear();
        }
        open.insert(version.to_string(), (kms_generation, body));
    }

    /// Closes `version`'s body, if open; called once the body is removed.
    pub(super) fn forget(&self, version: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(version);
    }

    /// How many bodies are open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub(super) fn aad(version: &str, chunk: u64, last: bool) -> Vec<u8> {
    // Binding the chunk number and the last flag stops reordering and truncation.
    format!("{version}:{chunk}:{}", last as u8).into_bytes()
}

impl ObjectStore {
    /// Encrypts `body` into `dest` (through a synced temporary file renamed into place)
    /// with a new data key of `env`; returns the wrapped key, the size and the MD5 (hex).
    pub(super) fn write_blob<R: Read>(
        &self,
        env: &str,
        name: &str,
        dest: &Path,
        mut body: R,
        max: u64,
    ) -> Result<(Vec<u8>, u64, String), StoreError> {
        let dk = self
            .kms
            .generate_data_key(env)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let cipher = body_key(&dk.plaintext)?;
        let tmp = self.dir.join("tmp").join(name);
        let guard = TempFile(Some(tmp.clone()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        let mut idx = 0u64;
        // Read a chunk ahead, so the last one is known as last.
        let mut filled = read_full(&mut body, &mut buf)?;
        loop {
            let mut next = vec![0u8; CHUNK];
            let next_filled = if filled == CHUNK {
                read_full(&mut body, &mut next)?
            } else {
                0
            };
            let last = next_filled == 0;
            let chunk = &mut buf[..filled];
            md5.update(&*chunk);
            size += filled as u64;
            if size > max {
                // Stop reading at the limit: the rest of the body is never stored.
                return Err(StoreError::EntityTooLarge);
            }
            let tag = cipher
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce(idx)),
                    Aad::from(aad(name, idx, last)),
                    chunk,
                )
                .map_err(|_| StoreError::Internal("sealing a body chunk failed".into()))?;
            out.write_all(chunk)?;
            out.write_all(tag.as_ref())?;
            if last {
                break;
            }
            idx += 1;
            buf = next;
            filled = next_filled;
        }
        let f = out
            .into_inner()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dest)?;
        guard.keep();
        if let Some(Ok(d)) = dest.parent().map(std::fs::File::open) {
            let _ = d.sync_all();
        }
        Ok((dk.wrapped, size, hex::encode(md5.finalize())))
    }

    /// A reader of `range` (inclusive) of a blob, decrypting chunk by chunk; `keep` keeps
    /// the body open for the next reader of the same version (see [`OpenBlobs`]). `path`
    /// is asked only when the body is not open already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn blob_reader(
        &self,
        env: &str,
        name: &str,
        path: &dyn Fn() -> PathBuf,
        wrapped: &[u8],
        size: u64,
        range: (u64, u64),
        keep: bool,
    ) -> Result<BlobReader, StoreError> {
        // Read before the key is unwrapped: a key dropped meanwhile outdates the entry.
        let generation = self.kms.generation();
        let cached = if keep {
            self.open_blobs.get(name, generation)
        } else {
            None
        };
        let body = match cached {
            Some(b) => b,
            None => {
                let key = self
                    .kms
                    .decrypt_data_key(env, wrapped)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                let cipher = body_key(&key)?;
                let path = path();
                let file = match std::fs::File::open(&path) {
                    // Removed after its record was read: a newer version took its place.
                    // (Once open, a body stays readable to the end, removed or not.)
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StoreError::Replaced)
                    }
                    f => f?,
                };
                let b = Arc::new(OpenBlob { file, cipher });
                if keep {
                    self.open_blobs.put(name, generation, b.clone());
                    // Removed meanwhile (its remover closed what was open before this):
                    // not kept.
                    if !path.exists() {
                        self.open_blobs.forget(name);
                    }
                }
                b
            }
        };
        let first = range.0 / CHUNK as u64;
        Ok(BlobReader {
            body,
            name: name.to_string(),
            size,
            next_chunk: first,
            pos: range.0,
            end: range.1,
            // Allocated by the first `read` (`next_bytes` needs none).
            buf: Vec::new(),
            plain: 0,
            buf_off: 0,
        })
    }
}

/// Most chunks [`BlobReader::next_bytes`] reads and opens at once (512 KiB of plaintext):
/// few system calls and hand-offs for a large body, and a bounded buffer per stream.
pub const BATCH: usize = 8;

/// Where sealed chunk `idx` starts in its blob (each body is read at offsets, so one open
/// file serves any number of readers).
fn sealed_at(idx: u64) -> u64 {
    idx * (CHUNK + TAG) as u64
}

/// Readers one after the other.
pub(super) struct Chain {
    pub(super) readers: Vec<BlobReader>,
    pub(super) at: usize,
}

impl Read for Chain {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at < self.readers.len() {
            let n = self.readers[self.at].read(out)?;
            if n > 0 {
                return Ok(n);
            }
            self.at += 1;
        }
        Ok(0)
    }
}

/// Reads a range of an encrypted blob, one chunk at a time.
pub struct BlobReader {
    body: Arc<OpenBlob>,
    name: String,
    size: u64,
    next_chunk: u64,
    /// Next plaintext offset to hand out.
    pub(super) pos: u64,
    /// Last plaintext offset to hand out (inclusive).
    end: u64,
    /// One sealed chunk, opened in place: its first `plain` bytes are the plaintext.
    buf: Vec<u8>,
    plain: usize,
    buf_off: usize,
}

impl BlobReader {
    /// How many chunks the body has.
    fn chunks(&self) -> u64 {
        self.size.div_ceil(CHUNK as u64)
    }

    /// The plaintext length of chunk `idx`.
    fn plain_len(&self, idx: u64) -> usize {
        if idx == self.chunks() - 1 {
            (self.size - idx * CHUNK as u64) as usize
        } else {
            CHUNK
        }
    }

    /// Opens sealed chunk `idx`, which starts `shift` bytes into `buf` and ends with it; its
    /// plaintext lands at the start of `buf`. Returns the plaintext's length.
    fn open(&self, idx: u64, buf: &mut [u8], shift: usize) -> std::io::Result<usize> {
        self.body
            .cipher
            .open_within(
                Nonce::assume_unique_for_key(nonce(idx)),
                Aad::from(aad(&self.name, idx, idx == self.chunks() - 1)),
                buf,
                shift..,
            )
            .map(|p| p.len())
            .map_err(|_| std::io::Error::other("a body chunk fails its integrity check"))
    }

    /// The rest of the range in one buffer. Each chunk is opened where it was read: one
    /// allocation for a body of one chunk, nothing zeroed to be written over.
    pub fn read_whole(&mut self) -> std::io::Result<bytes::Bytes> {
        let mut pieces = vec![];
        while let Some(b) = self.next_bytes()? {
            pieces.push(b);
        }
        Ok(match pieces.len() {
            0 => bytes::Bytes::new(),
            1 => pieces.swap_remove(0),
            _ => bytes::Bytes::from(pieces.concat()),
        })
    }

    /// The next piece of the range as its own buffer, without a copy (the stream of a GET
    /// sends these as they are): up to [`BATCH`] chunks read in one system call into memory
    /// not zeroed first, each opened so that its plaintext lands right after the one before
    /// (ring's `open_within` shifts it over the tags between), one contiguous piece.
    pub fn next_bytes(&mut self) -> std::io::Result<Option<bytes::Bytes>> {
        if self.pos > self.end || self.size == 0 {
            return Ok(None);
        }
        if self.buf_off < self.plain {
            // A piece left from `read`: hand out the rest of it.
            let mut v = vec![0u8; self.plain - self.buf_off];
            let n = self.read(&mut v)?;
            v.truncate(n);
            return Ok(Some(v.into()));
        }
        let first = self.next_chunk;
        let last = (self.end / CHUNK as u64)
            .min(self.chunks() - 1)
            .min(first + BATCH as u64 - 1);
        let sealed_len: usize = (first..=last).map(|i| self.plain_len(i) + TAG).sum();
        let mut buf = Vec::new();
        veeps_sys::file::read_exact_at_append(
            &self.body.file,
            &mut buf,
            sealed_len,
            sealed_at(first),
        )?;
        let (mut sealed_from, mut plain_to) = (0usize, 0usize);
        for idx in first..=last {
            let sealed_end = sealed_from + self.plain_len(idx) + TAG;
            let n = self.open(idx, &mut buf[plain_to..sealed_end], sealed_from - plain_to)?;
            sealed_from = sealed_end;
            plain_to += n;
        }
        buf.truncate(plain_to);
        self.next_chunk = last + 1;
        let from = (self.pos - first * CHUNK as u64) as usize;
        let take = (plain_to - from).min((self.end - self.pos + 1) as usize);
        self.pos += take as u64;
        Ok(Some(bytes::Bytes::from(buf).slice(from..from + take)))
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos > self.end || self.size == 0 {
            return Ok(0);
        }
        if self.buf_off >= self.plain {
            let idx = self.next_chunk;
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(self.plain_len(idx) + TAG, 0);
            self.body.file.read_exact_at(&mut buf, sealed_at(idx))?;
            let opened = self.open(idx, &mut buf, 0);
            self.buf = buf;
            self.plain = opened?;
            self.buf_off = (self.pos - idx * CHUNK as u64) as usize;
            self.next_chunk += 1;
        }
        let avail = (self.plain - self.buf_off).min((self.end - self.pos + 1) as usize);
        let n = avail.min(out.len());
        out[..n].copy_from_slice(&self.buf[self.buf_off..self.buf_off + n]);
        self.buf_off += n;
        self.pos += n as u64;
        Ok(n)
    }
}

pub(super) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blobs written before the cipher was ring's (RustCrypto's `aes-gcm`) read the same:
    /// one AES-256-GCM, one layout (ciphertext, then the 16-byte tag).
    #[test]
    fn the_sealed_layout_is_the_one_stored_before() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let key = [9u8; 32];
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let old = aes_gcm::Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce(3)),
                Payload {
                    msg: &plain,
                    aad: &aad("v1", 3, true),
                },
            )
            .unwrap();
        let k = body_key(&key).unwrap();
        let mut buf = plain.clone();
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(3)),
                Aad::from(aad("v1", 3, true)),
                &mut buf,
            )
            .unwrap();
        buf.extend_from_slice(tag.as_ref());
        assert_eq!(buf, old);
        let mut sealed = old.clone();
        let opened = k
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(3)),
                Aad::from(aad("v1", 3, true)),
                &mut sealed,
            )
            .unwrap();
        assert_eq!(opened, &plain[..]);
        // Any other chunk number or last flag fails.
        let mut sealed = old.clone();
        assert!(k
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(3)),
                Aad::from(aad("v1", 3, false)),
                &mut sealed,
            )
            .is_err());
    }
}
