//! The object store's tests: durability, concurrency, failure in the middle.

use super::*;

fn open(d: &Path) -> ObjectStore {
    let store = Arc::new(Store::open(&d.join("state.redb")).unwrap());
    let kms = Arc::new(Kms::open(d, store.clone()).unwrap());
    ObjectStore::open(d, store, kms).unwrap()
}

#[test]
fn objects_round_trip_encrypted_with_ranges_listing_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.create_bucket("photos", "prod").unwrap();
    assert!(matches!(
        s.create_bucket("photos", "prod"),
        Err(StoreError::BucketExists(_))
    ));
    let body: Vec<u8> = (0..(3 * CHUNK + 123))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let m = s
        .put(
            "photos",
            "2026/a.jpg",
            &body[..],
            PutOptions {
                content_type: Some("image/jpeg".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(m.size, body.len() as u64);
    assert_eq!(m.etag, hex::encode(Md5::digest(&body)));
    // Encrypted at rest: the plaintext is nowhere in the blob.
    let raw = std::fs::read(d.path().join("s3/blobs").join(&m.version_id)).unwrap();
    assert!(!raw.windows(64).any(|w| w == &body[1000..1064]));
    assert_eq!(s.read("photos", "2026/a.jpg", None).unwrap().1, body);
    for (a, b) in [
        (0, 0),
        (10, 70_000),
        (CHUNK as u64 - 1, CHUNK as u64),
        (3 * CHUNK as u64, 10_000_000),
    ] {
        let got = s.read("photos", "2026/a.jpg", Some((a, b))).unwrap().1;
        let end = (b as usize).min(body.len() - 1);
        assert_eq!(got, &body[a as usize..=end], "{a}-{b}");
    }
    // Piece by piece, as a GET streams it, ranges and all, including after a `read`.
    for (a, b) in [
        (0, body.len() as u64 - 1),
        (10, 70_000),
        (CHUNK as u64 - 1, 2 * CHUNK as u64 + 5),
        (3 * CHUNK as u64, body.len() as u64 - 1),
    ] {
        let (_, mut r) = s.open_read("photos", "2026/a.jpg", Some((a, b))).unwrap();
        let mut got = vec![0u8; 3];
        let first = r.read(&mut got).unwrap();
        got.truncate(first);
        while let Some(piece) = r.next_bytes().unwrap() {
            assert!(!piece.is_empty() && piece.len() <= blob::BATCH * CHUNK);
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, &body[a as usize..=b as usize], "{a}-{b}");
    }
    assert!(matches!(
        s.read("photos", "2026/a.jpg", Some((10_000_000, 10_000_001))),
        Err(StoreError::InvalidRange)
    ));
    s.put("photos", "2026/b.jpg", &b""[..], PutOptions::default())
        .unwrap();
    s.put("photos", "2027/c.jpg", &b"c"[..], PutOptions::default())
        .unwrap();
    s.put("photos", "index.html", &b"<h1>"[..], PutOptions::default())
        .unwrap();
    let l = s.list("photos", "", Some("/"), None, 1000).unwrap();
    assert_eq!(l.common_prefixes, vec!["2026/", "2027/"]);
    assert_eq!(
        l.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        vec!["index.html"]
    );
    let page = s.list("photos", "2026/", None, None, 1).unwrap();
    assert_eq!(page.objects[0].key, "2026/a.jpg");
    let rest = s
        .list("photos", "2026/", None, page.next.as_deref(), 1)
        .unwrap();
    assert_eq!(rest.objects[0].key, "2026/b.jpg");
    assert!(matches!(
        s.delete_bucket("photos"),
        Err(StoreError::BucketNotEmpty(_))
    ));
    // A leftover temporary body and an orphan blob vanish at the next open; committed
    // objects stay.
    std::fs::write(d.path().join("s3/tmp/partial"), b"x").unwrap();
    std::fs::write(d.path().join("s3/blobs/orphan"), b"x").unwrap();
    drop(s);
    let s = open(d.path());
    assert!(!d.path().join("s3/blobs/orphan").exists());
    assert_eq!(s.read("photos", "2026/a.jpg", None).unwrap().1, body);
    for k in ["2026/a.jpg", "2026/b.jpg", "2027/c.jpg", "index.html"] {
        s.delete("photos", k).unwrap();
    }
    s.delete("photos", "never-there").unwrap();
    s.delete_bucket("photos").unwrap();
    assert!(matches!(
        s.head("photos", "x"),
        Err(StoreError::NoSuchBucket(_))
    ));
}

#[test]
fn multipart_uploads_join_parts_and_clean_up() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.create_bucket("big", "prod").unwrap();
    let up = s
        .create_upload("big", "video.mp4", PutOptions::default())
        .unwrap();
    let p1: Vec<u8> = (0..MIN_PART as usize).map(|i| (i % 253) as u8).collect();
    let p2 = b"the tail".to_vec();
    let e2 = s.put_part("big", &up.id, 2, &p2[..]).unwrap().etag;
    let e1 = s.put_part("big", &up.id, 1, &p1[..]).unwrap().etag;
    assert!(matches!(
        s.complete(
            "big",
            &up.id,
            &[(2, e2.clone()), (1, e1.clone())],
            &PutChecks::default()
        ),
        Err(StoreError::InvalidPartOrder)
    ));
    assert!(matches!(
        s.complete("big", &up.id, &[(1, "bad".into())], &PutChecks::default()),
        Err(StoreError::InvalidPart(_))
    ));
    let m = s
        .complete(
            "big",
            &up.id,
            &[(1, e1.clone()), (2, e2.clone())],
            &PutChecks::default(),
        )
        .unwrap();
    assert!(m.etag.ends_with("-2"), "{}", m.etag);
    let mut all = p1.clone();
    all.extend(&p2);
    assert_eq!(s.read("big", "video.mp4", None).unwrap().1, all);
    assert!(matches!(
        s.upload("big", &up.id),
        Err(StoreError::NoSuchUpload(_))
    ));
    // A retried completion (its first answer lost) gets the same answer, as from S3, and
    // writes nothing; other parts, or another upload id, are still NoSuchUpload.
    let again = s
        .complete(
            "big",
            &up.id,
            &[(1, format!("\"{e1}\"")), (2, e2.clone())],
            &PutChecks::default(),
        )
        .unwrap();
    assert_eq!(again, m);
    assert_eq!(s.head("big", "video.mp4").unwrap(), m);
    assert!(matches!(
        s.complete("big", &up.id, &[(1, e1.clone())], &PutChecks::default()),
        Err(StoreError::NoSuchUpload(_))
    ));
    assert!(matches!(
        s.complete(
            "big",
            "no-such-id",
            &[(1, e1.clone())],
            &PutChecks::default()
        ),
        Err(StoreError::NoSuchUpload(_))
    ));
    // The lifecycle pass forgets completions once their day is over.
    let recorded = |s: &ObjectStore| {
        s.store
            .kv_scan::<serde_json::Value>(K_COMPLETED)
            .unwrap()
            .len()
    };
    assert_eq!(recorded(&s), 1);
    s.run_lifecycle(now_ms() + multipart::COMPLETED_FOR_MS, 86_400_000)
        .unwrap();
    assert_eq!(recorded(&s), 0);
    assert_eq!(
        std::fs::read_dir(d.path().join("s3/parts"))
            .unwrap()
            .count(),
        0
    );
    // Small non-last parts are refused; abort removes everything.
    let up = s.create_upload("big", "x", PutOptions::default()).unwrap();
    let a = s.put_part("big", &up.id, 1, &b"small"[..]).unwrap().etag;
    let b = s.put_part("big", &up.id, 2, &b"small"[..]).unwrap().etag;
    assert!(matches!(
        s.complete("big", &up.id, &[(1, a), (2, b)], &PutChecks::default()),
        Err(StoreError::EntityTooSmall(1))
    ));
    assert_eq!(s.uploads("big").unwrap().len(), 1);
    s.abort("big", &up.id).unwrap();
    assert!(s.uploads("big").unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(d.path().join("s3/parts"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn versions_markers_and_lifecycle() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.create_bucket("docs", "prod").unwrap();
    // Written while versioning was off: the null version.
    s.put("docs", "a", &b"v0"[..], PutOptions::default())
        .unwrap();
    s.set_versioning("docs", Versioning::Enabled).unwrap();
    let v1 = s
        .put("docs", "a", &b"v1"[..], PutOptions::default())
        .unwrap();
    let v2 = s
        .put("docs", "a", &b"v2"[..], PutOptions::default())
        .unwrap();
    assert!(v1.versioned && v2.versioned);
    assert_eq!(s.read("docs", "a", None).unwrap().1, b"v2");
    let (_, mut r) = s
        .open_version("docs", "a", Some(&v1.version_id), None)
        .unwrap();
    let mut got = vec![];
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"v1");
    let (_, mut r) = s.open_version("docs", "a", Some("null"), None).unwrap();
    got.clear();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"v0");
    // A delete adds a marker: the key is gone from listings, its versions stay.
    let del = s.delete("docs", "a").unwrap();
    assert!(del.delete_marker);
    assert!(matches!(s.head("docs", "a"), Err(StoreError::NoSuchKey(_))));
    assert!(s
        .list("docs", "", None, None, 10)
        .unwrap()
        .objects
        .is_empty());
    let vs = s.list_versions("docs", "", None, None, None, 100).unwrap();
    let labels: Vec<(String, bool, bool)> = vs
        .versions
        .iter()
        .map(|(m, latest)| (m.version_label(), m.delete_marker, *latest))
        .collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(labels[0].1 && labels[0].2);
    assert_eq!(labels[1].0, v2.version_id);
    assert_eq!(labels[3].0, "null");
    // Paging through versions one at a time visits each once.
    let mut seen = vec![];
    let (mut km, mut vm) = (None::<String>, None::<String>);
    loop {
        let p = s
            .list_versions("docs", "", None, km.as_deref(), vm.as_deref(), 1)
            .unwrap();
        seen.extend(p.versions.iter().map(|(m, _)| m.version_label()));
        match p.next {
            Some((k, v)) => (km, vm) = (Some(k), v),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    // Removing the marker by id brings the newest version back.
    s.delete_version("docs", "a", labels[0].0.as_str()).unwrap();
    assert_eq!(s.read("docs", "a", None).unwrap().1, b"v2");
    assert!(matches!(
        s.delete_bucket("docs"),
        Err(StoreError::BucketNotEmpty(_))
    ));
    // Lifecycle, with a day of 1 ms: noncurrent versions go, the current one expires
    // into a marker, and the lone marker goes at the next run.
    s.configure("docs", |b| {
        b.lifecycle = vec![crate::lifecycle::Rule {
            id: "all".into(),
            enabled: true,
            expiration_days: Some(2),
            noncurrent_expiration_days: Some(1),
            ..Default::default()
        }];
        Ok(())
    })
    .unwrap();
    let later = now_ms() + 10_000;
    let r = s.run_lifecycle(later, 1).unwrap();
    assert_eq!((r.expired, r.noncurrent_removed), (1, 2), "{r:?}");
    let r = s.run_lifecycle(later + 10_000, 1).unwrap();
    assert_eq!((r.noncurrent_removed, r.markers_removed), (1, 1), "{r:?}");
    assert!(s
        .list_versions("docs", "", None, None, None, 100)
        .unwrap()
        .versions
        .is_empty());
    assert_eq!(
        std::fs::read_dir(d.path().join("s3/blobs"))
            .unwrap()
            .count(),
        0
    );
    s.delete_bucket("docs").unwrap();
}

#[test]
fn names_and_keys_follow_s3s_rules() {
    for ok in ["abc", "my-bucket.logs", "a1b2c3"] {
        check_bucket_name(ok).unwrap();
    }
    for bad in [
        "ab",
        "Upper",
        "-start",
        "end-",
        "a..b",
        "192.168.1.1",
        &"a".repeat(64),
        "under_score",
    ] {
        assert!(check_bucket_name(bad).is_err(), "{bad}");
    }
    check_key("a/b/c.txt").unwrap();
    for bad in ["", "/abs", "a/../b", "..", "nul\0byte", &"k".repeat(1025)] {
        assert!(check_key(bad).is_err(), "{bad:?}");
    }
}

fn files(d: &Path, sub: &str) -> usize {
    std::fs::read_dir(d.join("s3").join(sub)).unwrap().count()
}

/// A body that fails after `ok` bytes, like a client gone mid-upload.
struct Failing {
    left: usize,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("connection reset"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(b'x');
        self.left -= n;
        Ok(n)
    }
}

/// Issue: 40 concurrent PUTs to one key of a versioned bucket were all acknowledged
/// and only 19 versions listed. Every acknowledged version must be there; without
/// versioning, the losers' bodies are collected at once.
#[test]
fn concurrent_puts_to_one_key_lose_no_acknowledged_version() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    s.create_bucket("ver", "prod").unwrap();
    s.set_versioning("ver", Versioning::Enabled).unwrap();
    s.create_bucket("plain", "prod").unwrap();
    let acked: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..40)
            .map(|i| {
                let s = s.clone();
                sc.spawn(move || {
                    s.put(
                        "plain",
                        "k",
                        format!("p{i}").as_bytes(),
                        PutOptions::default(),
                    )
                    .unwrap();
                    s.put(
                        "ver",
                        "k",
                        format!("v{i}").as_bytes(),
                        PutOptions::default(),
                    )
                    .unwrap()
                    .version_id
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let listed = s.list_versions("ver", "", None, None, None, 1000).unwrap();
    let mut ids: Vec<String> = listed
        .versions
        .iter()
        .map(|(m, _)| m.version_id.clone())
        .collect();
    ids.sort();
    let mut want = acked.clone();
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(listed.versions.iter().filter(|(_, cur)| *cur).count(), 1);
    // 40 versioned bodies and the one current unversioned body: nothing orphaned.
    assert_eq!(files(d.path(), "blobs"), 41);
    assert_eq!(files(d.path(), "tmp"), 0);
}

/// Issue: a PUT with a wrong Content-MD5 destroyed the object it would have replaced.
/// A failed check or a body that breaks off leaves the previous object as it was, and
/// leaves no file behind.
#[test]
fn a_failed_put_leaves_the_previous_object_and_no_files() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.create_bucket("bkt", "prod").unwrap();
    s.put("bkt", "k", &b"old"[..], PutOptions::default())
        .unwrap();
    let wrong = PutChecks {
        md5: Some(hex::encode(Md5::digest(b"something else"))),
        ..Default::default()
    };
    assert!(matches!(
        s.put_if("bkt", "k", &b"new"[..], PutOptions::default(), &wrong),
        Err(StoreError::BadDigest)
    ));
    assert!(matches!(
        s.put("bkt", "k", Failing { left: 200_000 }, PutOptions::default()),
        Err(StoreError::Internal(_))
    ));
    assert_eq!(s.read("bkt", "k", None).unwrap().1, b"old");
    assert_eq!(files(d.path(), "blobs"), 1);
    assert_eq!(files(d.path(), "tmp"), 0);
    // A right digest passes.
    let right = PutChecks {
        md5: Some(hex::encode(Md5::digest(b"new"))),
        ..Default::default()
    };
    s.put_if("bkt", "k", &b"new"[..], PutOptions::default(), &right)
        .unwrap();
    assert_eq!(s.read("bkt", "k", None).unwrap().1, b"new");
    // Parts: a wrong digest, a broken body and a part for an upload that ended leave
    // nothing behind.
    let up = s
        .create_upload("bkt", "big", PutOptions::default())
        .unwrap();
    assert!(matches!(
        s.put_part_if("bkt", &up.id, 1, &b"part"[..], Some("00")),
        Err(StoreError::BadDigest)
    ));
    assert!(s
        .put_part("bkt", &up.id, 1, Failing { left: 70_000 })
        .is_err());
    s.abort("bkt", &up.id).unwrap();
    assert!(matches!(
        s.put_part("bkt", &up.id, 1, &b"late"[..]),
        Err(StoreError::NoSuchUpload(_))
    ));
    assert_eq!(files(d.path(), "parts"), 0);
    assert_eq!(files(d.path(), "tmp"), 0);
}

/// A body of several batches reads back whole and in any range, piece by piece (each
/// piece one batch at most); a chunk altered on disk in the middle of a batch fails that
/// batch and hands out none of its bytes.
#[test]
fn batched_reads_return_every_range_and_refuse_an_altered_chunk() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.create_bucket("big", "prod").unwrap();
    let batch = blob::BATCH * CHUNK;
    let body: Vec<u8> = (0..(2 * batch + 3 * CHUNK + 77))
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    let m = s.put("big", "k", &body[..], PutOptions::default()).unwrap();
    let len = body.len() as u64;
    let b = batch as u64;
    let c = CHUNK as u64;
    for (a, z) in [
        (0, len - 1),
        (1, len - 2),
        (b - 1, b),
        (b, 2 * b - 1),
        (b - 5, 2 * b + 5),
        (c + 3, b + c),
        (2 * b + 3 * c, len - 1),
        (len - 1, len - 1),
    ] {
        let (_, mut r) = s.open_read("big", "k", Some((a, z))).unwrap();
        let mut got = Vec::new();
        while let Some(piece) = r.next_bytes().unwrap() {
            assert!(!piece.is_empty() && piece.len() <= batch, "{a}-{z}");
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, &body[a as usize..=z as usize], "{a}-{z}");
    }
    // One byte of the second batch's fourth chunk altered.
    let path = d.path().join("s3/blobs").join(&m.version_id);
    let mut raw = std::fs::read(&path).unwrap();
    let at = (blob::BATCH + 3) * (CHUNK + 16) + 100;
    raw[at] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    let (_, mut r) = s.open_read("big", "k", None).unwrap();
    let first = r.next_bytes().unwrap().unwrap();
    assert_eq!(&first[..], &body[..batch]);
    let e = r.next_bytes().unwrap_err();
    assert!(e.to_string().contains("integrity"), "{e}");
}

/// Bodies stop being read at the limit (a chunked upload of unknown length included).
#[test]
fn bodies_stop_at_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    s.create_bucket("bkt", "prod").unwrap();
    struct Endless(Arc<std::sync::atomic::AtomicU64>);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(buf.len())
        }
    }
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dest = d.path().join("s3").join("blobs").join("x");
    let r = s.write_blob("prod", "x", &dest, Endless(read.clone()), 1 << 20);
    assert!(matches!(r, Err(StoreError::EntityTooLarge)));
    let n = read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n <= (1 << 20) + 2 * CHUNK as u64, "read {n} bytes");
    assert!(!dest.exists());
    assert_eq!(files(d.path(), "tmp"), 0);
}

