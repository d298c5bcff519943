//! Keys, as AWS KMS does them on one machine.
//!
//! A 256-bit root key lives in the data directory (`root.key`, mode 0600). Each environment
//! gets its own AES-256-GCM master key the first time it is needed, stored in the state
//! store wrapped by the root key. Other parts encrypt small secrets directly with an
//! environment's key, or ask for a data key (envelope encryption): a fresh key to encrypt
//! bulk data with, plus the same key wrapped by the environment's master key to store beside
//! the data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use veeps_state::Store;

const MAGIC: &[u8; 2] = b"v1";
/// Ciphertexts of a rotated key: the magic, then the key version (u32, big-endian).
const MAGIC_VERSIONED: &[u8; 2] = b"v2";

/// The prefix of an encrypted configuration value.
pub const KMSCRYPT: &str = "kmscrypt::";

/// True if `s` is an encrypted configuration value.
pub fn is_kmscrypt(s: &str) -> bool {
    s.starts_with(KMSCRYPT)
}

fn value_context(env: &str) -> String {
    format!("kmscrypt value of {env}")
}

/// The prefix of an exported environment key.
pub const EXPORTED: &str = "veeps-key::";

fn export_context(env: &str) -> String {
    format!("veeps exported environment key {env}")
}

fn check_passphrase(p: &str) -> Result<(), KmsError> {
    if p.chars().count() < 12 {
        return Err(KmsError::Invalid(
            "a passphrase has at least 12 characters".into(),
        ));
    }
    Ok(())
}

/// The key a passphrase gives (Argon2id with its default costs: 19 MiB, 2 passes).
fn passphrase_key(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], KmsError> {
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| KmsError::Invalid(format!("deriving a key from the passphrase: {e}")))?;
    Ok(out)
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The root key file could not be read or written.
    #[error("root key {path}: {err}")]
    RootKey {
        /// Its path.
        path: String,
        /// Why.
        err: String,
    },
    /// Decryption failed: wrong key, wrong context, or tampered data.
    #[error(
        "decryption failed: the data was not encrypted with this key and context, or was altered"
    )]
    Decrypt,
    /// The state store failed.
    #[error(transparent)]
    State(#[from] veeps_state::StateError),
    /// The request cannot be carried out as given; the message says why.
    #[error("{0}")]
    Invalid(String),
}

/// A data key: use `plaintext` to encrypt, store `wrapped` beside the data, forget `plaintext`.
pub struct DataKey {
    /// The key itself.
    pub plaintext: [u8; 32],
    /// The key encrypted with the environment's master key.
    pub wrapped: Vec<u8>,
}

/// Key management for one data directory.
pub struct Kms {
    root: [u8; 32],
    store: Arc<Store>,
    /// Keys by environment and version.
    cache: Mutex<HashMap<(String, u32), [u8; 32]>>,
    /// Current versions by environment.
    current: Mutex<HashMap<String, u32>>,
    /// One rotation at a time.
    rotating: Mutex<()>,
    /// See [`Kms::generation`].
    generation: std::sync::atomic::AtomicU64,
}

/// An environment key's versions (`veeps kms describe`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct KeyVersions {
    /// The version new ciphertexts use.
    pub current: u32,
    /// When each rotation after the first version happened (unix seconds), oldest first.
    pub rotated: Vec<i64>,
}

fn blob_name(env: &str, version: u32) -> String {
    match version {
        0 => format!("env/{env}"),
        v => format!("env/{env}@{v}"),
    }
}

fn blob_aad(env: &str, version: u32) -> String {
    match version {
        0 => format!("veeps environment key {env}"),
        v => format!("veeps environment key {env} version {v}"),
    }
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kms")
    }
}

