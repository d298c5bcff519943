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
    /// Where builds get their cgroup (the flavor and the host-wide name prefix).
    cgroups: Option<(crate::cgroup::Flavor, String)>,
}

/// The limits every build runs under: what a build of an app may reasonably need, so a
/// runaway one cannot take the host.
pub const BUILD_LIMITS: crate::cgroup::Limits = crate::cgroup::Limits {
    cpu: 2.0,
    memory: 2 << 30,
    pids: 1024,
};

/// Bytes of build output kept in an image's log (the end of it; what came before is
/// counted and cut).
pub const MAX_BUILD_LOG: usize = 256 * 1024;

/// A build log that keeps its last [`MAX_BUILD_LOG`] bytes.
#[derive(Default)]
struct BuildLog {
    buf: std::collections::VecDeque<u8>,
    cut: u64,
}

impl BuildLog {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        let over = self.buf.len().saturating_sub(MAX_BUILD_LOG);
        if over > 0 {
            self.buf.drain(..over);
            self.cut += over as u64;
        }
    }

    fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        let body = String::from_utf8_lossy(&v).into_owned();
        if self.cut > 0 {
            format!("[... {} bytes of earlier output cut ...]\n{body}", self.cut)
        } else {
            body
        }
    }
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
    if veeps_sys::proc::is_root() {
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
            cgroups: None,
        })
    }

    /// Builds run in a cgroup named under `prefix` with [`BUILD_LIMITS`], emptied (every
    /// process killed) when a step ends.
    pub fn with_cgroups(mut self, flavor: crate::cgroup::Flavor, prefix: &str) -> Images {
        self.cgroups = Some((flavor, prefix.to_string()));
        self
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
        let mut log = BuildLog::default();
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_secs(spec.timeout_secs.max(1));
        let fail = |why: String, log: &BuildLog| BuildError::Failed {
            name: spec.name.clone(),
            why,
            log: log.text(),
        };
        // One cgroup for the whole build: limits, and a way to kill what a step leaves
        // running in the background.
        let cg = self.cgroups.as_ref().map(|(flavor, prefix)| {
            crate::cgroup::Cgroup::new(
                flavor,
                prefix,
                &format!("build-{}", &id[..id.len().min(16)]),
            )
        });
        if let Some(cg) = &cg {
            cg.create(BUILD_LIMITS)?;
        }
        let result = self
            .run_steps(
                spec,
                work,
                &src,
                ids,
                cg.as_ref(),
                deadline,
                &mut log,
                &fail,
            )
            .await;
        if let Some(cg) = cg {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
        result?;
        self.keep(spec, id, &src, &fail, &log)
    }

    /// Runs the build steps in order, each confined, its output streamed into `log`.
    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        spec: &ImageSpec,
        work: &Path,
        src: &Path,
        ids: Option<sandbox::Ids>,
        cg: Option<&crate::cgroup::Cgroup>,
        deadline: tokio::time::Instant,
        log: &mut BuildLog,
        fail: &(dyn Fn(String, &BuildLog) -> BuildError + Sync),
    ) -> Result<(), BuildError> {
        for step in &spec.build {
            log.push(format!("$ {step}\n").as_bytes());
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-c", step])
                .current_dir(src)
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
                cmd.as_std_mut(),
                &Confine {
                    new_netns: root,
                    ids,
                    cgroup_procs: cg.map(|c| c.procs_files()).unwrap_or_default(),
                    session: true,
                    no_new_privs: true,
                    ..Default::default()
                },
            )?;
            // Under the instances' system-call filter too (after the confinement above).
            veeps_sys::confine::drop_privileges(
                cmd.as_std_mut(),
                None,
                std::sync::Arc::new(veeps_sys::seccomp::Filter::instances()),
            );
            let mut child = cmd
                .spawn()
                .map_err(|e| fail(format!("cannot run sh: {e}"), log))?;
            let pid = child.id().unwrap_or(0);
            // Both pipes into one log as they come (bounded), then the exit status. The
            // pipes end when the step and whatever it left running have closed them, or
            // when the deadline kills them all.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut pipe = pipe;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = pipe.read(&mut buf).await {
                        if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let status = async {
                let status = child.wait().await;
                // What the step left in the background dies with it.
                if let Some(cg) = cg {
                    let cg = cg.clone();
                    let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
                }
                status
            };
            let read_all = async {
                while let Some(b) = rx.recv().await {
                    log.push(&b);
                }
            };
            let run = async { tokio::join!(status, read_all).0 };
            match tokio::time::timeout_at(deadline, run).await {
                Ok(status) => match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => return Err(fail(format!("build step `{step}` failed ({s})"), log)),
                    Err(e) => return Err(fail(format!("build step `{step}`: {e}"), log)),
                },
                Err(_) => {
                    veeps_sys::proc::signal_group(pid, libc::SIGKILL);
                    if let Some(cg) = cg {
                        let cg = cg.clone();
                        let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
                    }
                    return Err(fail(
                        format!(
                            "the build took longer than {} s and was stopped",
                            spec.timeout_secs
                        ),
                        log,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Keeps the files asked for (or everything) as the image `id`, and records it.
    fn keep(
        &self,
        spec: &ImageSpec,
        id: &str,
        src: &Path,
        fail: &(dyn Fn(String, &BuildLog) -> BuildError + Sync),
        log: &BuildLog,
    ) -> Result<Image, BuildError> {
        let staged = self.dir.join(format!(".staged-{id}"));
        let _ = std::fs::remove_dir_all(&staged);
        let size = if spec.files.is_empty() {
            copy_tree(src, &staged)?
        } else {
            let mut n = 0;
            for f in &spec.files {
                let from = src.join(f);
                if std::fs::symlink_metadata(&from).is_err() {
                    return Err(fail(format!("files: the build made no \"{f}\""), log));
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
            build_log: log.text(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue "Trust what exists", item 18: builds ran without limits, left background
    /// processes running forever and kept all their output in memory and state. A build
    /// runs in a cgroup with limits that is emptied and removed at the end, and keeps the
    /// end of its output only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builds_are_confined_bounded_and_leave_nothing_running() {
        assert!(
            veeps_sys::proc::is_root(),
            "image builds need root (cgroups, namespaces); run the tests as root"
        );
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let prefix = format!("vimg{}", std::process::id());
        let images = Images::open(d.path(), store)
            .unwrap()
            .with_cgroups(crate::cgroup::detect(), &prefix);
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("app"), "#!/bin/sh\n").unwrap();
        let marker = 31_000 + std::process::id() % 1000;
        let spec = ImageSpec {
            name: "confined".into(),
            source: src,
            build: vec![
                format!("sleep {marker} & cat /proc/self/cgroup; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo built"),
            ],
            files: vec![],
            entrypoint: vec!["./app".into()],
            env: Default::default(),
            timeout_secs: 60,
        };
        let img = images.build(&spec).await.unwrap();
        assert!(
            img.build_log.len() <= MAX_BUILD_LOG + 100,
            "{}",
            img.build_log.len()
        );
        assert!(img.build_log.contains("bytes of earlier output cut"));
        assert!(img.build_log.trim_end().ends_with("built"));
        let left = std::process::Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "a build's background process outlived it"
        );
        let flavor = crate::cgroup::detect();
        if flavor != crate::cgroup::Flavor::V2 {
            assert!(!Path::new("/sys/fs/cgroup/pids").join(&prefix).exists());
        }
    }
}