/// If-None-Match: * creates once, however many try at the same time; If-Match
/// replaces or deletes only the version it names.
#[test]
fn conditional_writes_are_atomic() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    s.create_bucket("bkt", "prod").unwrap();
    let create = PutChecks {
        write_if: WriteIf::Absent,
        ..Default::default()
    };
    let won = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let (s, c) = (s.clone(), create.clone());
                sc.spawn(move || {
                    s.put_if(
                        "bkt",
                        "once",
                        format!("{i}").as_bytes(),
                        PutOptions::default(),
                        &c,
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|r| {
                assert!(r.is_ok() || matches!(r, Err(StoreError::PreconditionFailed(_))));
                r.is_ok()
            })
            .count()
    });
    assert_eq!(won, 1);
    let cur = s.head("bkt", "once").unwrap();
    let stale = PutChecks {
        write_if: WriteIf::Matches("\"0123\"".into()),
        ..Default::default()
    };
    assert!(matches!(
        s.put_if("bkt", "once", &b"x"[..], PutOptions::default(), &stale),
        Err(StoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        s.delete_if("bkt", "once", &WriteIf::Matches("nope".into())),
        Err(StoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        s.put_if("bkt", "missing", &b"x"[..], PutOptions::default(), &stale),
        Err(StoreError::NoSuchKey(_))
    ));
    let fresh = PutChecks {
        write_if: WriteIf::Matches(format!("\"{}\"", cur.etag)),
        ..Default::default()
    };
    s.put_if("bkt", "once", &b"y"[..], PutOptions::default(), &fresh)
        .unwrap();
    let now = s.head("bkt", "once").unwrap();
    s.delete_if("bkt", "once", &WriteIf::Matches(now.etag.clone()))
        .unwrap();
    assert!(s.head("bkt", "once").is_err());
    assert_eq!(files(d.path(), "blobs"), 0);
}

/// Issue: a bucket made again under a deleted one's name inherited its public policy
/// (and its uploads). They go with the bucket.
#[test]
fn a_deleted_bucket_takes_its_policy_and_uploads_with_it() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&d.path().join("state.redb")).unwrap());
    let kms = Arc::new(Kms::open(d.path(), store.clone()).unwrap());
    let s = ObjectStore::open(d.path(), store.clone(), kms.clone()).unwrap();
    let access = crate::access::Access::new(store, kms);
    s.create_bucket("site", "s3").unwrap();
    access
        .set_policy(
            "site",
            Some(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"}]}"#),
        )
        .unwrap();
    let up = s.create_upload("site", "k", PutOptions::default()).unwrap();
    s.put_part("site", &up.id, 1, &b"part"[..]).unwrap();
    s.delete_bucket("site").unwrap();
    s.create_bucket("site", "s3").unwrap();
    assert_eq!(access.policy("site"), None);
    assert!(s.uploads("site").unwrap().is_empty());
    assert_eq!(files(d.path(), "parts"), 0);
}

