//! Buckets: listing, creating, probing and deleting them, and what S3 reports of them.

use super::*;

pub(super) async fn list_buckets(
    api: &Api,
    _req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let store = api.store.clone();
    let bs = blocking(move || store.buckets()).await?;
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(
            bs.into_iter()
                .map(|b| Bucket {
                    name: Some(b.name),
                    creation_date: Some(time(b.created_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub(super) async fn create_bucket(
    api: &Api,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    if crate::access::is_reserved(&req.input.bucket) {
        return Err(s3_error!(
            AccessDenied,
            "the bucket name {} is reserved for veeps' own use",
            req.input.bucket
        ));
    }
    if req.input.object_lock_enabled_for_bucket == Some(true) {
        return Err(unsupported("object lock"));
    }
    let store = api.store.clone();
    let name = req.input.bucket.clone();
    blocking(move || store.create_bucket(&name, API_ENV)).await?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{}", req.input.bucket)),
    }))
}

pub(super) async fn head_bucket(
    api: &Api,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    let store = api.store.clone();
    blocking(move || store.bucket(&req.input.bucket)).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn delete_bucket(
    api: &Api,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let store = api.store.clone();
    blocking(move || store.delete_bucket(&req.input.bucket)).await?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(super) async fn get_bucket_encryption(
    api: &Api,
    req: S3Request<GetBucketEncryptionInput>,
) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
    let store = api.store.clone();
    blocking(move || store.bucket(&req.input.bucket)).await?;
    // Every object is encrypted with its own key under the environment's key.
    Ok(S3Response::new(GetBucketEncryptionOutput {
        server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    sse_algorithm: ServerSideEncryption::from_static(ServerSideEncryption::AES256),
                    kms_master_key_id: None,
                }),
                bucket_key_enabled: Some(true),
            }],
        }),
    }))
}

pub(super) async fn get_bucket_location(
    api: &Api,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let store = api.store.clone();
    blocking(move || store.bucket(&req.input.bucket)).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}
