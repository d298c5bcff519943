//! Images: Packer's job. A source directory is copied into a build directory, the build
//! commands run there in a sandbox (no network at all, an unprivileged user, a time
//! limit, output captured), and the files to keep become the image: content-addressed
//! (the same inputs give the same id and no rebuild), versioned per name, kept in the
//! data directory and read-only to instances.

use crate::sandbox::{self, Confine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use veeps_state::Store;

/// What to build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ImageSpec {
    /// The image's name (versions are kept per name).
    pub name: String,
    /// The source directory (absolute).
    pub source: PathBuf,
    /// Shell commands run in order in the build directory.
    #[serde(default)]
    pub build: Vec<String>,
    /// Paths (relative to the build directory) to keep; empty keeps everything.
    #[serde(default)]
    pub files: Vec<String>,
    /// The command that starts an instance, run in the image's directory.
    pub entrypoint: Vec<String>,
    /// Environment of builds and instances.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds the whole build may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    600
}

/// A built image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// `img-` and the first 16 hex digits of the inputs' SHA-256.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version among the images of that name (1, 2, ...).
    pub version: u32,
    /// The command that starts an instance.
    pub entrypoint: Vec<String>,
    /// Environment of instances.
    pub env: BTreeMap<String, String>,
    /// Bytes of its files.
    pub size: u64,
    /// When it was built (RFC 3339).
    pub created: String,
    /// The build's output.
    #[serde(default)]
    pub build_log: String,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The specification cannot be built.
    #[error("{0}")]
    Invalid(String),
    /// A build command failed or timed out; the log says why.
    #[error("image \"{name}\": {why}\n--- build log ---\n{log}")]
    Failed {
        /// The image's name.
        name: String,
        /// What went wrong.
        why: String,
        /// The build's output.
        log: String,
    },
    /// The disk or the store failed.
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}

const K_IMAGE: &str = "compute/image/";

/// The image store: `DATA/images/ID/` plus records in the state store.
pub struct Images {
    dir: PathBuf,
    store: Arc<Store>,
    lock: tokio::sync::Mutex<()>,
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let ft = e.file_type()?;
        out.push(r.clone());
        if ft.is_dir() {
            walk(root, &r, out)?;
        }
    }
    Ok(())
}

/// The id of a specification: a hash of every input (source files with their modes,
/// commands, kept files, entrypoint, environment).
pub fn image_id(spec: &ImageSpec) -> Result<String, BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Sha256::new();
    let mut files = vec![];
    walk(&spec.source, Path::new(""), &mut files).map_err(|e| {
        BuildError::Invalid(format!(
            "source {}: {e} (give an existing directory)",
            spec.source.display()
        ))
    })?;
    for rel in files {
        let p = spec.source.join(&rel);
        let md = std::fs::symlink_metadata(&p)?;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(md.permissions().mode().to_le_bytes());
        if md.file_type().is_symlink() {
            h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
        } else if md.is_file() {
            let mut f = std::fs::File::open(&p)?;
            let mut hf = Sha256::new();
            std::io::copy(&mut f, &mut hf)?;
            h.update(hf.finalize());
        }
    }
    let rest = serde_json::json!([spec.build, spec.files, spec.entrypoint, spec.env]);
    h.update(rest.to_string().as_bytes());
    Ok(format!("img-{}", &hex::encode(h.finalize())[..16]))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    let md = std::fs::symlink_metadata(from)?;
    if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        return Ok(0);
    }
    if md.is_dir() {
        std::fs::create_dir_all(to)?;
        let mut n = 0;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            n += copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        return Ok(n);
    }
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::copy(from, to)
}

/// Makes a tree read-only for everyone but root: directories 0755, files 0644 or 0755.
fn seal(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::symlink_metadata(p)?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    if md.is_dir() {
        for e in std::fs::read_dir(p)? {
            seal(&e?.path())?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    } else {
        let exec = md.permissions().mode() & 0o111 != 0;
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(p, Some(0), Some(0))?;
    }
    Ok(())
}

fn check_rel(p: &str) -> Result<(), BuildError> {
    let path = Path::new(p);
    if p.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(BuildError::Invalid(format!(
            "files: \"{p}\" must be a relative path inside the build directory"
        )));
    }
    Ok(())
}

