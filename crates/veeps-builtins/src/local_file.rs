//! `local_file`: a file on the machine veeps runs on, with drift detection.

use sha2::Digest;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use veeps_lang::{Type, Value};
use veeps_resource::{get, AttrError, AttrSchema, Ctx, Resource, ResourceError, Schema};

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

fn mode_of(c: &Value) -> Result<u32, ResourceError> {
    let m = get::str(c, "file_permission").unwrap_or("0644");
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

async fn write(c: &Value) -> Result<Value, ResourceError> {
    let filename = get::str(c, "filename").unwrap_or_default().to_string();
    let content = get::str(c, "content").unwrap_or_default().to_string();
    let mode = mode_of(c)?;
    let path = Path::new(&filename);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let path_buf = path.to_path_buf();
    let bytes = content.clone().into_bytes();
    tokio::task::spawn_blocking(move || write_atomically(&path_buf, &bytes, mode))
        .await
        .map_err(|e| ResourceError::Failed(e.to_string()))??;
    let mut s = c.as_object().cloned().unwrap_or_default();
    let digest = sha(&content);
    s.insert("id".into(), Value::String(digest.clone()));
    s.insert("content_sha256".into(), Value::String(digest));
    Ok(Value::Object(s))
}

#[async_trait::async_trait]
impl Resource for LocalFile {
    fn type_name(&self) -> &'static str {
        "local_file"
    }
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
        if let Err(e) = mode_of(c) {
            errs.push(AttrError::on("file_permission", e.to_string()));
        }
        errs
    }
    async fn create(&self, _ctx: &Ctx, config: &Value) -> Result<Value, ResourceError> {
        write(config).await
    }
    async fn read(&self, _ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let filename = get::str(state, "filename").unwrap_or_default();
        let content = match tokio::fs::read(filename).await {
            Ok(b) => String::from_utf8_lossy(&b).to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = tokio::fs::metadata(filename).await?;
        let mut s = state.as_object().cloned().unwrap_or_default();
        s.insert(
            "file_permission".into(),
            Value::String(format!("{:04o}", meta.permissions().mode() & 0o7777)),
        );
        s.insert("content_sha256".into(), Value::String(sha(&content)));
        s.insert("content".into(), Value::String(content));
        Ok(Some(Value::Object(s)))
    }
    async fn update(
        &self,
        _ctx: &Ctx,
        _prior: &Value,
        config: &Value,
    ) -> Result<Value, ResourceError> {
        write(config).await
    }
    async fn delete(&self, _ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        match tokio::fs::remove_file(get::str(state, "filename").unwrap_or_default()).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
