//! Images: Packer's job. A source directory is copied into a build directory, the build
//! commands run there in a sandbox (no network at all, an unprivileged user, a time
//! limit, output captured), and the files to keep become the image: content-addressed
//! (the same inputs give the same id and no rebuild), versioned per name, kept in the
//! data directory and read-only to instances. A build with an egress allow list reaches
//! the destinations on it and nothing else ([`crate::egress`]); its output may change while
//! its inputs do not, so [`Images::rebuild`] builds again and keeps the result as the next
//! version only when the files differ.

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
    /// `HOST:PORT`s build steps may connect to (none: no network at all).
    #[serde(default)]
    pub egress: Vec<String>,
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
    /// The id of its inputs ([`image_id`]): rebuilds of the same inputs whose files changed
    /// share it, and the newest of them stands for those inputs. Empty: its own id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inputs: String,
    /// A hash of its files (paths, modes, contents).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
}

impl Image {
    /// The id of the inputs it was built from.
    pub fn lineage(&self) -> &str {
        if self.inputs.is_empty() {
            &self.id
        } else {
            &self.inputs
        }
    }
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
    /// The host-wide name prefix (of build network namespaces).
    prefix: String,
}

/// A finished build's files, staged beside the store.
struct Built {
    staged: PathBuf,
    size: u64,
    content: String,
    log: String,
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

/// Feeds a tree into `h`: each path with its mode, and a symlink's target or a file's
/// contents.
fn hash_tree(h: &mut Sha256, root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![];
    walk(root, Path::new(""), &mut files)?;
    for rel in files {
        let p = root.join(&rel);
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
    Ok(())
}

/// A hash of a built tree's files.
pub fn content_hash(root: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    hash_tree(&mut h, root)?;
    Ok(hex::encode(h.finalize()))
}

/// The id of a specification: a hash of every input (source files with their modes,
/// commands, kept files, entrypoint, environment, egress allow list).
pub fn image_id(spec: &ImageSpec) -> Result<String, BuildError> {
    let mut h = Sha256::new();
    hash_tree(&mut h, &spec.source).map_err(|e| {
        BuildError::Invalid(format!(
            "source {}: {e} (give an existing directory)",
            spec.source.display()
        ))
    })?;
    // An allow list joins the inputs only when there is one: older ids stay as they were.
    let rest = if spec.egress.is_empty() {
        serde_json::json!([spec.build, spec.files, spec.entrypoint, spec.env])
    } else {
        serde_json::json!([
            spec.build,
            spec.files,
            spec.entrypoint,
            spec.env,
            spec.egress
        ])
    };
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
            prefix: "veeps".into(),
        })
    }

    /// Builds run in a cgroup named under `prefix` with [`BUILD_LIMITS`], emptied (every
    /// process killed) when a step ends.
    pub fn with_cgroups(mut self, flavor: crate::cgroup::Flavor, prefix: &str) -> Images {
        self.cgroups = Some((flavor, prefix.to_string()));
        self.prefix = prefix.to_string();
        crate::egress::sweep(prefix);
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

    /// The newest image built from the inputs `lineage` whose files are present.
    pub fn latest_of(&self, lineage: &str) -> Option<Image> {
        self.list()
            .into_iter()
            .filter(|i| i.lineage() == lineage && self.root(&i.id).is_dir())
            .max_by_key(|i| i.version)
    }

    fn check(spec: &ImageSpec) -> Result<(), BuildError> {
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
        crate::egress::parse_all(&spec.egress)
            .map_err(|e| BuildError::Invalid(format!("egress: {e}")))?;
        Ok(())
    }

    async fn inputs_id(spec: &ImageSpec) -> Result<String, BuildError> {
        Self::check(spec)?;
        let spec2 = spec.clone();
        tokio::task::spawn_blocking(move || image_id(&spec2))
            .await
            .map_err(|e| BuildError::Invalid(e.to_string()))?
    }

    /// Builds `spec` unless an image with the same inputs exists; returns it (the newest
    /// rebuild of those inputs). A failed build leaves nothing behind and returns its log.
    pub async fn build(&self, spec: &ImageSpec) -> Result<Image, BuildError> {
        let id = Self::inputs_id(spec).await?;
        let _g = self.lock.lock().await;
        if let Some(img) = self.latest_of(&id) {
            return Ok(img);
        }
        // Builds run as the unprivileged user, so they work in a scratch directory it can
        // reach (the data directory is root's alone).
        let work = tempfile::Builder::new().prefix("veeps-build-").tempdir()?;
        let built = self.build_in(spec, &id, work.path()).await?;
        self.commit(spec, &id, &id, built)
    }

    /// Builds `spec` again even though an image of its inputs exists, and keeps the result
    /// as that image's next version only if its files differ (`None` when they do not). A
    /// failed build leaves the store as it was.
    pub async fn rebuild(&self, spec: &ImageSpec) -> Result<Option<Image>, BuildError> {
        let inputs = Self::inputs_id(spec).await?;
        let _g = self.lock.lock().await;
        let current = self.latest_of(&inputs);
        let work = tempfile::Builder::new().prefix("veeps-build-").tempdir()?;
        let built = self.build_in(spec, &inputs, work.path()).await?;
        let Some(cur) = current else {
            return self.commit(spec, &inputs, &inputs, built).map(Some);
        };
        let cur_content = if cur.content.is_empty() {
            let root = self.root(&cur.id);
            tokio::task::spawn_blocking(move || content_hash(&root))
                .await
                .map_err(|e| BuildError::Invalid(e.to_string()))??
        } else {
            cur.content.clone()
        };
        if built.content == cur_content {
            let _ = std::fs::remove_dir_all(&built.staged);
            tracing::info!(image = %cur.id, name = %spec.name, "rebuilt an image: nothing changed");
            return Ok(None);
        }
        // The version joins the id: files that change back make a new version, never
        // overwrite an older one that instances may still run.
        let mut h = Sha256::new();
        h.update(inputs.as_bytes());
        h.update(built.content.as_bytes());
        h.update(self.next_version(&spec.name).to_le_bytes());
        let id = format!("img-{}", &hex::encode(h.finalize())[..16]);
        self.commit(spec, &id, &inputs, built).map(Some)
    }

    async fn build_in(&self, spec: &ImageSpec, id: &str, work: &Path) -> Result<Built, BuildError> {
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
        // An allow list: a namespace of the build's own with relays to what it names.
        let gate = if spec.egress.is_empty() {
            None
        } else {
            if ids.is_none() {
                return Err(BuildError::Invalid(
                    "egress: an allow list needs veeps to run as root (builds get a network namespace of their own)".into(),
                ));
            }
            let allowed = crate::egress::parse_all(&spec.egress)
                .map_err(|e| BuildError::Invalid(format!("egress: {e}")))?;
            let ns = format!("{}bld-{}", self.prefix, id.trim_start_matches("img-"));
            Some(crate::egress::Gate::open(&ns, &allowed, work).await?)
        };
        if let Some(cg) = &cg {
            cg.create(BUILD_LIMITS)?;
        }
        let result = self
            .run_steps(
                spec,
                work,
                &src,
                ids,
                gate.as_ref(),
                cg.as_ref(),
                deadline,
                &mut log,
                &fail,
            )
            .await;
        if let Some(cg) = cg {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
        if let Some(g) = gate {
            log.push(g.summary().as_bytes());
            drop(g);
        }
        result?;
        self.stage(spec, id, &src, &fail, &log)
    }

    /// Runs the build steps in order, each confined, its output streamed into `log`.
    #[allow(clippy::too_many_arguments)]
    async fn run_steps(
        &self,
        spec: &ImageSpec,
        work: &Path,
        src: &Path,
        ids: Option<sandbox::Ids>,
        gate: Option<&crate::egress::Gate>,
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
                    new_netns: root && gate.is_none(),
                    netns: gate.map(|g| g.netns().to_string()),
                    binds: gate
                        .map(|g| {
                            vec![sandbox::Bind {
                                source: g.hosts().to_path_buf(),
                                target: "/etc/hosts".into(),
                                readonly: true,
                            }]
                        })
                        .unwrap_or_default(),
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
                // What the step left in the background dies with it: its process group
                // (the step leads a session of its own), then anything that left the
                // group but not the build's cgroup. A survivor would hold the step's pipes
                // open until the deadline.
                veeps_sys::proc::signal_group(pid, libc::SIGKILL);
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

    /// Stages the files asked for (or everything), sealed, beside the store.
    fn stage(
        &self,
        spec: &ImageSpec,
        id: &str,
        src: &Path,
        fail: &(dyn Fn(String, &BuildLog) -> BuildError + Sync),
        log: &BuildLog,
    ) -> Result<Built, BuildError> {
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
        let content = content_hash(&staged)?;
        Ok(Built {
            staged,
            size,
            content,
            log: log.text(),
        })
    }

    /// Keeps staged files as the image `id` (built from the inputs `inputs`), and records it.
    fn commit(
        &self,
        spec: &ImageSpec,
        id: &str,
        inputs: &str,
        built: Built,
    ) -> Result<Image, BuildError> {
        let final_dir = self.dir.join(id);
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::create_dir_all(&final_dir)?;
        std::fs::rename(&built.staged, final_dir.join("root"))?;
        let version = self.next_version(&spec.name);
        let img = Image {
            id: id.to_string(),
            name: spec.name.clone(),
            version,
            entrypoint: spec.entrypoint.clone(),
            env: spec.env.clone(),
            size: built.size,
            created: veeps_state::now(),
            build_log: built.log,
            inputs: if inputs == id {
                String::new()
            } else {
                inputs.to_string()
            },
            content: built.content,
        };
        self.store
            .kv_put(&format!("{K_IMAGE}{id}"), &img)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(image = %id, name = %spec.name, version, "built an image");
        Ok(img)
    }

    fn next_version(&self, name: &str) -> u32 {
        self.list()
            .iter()
            .filter(|i| i.name == name)
            .map(|i| i.version)
            .max()
            .unwrap_or(0)
            + 1
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

    /// A package mirror on loopback: answers every request with the current body, or 404
    /// when it is empty; counts requests.
    struct Mirror {
        port: u16,
        body: Arc<std::sync::Mutex<String>>,
        hits: Arc<std::sync::atomic::AtomicU64>,
    }

    async fn mirror(body: &str) -> Mirror {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let m = Mirror {
            port,
            body: Arc::new(std::sync::Mutex::new(body.to_string())),
            hits: Arc::default(),
        };
        let (body, hits) = (m.body.clone(), m.hits.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (body, hits) = (body.clone(), hits.clone());
                tokio::spawn(async move {
                    let mut req = vec![];
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let b = body.lock().unwrap().clone();
                    let head = if b.is_empty() {
                        "404 Not Found"
                    } else {
                        "200 OK"
                    };
                    let resp = format!(
                        "HTTP/1.1 {head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                        b.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        m
    }

    /// Issue "Security baseline": builds reach their egress allow list and nothing else;
    /// a rebuild keeps a new version only when the files changed, never overwrites an
    /// older one, and a failed one leaves the current version standing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn egress_builds_reach_only_their_allow_list_and_rebuild_only_on_change() {
        assert!(
            veeps_sys::proc::is_root(),
            "image builds need root (namespaces); run the tests as root"
        );
        let allowed = mirror("pkg 1.0\n").await;
        let other = mirror("secret\n").await;
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let prefix = format!("vimg{}e", std::process::id());
        let images = Images::open(d.path(), store)
            .unwrap()
            .with_cgroups(crate::cgroup::detect(), &prefix);
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("app"), "#!/bin/sh\n").unwrap();
        let spec = ImageSpec {
            name: "fetched".into(),
            source: src,
            build: vec![
                format!(
                    "curl -sf -m 20 http://localhost:{}/pkg -o pkg",
                    allowed.port
                ),
                format!(
                    "curl -sf -m 20 http://127.0.0.1:{}/pkg -o pkg2",
                    allowed.port
                ),
                // Not on the list: refused, and no name but the list's resolves.
                format!("! curl -s -m 5 http://127.0.0.1:{}/", other.port),
                "! getent hosts deb.debian.org".into(),
                "echo checked".into(),
            ],
            files: vec!["pkg".into(), "app".into()],
            entrypoint: vec!["./app".into()],
            env: Default::default(),
            timeout_secs: 120,
            egress: vec![
                format!("localhost:{}", allowed.port),
                format!("127.0.0.1:{}", allowed.port),
            ],
        };
        let v1 = images.build(&spec).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(images.root(&v1.id).join("pkg")).unwrap(),
            "pkg 1.0\n"
        );
        assert!(v1.build_log.contains("checked"), "{}", v1.build_log);
        assert!(
            v1.build_log.contains(&format!(
                "egress 127.0.0.1:{0} = localhost:{0}: 2 connections",
                allowed.port
            )),
            "{}",
            v1.build_log
        );
        assert_eq!(other.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        let ns_left = std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        assert!(!ns_left, "a build's namespace outlived it");

        // The same files: nothing new.
        assert!(images.rebuild(&spec).await.unwrap().is_none());
        assert_eq!(images.list().len(), 1);
        // New files: the next version, standing for the same inputs.
        *allowed.body.lock().unwrap() = "pkg 1.1\n".into();
        let v2 = images.rebuild(&spec).await.unwrap().unwrap();
        assert_eq!((v2.version, v2.lineage()), (2, v1.id.as_str()));
        assert_ne!(v2.id, v1.id);
        assert_eq!(images.build(&spec).await.unwrap().id, v2.id);
        assert_eq!(images.latest_of(&v1.id).unwrap().id, v2.id);
        // Back to the first files: a third version; the first is untouched.
        *allowed.body.lock().unwrap() = "pkg 1.0\n".into();
        let v3 = images.rebuild(&spec).await.unwrap().unwrap();
        assert_eq!(v3.version, 3);
        assert!(v3.id != v1.id && v3.id != v2.id);
        assert!(images.get(&v1.id).is_some());
        // A failed rebuild (the mirror lost the package) leaves version 3 standing.
        allowed.body.lock().unwrap().clear();
        assert!(matches!(
            images.rebuild(&spec).await,
            Err(BuildError::Failed { .. })
        ));
        assert_eq!(images.latest_of(&v1.id).unwrap().id, v3.id);
        assert_eq!(images.list().len(), 3);
    }

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
            egress: vec![],
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