impl Images {
    /// The store under `data_dir/images`.
    pub fn open(data_dir: &Path, store: Arc<Store>) -> std::io::Result<Images> {
        let dir = data_dir.join("images");
        std::fs::create_dir_all(&dir)?;
        Ok(Images {
            dir,
            store,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory of a built image.
    pub fn root(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("root")
    }

    /// A built image by id, if its files are present.
    pub fn get(&self, id: &str) -> Option<Image> {
        let img: Image = self
            .store
            .kv_get(&format!("{K_IMAGE}{id}"))
            .ok()
            .flatten()?;
        self.root(id).is_dir().then_some(img)
    }

    /// Every built image, by name then version.
    pub fn list(&self) -> Vec<Image> {
        let mut all: Vec<Image> = self
            .store
            .kv_scan::<Image>(K_IMAGE)
            .map(|v| v.into_iter().map(|(_, i)| i).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
        all
    }

    /// Builds `spec` unless an image with the same inputs exists; returns it. A failed
    /// build leaves nothing behind and returns its log.
    pub async fn build(&self, spec: &ImageSpec) -> Result<Image, BuildError> {
        if spec.entrypoint.is_empty() {
            return Err(BuildError::Invalid(
                "entrypoint: give the command that starts an instance".into(),
            ));
        }
        for f in &spec.files {
            check_rel(f)?;
        }
        if !spec.source.is_absolute() {
            return Err(BuildError::Invalid(format!(
                "source \"{}\" must be an absolute path",
                spec.source.display()
            )));
        }
        let spec2 = spec.clone();
        let id = tokio::task::spawn_blocking(move || image_id(&spec2))
            .await
            .map_err(|e| BuildError::Invalid(e.to_string()))??;
        let _g = self.lock.lock().await;
        if let Some(img) = self.get(&id) {
            return Ok(img);
        }
        // Builds run as the unprivileged user, so they work in a scratch directory it can
        // reach (the data directory is root's alone).
        let work = tempfile::Builder::new().prefix("veeps-build-").tempdir()?;
        self.build_in(spec, &id, work.path()).await
    }

    async fn build_in(&self, spec: &ImageSpec, id: &str, work: &Path) -> Result<Image, BuildError> {
        let src = work.join("src");
        {
            let (s, d) = (spec.source.clone(), src.clone());
            tokio::task::spawn_blocking(move || copy_tree(&s, &d))
                .await
                .map_err(|e| BuildError::Invalid(e.to_string()))??;
        }
        let ids = sandbox::unprivileged();
        if let Some(ids) = ids {
            sandbox::chown_tree(work, ids)?;
        }
        let mut log = String::new();
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_secs(spec.timeout_secs.max(1));
        let fail = |why: String, log: &str| BuildError::Failed {
            name: spec.name.clone(),
            why,
            log: log.to_string(),
        };
        for step in &spec.build {
            log.push_str(&format!("$ {step}\n"));
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-c", step])
                .current_dir(&src)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", work)
                .envs(&spec.env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let root = ids.is_some();
            sandbox::confine(
                &mut cmd,
                &Confine {
                    new_netns: root,
                    ids,
                    ..Default::default()
                },
            )?;
            let mut child = cmd
                .spawn()
                .map_err(|e| fail(format!("cannot run sh: {e}"), &log))?;
            let pid = child.id().unwrap_or(0);
            let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
            let collect = async {
                let (mut a, mut b) = (vec![], vec![]);
                let ra = async {
                    if let Some(o) = out.as_mut() {
                        let _ = o.read_to_end(&mut a).await;
                    }
                };
                let rb = async {
                    if let Some(e) = err.as_mut() {
                        let _ = e.read_to_end(&mut b).await;
                    }
                };
                tokio::join!(ra, rb);
                let status = child.wait().await;
                (a, b, status)
            };
            match tokio::time::timeout_at(deadline, collect).await {
                Ok((a, b, status)) => {
                    log.push_str(&String::from_utf8_lossy(&a));
                    log.push_str(&String::from_utf8_lossy(&b));
                    match status {
                        Ok(s) if s.success() => {}
                        Ok(s) => {
                            return Err(fail(format!("build step `{step}` failed ({s})"), &log))
                        }
                        Err(e) => return Err(fail(format!("build step `{step}`: {e}"), &log)),
                    }
                }
                Err(_) => {
                    sandbox::signal_group(pid, libc::SIGKILL);
                    return Err(fail(
                        format!(
                            "the build took longer than {} s and was stopped",
                            spec.timeout_secs
                        ),
                        &log,
                    ));
                }
            }
        }
        // Keep the files asked for (or everything).
        let staged = self.dir.join(format!(".staged-{id}"));
        let _ = std::fs::remove_dir_all(&staged);
        let size = if spec.files.is_empty() {
            copy_tree(&src, &staged)?
        } else {
            let mut n = 0;
            for f in &spec.files {
                let from = src.join(f);
                if std::fs::symlink_metadata(&from).is_err() {
                    return Err(fail(format!("files: the build made no \"{f}\""), &log));
                }
                n += copy_tree(&from, &staged.join(f))?;
            }
            n
        };
        seal(&staged)?;
        let final_dir = self.dir.join(id);
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::create_dir_all(&final_dir)?;
        std::fs::rename(&staged, final_dir.join("root"))?;
        let version = self
            .list()
            .iter()
            .filter(|i| i.name == spec.name)
            .map(|i| i.version)
            .max()
            .unwrap_or(0)
            + 1;
        let img = Image {
            id: id.to_string(),
            name: spec.name.clone(),
            version,
            entrypoint: spec.entrypoint.clone(),
            env: spec.env.clone(),
            size,
            created: veeps_state::now(),
            build_log: log,
        };
        self.store
            .kv_put(&format!("{K_IMAGE}{id}"), &img)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(image = %id, name = %spec.name, version, "built an image");
        Ok(img)
    }

    /// Deletes an image's files and record.
    pub fn delete(&self, id: &str) -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(self.dir.join(id));
        self.store
            .kv_delete(&format!("{K_IMAGE}{id}"))
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