/// Encrypts `plaintext` with `key`, binding it to `aad`.
pub fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of in-memory data");
    let mut out = Vec::with_capacity(2 + 12 + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// [`seal`] for version `version` (> 0) of a rotated key: the version travels in the
/// header, so that every version ever used still decrypts.
fn seal_versioned(key: &[u8; 32], version: u32, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = seal(key, plaintext, aad);
    out[..2].copy_from_slice(MAGIC_VERSIONED);
    out.splice(2..2, version.to_be_bytes());
    out
}

/// The key version a ciphertext of an environment key names, and the ciphertext as
/// [`open`] reads it.
fn split_version(sealed: &[u8]) -> Result<(u32, std::borrow::Cow<'_, [u8]>), KmsError> {
    match sealed.get(..2) {
        Some(m) if m == MAGIC => Ok((0, std::borrow::Cow::Borrowed(sealed))),
        Some(m) if m == MAGIC_VERSIONED && sealed.len() > 6 => {
            let v = u32::from_be_bytes([sealed[2], sealed[3], sealed[4], sealed[5]]);
            let mut plain = MAGIC.to_vec();
            plain.extend_from_slice(&sealed[6..]);
            Ok((v, std::borrow::Cow::Owned(plain)))
        }
        _ => Err(KmsError::Decrypt),
    }
}

/// Decrypts what [`seal`] produced.
pub fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
    if sealed.len() < 2 + 12 + 16 || &sealed[..2] != MAGIC {
        return Err(KmsError::Decrypt);
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(&sealed[2..14]),
            Payload {
                msg: &sealed[14..],
                aad,
            },
        )
        .map_err(|_| KmsError::Decrypt)
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

fn key_from(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl Kms {
    /// Opens key management for `data_dir`, creating the root key on first use.
    pub fn open(data_dir: &Path, store: Arc<Store>) -> Result<Kms, KmsError> {
        let path = data_dir.join("root.key");
        let err = |e: std::io::Error| KmsError::RootKey {
            path: path.display().to_string(),
            err: e.to_string(),
        };
        let root = match std::fs::read(&path) {
            Ok(b) => key_from(&b).ok_or_else(|| KmsError::RootKey {
                path: path.display().to_string(),
                err: format!("expected 32 bytes, found {}", b.len()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new root key would silently orphan every key the state holds.
                let wrapped = store.key_blob_count()?;
                if wrapped > 0 {
                    return Err(KmsError::RootKey {
                        path: path.display().to_string(),
                        err: format!(
                            "the file is missing, but the state holds {wrapped} key(s) wrapped by it; restore root.key from your backup (without it nothing encrypted can be read), or start with an empty data directory"
                        ),
                    });
                }
                let k = random_key();
                write_private(&path, &k).map_err(err)?;
                tracing::info!(path = %path.display(), "generated root key");
                k
            }
            Err(e) => return Err(err(e)),
        };
        Ok(Kms {
            root,
            store,
            cache: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            rotating: Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Moves whenever a cached key is dropped (destroyed or replaced): whoever caches what
    /// was unwrapped with the keys drops it when this moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `env`'s key versions (version 0 only until it is rotated).
    pub fn versions(&self, env: &str) -> Result<KeyVersions, KmsError> {
        Ok(self
            .store
            .kv_get::<KeyVersions>(&format!("kms/versions/{env}"))?
            .unwrap_or(KeyVersions {
                current: 0,
                rotated: vec![],
            }))
    }

    fn current_version(&self, env: &str) -> Result<u32, KmsError> {
        if let Some(v) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
        {
            return Ok(*v);
        }
        let v = self.versions(env)?.current;
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_string(), v);
        Ok(v)
    }

    /// Version `version` of `env`'s key; version 0 is made on first use, later ones by
    /// [`Kms::rotate`].
    fn key_version(&self, env: &str, version: u32) -> Result<[u8; 32], KmsError> {
        if let Some(k) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(env.to_string(), version))
        {
            return Ok(*k);
        }
        let (name, aad) = (blob_name(env, version), blob_aad(env, version));
        let blob = match self.store.key_blob(&name)? {
            Some(b) => b,
            None if version == 0 => {
                let wrapped = seal(&self.root, &random_key(), aad.as_bytes());
                let stored = self.store.put_key_blob_if_absent(&name, &wrapped)?;
                tracing::info!(env, "created environment master key");
                stored
            }
            None => return Err(KmsError::Decrypt),
        };
        let k = key_from(&open(&self.root, &blob, aad.as_bytes())?).ok_or(KmsError::Decrypt)?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((env.to_string(), version), k);
        Ok(k)
    }

    /// The current version of `env`'s key.
    fn env_key(&self, env: &str) -> Result<(u32, [u8; 32]), KmsError> {
        let v = self.current_version(env)?;
        Ok((v, self.key_version(env, v)?))
    }

    fn seal_env(&self, env: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        Ok(match self.env_key(env)? {
            (0, k) => seal(&k, plaintext, aad),
            (v, k) => seal_versioned(&k, v, plaintext, aad),
        })
    }

    fn open_env(&self, env: &str, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        let (v, body) = split_version(sealed)?;
        open(&self.key_version(env, v)?, &body, aad)
    }

    /// Makes a new version of `env`'s key current: what is encrypted from now on uses it;
    /// every earlier version still decrypts. Returns the new version.
    pub fn rotate(&self, env: &str) -> Result<u32, KmsError> {
        let _g = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        self.key_version(env, 0)?;
        let mut vs = self.versions(env)?;
        let next = vs.current + 1;
        let wrapped = seal(&self.root, &random_key(), blob_aad(env, next).as_bytes());
        self.store
            .put_key_blob_if_absent(&blob_name(env, next), &wrapped)?;
        vs.current = next;
        vs.rotated
            .push(time::OffsetDateTime::now_utc().unix_timestamp());
        self.store.kv_put(&format!("kms/versions/{env}"), &vs)?;
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_string(), next);
        tracing::info!(env, version = next, "rotated the environment key");
        Ok(next)
    }

    /// Drops what is cached of `env`'s key (read again from the store when next used).
    fn forget(&self, env: &str) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(e, _), _| e != env);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(env);
    }

    /// Destroys every version of `env`'s key: nothing it encrypted can be read again.
    pub fn destroy(&self, env: &str) -> Result<usize, KmsError> {
        let _g = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let (v0, later) = (blob_name(env, 0), format!("{}@", blob_name(env, 0)));
        let n = self
            .store
            .delete_key_blobs(|k| k == v0 || k.starts_with(&later))?;
        self.store.kv_delete(&format!("kms/versions/{env}"))?;
        self.forget(env);
        tracing::warn!(env, "destroyed the environment key");
        Ok(n)
    }

    /// Makes sure `env` has a master key.
    pub fn ensure_env_key(&self, env: &str) -> Result<(), KmsError> {
        self.key_version(env, 0).map(|_| ())
    }

    /// Encrypts a small secret with `env`'s master key, bound to `context`.
    pub fn encrypt(&self, env: &str, plaintext: &[u8], context: &str) -> Result<Vec<u8>, KmsError> {
        self.seal_env(env, plaintext, context.as_bytes())
    }

    /// Decrypts what [`Kms::encrypt`] produced with the same environment and context.
    pub fn decrypt(
        &self,
        env: &str,
        ciphertext: &[u8],
        context: &str,
    ) -> Result<Vec<u8>, KmsError> {
        self.open_env(env, ciphertext, context.as_bytes())
    }

    /// Encrypts a secret for configuration files: `kmscrypt::...`, decryptable only with
    /// `env`'s key (and only for `env`), so it can be committed.
    pub fn encrypt_value(&self, env: &str, plaintext: &str) -> Result<String, KmsError> {
        use base64::Engine as _;
        let sealed = self.encrypt(env, plaintext.as_bytes(), &value_context(env))?;
        Ok(format!(
            "{KMSCRYPT}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// Decrypts a `kmscrypt::` value of `env`.
    pub fn decrypt_value(&self, env: &str, value: &str) -> Result<String, KmsError> {
        use base64::Engine as _;
        let b64 = value.strip_prefix(KMSCRYPT).ok_or(KmsError::Decrypt)?;
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64.trim())
            .map_err(|_| KmsError::Decrypt)?;
        let plain = self.decrypt(env, &sealed, &value_context(env))?;
        String::from_utf8(plain).map_err(|_| KmsError::Decrypt)
    }

    /// `env`'s master key, sealed with `passphrase` (Argon2id, then AES-256-GCM bound to the
    /// environment's name), to carry to another machine so that `kmscrypt::` values
    /// committed for `env` open there too.
    pub fn export_env_key(&self, env: &str, passphrase: &str) -> Result<String, KmsError> {
        use base64::Engine as _;
        check_passphrase(passphrase)?;
        // Every version, oldest first: what any of them encrypted opens there too.
        let current = self.current_version(env)?;
        let mut key = Vec::with_capacity(32 * (current as usize + 1));
        for v in 0..=current {
            key.extend_from_slice(&self.key_version(env, v)?);
        }
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = passphrase_key(passphrase, &salt)?;
        let mut blob = salt.to_vec();
        blob.extend(seal(&kek, &key, export_context(env).as_bytes()));
        Ok(format!(
            "{EXPORTED}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Makes an exported key `env`'s master key here. Only before `env` has a key of its
    /// own: one in use already protects what it encrypted, and replacing it would lose that.
    pub fn import_env_key(
        &self,
        env: &str,
        exported: &str,
        passphrase: &str,
    ) -> Result<(), KmsError> {
        use base64::Engine as _;
        let blob = exported
            .trim()
            .strip_prefix(EXPORTED)
            .and_then(|b| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(b)
                    .ok()
            })
            .filter(|b| b.len() > 16)
            .ok_or_else(|| KmsError::Invalid("not an exported veeps key".into()))?;
        let kek = passphrase_key(passphrase, &blob[..16])?;
        let key = open(&kek, &blob[16..], export_context(env).as_bytes()).map_err(|_| {
            KmsError::Invalid(format!(
                "the passphrase is wrong, or the key was exported for another environment than {env}"
            ))
        })?;
        if key.is_empty() || key.len() % 32 != 0 {
            return Err(KmsError::Decrypt);
        }
        let versions: Vec<[u8; 32]> = key.chunks(32).filter_map(key_from).collect();
        let _g = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        // Version 0 decides: the same key may be imported again (with later versions), a
        // different one never replaces what protects data here.
        let (name, aad) = (blob_name(env, 0), blob_aad(env, 0));
        let wrapped = seal(&self.root, &versions[0], aad.as_bytes());
        let stored = self.store.put_key_blob_if_absent(&name, &wrapped)?;
        if stored != wrapped {
            let current = key_from(&open(&self.root, &stored, aad.as_bytes())?);
            if current != Some(versions[0]) {
                return Err(KmsError::Invalid(format!(
                    "environment {env} has a key of its own already (it protects what it encrypted); import a key before the environment's first use"
                )));
            }
        }
        for (v, k) in versions.iter().enumerate().skip(1) {
            let v = v as u32;
            let wrapped = seal(&self.root, k, blob_aad(env, v).as_bytes());
            self.store
                .put_key_blob_if_absent(&blob_name(env, v), &wrapped)?;
        }
        let mut vs = self.versions(env)?;
        let last = versions.len() as u32 - 1;
        if last > vs.current {
            vs.current = last;
            self.store.kv_put(&format!("kms/versions/{env}"), &vs)?;
        }
        self.forget(env);
        Ok(())
    }

    /// A fresh data key for `env` (envelope encryption).
    pub fn generate_data_key(&self, env: &str) -> Result<DataKey, KmsError> {
        let plaintext = random_key();
        let wrapped = self.seal_env(env, &plaintext, b"veeps data key")?;
        Ok(DataKey { plaintext, wrapped })
    }

    /// Unwraps a data key of `env`.
    pub fn decrypt_data_key(&self, env: &str, wrapped: &[u8]) -> Result<[u8; 32], KmsError> {
        key_from(&self.open_env(env, wrapped, b"veeps data key")?).ok_or(KmsError::Decrypt)
    }
}

/// The environment whose key seals veeps' own secrets that belong to no environment (ACME
/// account keys); no user environment can take the name.
pub const SYSTEM_ENV: &str = "system";

/// Writes `bytes` to a new file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is.
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        dir.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_root_key_is_refused_when_state_holds_wrapped_keys() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        {
            let k = Kms::open(d.path(), store.clone()).unwrap();
            k.ensure_env_key("prod").unwrap();
        }
        std::fs::remove_file(d.path().join("root.key")).unwrap();
        let e = Kms::open(d.path(), store.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("restore root.key") && e.contains("1 key"), "{e}");
        assert!(!d.path().join("root.key").exists());
    }

    #[test]
    fn rotated_keys_encrypt_with_the_new_version_and_every_version_decrypts() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Kms::open(d.path(), store.clone()).unwrap();
        let v0 = kms.encrypt_value("prod", "before").unwrap();
        let dk0 = kms.generate_data_key("prod").unwrap();
        assert_eq!(kms.rotate("prod").unwrap(), 1);
        let v1 = kms.encrypt_value("prod", "after").unwrap();
        assert_eq!(kms.rotate("prod").unwrap(), 2);
        let ct2 = kms.encrypt("prod", b"latest", "c").unwrap();
        assert_eq!(&ct2[..2], b"v2");
        assert_eq!(u32::from_be_bytes([ct2[2], ct2[3], ct2[4], ct2[5]]), 2);
        // A new service over the same store (a restart) reads every version.
        let kms = Kms::open(d.path(), store.clone()).unwrap();
        assert_eq!(kms.decrypt_value("prod", &v0).unwrap(), "before");
        assert_eq!(kms.decrypt_value("prod", &v1).unwrap(), "after");
        assert_eq!(kms.decrypt("prod", &ct2, "c").unwrap(), b"latest");
        assert_eq!(
            kms.decrypt_data_key("prod", &dk0.wrapped).unwrap(),
            dk0.plaintext
        );
        let vs = kms.versions("prod").unwrap();
        assert_eq!((vs.current, vs.rotated.len()), (2, 2));
        // A changed version number in the header does not open with another version.
        let mut forged = ct2.clone();
        forged[5] = 1;
        assert!(kms.decrypt("prod", &forged, "c").is_err());
        // Exported with every version, imported elsewhere: all of them open there.
        let exported = kms.export_env_key("prod", "a long passphrase").unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let store2 = Arc::new(Store::open(&d2.path().join("s.redb")).unwrap());
        let other = Kms::open(d2.path(), store2).unwrap();
        other
            .import_env_key("prod", &exported, "a long passphrase")
            .unwrap();
        assert_eq!(other.decrypt_value("prod", &v0).unwrap(), "before");
        assert_eq!(other.decrypt("prod", &ct2, "c").unwrap(), b"latest");
        assert_eq!(other.versions("prod").unwrap().current, 2);
        // Destroyed: nothing opens; the name of a longer environment is untouched.
        kms.encrypt("prod2", b"x", "c").unwrap();
        kms.destroy("prod").unwrap();
        let kms = Kms::open(d.path(), store).unwrap();
        assert!(kms.decrypt_value("prod", &v0).is_err());
        assert!(kms.decrypt("prod", &ct2, "c").is_err());
        let ct = kms.encrypt("prod2", b"y", "c").unwrap();
        assert_eq!(kms.decrypt("prod2", &ct, "c").unwrap(), b"y");
    }

    #[test]
    fn env_keys_and_envelopes() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Kms::open(d.path(), store.clone()).unwrap();
        let mode = std::fs::metadata(d.path().join("root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ct = kms.encrypt("stage", b"secret", "ctx").unwrap();
        assert_eq!(kms.decrypt("stage", &ct, "ctx").unwrap(), b"secret");
        assert!(kms.decrypt("stage", &ct, "other").is_err());
        assert!(
            kms.decrypt("prod", &ct, "ctx").is_err(),
            "each environment has its own key"
        );
        let dk = kms.generate_data_key("stage").unwrap();
        assert_eq!(
            kms.decrypt_data_key("stage", &dk.wrapped).unwrap(),
            dk.plaintext
        );
        // A new instance over the same directory reads the same keys.
        drop(kms);
        let kms2 = Kms::open(d.path(), store).unwrap();
        assert_eq!(kms2.decrypt("stage", &ct, "ctx").unwrap(), b"secret");
    }
}

#[cfg(test)]
mod value_tests {
    use super::*;

    #[test]
    fn kmscrypt_values_round_trip_and_stay_in_their_environment() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("state.redb")).unwrap());
        let kms = Kms::open(d.path(), store).unwrap();
        let v = kms.encrypt_value("prod", "hunter2-long-secret").unwrap();
        assert!(is_kmscrypt(&v) && !v.contains("hunter2"));
        assert_eq!(
            kms.decrypt_value("prod", &v).unwrap(),
            "hunter2-long-secret"
        );
        // Another environment's key, a changed byte, or no prefix: refused.
        assert!(kms.decrypt_value("stage", &v).is_err());
        let mut bad = v.clone().into_bytes();
        let i = bad.len() - 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert!(kms
            .decrypt_value("prod", &String::from_utf8(bad).unwrap())
            .is_err());
        assert!(kms.decrypt_value("prod", "hunter2").is_err());
        // The key travels: exported with a passphrase, imported elsewhere, it opens the
        // same values; a wrong passphrase, another environment, or a machine where the
        // environment has a key of its own already, refuse it.
        let blob = kms.export_env_key("prod", "correct horse battery").unwrap();
        assert!(kms.export_env_key("prod", "short").is_err());
        let d2 = tempfile::tempdir().unwrap();
        let other = Kms::open(
            d2.path(),
            Arc::new(Store::open(&d2.path().join("state.redb")).unwrap()),
        )
        .unwrap();
        assert!(other
            .import_env_key("prod", &blob, "wrong horse battery")
            .is_err());
        assert!(other
            .import_env_key("stage", &blob, "correct horse battery")
            .is_err());
        other
            .import_env_key("prod", &blob, "correct horse battery")
            .unwrap();
        assert_eq!(
            other.decrypt_value("prod", &v).unwrap(),
            "hunter2-long-secret"
        );
        other
            .import_env_key("prod", &blob, "correct horse battery")
            .unwrap();
        other.ensure_env_key("stage").unwrap();
        let stage = kms
            .export_env_key("stage", "correct horse battery")
            .unwrap();
        let e = other
            .import_env_key("stage", &stage, "correct horse battery")
            .unwrap_err();
        assert!(e.to_string().contains("has a key of its own"), "{e}");
        // Each encryption differs (fresh nonce).
        assert_ne!(
            kms.encrypt_value("prod", "x").unwrap(),
            kms.encrypt_value("prod", "x").unwrap()
        );
    }
}
