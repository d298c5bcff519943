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

async fn write(c: &Value) -> Result<Value, ResourceError> {
    let filename = get::str(c, "filename").unwrap_or_default().to_string();
    let content = get::str(c, "content").unwrap_or_default().to_string();
    let mode = mode_of(c)?;
    let path = Path::new(&filename);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.veeps-tmp",
        path.file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    tokio::fs::write(&tmp, content.as_bytes()).await?;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).await?;
    tokio::fs::rename(&tmp, path).await?;
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
