//! Backups into veeps' object storage: continuous WAL archiving (nodes archive into a
//! spool in their directory; veeps ships each file to the `veeps-db-backups` bucket), base
//! backups (one per backup window, and on demand), retention, and point-in-time recovery
//! into a new cluster.

use crate::model::{ClusterRec, NodeRec, Restore};
use crate::pg;
use crate::service::{DbError, Dbs};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use veeps_sys::now_ms;

/// The bucket backups go to.
pub const BUCKET: &str = "veeps-db-backups";
/// The environment whose key protects it.
const BUCKET_ENV: &str = "db";
const K_BACKUP: &str = "db/backup/";

/// A base backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backup {
    /// Its name (unique per cluster).
    pub name: String,
    /// The cluster's environment.
    pub env: String,
    /// The cluster.
    pub cluster: String,
    /// When it finished (ms since the epoch).
    pub time_ms: i64,
    /// Bytes.
    pub size: u64,
    /// `automated` (the backup window) or `manual`.
    pub kind: String,
    /// The first WAL segment it needs (older segments are not fetched to restore it).
    #[serde(default)]
    pub start_wal: Option<String>,
}

/// The first WAL segment a base backup needs, from its manifest's WAL range.
fn start_segment(manifest: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(manifest).ok()?;
    let r = v.get("WAL-Ranges")?.as_array()?.first()?;
    let tl = r.get("Timeline")?.as_u64()?;
    let (hi, lo) = r.get("Start-LSN")?.as_str()?.split_once('/')?;
    let (hi, lo) = (
        u64::from_str_radix(hi, 16).ok()?,
        u64::from_str_radix(lo, 16).ok()?,
    );
    // 16 MiB segments: the segment number within the high word is lo >> 24.
    Some(format!("{tl:08X}{hi:08X}{:08X}", lo >> 24))
}

/// Whether an archived WAL file may be needed after `start` (history files always are).
fn needed(file: &str, start: Option<&str>) -> bool {
    match (start, file.get(8..24)) {
        (Some(s), Some(seg)) if !file.ends_with(".history") => seg >= &s[8..24],
        _ => true,
    }
}

fn failed(e: impl std::fmt::Display) -> DbError {
    DbError::Failed(e.to_string())
}

fn base_key(env: &str, cluster: &str, name: &str) -> String {
    format!("{env}/{cluster}/base/{name}.tar")
}

fn wal_prefix(env: &str, cluster: &str) -> String {
    format!("{env}/{cluster}/wal/")
}

/// Parses `HH:MM-HH:MM` into minutes of the day.
pub fn parse_window(w: &str) -> Option<(u32, u32)> {
    let (a, b) = w.split_once('-')?;
    let m = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    Some((m(a)?, m(b)?))
}

fn in_window(w: (u32, u32), minute: u32) -> bool {
    if w.0 <= w.1 {
        (w.0..w.1).contains(&minute)
    } else {
        minute >= w.0 || minute < w.1
    }
}

