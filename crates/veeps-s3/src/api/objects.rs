//! Objects: put, get, head, copy and delete, one at a time or many.

use super::*;

pub(super) async fn put_object(
    api: &Api,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    refuse_unimplemented(WriteAsks {
        sse_c: input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
        sse: input.server_side_encryption.as_ref(),
        kms_key: input.ssekms_key_id.is_some() || input.ssekms_encryption_context.is_some(),
        lock: input.object_lock_mode.is_some()
            || input.object_lock_retain_until_date.is_some()
            || input.object_lock_legal_hold_status.is_some(),
        tags: input.tagging.is_some(),
        acl: input.acl.as_ref(),
    })?;
    if input.write_offset_bytes.is_some() {
        return Err(unsupported("appends (x-amz-write-offset-bytes)"));
    }
    if input.content_length.is_some_and(|n| n as u64 > MAX_PUT) {
        return Err(err(StoreError::EntityTooLarge));
    }
    let md5 = content_md5(&input.content_md5)?;
    let checks = crate::store::PutChecks {
        md5,
        write_if: write_if(input.if_match.as_ref(), input.if_none_match.as_ref())?,
    };
    let store = api.store.clone();
    let (bucket, key) = (input.bucket.clone(), input.key.clone());
    unkept(
        input.expires.is_some(),
        input.website_redirect_location.is_some(),
        input.storage_class.as_ref(),
    )?;
    let opts = put_options(
        &input.content_type,
        &input.cache_control,
        &input.metadata,
        (
            &input.content_encoding,
            &input.content_disposition,
            &input.content_language,
        ),
    );
    let meta = stream_verified(input.body, headers, trailing_headers, move |r| {
        store.put_if(&bucket, &key, r, opts, &checks)
    })
    .await?;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(&meta)),
        size: Some(meta.size as i64),
        version_id: meta.versioned.then(|| meta.version_id.clone()),
        server_side_encryption: sse(),
        ..Default::default()
    }))
}

pub(super) async fn get_object(
    api: &Api,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    no_customer_key(&input.sse_customer_algorithm)?;
    let store = api.store.clone();
    let i = input.clone();
    // Look up, check, open, and read a small body whole, here: these are page-cache
    // reads of microseconds, cheaper than a hand-off to a blocking thread (which cost
    // half the throughput of small GETs). Larger bodies stream a chunk at a time.
    let look = move || -> Result<_, StoreError> {
        let (b, meta) = store.lookup(&i.bucket, &i.key, i.version_id.as_deref())?;
        let checked = preconditions(
            &meta,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )
        .and_then(|()| match &i.range {
            None => Ok(None),
            Some(r) => r
                .check(meta.size)
                .map(|rg| Some((rg.start, rg.end.saturating_sub(1))))
                .map_err(|_| s3_error!(InvalidRange, "the range is not satisfiable")),
        });
        let range = match checked {
            Ok(r) => r,
            Err(e) => return Ok((meta, b.versioning, Err(e))),
        };
        let len = match range {
            Some((a, z)) => z - a + 1,
            None => meta.size,
        };
        let mut reader = store.reader(&b, &meta, range)?;
        let body = if len <= SMALL {
            SendBody::Whole(reader.read_whole()?)
        } else {
            SendBody::Stream(Box::new(reader))
        };
        Ok((meta, b.versioning, Ok((range, len, body))))
    };
    // A version replaced between its lookup and its opening: looked up again.
    let (meta, ver, found) = ObjectStore::again_if_replaced(look).map_err(err)?;
    let (range, len, body) = found?;
    let len = len as i64;
    let body = match body {
        SendBody::Whole(b) => StreamingBlob::from(s3s::Body::from(b)),
        SendBody::Stream(r) if (len as u64) <= INLINE => stream_inline(*r),
        SendBody::Stream(r) => stream_out(*r),
    };
    Ok(S3Response::new(get_output(&meta, ver, range, len, body)))
}

