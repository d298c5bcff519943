//! The storage resource types: `bucket` and `bucket_object`.

use crate::lifecycle::{Rule, Transition};
use crate::store::{check_bucket_name, check_key, ObjectStore, PutOptions, Versioning, Website};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use veeps_lang::{Type, Value};
use veeps_resource::typed::{decode, list};
use veeps_resource::{
    get, AttrError, AttrSchema, BlockSchema, Ctx, Nesting, Observed, Registry, ResourceError,
    Schema, Typed,
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
    r.register(NotificationType::new());
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

/// `bucket_notification`: which functions hear of which changes to a bucket's objects.
pub struct NotificationType(Schema);

impl NotificationType {
    fn new() -> Self {
        NotificationType(
            Schema::new()
                .attr(AttrSchema::required("bucket", Type::String).force_new())
                .attr(AttrSchema::computed("id", Type::String))
                .block(BlockSchema::new(
                    "function",
                    Nesting::List,
                    Schema::new()
                        .attr(AttrSchema::optional("id", Type::String))
                        .attr(
                            AttrSchema::required("function", Type::String)
                                .describe("the function's name (function.NAME.name)"),
                        )
                        .attr(AttrSchema::required(
                            "events",
                            veeps_resource::list_of_strings(),
                        ))
                        .attr(AttrSchema::optional("filter_prefix", Type::String).default(""))
                        .attr(AttrSchema::optional("filter_suffix", Type::String).default("")),
                )),
        )
    }
}

/// One `function` block of a `bucket_notification`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyFunctionConfig {
    #[serde(default)]
    id: Option<String>,
    function: String,
    events: Vec<String>,
    filter_prefix: String,
    filter_suffix: String,
}

/// `bucket_notification`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationConfig {
    bucket: String,
    #[serde(default)]
    function: Vec<NotifyFunctionConfig>,
}

/// `bucket_notification`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationState {
    #[serde(flatten)]
    config: NotificationConfig,
    id: String,
}

fn rules_of(c: &NotificationConfig) -> Vec<crate::store::notify::NotifyRule> {
    c.function
        .iter()
        .enumerate()
        .map(|(i, f)| crate::store::notify::NotifyRule {
            id: f
                .id
                .clone()
                .unwrap_or_else(|| format!("{}-{i}", f.function)),
            function: f.function.clone(),
            events: f.events.clone(),
            prefix: f.filter_prefix.clone(),
            suffix: f.filter_suffix.clone(),
        })
        .collect()
}

#[async_trait::async_trait]
impl Typed for NotificationType {
    type Config = NotificationConfig;
    type State = NotificationState;
    const TYPE: &'static str = "bucket_notification";
    fn schema(&self) -> &Schema {
        &self.0
    }
    fn validate(&self, c: &Value) -> Vec<AttrError> {
        let mut e = vec![];
        for b in get::blocks(c, "function") {
            for p in veeps_resource::get::strings(b, "events") {
                if let Err(m) = crate::store::notify::check_pattern(&p) {
                    e.push(AttrError::on("function.events", m));
                }
            }
        }
        e
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&NotificationState>,
        c: &NotificationConfig,
    ) -> Result<NotificationState, ResourceError> {
        let s = store(ctx)?.clone();
        let (b, rules) = (c.bucket.clone(), rules_of(c));
        tokio::task::spawn_blocking(move || s.set_notifications(&b, &rules))
            .await
            .map_err(|e| ResourceError::Failed(e.to_string()))?
            .map_err(|e| ResourceError::Failed(e.to_string()))?;
        Ok(NotificationState {
            config: c.clone(),
            id: c.bucket.clone(),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &NotificationState,
    ) -> Result<Observed<NotificationState>, ResourceError> {
        let st = store(ctx)?;
        if st.bucket(&s.config.bucket).is_err() {
            return Ok(Observed::Gone);
        }
        let rules = st.notifications(&s.config.bucket);
        Ok(if rules == rules_of(&s.config) {
            Observed::Exists(s.clone())
        } else {
            Observed::Gone
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &NotificationState) -> Result<(), ResourceError> {
        let st = store(ctx)?.clone();
        let b = s.config.bucket.clone();
        tokio::task::spawn_blocking(move || match st.set_notifications(&b, &[]) {
            Ok(()) | Err(crate::store::StoreError::NoSuchBucket(_)) => Ok(()),
            Err(e) => Err(ResourceError::Failed(e.to_string())),
        })
        .await
        .map_err(|e| ResourceError::Failed(e.to_string()))?
    }
}

fn store(ctx: &Ctx) -> Result<&Arc<ObjectStore>, ResourceError> {
    ctx.service::<Arc<ObjectStore>>("object storage")
}

fn access(ctx: &Ctx) -> Result<&Arc<crate::access::Access>, ResourceError> {
    ctx.service::<Arc<crate::access::Access>>("S3 access")
}

/// `website` of `bucket`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebsiteConfig {
    index_document: String,
    error_document: Option<String>,
}

/// `transition` of a lifecycle rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionConfig {
    days: u32,
    storage_class: String,
}

/// `lifecycle_rule` of `bucket`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleRuleConfig {
    id: String,
    prefix: String,
    enabled: bool,
    expiration_days: Option<u32>,
    noncurrent_version_expiration_days: Option<u32>,
    abort_incomplete_multipart_upload_days: Option<u32>,
    object_size_greater_than: Option<u64>,
    object_size_less_than: Option<u64>,
    newer_noncurrent_versions: Option<u32>,
    expired_object_delete_marker: bool,
    #[serde(default, deserialize_with = "list")]
    transition: Vec<TransitionConfig>,
}

impl LifecycleRuleConfig {
    fn rule(&self) -> Rule {
        Rule {
            id: self.id.clone(),
            prefix: self.prefix.clone(),
            enabled: self.enabled,
            expiration_days: self.expiration_days,
            noncurrent_expiration_days: self.noncurrent_version_expiration_days,
            abort_incomplete_days: self.abort_incomplete_multipart_upload_days,
            size_greater_than: self.object_size_greater_than,
            size_less_than: self.object_size_less_than,
            newer_noncurrent_versions: self.newer_noncurrent_versions,
            expired_object_delete_marker: self.expired_object_delete_marker,
            transitions: self
                .transition
                .iter()
                .map(|t| Transition {
                    days: t.days,
                    storage_class: t.storage_class.clone(),
                })
                .collect(),
        }
    }
}

/// `bucket`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketConfig {
    bucket: String,
    force_destroy: bool,
    policy: Option<String>,
    versioning: bool,
    encryption: bool,
    website: Option<WebsiteConfig>,
    #[serde(default, deserialize_with = "list")]
    lifecycle_rule: Vec<LifecycleRuleConfig>,
}