impl Dbs {
    fn ensure_bucket(&self) -> Result<(), DbError> {
        if self.objects.bucket(BUCKET).is_err() {
            match self.objects.create_bucket(BUCKET, BUCKET_ENV) {
                Ok(_) | Err(veeps_s3::store::StoreError::BucketExists(_)) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }

    /// Ships archived WAL, takes the window's base backups and enforces retention.
    pub(crate) async fn backup_tick(self: Arc<Self>) {
        for rec in self.clusters() {
            if rec.spec.backup_retention_days == 0 {
                continue;
            }
            if let Err(e) = self.ship_wal(&rec).await {
                tracing::warn!(cluster = %rec.spec.name, error = %e, "shipping WAL failed; retrying");
            }
            let now = time::OffsetDateTime::now_utc();
            let minute = now.hour() as u32 * 60 + now.minute() as u32;
            let due = parse_window(&rec.spec.backup_window).is_some_and(|w| in_window(w, minute))
                && self
                    .backups(&rec.spec.env, &rec.spec.name)
                    .iter()
                    .filter(|b| b.kind == "automated")
                    .all(|b| now_ms() - b.time_ms > 20 * 3_600_000);
            if due {
                let label = format!("auto-{}", now.unix_timestamp());
                if let Err(e) = self
                    .snapshot_as(&rec.spec.env, &rec.spec.name, &label, "automated")
                    .await
                {
                    tracing::warn!(cluster = %rec.spec.name, error = %e, "automated backup failed");
                }
            }
            self.prune(&rec);
        }
    }

    /// Uploads every archived WAL file of the cluster's nodes, then removes it locally.
    pub(crate) async fn ship_wal(&self, rec: &ClusterRec) -> Result<usize, DbError> {
        self.ensure_bucket()?;
        let objects = self.objects.clone();
        let prefix = wal_prefix(&rec.spec.env, &rec.spec.name);
        let dirs: Vec<std::path::PathBuf> = rec
            .nodes
            .iter()
            .map(|n| self.node_dir(rec, &n.name).join("spool"))
            .collect();
        tokio::task::spawn_blocking(move || ship_spools(&objects, &dirs, &prefix))
            .await
            .map_err(failed)?
    }

    /// A cluster's base backups, oldest first.
    pub fn backups(&self, env: &str, cluster: &str) -> Vec<Backup> {
        let mut v: Vec<Backup> = self
            .store
            .kv_scan::<Backup>(&format!("{K_BACKUP}{env}/{cluster}/"))
            .unwrap_or_default()
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        v.sort_by_key(|b| b.time_ms);
        v
    }

    /// Takes a base backup now, named `name`.
    pub async fn snapshot(
        self: &Arc<Self>,
        env: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Backup, DbError> {
        self.snapshot_as(env, cluster, name, "manual").await
    }

    async fn snapshot_as(
        self: &Arc<Self>,
        env: &str,
        cluster: &str,
        name: &str,
        kind: &str,
    ) -> Result<Backup, DbError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(DbError::Invalid(format!(
                "\"{name}\" is not a snapshot name (letters, digits, - and _)"
            )));
        }
        let rec = self
            .cluster(env, cluster)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {cluster} in {env}")))?;
        if self.backups(env, cluster).iter().any(|b| b.name == name) {
            return Err(DbError::Invalid(format!(
                "{cluster} has a snapshot named {name} already"
            )));
        }
        if rec.spec.backup_retention_days == 0 {
            return Err(DbError::Invalid(format!(
                "{cluster} keeps no backups (backup_retention_days = 0): WAL is not archived, so a snapshot could not be restored; set backup_retention_days first"
            )));
        }
        self.ensure_bucket()?;
        let w = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
        let ids = self.prepare()?;
        let dir = self.node_dir(&rec, &w.name);
        let tmp = dir.join("backup-tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let port = rec.spec.port.to_string();
        pg::run(
            &dir,
            "",
            ids,
            "pg_basebackup",
            &[
                "-D",
                &format!("{}/backup-tmp", pg::MOUNT),
                "-F",
                "t",
                "-X",
                "none",
                "-c",
                "fast",
                "-h",
                pg::SOCKETS,
                "-p",
                &port,
                "-U",
                &rec.spec.master_username,
                "-l",
                name,
            ],
            &[],
        )
        .await
        .map_err(failed)?;
        let objects = self.objects.clone();
        let key = base_key(env, cluster, name);
        let tar = tmp.join("base.tar");
        let start_wal = std::fs::read_to_string(tmp.join("backup_manifest"))
            .ok()
            .and_then(|m| start_segment(&m));
        let size = tokio::task::spawn_blocking(move || -> Result<u64, DbError> {
            let f = std::fs::File::open(&tar).map_err(failed)?;
            let m = objects
                .put(BUCKET, &key, f, Default::default())
                .map_err(failed)?;
            Ok(m.size)
        })
        .await
        .map_err(failed)??;
        let _ = std::fs::remove_dir_all(&tmp);
        // The WAL the backup needs is archived by now; ship it.
        self.ship_wal(&rec).await?;
        let b = Backup {
            name: name.into(),
            env: env.into(),
            cluster: cluster.into(),
            time_ms: now_ms(),
            size,
            kind: kind.into(),
            start_wal,
        };
        self.store
            .kv_put(&format!("{K_BACKUP}{env}/{cluster}/{name}"), &b)
            .map_err(failed)?;
        self.event(
            env,
            cluster,
            "backup",
            &format!("{kind} base backup {name} taken ({size} bytes)"),
        );
        Ok(b)
    }

    /// Removes automated base backups (and the WAL before the oldest kept one) past the
    /// retention period; manual snapshots stay until deleted.
    fn prune(&self, rec: &ClusterRec) {
        let (env, cluster) = (&rec.spec.env, &rec.spec.name);
        let keep_from = now_ms() - rec.spec.backup_retention_days as i64 * 86_400_000;
        let all = self.backups(env, cluster);
        let newest = all.iter().map(|b| b.time_ms).max();
        for b in &all {
            if b.kind == "automated" && b.time_ms < keep_from && Some(b.time_ms) != newest {
                let _ = self
                    .objects
                    .delete(BUCKET, &base_key(env, cluster, &b.name));
                let _ = self
                    .store
                    .kv_delete(&format!("{K_BACKUP}{env}/{cluster}/{}", b.name));
            }
        }
        let Some(oldest) = self.backups(env, cluster).first().map(|b| b.time_ms) else {
            return;
        };
        // WAL from before the oldest base backup (with an hour's margin) can't be used.
        let horizon = oldest.min(keep_from) - 3_600_000;
        let prefix = wal_prefix(env, cluster);
        let mut after: Option<String> = None;
        while let Ok(page) = self
            .objects
            .list(BUCKET, &prefix, None, after.as_deref(), 1000)
        {
            let Some(last) = page.objects.last() else {
                break;
            };
            after = Some(last.key.clone());
            for o in page.objects {
                if o.last_modified_ms < horizon {
                    let _ = self.objects.delete(BUCKET, &o.key);
                }
            }
            if page.next.is_none() {
                break;
            }
        }
    }

    /// Fills a new writer's data directory from a base backup and the archived WAL;
    /// returns the recovery settings to append to its configuration.
    pub(crate) async fn restore_into(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let r: Restore = rec
            .spec
            .restore
            .clone()
            .ok_or_else(|| failed("nothing to restore"))?;
        let (src_env, src) = match &r.source_cluster {
            Some(s) => match s.split_once('/') {
                Some((e, n)) => (e.to_string(), n.to_string()),
                None => (rec.spec.env.clone(), s.clone()),
            },
            None => {
                let snap = r.snapshot.clone().unwrap_or_default();
                self.store
                    .kv_scan::<Backup>(K_BACKUP)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(_, b)| b)
                    .find(|b| b.name == snap)
                    .map(|b| (b.env, b.cluster))
                    .ok_or_else(|| {
                        DbError::NotFound(format!(
                            "no snapshot named {snap} (see `veeps db backups`)"
                        ))
                    })?
            }
        };
        let target_ms = match &r.to_time {
            Some(t) => Some(
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        DbError::Invalid(format!(
                            "to_time {t:?} is not an RFC 3339 time like 2026-11-25T12:00:00Z: {e}"
                        ))
                    })?
                    .unix_timestamp_nanos() as i64
                    / 1_000_000,
            ),
            None => None,
        };
        // A live source: close its current WAL segment and ship it, so the target is covered.
        if let Ok(Some(s)) = self.cluster(&src_env, &src) {
            if let Some(w) = s.writer() {
                if let Ok(c) = self.admin(&s, w).await {
                    let _ = c.batch_execute("SELECT pg_switch_wal()").await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let _ = self.ship_wal(&s).await;
            }
        }
        let backups = self.backups(&src_env, &src);
        let base = match (&r.snapshot, target_ms) {
            (Some(n), _) => backups.iter().find(|b| &b.name == n),
            (None, Some(t)) => backups.iter().rev().find(|b| b.time_ms <= t),
            (None, None) => backups.last(),
        }
        .cloned()
        .ok_or_else(|| {
            DbError::NotFound(format!(
                "no base backup of {src_env}/{src} to restore from{} (take one with `veeps db snapshot`)",
                if target_ms.is_some() { " before that time" } else { "" }
            ))
        })?;
        let dir = self.node_dir(rec, &node.name);
        let pgdata = dir.join("pgdata");
        let restore = dir.join("restore");
        let _ = std::fs::remove_dir_all(&pgdata);
        std::fs::create_dir_all(&pgdata).map_err(failed)?;
        std::fs::create_dir_all(&restore).map_err(failed)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pgdata, std::fs::Permissions::from_mode(0o700))
                .map_err(failed)?;
        }
        let objects = self.objects.clone();
        let (tar, rdir) = (dir.join("restore-base.tar"), restore.clone());
        let (bkey, wprefix) = (
            base_key(&src_env, &src, &base.name),
            wal_prefix(&src_env, &src),
        );
        let start = base.start_wal.clone();
        tokio::task::spawn_blocking(move || -> Result<(), DbError> {
            download(&objects, &bkey, &tar)?;
            let mut after: Option<String> = None;
            loop {
                let page = objects
                    .list(BUCKET, &wprefix, None, after.as_deref(), 1000)
                    .map_err(failed)?;
                for o in &page.objects {
                    let name = &o.key[wprefix.len()..];
                    if needed(name, start.as_deref()) {
                        download(&objects, &o.key, &rdir.join(name))?;
                    }
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            Ok(())
        })
        .await
        .map_err(failed)??;
        pg::chown_tree(&dir, ids.0, ids.1).map_err(failed)?;
        pg::run(
            &dir,
            "",
            ids,
            "/usr/bin/tar",
            &[
                "-xf",
                &format!("{}/restore-base.tar", pg::MOUNT),
                "-C",
                pg::PGDATA,
            ],
            &[],
        )
        .await
        .map_err(failed)?;
        let _ = std::fs::remove_file(dir.join("restore-base.tar"));
        let mut extra = format!(
            "restore_command = 'cp {}/restore/%f %p'\nrecovery_target_action = 'promote'\n",
            pg::MOUNT
        );
        if let Some(ms) = target_ms {
            // PostgreSQL's own timestamp syntax, in UTC.
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map_err(failed)?;
            extra.push_str(&format!(
                "recovery_target_time = '{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}+00'\n",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ));
        }
        std::fs::write(dir.join("recovery.extra"), extra).map_err(failed)?;
        self.event(
            &rec.spec.env,
            &rec.spec.name,
            "restore",
            &format!(
                "restoring from {src_env}/{src} base backup {}{}",
                base.name,
                r.to_time
                    .as_deref()
                    .map(|t| format!(" to {t}"))
                    .unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// Point-in-time recovery of `source` into a new cluster `new_name` (same settings).
    pub async fn restore_new(
        self: &Arc<Self>,
        env: &str,
        source: &str,
        to_time: Option<&str>,
        snapshot: Option<&str>,
        new_name: &str,
    ) -> Result<ClusterRec, DbError> {
        let src = self
            .cluster(env, source)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {source} in {env}")))?;
        if self.cluster(env, new_name)?.is_some() {
            return Err(DbError::Invalid(format!(
                "a cluster named {new_name} exists in {env} already"
            )));
        }
        let secrets = self.secrets(&src)?;
        let mut spec = src.spec.clone();
        spec.name = new_name.into();
        spec.instance_count = 1;
        spec.restore = Some(Restore {
            snapshot: snapshot.map(String::from),
            source_cluster: Some(format!("{env}/{source}")),
            to_time: to_time.map(String::from),
        });
        self.put(spec, &secrets.master).await
    }

    /// After a restored writer promoted: recovery settings go, its passwords become the
    /// new cluster's.
    pub(crate) async fn finish_restore(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
    ) -> Result<(), DbError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            if let Ok(c) = self.admin(rec, node).await {
                if let Ok(r) = c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                    if !r.get::<_, bool>(0) {
                        break;
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(failed(
                    "the restored node did not finish recovery within 5 minutes",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let _ = std::fs::remove_file(self.node_dir(rec, &node.name).join("recovery.extra"));
        let s = self.secrets(rec)?;
        let c = self.admin(rec, node).await?;
        c.batch_execute(&format!(
            "SET synchronous_commit TO local; ALTER ROLE {} WITH REPLICATION LOGIN PASSWORD {}; ALTER ROLE {} PASSWORD {}",
            crate::model::REPLICATOR,
            crate::service::literal(&s.replication),
            crate::service::ident(&rec.spec.master_username),
            crate::service::literal(&s.master),
        ))
        .await
        .map_err(failed)?;
        // Slots of the source are meaningless here.
        let _ = c
            .batch_execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
            .await;
        self.event(
            &rec.spec.env,
            &rec.spec.name,
            "restore",
            "recovery finished; the cluster accepts writes",
        );
        Ok(())
    }
}

/// Uploads each finished WAL file of the spool directories not yet in the bucket, then
/// removes it. Several may run at once (the background shipping, a base backup's, a
/// restore's): a file another one shipped and removed meanwhile is skipped.
fn ship_spools(
    objects: &veeps_s3::store::ObjectStore,
    dirs: &[std::path::PathBuf],
    prefix: &str,
) -> Result<usize, DbError> {
    let mut n = 0;
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if name.ends_with(".part") {
                continue;
            }
            let key = format!("{prefix}{name}");
            if objects.head(BUCKET, &key).is_err() {
                let file = match std::fs::File::open(&f) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(failed(e)),
                };
                objects
                    .put(BUCKET, &key, file, Default::default())
                    .map_err(failed)?;
                n += 1;
            }
            let _ = std::fs::remove_file(&f);
        }
    }
    Ok(n)
}

fn download(objects: &veeps_s3::store::ObjectStore, key: &str, to: &Path) -> Result<(), DbError> {
    let (_, mut r) = objects.open_read(BUCKET, key, None).map_err(failed)?;
    let mut f = std::fs::File::create(to).map_err(failed)?;
    std::io::copy(&mut r, &mut f).map_err(failed)?;
    f.sync_all().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_fetch_only_the_wal_they_need() {
        let m = r#"{"WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000100"}]}"#;
        let s = start_segment(m).unwrap();
        assert_eq!(s, "000000010000000000000003");
        assert!(!needed("000000010000000000000002", Some(&s)));
        assert!(needed("000000010000000000000003", Some(&s)));
        assert!(needed("000000020000000000000004.partial", Some(&s)));
        assert!(needed("00000002.history", Some(&s)));
        assert!(needed("000000010000000000000001", None));
    }

    /// Issue "Trust what exists": a restore failed with a bare "No such file or directory"
    /// when the background shipping removed a WAL file the restore's shipping had just
    /// listed. Shippings racing over one spool lose nothing and fail on nothing.
    #[test]
    fn concurrent_shippings_race_without_failing_or_losing_wal() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(veeps_state::Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(veeps_kms::Kms::open(d.path(), store.clone()).unwrap());
        let objects = Arc::new(veeps_s3::store::ObjectStore::open(d.path(), store, kms).unwrap());
        objects.create_bucket(BUCKET, BUCKET_ENV).unwrap();
        let spool = d.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        for round in 0..20 {
            for i in 0..20 {
                std::fs::write(spool.join(format!("{round:08}{i:016}")), b"wal").unwrap();
            }
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (o, s) = (objects.clone(), spool.clone());
                    std::thread::spawn(move || ship_spools(&o, &[s], "e/c/wal/"))
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            for i in 0..20 {
                assert!(objects
                    .head(BUCKET, &format!("e/c/wal/{round:08}{i:016}"))
                    .is_ok());
            }
        }
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    }

    #[test]
    fn windows_parse_and_wrap() {
        let w = parse_window("23:30-00:30").unwrap();
        assert!(in_window(w, 23 * 60 + 45));
        assert!(in_window(w, 10));
        assert!(!in_window(w, 12 * 60));
        assert_eq!(parse_window("03:00-04:00"), Some((180, 240)));
        assert_eq!(parse_window("3-4"), None);
        assert_eq!(parse_window("25:00-01:00"), None);
    }
}