/// Wrapped keys are written as base64; records written before, with an array of numbers,
/// still read.
#[test]
fn wrapped_keys_read_in_both_forms() {
    let m = ObjectMeta {
        key: "k".into(),
        version_id: "v".into(),
        size: 1,
        etag: "e".into(),
        content_type: None,
        cache_control: None,
        metadata: Default::default(),
        headers: Default::default(),
        last_modified_ms: 1,
        wrapped_key: vec![0, 1, 2, 250, 255],
        delete_marker: false,
        versioned: false,
        storage_class: None,
        noncurrent_ms: 0,
    };
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["wrapped_key"], serde_json::json!("AAEC+v8="));
    assert_eq!(serde_json::from_value::<ObjectMeta>(j.clone()).unwrap(), m);
    let mut old = j;
    old["wrapped_key"] = serde_json::json!([0, 1, 2, 250, 255]);
    assert_eq!(serde_json::from_value::<ObjectMeta>(old).unwrap(), m);
}

/// Reads are served from decoded records while nothing is written: a reader never sees
/// an object older than the last write acknowledged before it began, while writers and
/// readers run at once, and a failed write changes nothing that is read.
#[test]
fn remembered_records_are_never_older_than_an_acknowledged_write() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    s.create_bucket("hot", "prod").unwrap();
    s.put("hot", "k", &b"0"[..], PutOptions::default()).unwrap();
    let acked = std::sync::atomic::AtomicU64::new(0);
    let done = &acked;
    std::thread::scope(|sc| {
        let s2 = s.clone();
        sc.spawn(move || {
            for i in 1..=200u64 {
                s2.put("hot", "k", i.to_string().as_bytes(), PutOptions::default())
                    .unwrap();
                done.store(i, std::sync::atomic::Ordering::SeqCst);
            }
        });
        for _ in 0..2 {
            let s3 = s.clone();
            sc.spawn(move || loop {
                let floor = done.load(std::sync::atomic::Ordering::SeqCst);
                let (_, body) = s3.read("hot", "k", None).unwrap();
                let got: u64 = String::from_utf8(body).unwrap().parse().unwrap();
                assert!(got >= floor, "read {got} after {floor} was acknowledged");
                let (_, meta) = s3.lookup("hot", "k", None).unwrap();
                assert!(meta.size >= 1);
                if floor == 200 {
                    break;
                }
            });
        }
    });
    // A write that fails (a body that breaks off) leaves the remembered object as it was.
    let before = s.read("hot", "k", None).unwrap().1;
    assert_eq!(before, b"200");
    assert!(s
        .put("hot", "k", Failing { left: 3 }, PutOptions::default())
        .is_err());
    assert_eq!(s.read("hot", "k", None).unwrap().1, before);
    // A deleted object and bucket are gone at once.
    s.delete("hot", "k").unwrap();
    assert!(matches!(
        s.lookup("hot", "k", None),
        Err(StoreError::NoSuchKey(_))
    ));
    s.delete_bucket("hot").unwrap();
    assert!(matches!(s.bucket("hot"), Err(StoreError::NoSuchBucket(_))));
}