/// `bucket`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketState {
    #[serde(flatten)]
    config: BucketConfig,
    id: String,
    arn: String,
    website_endpoint: Option<String>,
}

fn set_policy(ctx: &Ctx, c: &BucketConfig) -> Result<(), ResourceError> {
    access(ctx)?
        .set_policy(&c.bucket, c.policy.as_deref())
        .map_err(ResourceError::Invalid)
}

/// Applies versioning, website and lifecycle settings to the bucket.
async fn configure(ctx: &Ctx, c: &BucketConfig) -> Result<(), ResourceError> {
    let name = c.bucket.clone();
    let versioning = c.versioning;
    let website = c.website.as_ref().map(|w| Website {
        index_document: w.index_document.clone(),
        error_document: w.error_document.clone(),
    });
    let rules: Vec<Rule> = c
        .lifecycle_rule
        .iter()
        .map(LifecycleRuleConfig::rule)
        .collect();
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

fn website_endpoint(bucket: &str) -> String {
    format!("{bucket}.s3-website.localhost")
}

fn failed(e: impl std::fmt::Display) -> ResourceError {
    ResourceError::Failed(e.to_string())
}

/// `bucket`.
pub struct BucketType(Schema);

#[async_trait::async_trait]
impl Typed for BucketType {
    type Config = BucketConfig;
    type State = BucketState;
    const TYPE: &'static str = "bucket";
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
        // Rules are checked once they are known.
        let rules: Vec<Rule> = match c.get("lifecycle_rule") {
            Some(v) if !v.has_unknown() => {
                match decode::<Option<Vec<LifecycleRuleConfig>>>("bucket", v) {
                    Ok(r) => r.iter().flatten().map(LifecycleRuleConfig::rule).collect(),
                    Err(err) => {
                        e.push(AttrError::on("lifecycle_rule", err.to_string()));
                        vec![]
                    }
                }
            }
            _ => vec![],
        };
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
                (
                    "website_endpoint".to_string(),
                    match get::block(c, "website") {
                        Some(_) => Value::String(website_endpoint(b)),
                        None => Value::Null,
                    },
                ),
            ]
            .into(),
            None => BTreeMap::new(),
        }
    }
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&BucketState>,
        c: &BucketConfig,
    ) -> Result<BucketState, ResourceError> {
        let s = store(ctx)?.clone();
        let env = ctx.env.clone();
        let n = c.bucket.clone();
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
        Ok(BucketState {
            config: c.clone(),
            id: c.bucket.clone(),
            arn: format!("arn:aws:s3:::{}", c.bucket),
            website_endpoint: c.website.as_ref().map(|_| website_endpoint(&c.bucket)),
        })
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &BucketState,
    ) -> Result<Observed<BucketState>, ResourceError> {
        Ok(match store(ctx)?.bucket(&s.config.bucket) {
            Ok(_) => Observed::Exists(s.clone()),
            Err(_) => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, st: &BucketState) -> Result<(), ResourceError> {
        let name = st.config.bucket.clone();
        let force = st.config.force_destroy;
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

/// `bucket_object`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectConfig {
    bucket: String,
    key: String,
    content: Option<String>,
    source: Option<String>,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

/// `bucket_object`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectState {
    #[serde(flatten)]
    config: ObjectConfig,
    etag: String,
    id: String,
}

fn body(c: &ObjectConfig) -> Result<Vec<u8>, ResourceError> {
    match (&c.content, &c.source) {
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
impl Typed for ObjectType {
    type Config = ObjectConfig;
    type State = ObjectState;
    const TYPE: &'static str = "bucket_object";
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
    async fn ensure(
        &self,
        ctx: &Ctx,
        _prior: Option<&ObjectState>,
        c: &ObjectConfig,
    ) -> Result<ObjectState, ResourceError> {
        let data = body(c)?;
        let opts = PutOptions {
            content_type: c.content_type.clone(),
            cache_control: c.cache_control.clone(),
            metadata: c.metadata.clone().unwrap_or_default(),
            headers: [
                ("content-encoding", &c.content_encoding),
                ("content-disposition", &c.content_disposition),
                ("content-language", &c.content_language),
            ]
            .into_iter()
            .filter_map(|(h, v)| v.as_ref().map(|v| (h.to_string(), v.clone())))
            .collect(),
        };
        let s = store(ctx)?.clone();
        let (b, k) = (c.bucket.clone(), c.key.clone());
        let meta = tokio::task::spawn_blocking(move || s.put(&b, &k, &data[..], opts))
            .await
            .map_err(failed)?
            .map_err(failed)?;
        Ok(ObjectState {
            config: c.clone(),
            etag: meta.etag,
            id: format!("{}/{}", c.bucket, c.key),
        })
    }
    async fn reconcile(&self, _ctx: &Ctx, s: &ObjectState) -> Result<ObjectState, ResourceError> {
        // An object changed while veeps was down is drift for the next plan, not something
        // to overwrite at start.
        Ok(s.clone())
    }
    async fn read(
        &self,
        ctx: &Ctx,
        s: &ObjectState,
    ) -> Result<Observed<ObjectState>, ResourceError> {
        Ok(match store(ctx)?.head(&s.config.bucket, &s.config.key) {
            Err(_) => Observed::Gone,
            Ok(m) if m.etag == s.etag => Observed::Exists(s.clone()),
            // Changed outside veeps: the body no longer is what was configured, so the
            // attribute that gives the body shows the change (and apply puts it back).
            Ok(m) => {
                let mut changed = s.clone();
                let marker = Some("(changed outside veeps)".to_string());
                if changed.config.content.is_some() {
                    changed.config.content = marker;
                } else {
                    changed.config.source = marker;
                }
                changed.etag = m.etag;
                Observed::Exists(changed)
            }
        })
    }
    async fn delete(&self, ctx: &Ctx, st: &ObjectState) -> Result<(), ResourceError> {
        let (b, k) = (st.config.bucket.clone(), st.config.key.clone());
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

/// `access_key`: a key pair of an `iam_user`; what it may do is what the user's policies
/// and bucket policies grant that user.
pub struct KeyType(Schema);

#[async_trait::async_trait]
impl Typed for KeyType {
    type Config = KeyConfig;
    type State = KeyState;
    const TYPE: &'static str = "access_key";
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
    async fn ensure(
        &self,
        ctx: &Ctx,
        prior: Option<&KeyState>,
        c: &KeyConfig,
    ) -> Result<KeyState, ResourceError> {
        // `user` forces replacement: a prior key stays what it is.
        if let Some(p) = prior {
            return Ok(p.clone());
        }
        if !access(ctx)?.user_exists(&c.user) {
            return Err(ResourceError::Invalid(format!(
                "no iam_user named {}: declare it (resource \"iam_user\") and refer to it, like user = iam_user.x.name, so that it is created first",
                c.user
            )));
        }
        let (k, secret) = access(ctx)?
            .create_key(&c.user)
            .map_err(ResourceError::Failed)?;
        Ok(KeyState {
            config: c.clone(),
            id: k.id,
            secret,
        })
    }
    async fn read(&self, ctx: &Ctx, s: &KeyState) -> Result<Observed<KeyState>, ResourceError> {
        Ok(match access(ctx)?.key(&s.id) {
            Some(_) => Observed::Exists(s.clone()),
            None => Observed::Gone,
        })
    }
    async fn delete(&self, ctx: &Ctx, s: &KeyState) -> Result<(), ResourceError> {
        access(ctx)?
            .delete_key(&s.id)
            .map_err(ResourceError::Failed)
    }
}

/// `access_key`'s settable attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyConfig {
    user: String,
}

/// `access_key`'s state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyState {
    #[serde(flatten)]
    config: KeyConfig,
    id: String,
    secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use veeps_resource::check_schema;

    #[test]
    fn schemas_agree_with_config_and_state() {
        let mut r = Registry::new();
        register(&mut r);
        let schema = |t: &str| r.resource(t).unwrap().schema().clone();
        check_schema(&BucketType(schema("bucket"))).unwrap();
        check_schema(&ObjectType(schema("bucket_object"))).unwrap();
        check_schema(&KeyType(schema("access_key"))).unwrap();
        check_schema(&NotificationType::new()).unwrap();
    }
}
