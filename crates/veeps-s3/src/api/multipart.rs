//! Multipart uploads: create, upload parts, complete, abort, list.

use super::*;

pub(super) async fn create_multipart_upload(
    api: &Api,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let i = req.input;
    refuse_unimplemented(WriteAsks {
        sse_c: i.sse_customer_algorithm.is_some(),
        sse: i.server_side_encryption.as_ref(),
        kms_key: i.ssekms_key_id.is_some(),
        lock: i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some(),
        tags: i.tagging.is_some(),
        acl: i.acl.as_ref(),
    })?;
    let store = api.store.clone();
    let (b, k) = (i.bucket.clone(), i.key.clone());
    unkept(
        i.expires.is_some(),
        i.website_redirect_location.is_some(),
        i.storage_class.as_ref(),
    )?;
    let opts = put_options(
        &i.content_type,
        &i.cache_control,
        &i.metadata,
        (
            &i.content_encoding,
            &i.content_disposition,
            &i.content_language,
        ),
    );
    let up = blocking(move || store.create_upload(&b, &k, opts)).await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(up.id),
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    api: &Api,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request {
        input: i,
        headers,
        trailing_headers,
        ..
    } = req;
    if i.sse_customer_algorithm.is_some() {
        return Err(unsupported(
            "server-side encryption with customer keys (SSE-C)",
        ));
    }
    let store = api.store.clone();
    let (b, id, n) = (i.bucket.clone(), i.upload_id.clone(), i.part_number);
    if !(1..=10_000).contains(&n) {
        return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10,000"));
    }
    if i.content_length
        .is_some_and(|n| n as u64 > crate::store::MAX_PART)
    {
        return Err(err(StoreError::EntityTooLarge));
    }
    let md5 = content_md5(&i.content_md5)?;
    let part = stream_verified(i.body, headers, trailing_headers, move |r| {
        store.put_part_if(&b, &id, n as u32, r, md5.as_deref())
    })
    .await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(part.etag)),
        ..Default::default()
    }))
}

pub(super) async fn complete_multipart_upload(
    api: &Api,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let i = req.input;
    if i.sse_customer_algorithm.is_some() {
        return Err(unsupported(
            "server-side encryption with customer keys (SSE-C)",
        ));
    }
    let checks = crate::store::PutChecks {
        md5: None,
        write_if: write_if(i.if_match.as_ref(), i.if_none_match.as_ref())?,
    };
    let listed: Vec<(u32, String)> = i
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p.part_number.unwrap_or(0).max(0) as u32,
                p.e_tag.as_ref().map(etag_value).unwrap_or_default(),
            )
        })
        .collect();
    let store = api.store.clone();
    let (b, id) = (i.bucket.clone(), i.upload_id.clone());
    let meta = blocking(move || store.complete(&b, &id, &listed, &checks)).await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(meta.key.clone()),
        e_tag: Some(etag(&meta)),
        location: Some(format!("/{}/{}", i.bucket, meta.key)),
        ..Default::default()
    }))
}

pub(super) async fn abort_multipart_upload(
    api: &Api,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let store = api.store.clone();
    blocking(move || store.abort(&req.input.bucket, &req.input.upload_id)).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    api: &Api,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let i = req.input;
    let store = api.store.clone();
    let (b, id) = (i.bucket.clone(), i.upload_id.clone());
    let parts = blocking(move || store.parts(&b, &id)).await?;
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(i.upload_id),
        is_truncated: Some(false),
        parts: Some(
            parts
                .into_iter()
                .map(|p| Part {
                    part_number: Some(p.number as i32),
                    e_tag: Some(ETag::Strong(p.etag)),
                    size: Some(p.size as i64),
                    last_modified: Some(time(p.last_modified_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub(super) async fn list_multipart_uploads(
    api: &Api,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let i = req.input;
    let store = api.store.clone();
    let b = i.bucket.clone();
    let ups = blocking(move || store.uploads(&b)).await?;
    let prefix = i.prefix.clone().unwrap_or_default();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket),
        prefix: i.prefix,
        is_truncated: Some(false),
        uploads: Some(
            ups.into_iter()
                .filter(|u| u.key.starts_with(&prefix))
                .map(|u| MultipartUpload {
                    key: Some(u.key),
                    upload_id: Some(u.id),
                    initiated: Some(time(u.initiated_ms)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}