/// What a GET of `meta` answers, but for its body.
pub(super) fn get_output(
    meta: &ObjectMeta,
    ver: Versioning,
    range: Option<(u64, u64)>,
    len: i64,
    body: StreamingBlob,
) -> GetObjectOutput {
    let content_range = range.map(|(a, z)| format!("bytes {a}-{z}/{}", meta.size));
    GetObjectOutput {
        body: Some(body),
        content_length: Some(len),
        content_range,
        accept_ranges: Some("bytes".into()),
        e_tag: Some(etag(meta)),
        last_modified: Some(time(meta.last_modified_ms)),
        content_type: meta.content_type.clone(),
        cache_control: meta.cache_control.clone(),
        content_encoding: header(meta, "content-encoding"),
        content_disposition: header(meta, "content-disposition"),
        content_language: header(meta, "content-language"),
        metadata: Some(meta.metadata.clone().into_iter().collect()),
        version_id: version_out(meta, ver),
        storage_class: meta.storage_class.clone().map(StorageClass::from),
        server_side_encryption: sse(),
        ..Default::default()
    }
}

pub(super) async fn head_object(
    api: &Api,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    no_customer_key(&req.input.sse_customer_algorithm)?;
    let store = api.store.clone();
    let (b, k, v) = (
        req.input.bucket.clone(),
        req.input.key.clone(),
        req.input.version_id.clone(),
    );
    let (bk, meta) = blocking(move || store.lookup(&b, &k, v.as_deref())).await?;
    let ver = bk.versioning;
    let i = &req.input;
    preconditions(
        &meta,
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
        i.if_modified_since.as_ref(),
        i.if_unmodified_since.as_ref(),
    )?;
    Ok(S3Response::new(HeadObjectOutput {
        content_length: Some(meta.size as i64),
        e_tag: Some(etag(&meta)),
        last_modified: Some(time(meta.last_modified_ms)),
        content_type: meta.content_type.clone(),
        cache_control: meta.cache_control.clone(),
        content_encoding: header(&meta, "content-encoding"),
        content_disposition: header(&meta, "content-disposition"),
        content_language: header(&meta, "content-language"),
        accept_ranges: Some("bytes".into()),
        metadata: Some(meta.metadata.clone().into_iter().collect()),
        version_id: version_out(&meta, ver),
        storage_class: meta.storage_class.clone().map(StorageClass::from),
        server_side_encryption: sse(),
        ..Default::default()
    }))
}

pub(super) async fn delete_object(
    api: &Api,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let store = api.store.clone();
    let i = req.input;
    if i.if_match_last_modified_time.is_some() || i.if_match_size.is_some() {
        return Err(unsupported(
            "x-amz-if-match-last-modified-time and x-amz-if-match-size",
        ));
    }
    let cond = write_if(i.if_match.as_ref(), None)?;
    if i.version_id.is_some() && cond != crate::store::WriteIf::Always {
        return Err(unsupported("If-Match on a delete of a given version"));
    }
    let d = blocking(move || match &i.version_id {
        Some(v) => store.delete_version(&i.bucket, &i.key, v),
        None => store.delete_if(&i.bucket, &i.key, &cond),
    })
    .await?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: d.delete_marker.then_some(true),
        version_id: d.version_id,
        ..Default::default()
    }))
}

