//! Bucket settings: versioning, lifecycle rules and the website configuration.

use super::*;

pub(super) async fn put_bucket_versioning(
    api: &Api,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let i = req.input;
    let want = match i
        .versioning_configuration
        .status
        .as_ref()
        .map(|s| s.as_str())
    {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        other => {
            return Err(s3_error!(
                MalformedXML,
                "versioning status {other:?} is neither Enabled nor Suspended"
            ))
        }
    };
    let store = api.store.clone();
    blocking(move || store.set_versioning(&i.bucket, want)).await?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}

pub(super) async fn get_bucket_versioning(
    api: &Api,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let store = api.store.clone();
    let b = blocking(move || store.bucket(&req.input.bucket)).await?;
    Ok(S3Response::new(GetBucketVersioningOutput {
        status: match b.versioning {
            Versioning::Off => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        },
        ..Default::default()
    }))
}

pub(super) async fn put_bucket_lifecycle_configuration(
    api: &Api,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let i = req.input;
    let rules = i
        .lifecycle_configuration
        .map(|c| c.rules)
        .unwrap_or_default()
        .into_iter()
        .map(rule_in)
        .collect::<Result<Vec<_>, _>>()?;
    let store = api.store.clone();
    blocking(move || {
        store.configure(&i.bucket, |b| {
            b.lifecycle = rules;
            Ok(())
        })
    })
    .await?;
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

pub(super) async fn get_bucket_lifecycle_configuration(
    api: &Api,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let store = api.store.clone();
    let b = blocking(move || store.bucket(&req.input.bucket)).await?;
    if b.lifecycle.is_empty() {
        return Err(s3_error!(
            NoSuchLifecycleConfiguration,
            "the bucket has no lifecycle rules"
        ));
    }
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(b.lifecycle.iter().map(rule_out).collect()),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket_lifecycle(
    api: &Api,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    let store = api.store.clone();
    blocking(move || {
        store.configure(&req.input.bucket, |b| {
            b.lifecycle.clear();
            Ok(())
        })
    })
    .await?;
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}

pub(super) async fn put_bucket_website(
    api: &Api,
    req: S3Request<PutBucketWebsiteInput>,
) -> S3Result<S3Response<PutBucketWebsiteOutput>> {
    let i = req.input;
    let c = i.website_configuration;
    let Some(index) = c.index_document.map(|d| d.suffix) else {
        return Err(s3_error!(
            InvalidArgument,
            "a website needs an IndexDocument (redirect-only websites are not supported)"
        ));
    };
    if index.is_empty() || index.contains('/') {
        return Err(s3_error!(
            InvalidArgument,
            "the IndexDocument suffix must be non-empty and hold no slash"
        ));
    }
    let w = Website {
        index_document: index,
        error_document: c.error_document.map(|d| d.key),
    };
    let store = api.store.clone();
    blocking(move || {
        store.configure(&i.bucket, |b| {
            b.website = Some(w);
            Ok(())
        })
    })
    .await?;
    Ok(S3Response::new(PutBucketWebsiteOutput::default()))
}

pub(super) async fn get_bucket_website(
    api: &Api,
    req: S3Request<GetBucketWebsiteInput>,
) -> S3Result<S3Response<GetBucketWebsiteOutput>> {
    let store = api.store.clone();
    let b = blocking(move || store.bucket(&req.input.bucket)).await?;
    let Some(w) = b.website else {
        return Err(s3_error!(
            NoSuchWebsiteConfiguration,
            "the bucket is not a website"
        ));
    };
    Ok(S3Response::new(GetBucketWebsiteOutput {
        index_document: Some(IndexDocument {
            suffix: w.index_document,
        }),
        error_document: w.error_document.map(|key| ErrorDocument { key }),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket_website(
    api: &Api,
    req: S3Request<DeleteBucketWebsiteInput>,
) -> S3Result<S3Response<DeleteBucketWebsiteOutput>> {
    let store = api.store.clone();
    blocking(move || {
        store.configure(&req.input.bucket, |b| {
            b.website = None;
            Ok(())
        })
    })
    .await?;
    Ok(S3Response::new(DeleteBucketWebsiteOutput::default()))
}

/// A lifecycle rule from S3's XML.
pub(super) fn rule_in(r: LifecycleRule) -> S3Result<crate::lifecycle::Rule> {
    let days = |d: Option<i32>| d.filter(|d| *d >= 0).map(|d| d as u32);
    let refuse = |what: &str| Err(unsupported(&format!("lifecycle rules with {what}")));
    // Every filter S3 has is applied, or the rule is refused: never a rule wider than
    // the one given.
    let (mut prefix, mut greater, mut less) = (r.prefix.clone(), None, None);
    if let Some(f) = &r.filter {
        if f.tag.is_some() {
            return refuse("tag filters");
        }
        if let Some(and) = &f.and {
            if and.tags.as_ref().is_some_and(|t| !t.is_empty()) {
                return refuse("tag filters");
            }
            prefix = and.prefix.clone().or(prefix);
            greater = and.object_size_greater_than;
            less = and.object_size_less_than;
        }
        prefix = f.prefix.clone().or(prefix);
        greater = f.object_size_greater_than.or(greater);
        less = f.object_size_less_than.or(less);
    }
    if r.expiration.as_ref().is_some_and(|e| e.date.is_some())
        || r.transitions
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.date.is_some()))
    {
        return refuse("dates (give days)");
    }
    if r.noncurrent_version_transitions
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        return refuse("noncurrent version transitions");
    }
    let size = |v: Option<i64>| v.map(|n| n.max(0) as u64);
    let prefix = prefix.unwrap_or_default();
    let rule = crate::lifecycle::Rule {
        id: r
            .id
            .clone()
            .unwrap_or_else(|| format!("rule-{}", hex::encode(rand::random::<[u8; 4]>()))),
        prefix,
        enabled: r.status.as_str() == ExpirationStatus::ENABLED,
        expiration_days: days(r.expiration.as_ref().and_then(|e| e.days)),
        noncurrent_expiration_days: days(
            r.noncurrent_version_expiration
                .as_ref()
                .and_then(|e| e.noncurrent_days),
        ),
        transitions: r
            .transitions
            .unwrap_or_default()
            .into_iter()
            .map(|t| crate::lifecycle::Transition {
                days: days(t.days).unwrap_or(0),
                storage_class: t
                    .storage_class
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        abort_incomplete_days: days(
            r.abort_incomplete_multipart_upload
                .as_ref()
                .and_then(|a| a.days_after_initiation),
        ),
        size_greater_than: size(greater),
        size_less_than: size(less),
        newer_noncurrent_versions: days(
            r.noncurrent_version_expiration
                .as_ref()
                .and_then(|e| e.newer_noncurrent_versions),
        ),
        expired_object_delete_marker: r
            .expiration
            .as_ref()
            .and_then(|e| e.expired_object_delete_marker)
            .unwrap_or(false),
    };
    rule.check()
        .map_err(|m| s3_error!(InvalidArgument, "{m}"))?;
    Ok(rule)
}

/// A lifecycle rule as S3's XML.
pub(super) fn rule_out(r: &crate::lifecycle::Rule) -> LifecycleRule {
    LifecycleRule {
        id: Some(r.id.clone()),
        filter: Some(
            if r.size_greater_than.is_some() || r.size_less_than.is_some() {
                LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: Some(r.prefix.clone()),
                        object_size_greater_than: r.size_greater_than.map(|n| n as i64),
                        object_size_less_than: r.size_less_than.map(|n| n as i64),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                LifecycleRuleFilter {
                    prefix: Some(r.prefix.clone()),
                    ..Default::default()
                }
            },
        ),
        status: ExpirationStatus::from(if r.enabled { "Enabled" } else { "Disabled" }.to_string()),
        expiration: (r.expiration_days.is_some() || r.expired_object_delete_marker).then(|| {
            LifecycleExpiration {
                days: r.expiration_days.map(|d| d as i32),
                expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
                ..Default::default()
            }
        }),
        noncurrent_version_expiration: r.noncurrent_expiration_days.map(|d| {
            NoncurrentVersionExpiration {
                noncurrent_days: Some(d as i32),
                newer_noncurrent_versions: r.newer_noncurrent_versions.map(|n| n as i32),
            }
        }),
        transitions: Some(
            r.transitions
                .iter()
                .map(|t| Transition {
                    days: Some(t.days as i32),
                    storage_class: Some(TransitionStorageClass::from(t.storage_class.clone())),
                    ..Default::default()
                })
                .collect(),
        ),
        abort_incomplete_multipart_upload: r.abort_incomplete_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d as i32),
            }
        }),
        noncurrent_version_transitions: None,
        prefix: None,
    }
}
