//! Listings: ListObjects (both versions) and ListObjectVersions.

use super::*;

pub(super) async fn list_objects_v2(
    api: &Api,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = req.input;
    // The continuation token is the last key returned (opaque to clients).
    let after = i.continuation_token.clone().or(i.start_after.clone());
    let (page, max) = api
        .page(&i.bucket, &i.prefix, &i.delimiter, after, i.max_keys)
        .await?;
    let count = (page.contents.len() + page.prefixes.len()) as i32;
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: i.prefix,
        delimiter: i.delimiter,
        max_keys: Some(max),
        key_count: Some(count),
        continuation_token: i.continuation_token,
        start_after: i.start_after,
        is_truncated: Some(page.next.is_some()),
        next_continuation_token: page.next,
        contents: Some(page.contents),
        common_prefixes: Some(page.prefixes),
        ..Default::default()
    }))
}

pub(super) async fn list_objects(
    api: &Api,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let i = req.input;
    let (page, max) = api
        .page(
            &i.bucket,
            &i.prefix,
            &i.delimiter,
            i.marker.clone(),
            i.max_keys,
        )
        .await?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: i.prefix,
        delimiter: i.delimiter,
        marker: i.marker,
        max_keys: Some(max),
        is_truncated: Some(page.next.is_some()),
        next_marker: page.next,
        contents: Some(page.contents),
        common_prefixes: Some(page.prefixes),
        ..Default::default()
    }))
}

pub(super) async fn list_object_versions(
    api: &Api,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let i = req.input;
    let store = api.store.clone();
    let max = i.max_keys.unwrap_or(1000).clamp(0, 1000);
    let (b, p, d, km, vm) = (
        i.bucket.clone(),
        i.prefix.clone().unwrap_or_default(),
        i.delimiter.clone(),
        i.key_marker.clone(),
        i.version_id_marker.clone(),
    );
    let l = blocking(move || {
        store.list_versions(
            &b,
            &p,
            d.as_deref(),
            km.as_deref(),
            vm.as_deref(),
            max as usize,
        )
    })
    .await?;
    let (mut versions, mut markers) = (vec![], vec![]);
    for (m, latest) in l.versions {
        if m.delete_marker {
            markers.push(DeleteMarkerEntry {
                is_latest: Some(latest),
                last_modified: Some(time(m.last_modified_ms)),
                version_id: Some(m.version_label()),
                key: Some(m.key),
                ..Default::default()
            });
        } else {
            versions.push(ObjectVersion {
                e_tag: Some(etag(&m)),
                is_latest: Some(latest),
                last_modified: Some(time(m.last_modified_ms)),
                size: Some(m.size as i64),
                storage_class: Some(ObjectVersionStorageClass::from(class(&m))),
                version_id: Some(m.version_label()),
                key: Some(m.key),
                ..Default::default()
            });
        }
    }
    let (nk, nv) = match l.next.clone() {
        Some((k, v)) => (Some(k), v),
        None => (None, None),
    };
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(i.bucket),
        prefix: i.prefix,
        delimiter: i.delimiter,
        key_marker: i.key_marker,
        version_id_marker: i.version_id_marker,
        max_keys: Some(max),
        is_truncated: Some(l.next.is_some()),
        next_key_marker: nk,
        next_version_id_marker: nv,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(
            l.common_prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
        ),
        ..Default::default()
    }))
}

/// A page of a listing, as both ListObjects versions answer it.
pub(super) struct Page {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    next: Option<String>,
}

impl Api {
    /// One page of keys after `after`; returns it with the page size used.
    async fn page(
        &self,
        bucket: &str,
        prefix: &Option<String>,
        delimiter: &Option<String>,
        after: Option<String>,
        max_keys: Option<i32>,
    ) -> S3Result<(Page, i32)> {
        let store = self.store.clone();
        let (b, p, d) = (
            bucket.to_string(),
            prefix.clone().unwrap_or_default(),
            delimiter.clone(),
        );
        let max = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let l = blocking(move || store.list(&b, &p, d.as_deref(), after.as_deref(), max)).await?;
        let page = Page {
            contents: l.objects.into_iter().map(object).collect(),
            prefixes: l
                .common_prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
            next: l.next,
        };
        Ok((page, max as i32))
    }
}