pub(super) async fn copy_object(
    api: &Api,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    // S3's conditional copy: If-Match / If-None-Match on the destination.
    let cond = |name: &str| {
        req.headers
            .get(name)
            .map(|v| ETagCondition::parse_http_header(v.as_bytes()))
            .transpose()
            .map_err(|_| s3_error!(InvalidArgument, "{name} is not an ETag or *"))
    };
    let dest_if = write_if(cond("if-match")?.as_ref(), cond("if-none-match")?.as_ref())?;
    let i = req.input;
    refuse_unimplemented(WriteAsks {
        sse_c: i.sse_customer_algorithm.is_some() || i.copy_source_sse_customer_algorithm.is_some(),
        sse: i.server_side_encryption.as_ref(),
        kms_key: i.ssekms_key_id.is_some(),
        lock: i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some(),
        tags: i.tagging.is_some(),
        acl: i.acl.as_ref(),
    })?;
    let CopySource::Bucket {
        bucket: sb,
        key: sk,
        version_id: sv,
    } = &i.copy_source
    else {
        return Err(s3_error!(
            NotImplemented,
            "copies from access points are not supported"
        ));
    };
    let (sb, sk, sv) = (
        sb.to_string(),
        sk.to_string(),
        sv.as_deref().map(String::from),
    );
    let store = api.store.clone();
    let (b2, k2, v2) = (sb.clone(), sk.clone(), sv.clone());
    let src = blocking(move || store.head_version(&b2, &k2, v2.as_deref())).await?;
    preconditions(
        &src,
        i.copy_source_if_match.as_ref(),
        i.copy_source_if_none_match.as_ref(),
        i.copy_source_if_modified_since.as_ref(),
        i.copy_source_if_unmodified_since.as_ref(),
    )
    .map_err(|e| {
        if e.code() == &S3ErrorCode::NotModified {
            s3_error!(PreconditionFailed)
        } else {
            e
        }
    })?;
    // Metadata is copied unless REPLACE is asked for.
    let replace = i
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let opts = if replace {
        put_options(
            &i.content_type,
            &i.cache_control,
            &i.metadata,
            (
                &i.content_encoding,
                &i.content_disposition,
                &i.content_language,
            ),
        )
    } else {
        PutOptions {
            content_type: src.content_type.clone(),
            cache_control: src.cache_control.clone(),
            metadata: src.metadata.clone(),
            headers: src.headers.clone(),
        }
    };
    if !replace && sb == i.bucket && sk == i.key && sv.is_none() {
        return Err(s3_error!(InvalidRequest, "copying an object onto itself needs a metadata change (x-amz-metadata-directive: REPLACE)"));
    }
    let store = api.store.clone();
    let (db, dk) = (i.bucket.clone(), i.key.clone());
    let checks = crate::store::PutChecks {
        md5: None,
        write_if: dest_if,
    };
    let meta = blocking(move || {
        let (_, reader) = store.open_version(&sb, &sk, sv.as_deref(), None)?;
        store.put_if(&db, &dk, reader, opts, &checks)
    })
    .await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&meta)),
            last_modified: Some(time(meta.last_modified_ms)),
            ..Default::default()
        }),
        version_id: meta.versioned.then(|| meta.version_id.clone()),
        server_side_encryption: sse(),
        ..Default::default()
    }))
}

pub(super) async fn delete_objects(
    api: &Api,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let i = req.input.clone();
    if i.delete.objects.len() > 1000 {
        return Err(s3_error!(MalformedXML, "at most 1,000 keys per request"));
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    let store = api.store.clone();
    let b = i.bucket.clone();
    // Each key is authorised on its own, as S3 does: a denied key is an AccessDenied
    // entry in the answer, and the others are deleted.
    let keys: Vec<(String, Option<String>, bool)> = i
        .delete
        .objects
        .iter()
        .map(|o| {
            let action = if o.version_id.is_some() {
                "s3:DeleteObjectVersion"
            } else {
                "s3:DeleteObject"
            };
            let ok = api.may(&req, action, &i.bucket, &o.key);
            (o.key.clone(), o.version_id.clone(), ok)
        })
        .collect();
    let results = blocking(move || {
        store.bucket(&b)?;
        Ok(keys
            .into_iter()
            .map(|(k, v, ok)| {
                if !ok {
                    return (Err(("AccessDenied", "Access Denied".to_string())), k, v);
                }
                let r = match &v {
                    Some(v) => store.delete_version(&b, &k, v),
                    None => store.delete(&b, &k),
                };
                (r.map_err(|e| ("InternalError", e.to_string())), k, v)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let (mut deleted, mut errors) = (vec![], vec![]);
    for (r, k, v) in results {
        match r {
            Ok(d) if !quiet => deleted.push(DeletedObject {
                key: Some(k),
                delete_marker: d.delete_marker.then_some(true),
                version_id: d.version_id,
                ..Default::default()
            }),
            Ok(_) => {}
            Err((code, m)) => errors.push(Error {
                code: Some(code.into()),
                key: Some(k),
                message: Some(m),
                version_id: v,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}