/// Whether this process holds a removed file whose name ends with `name` open.
fn holds_removed(name: &str) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .any(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().ends_with(&format!("{name} (deleted)")))
                .unwrap_or(false)
        })
}

#[test]
fn kept_open_bodies_serve_interleaved_readers_close_on_removal_and_die_with_their_key() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&d.path().join("state.redb")).unwrap());
    let kms = Arc::new(Kms::open(d.path(), store.clone()).unwrap());
    let s = ObjectStore::open(d.path(), store, kms.clone()).unwrap();
    s.create_bucket("hot", "prod").unwrap();
    let body: Vec<u8> = (0..(2 * CHUNK + 77)).map(|i| (i % 253) as u8).collect();
    let old = s.put("hot", "k", &body[..], PutOptions::default()).unwrap();
    assert_eq!(s.read("hot", "k", None).unwrap().1, body);
    // Two readers of the one open body, read in turns: each has its own position.
    let (_, mut a) = s.open_read("hot", "k", None).unwrap();
    let (_, mut b) = s
        .open_read("hot", "k", Some((CHUNK as u64, 2 * CHUNK as u64 + 76)))
        .unwrap();
    assert_eq!(s.open_blobs.len(), 1, "one body kept open for every reader");
    let (mut got_a, mut got_b) = (vec![], vec![]);
    let mut buf = vec![0u8; 1000];
    loop {
        let n = a.read(&mut buf).unwrap();
        got_a.extend_from_slice(&buf[..n]);
        let m = b.read(&mut buf).unwrap();
        got_b.extend_from_slice(&buf[..m]);
        if n == 0 && m == 0 {
            break;
        }
    }
    assert_eq!(got_a, body);
    assert_eq!(got_b, &body[CHUNK..]);
    drop((a, b));
    // Replaced: the old body is closed as it is removed, so its space is freed.
    s.put("hot", "k", &b"two"[..], PutOptions::default())
        .unwrap();
    assert!(
        !holds_removed(&old.version_id),
        "the removed body is still open"
    );
    assert_eq!(s.read("hot", "k", None).unwrap().1, b"two");
    let cur = s.meta("hot", "k").unwrap();
    s.delete("hot", "k").unwrap();
    assert!(!holds_removed(&cur.version_id));
    // A destroyed key reads nothing more, even of a body kept open.
    s.put("hot", "k", &b"three"[..], PutOptions::default())
        .unwrap();
    assert_eq!(s.read("hot", "k", None).unwrap().1, b"three");
    kms.destroy("prod").unwrap();
    assert!(s.read("hot", "k", None).is_err());
}

#[test]
fn reads_racing_overwrites_get_whole_versions_and_keep_no_removed_body_open() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(open(d.path()));
    s.create_bucket("race", "prod").unwrap();
    let body = |i: usize| format!("version {i} ").repeat(100 + i % 7).into_bytes();
    s.put("race", "k", &body(0)[..], PutOptions::default())
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, done) = (s.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = s.read("race", "k", None).unwrap().1;
                    let text = String::from_utf8(got).unwrap();
                    let first = text.split(' ').take(2).collect::<Vec<_>>().join(" ") + " ";
                    assert_eq!(text, first.repeat(text.len() / first.len()), "a mixed body");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut versions = vec![];
    for i in 1..=60 {
        versions.push(
            s.put("race", "k", &body(i)[..], PutOptions::default())
                .unwrap()
                .version_id,
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    for v in &versions[..versions.len() - 1] {
        assert!(!holds_removed(v), "removed body {v} still open");
    }
}
