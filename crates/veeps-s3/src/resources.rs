//! The storage resource types: `bucket` and `bucket_object`.

use crate::lifecycle::{Rule, Transition};
use crate::store::{check_bucket_name, check_key, ObjectStore, PutOptions, Versioning, Website};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::{
    get, with_attrs as with, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Registry, Resource,
    ResourceError, Schema,
};

/// Registers the storage types.
pub fn register(r: &mut Registry) {
    r.register(BucketType(
        Schema::new()
            .attr(AttrSchema::required("bucket", Type::String).force_new())
            .attr(
                AttrSchema::optional("force_destroy", Type::Bool)
                    .default(false)
                    .describe("delete the objects with the bucket"),
            )
            .attr(
                AttrSchema::optional("policy", Type::String)
                    .describe("a bucket policy, JSON in S3's policy language"),
            )
            .attr(
                AttrSchema::optional("versioning", Type::Bool)
                    .default(false)
                    .describe("keep every version; turning it off later suspends it"),
            )
            .attr(
                AttrSchema::optional("encryption", Type::Bool)
                    .default(true)
                    .describe("objects are always encrypted at rest"),
            )
            .attr(AttrSchema::computed("id", Type::String))
            .attr(AttrSchema::computed("arn", Type::String))
            .attr(AttrSchema::computed("website_endpoint", Type::String))
            .block(BlockSchema::new(
                "website",
                Nesting::Single,
                Schema::new()
                    .attr(AttrSchema::required("index_document", Type::String))
                    .attr(AttrSchema::optional("error_document", Type::String)),
            ))
            .block(BlockSchema::new(
                "lifecycle_rule",
                Nesting::List,
                Schema::new()
                    .attr(AttrSchema::required("id", Type::String))
                    .attr(AttrSchema::optional("prefix", Type::String).default(""))
                    .attr(AttrSchema::optional("enabled", Type::Bool).default(true))
                    .attr(AttrSchema::optional("expiration_days", Type::Number))
                    .attr(AttrSchema::optional(
                        "noncurrent_version_expiration_days",
                        Type::Number,
                    ))
                    .attr(AttrSchema::optional(
                        "abort_incomplete_multipart_upload_days",
                        Type::Number,
                    ))
                    .attr(AttrSchema::optional(
                        "object_size_greater_than",
                        Type::Number,
                    ))
                    .attr(AttrSchema::optional("object_size_less_than", Type::Number))
                    .attr(AttrSchema::optional(
                        "newer_noncurrent_versions",
                        Type::Number,
                    ))
                    .attr(
                        AttrSchema::optional("expired_object_delete_marker", Type::Bool)
                            .default(false),
                    )
                    .block(BlockSchema::new(
                        "transition",
                        Nesting::List,
                        Schema::new()
                            .attr(AttrSchema::required("days", Type::Number))
                            .attr(AttrSchema::required("storage_class", Type::String)),
                    )),
            )),
    ));
    r.register(KeyType(
        Schema::new()
            .attr(AttrSchema::required("user", Type::String).force_new())
            .attr(AttrSchema::computed("id", Type::String))
            .attr(AttrSchema::computed("secret", Type::String).sensitive()),
    ));
    r.register(ObjectType(
        Schema::new()
            .attr(AttrSchema::required("bucket", Type::String).force_new())
            .attr(AttrSchema::required("key", Type::String).force_new())
            .attr(AttrSchema::optional("content", Type::String))
            .attr(
                AttrSchema::optional("source", Type::String)
                    .describe("a file on the server's machine"),
            )
            .attr(AttrSchema::optional("content_type", Type::String))
            .attr(AttrSchema::optional("cache_control", Type::String))
            .attr(AttrSchema::optional("content_encoding", Type::String))
            .attr(AttrSchema::optional("content_disposition", Type::String))
            .attr(AttrSchema::optional("content_language", Type::String))
            .attr(AttrSchema::optional(
                "metadata",
                Type::Map(Box::new(Type::String)),
            ))
            .attr(AttrSchema::computed("etag", Type::String))
            .attr(AttrSchema::computed("id", Type::String)),
    ));
}

fn store(ctx: &Ctx) -> Result<&Arc<ObjectStore>, ResourceError> {
    ctx.service::<Arc<ObjectStore>>("object storage")
}

