//! `local_file`: a file on the machine veeps runs on, with drift detection.

use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Observed, ResourceError, Schema, Typed};

/// The `local_file` resource type.
pub struct LocalFile {
    schema: Schema,
}

impl LocalFile {
    /// The type with its schema.
    pub fn new() -> LocalFile {
        LocalFile {
            schema: Schema::new()
                .attr(
                    AttrSchema::required("filename", Type::String)
                        .force_new()
                        .describe("absolute path of the file"),
                )
                .attr(AttrSchema::required("content", Type::String))
                .attr(AttrSchema::optional("file_permission", Type::String).default("0644"))
                .attr(AttrSchema::computed("id", Type::String))
                .attr(AttrSchema::computed("content_sha256", Type::String)),
        }
    }
}

impl Default for LocalFile {
    fn default() -> Self {
        Self::new()
    }
}

fn mode_of(m: &str) -> Result<u32, ResourceError> {
    u32::from_str_radix(m, 8).map_err(|_| {
        ResourceError::Invalid(format!(
            "file_permission \"{m}\" is not an octal mode like \"0644\""
        ))
    })
}

fn sha(content: &str) -> String {
    hex::encode(sha2::Sha256::digest(content.as_bytes()))
}

/// Writes `path` so that it is never seen half-written and nothing else is touched: a
/// temporary file with an unpredictable name, created exclusively (never through a symlink
/// planted there) with its final mode, synced, renamed over `path`, and the directory
/// synced.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.veeps-tmp-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let done = (|| {
        // The umask may have taken bits the configuration asks for.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// `local_file`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileConfig {
    filename: String,
    content: String,
    file_permission: String,
}

/// `local_file`'s state.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileState {
    #[serde(flatten)]
    config: FileConfig,
    id: String,
    content_sha256: String,
}

async fn write(c: &FileConfig) -> Result<FileState, ResourceError> {
    let mode = mode_of(&c.file_permission)?;
    let path = Path::new(&c.filename);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let path_buf = path.to_path_buf();
    let bytes = c.content.clone().into_bytes();
    tokio::task::spawn_blocking(move || write_atomically(&path_buf, &bytes, mode))
        .await
        .map_err(|e| ResourceError::Failed(e.to_string()))??;
    let digest = sha(&c.content);
    Ok(FileState {
        config: c.clone(),
        id: digest.clone(),
        content_sha256: digest,
    })
}

#[async_trait::async_trait]
impl Typed for LocalFile {
    type Config = FileConfig;
    type State = FileState;
    const TYPE: &'static str = "local_file";
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut errs = vec![];
        if let Some(f) = get::str(c, "filename") {
            if !f.starts_with('/') {
                errs.push(AttrError::on("filename", format!("\"{f}\" is relative; give an absolute path (the server, not the CLI, writes the file)")));
            }
        }
        if let Err(e) = mode_of(get::str(c, "file_permission").unwrap_or("0644")) {
            errs.push(AttrError::on("file_permission", e.to_string()));
        }
        errs
    }
    async fn ensure(
        &self,
        _ctx: &Ctx,
        _prior: Option<&FileState>,
        c: &FileConfig,
    ) -> Result<FileState, ResourceError> {
        write(c).await
    }
    async fn reconcile(&self, _ctx: &Ctx, s: &FileState) -> Result<FileState, ResourceError> {
        // A file changed or removed while veeps was down is drift for the next plan to
        // show, not something to overwrite behind the user's back.
        Ok(FileState {
            config: s.config.clone(),
            id: s.id.clone(),
            content_sha256: s.content_sha256.clone(),
        })
    }
    async fn read(&self, _ctx: &Ctx, s: &FileState) -> Result<Observed<FileState>, ResourceError> {
        let filename = &s.config.filename;
        let content = match tokio::fs::read(filename).await {
            Ok(b) => String::from_utf8_lossy(&b).to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Observed::Gone),
            Err(e) => return Err(e.into()),
        };
        let meta = tokio::fs::metadata(filename).await?;
        Ok(Observed::Exists(FileState {
            content_sha256: sha(&content),
            config: FileConfig {
                filename: filename.clone(),
                file_permission: format!("{:04o}", meta.permissions().mode() & 0o7777),
                content,
            },
            id: s.id.clone(),
        }))
    }
    async fn delete(&self, _ctx: &Ctx, s: &FileState) -> Result<(), ResourceError> {
        match tokio::fs::remove_file(&s.config.filename).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn schema_agrees() {
        veeps_resource::check_schema(&LocalFile::new()).unwrap();
    }

    /// Issue "Trust what exists", item 21: a symlink planted at the temporary name made
    /// root overwrite and chmod another file, and the file was created with the umask's
    /// mode first. Temporary names are unpredictable and opened exclusively, without
    /// following links; the file has its final mode from the start.
    #[test]
    fn writes_never_follow_planted_links_and_have_their_mode() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Every name the old code would have used.
        std::os::unix::fs::symlink(&victim, d.path().join(".out.veeps-tmp")).unwrap();
        let out = d.path().join("out");
        write_atomically(&out, b"secret", 0o640).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let m = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "secret");
        let m = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o640);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("veeps-tmp-"))
            .collect();
        assert!(left.is_empty());
    }
}