fn access(ctx: &Ctx) -> Result<&Arc<crate::access::Access>, ResourceError> {
    ctx.service::<Arc<crate::access::Access>>("S3 access")
}

fn set_policy(ctx: &Ctx, c: &Value) -> Result<(), ResourceError> {
    let name = get::str(c, "bucket").unwrap_or_default();
    access(ctx)?
        .set_policy(name, get::str(c, "policy"))
        .map_err(ResourceError::Invalid)
}

/// The website setting and lifecycle rules a bucket's configuration gives.
fn bucket_settings(c: &Value) -> (Option<Website>, Vec<Rule>) {
    let website = get::block(c, "website").map(|w| Website {
        index_document: get::str(w, "index_document").unwrap_or_default().into(),
        error_document: get::str(w, "error_document").map(String::from),
    });
    let days = |v: &Value, k: &str| get::num(v, k).map(|d| d.max(0.0) as u32);
    let rules = get::blocks(c, "lifecycle_rule")
        .into_iter()
        .map(|r| Rule {
            id: get::str(r, "id").unwrap_or_default().into(),
            prefix: get::str(r, "prefix").unwrap_or_default().into(),
            enabled: get::bool_or(r, "enabled", true),
            expiration_days: days(r, "expiration_days"),
            noncurrent_expiration_days: days(r, "noncurrent_version_expiration_days"),
            abort_incomplete_days: days(r, "abort_incomplete_multipart_upload_days"),
            size_greater_than: get::num(r, "object_size_greater_than").map(|n| n.max(0.0) as u64),
            size_less_than: get::num(r, "object_size_less_than").map(|n| n.max(0.0) as u64),
            newer_noncurrent_versions: days(r, "newer_noncurrent_versions"),
            expired_object_delete_marker: get::bool_or(r, "expired_object_delete_marker", false),
            transitions: get::blocks(r, "transition")
                .into_iter()
                .map(|t| Transition {
                    days: days(t, "days").unwrap_or(0),
                    storage_class: get::str(t, "storage_class").unwrap_or_default().into(),
                })
                .collect(),
        })
        .collect();
    (website, rules)
}

/// Applies versioning, website and lifecycle settings to the bucket.
async fn configure(ctx: &Ctx, c: &Value) -> Result<(), ResourceError> {
    let name = get::str(c, "bucket").unwrap_or_default().to_string();
    let versioning = get::bool_or(c, "versioning", false);
    let (website, rules) = bucket_settings(c);
    let s = store(ctx)?.clone();
    tokio::task::spawn_blocking(move || {
        let b = s.bucket(&name)?;
        if versioning || b.versioning != Versioning::Off {
            let v = if versioning {
                Versioning::Enabled
            } else {
                Versioning::Suspended
            };
            s.set_versioning(&name, v)?;
        }
        s.configure(&name, |b| {
            b.website = website;
            b.lifecycle = rules;
            Ok(())
        })
    })
    .await
    .map_err(failed)?
    .map_err(failed)?;
    Ok(())
}

fn website_endpoint(c: &Value) -> Value {
    match (get::block(c, "website"), get::str(c, "bucket")) {
        (Some(_), Some(b)) => Value::String(format!("{b}.s3-website.localhost")),
        _ => Value::Null,
    }
}

fn failed(e: impl std::fmt::Display) -> ResourceError {
    ResourceError::Failed(e.to_string())
}

/// `bucket`.
pub struct BucketType(Schema);

#[async_trait::async_trait]
impl Resource for BucketType {
    fn type_name(&self) -> &'static str {
        "bucket"
    }
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(Err(err)) = get::str(c, "bucket").map(check_bucket_name) {
            e.push(AttrError::on("bucket", err.to_string()));
        }
        if let Some(n) = get::str(c, "bucket").filter(|n| crate::access::is_reserved(n)) {
            e.push(AttrError::on(
                "bucket",
                format!("the bucket name {n} is reserved for veeps' own use; pick another"),
            ));
        }
        if let Some(Err(m)) = get::str(c, "policy").map(crate::access::check_policy) {
            e.push(AttrError::on("policy", m));
        }
        if !get::bool_or(c, "encryption", true) {
            e.push(AttrError::on(
                "encryption",
                "veeps always encrypts objects at rest (AES-256-GCM, a key per object under the environment's key); remove encryption = false",
            ));
        }
        if let Some(w) = get::block(c, "website") {
            let ix = get::str(w, "index_document").unwrap_or_default();
            if ix.is_empty() || ix.contains('/') {
                e.push(AttrError::on(
                    "website",
                    "index_document is a file name like index.html (no slash)",
                ));
            }
        }
        let (_, rules) = bucket_settings(c);
        let mut ids = std::collections::HashSet::new();
        for r in &rules {
            if let Err(m) = r.check() {
                e.push(AttrError::on("lifecycle_rule", m));
            }
            if !ids.insert(r.id.clone()) {
                e.push(AttrError::on(
                    "lifecycle_rule",
                    format!("two rules have the id {}; ids are unique", r.id),
                ));
            }
        }
        e
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        match get::str(c, "bucket") {
            Some(b) => [
                ("id".to_string(), Value::string(b)),
                (
                    "arn".to_string(),
                    Value::String(format!("arn:aws:s3:::{b}")),
                ),
                ("website_endpoint".to_string(), website_endpoint(c)),
            ]
            .into(),
            None => BTreeMap::new(),
        }
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let name = get::str(c, "bucket").unwrap_or_default().to_string();
        let s = store(ctx)?.clone();
        let env = ctx.env.clone();
        let n = name.clone();
        tokio::task::spawn_blocking(move || match s.bucket(&n) {
            // Adopt what a previous attempt created.
            Ok(b) if b.env == env => Ok(()),
            Ok(_) => Err(ResourceError::Invalid(format!(
                "the bucket {n} exists already (bucket names are global; pick another)"
            ))),
            Err(_) => s.create_bucket(&n, &env).map(|_| ()).map_err(failed),
        })
        .await
        .map_err(failed)??;
        set_policy(ctx, c)?;
        configure(ctx, c).await?;
        Ok(with(
            c,
            &[
                ("id", Value::String(name.clone())),
                ("arn", Value::String(format!("arn:aws:s3:::{name}"))),
                ("website_endpoint", website_endpoint(c)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let name = get::str(state, "bucket").unwrap_or_default();
        Ok(store(ctx)?.bucket(name).ok().map(|_| state.clone()))
    }
    async fn update(&self, ctx: &Ctx, prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        set_policy(ctx, c)?;
        configure(ctx, c).await?;
        let mut v = with(c, &[("website_endpoint", website_endpoint(c))]);
        for k in ["id", "arn"] {
            if let (Value::Object(o), Some(x)) = (&mut v, prior.get(k)) {
                o.insert(k.into(), x.clone());
            }
        }
        Ok(v)
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        let name = get::str(state, "bucket").unwrap_or_default().to_string();
        let force = get::bool_or(state, "force_destroy", false);
        access(ctx)?
            .set_policy(&name, None)
            .map_err(ResourceError::Failed)?;
        let s = store(ctx)?.clone();
        tokio::task::spawn_blocking(move || {
            if s.bucket(&name).is_err() {
                return Ok(());
            }
            if force {
                s.empty_bucket(&name).map_err(failed)?;
            }
            s.delete_bucket(&name).map_err(|e| {
                ResourceError::Failed(format!("{e}; empty it first, or set force_destroy = true"))
            })
        })
        .await
        .map_err(failed)?
    }
}

/// `bucket_object`: an object from configuration (`content`) or a file (`source`).
pub struct ObjectType(Schema);

fn body(c: &Value) -> Result<Vec<u8>, ResourceError> {
    match (get::str(c, "content"), get::str(c, "source")) {
        (Some(t), None) => Ok(t.as_bytes().to_vec()),
        (None, Some(p)) => {
            std::fs::read(p).map_err(|e| ResourceError::Invalid(format!("source {p}: {e}")))
        }
        _ => Err(ResourceError::Invalid(
            "give exactly one of content and source".into(),
        )),
    }
}

fn etag_of(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

#[async_trait::async_trait]
impl Resource for ObjectType {
    fn type_name(&self) -> &'static str {
        "bucket_object"
    }
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        if let Some(Err(err)) = get::str(c, "key").map(check_key) {
            e.push(AttrError::on("key", err.to_string()));
        }
        let set = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
        if set("content") == set("source") {
            e.push(AttrError::on(
                "content",
                "give exactly one of content and source",
            ));
        }
        e
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let data = body(c)?;
        let (b, k) = (
            get::str(c, "bucket").unwrap_or_default().to_string(),
            get::str(c, "key").unwrap_or_default().to_string(),
        );
        let opts = PutOptions {
            content_type: get::str(c, "content_type").map(String::from),
            cache_control: get::str(c, "cache_control").map(String::from),
            metadata: get::string_map(c, "metadata"),
            headers: [
                "content_encoding",
                "content_disposition",
                "content_language",
            ]
            .into_iter()
            .filter_map(|a| get::str(c, a).map(|v| (a.replace('_', "-"), v.to_string())))
            .collect(),
        };
        let s = store(ctx)?.clone();
        let (b2, k2) = (b.clone(), k.clone());
        let meta = tokio::task::spawn_blocking(move || s.put(&b2, &k2, &data[..], opts))
            .await
            .map_err(failed)?
            .map_err(failed)?;
        Ok(with(
            c,
            &[
                ("etag", Value::String(meta.etag)),
                ("id", Value::String(format!("{b}/{k}"))),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let (b, k) = (
            get::str(state, "bucket").unwrap_or_default(),
            get::str(state, "key").unwrap_or_default(),
        );
        Ok(match store(ctx)?.head(b, k) {
            Err(_) => None,
            Ok(m) if Some(m.etag.as_str()) == get::str(state, "etag") => Some(state.clone()),
            // Changed outside veeps: the body no longer is what was configured, so the
            // attribute that gives the body shows the change (and apply puts it back).
            Ok(m) => {
                let marker = Value::string("(changed outside veeps)");
                let attr = if get::str(state, "content").is_some() {
                    "content"
                } else {
                    "source"
                };
                Some(with(
                    state,
                    &[("etag", Value::String(m.etag)), (attr, marker)],
                ))
            }
        })
    }
    async fn update(&self, ctx: &Ctx, _prior: &Value, c: &Value) -> Result<Value, ResourceError> {
        self.create(ctx, c).await
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        let (b, k) = (
            get::str(state, "bucket").unwrap_or_default().to_string(),
            get::str(state, "key").unwrap_or_default().to_string(),
        );
        let s = store(ctx)?.clone();
        tokio::task::spawn_blocking(move || match s.delete(&b, &k) {
            Err(crate::store::StoreError::NoSuchBucket(_)) => Ok(()),
            other => other.map(|_| ()),
        })
        .await
        .map_err(failed)?
        .map_err(failed)
    }
    fn plan_computed(&self, _ctx: &Ctx, c: &Value) -> BTreeMap<String, Value> {
        // The etag of configured content is known before apply.
        match get::str(c, "content") {
            Some(t) => [("etag".to_string(), Value::String(etag_of(t.as_bytes())))].into(),
            None => BTreeMap::new(),
        }
    }
}

/// `access_key`: a key pair for a named user; what it may do is what bucket policies grant
/// that user.
pub struct KeyType(Schema);

#[async_trait::async_trait]
impl Resource for KeyType {
    fn type_name(&self) -> &'static str {
        "access_key"
    }
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        match get::str(c, "user") {
            Some(u)
                if u.is_empty()
                    || u.len() > 64
                    || !u
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)) =>
            {
                vec![AttrError::on(
                    "user",
                    format!("\"{u}\" is not a user name (letters, digits and +=,.@_-, up to 64)"),
                )]
            }
            _ => vec![],
        }
    }
    async fn create(&self, ctx: &Ctx, c: &Value) -> Result<Value, ResourceError> {
        let (k, secret) = access(ctx)?
            .create_key(get::str(c, "user").unwrap_or_default())
            .map_err(ResourceError::Failed)?;
        Ok(with(
            c,
            &[
                ("id", Value::String(k.id)),
                ("secret", Value::String(secret)),
            ],
        ))
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Option<Value>, ResourceError> {
        let id = get::str(state, "id").unwrap_or_default();
        Ok(access(ctx)?.key(id).map(|_| state.clone()))
    }
    async fn update(&self, _ctx: &Ctx, prior: &Value, _c: &Value) -> Result<Value, ResourceError> {
        Ok(prior.clone())
    }
    async fn delete(&self, ctx: &Ctx, state: &Value) -> Result<(), ResourceError> {
        access(ctx)?
            .delete_key(get::str(state, "id").unwrap_or_default())
            .map_err(ResourceError::Failed)
    }
}
