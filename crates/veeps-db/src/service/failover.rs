//! Health checks every tick, automatic failover with fencing, switchover, rejoin with pg_rewind, and rolling restarts.

use super::*;

impl Dbs {
    pub(crate) async fn check(self: &Arc<Self>, rec: &ClusterRec, tick: u64) {
        let rt = self.rt(&rec.spec.env, &rec.spec.name);
        // An operation in progress owns the cluster; check next time.
        let Ok(mut inner) = rt.inner.try_lock() else {
            return;
        };
        if !inner.reader_up {
            return;
        }
        let Ok(ids) = self.prepare() else { return };
        let mut writer_down = false;
        for n in rec.nodes.clone() {
            // A writer whose postmaster ended is down even while its shim waits on the
            // rest of postgres' processes.
            let alive = if n.role == Role::Writer {
                self.serving_process(&inner, &n.name)
            } else {
                self.running(&mut inner, &n.name)
            };
            let h = if alive {
                self.health(rec, &n).await
            } else {
                Health {
                    serving: false,
                    in_recovery: false,
                }
            };
            let ok = h.serving && (h.in_recovery == (n.role == Role::Reader));
            let e = inner.nodes.entry(n.name.clone()).or_default();
            if ok {
                e.fails = 0;
                e.healthy = true;
            } else {
                e.fails += 1;
                e.healthy = false;
            }
            let fails = e.fails;
            if n.role == Role::Writer && (fails >= 3 || (!alive && fails >= 1)) {
                writer_down = true;
            }
            if n.role == Role::Reader && !alive && fails >= 2 {
                // A reader died: start it again (rebuilding it when its data is unusable).
                let mut r = rec.clone();
                if self.start_node(&mut r, &n, &mut inner, ids).await.is_err() {
                    if self.copy_afresh(rec, &n, &mut inner, ids).await {
                        self.event(
                            &rec.spec.env,
                            &rec.spec.name,
                            "rebuilt",
                            &format!("reader {} rebuilt from a fresh base backup", n.name),
                        );
                    }
                } else {
                    self.event(
                        &rec.spec.env,
                        &rec.spec.name,
                        "restarted",
                        &format!("reader {} restarted", n.name),
                    );
                }
            }
        }
        if writer_down {
            let _ = self
                .failover_locked(rec, &rt, &mut inner, None, false)
                .await;
            return;
        }
        // Who replicates from the writer, asked once a pass.
        if let Some(replicating) = self.replicating(rec, &inner).await {
            self.rebuild_lost_readers(rec, &mut inner, &replicating)
                .await;
            if rec.sync_relaxed {
                self.tighten(rec, &mut inner, &replicating).await;
            } else if rec.spec.synchronous_replicas > 0 {
                self.relax_if_short(rec, &mut inner, &replicating).await;
            }
        }
        self.update_routes(rec, &rt, &inner);
        // Security group members change: keep pg_hba in step.
        if tick.is_multiple_of(10) && self.hba(rec) != inner.hba {
            let _ = self.reconfigure(rec, &mut inner).await;
        }
    }

    /// A reader that runs, in recovery, but that the writer has not listed as replicating
    /// for ten seconds cannot follow it (its history went another way, as an old writer's
    /// left un-rewound by a crash in the middle of a failover; its slot was lost): it is
    /// copied afresh, instead of serving stale data and keeping the cluster relaxed for
    /// ever.
    async fn rebuild_lost_readers(
        self: &Arc<Self>,
        rec: &ClusterRec,
        inner: &mut Inner,
        replicating: &[Replica],
    ) {
        const CHECKS: u32 = 20;
        let Some(w) = rec.writer().cloned() else {
            return;
        };
        let listed: Vec<&String> = replicating.iter().map(|r| &r.name).collect();
        let mut lost = vec![];
        for n in rec.nodes.iter().filter(|n| n.role == Role::Reader) {
            let Some(rt) = inner.nodes.get_mut(&n.name) else {
                continue;
            };
            if !rt.healthy || listed.contains(&&n.name) {
                rt.unseen = 0;
                continue;
            }
            rt.unseen += 1;
            if rt.unseen >= CHECKS {
                rt.unseen = 0;
                lost.push(n.clone());
            }
        }
        for n in lost {
            let (env, name) = (&rec.spec.env, &rec.spec.name);
            self.event(
                env,
                name,
                "rebuilt",
                &format!(
                    "reader {} has not replicated from {} for {} s; rebuilding it",
                    n.name,
                    w.name,
                    CHECKS / 2
                ),
            );
            // Whatever it lacks (a diverged history, a lost slot, WAL the writer no longer
            // has), a base backup has.
            if let Ok(ids) = self.prepare() {
                self.copy_afresh(rec, &n, inner, ids).await;
            }
        }
    }

    /// Stops a reader, drops its data and starts it again from a fresh base backup;
    /// whether it runs (an event says why not).
    async fn copy_afresh(
        self: &Arc<Self>,
        rec: &ClusterRec,
        n: &NodeRec,
        inner: &mut Inner,
        ids: (u32, u32),
    ) -> bool {
        self.stop_node(rec, n, inner, true).await;
        let _ = std::fs::remove_dir_all(self.node_dir(rec, &n.name).join("pgdata"));
        let mut r = rec.clone();
        match self.start_node(&mut r, n, inner, ids).await {
            Ok(()) => true,
            Err(e) => {
                self.event(
                    &rec.spec.env,
                    &rec.spec.name,
                    "error",
                    &format!("reader {} cannot be rebuilt: {e}", n.name),
                );
                false
            }
        }
    }

    /// The clients replicating from a healthy writer, if it answers.
    async fn replicating(&self, rec: &ClusterRec, inner: &Inner) -> Option<Vec<Replica>> {
        let w = rec.writer()?;
        if !inner.nodes.get(&w.name).is_some_and(|n| n.healthy) {
            return None;
        }
        let c = self.admin(rec, w).await.ok()?;
        let rows = c
            .query(
                "SELECT application_name, COALESCE(state, ''), \
                 COALESCE(pg_wal_lsn_diff(flush_lsn, '0/0'), 0)::bigint FROM pg_stat_replication",
                &[],
            )
            .await
            .ok()?;
        Some(
            rows.iter()
                .map(|r| Replica {
                    name: r.get(0),
                    streaming: r.get::<_, String>(1) == "streaming",
                    flushed: r.get(2),
                })
                .collect(),
        )
    }

    /// The readers commits may wait for (those with their data), and how many of them a
    /// commit waits for.
    fn sync_readers(&self, rec: &ClusterRec) -> (Vec<String>, usize) {
        let readers: Vec<String> = rec
            .nodes
            .iter()
            .filter(|n| n.role == Role::Reader)
            .filter(|n| {
                self.node_dir(rec, &n.name)
                    .join("pgdata/PG_VERSION")
                    .exists()
            })
            .map(|n| n.name.clone())
            .collect();
        let want = (rec.spec.synchronous_replicas as usize).min(readers.len());
        (readers, want)
    }

    /// How many of the readers commits may wait for stream and have flushed `at` least.
    fn streaming(replicating: &[Replica], readers: &[String], at: i64) -> usize {
        replicating
            .iter()
            .filter(|r| r.streaming && r.flushed >= at && readers.contains(&r.name))
            .count()
    }

    /// A writer whose commits wait for more readers than stream (one died, or is being
    /// rebuilt) would take no write until they are back: for two checks in a row, it
    /// confirms commits alone instead (recorded first: no failover until it is tight
    /// again).
    async fn relax_if_short(&self, rec: &ClusterRec, inner: &mut Inner, replicating: &[Replica]) {
        let (readers, want) = self.sync_readers(rec);
        let streaming = Self::streaming(replicating, &readers, 0);
        if streaming >= want {
            inner.sync_short = 0;
            return;
        }
        inner.sync_short += 1;
        if inner.sync_short < 2 {
            return;
        }
        let (env, name) = (&rec.spec.env, &rec.spec.name);
        let Ok(Some(mut now)) = self.cluster(env, name) else {
            return;
        };
        now.sync_relaxed = true;
        if self.save(&now).is_err() {
            return;
        }
        inner.sync_short = 0;
        inner.tightening = None;
        let _ = self.reconfigure(&now, inner).await;
        self.event(
            env,
            name,
            "synchronous",
            &format!(
                "{streaming} of the {want} reader(s) commits wait for stream; the writer confirms commits alone until they are back"
            ),
        );
    }

    /// Restores synchronous replication after a failover or switchover, in two steps:
    /// once enough readers stream, the writer waits for them again; once they have
    /// flushed everything the writer wrote before that took effect, the cluster is no
    /// longer relaxed and a failover may promote a reader again.
    async fn tighten(&self, rec: &ClusterRec, inner: &mut Inner, replicating: &[Replica]) {
        let Some(w) = rec.writer().cloned() else {
            return;
        };
        let (readers, want) = self.sync_readers(rec);
        match inner.tightening {
            None => {
                if Self::streaming(replicating, &readers, 0) < want {
                    return;
                }
                inner.tightening = Some((Instant::now(), None));
                if self.reconfigure(rec, inner).await.is_err() {
                    inner.tightening = None;
                }
            }
            // Every commit the writer confirmed alone precedes this position, once every
            // backend has seen the new setting (well within this delay).
            Some((since, None)) if since.elapsed() >= Duration::from_millis(300) => {
                let Ok(c) = self.admin(rec, &w).await else {
                    return;
                };
                let Ok(row) = c
                    .query_one(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint",
                        &[],
                    )
                    .await
                else {
                    return;
                };
                inner.tightening = Some((since, Some(row.get(0))));
            }
            Some((_, Some(lsn))) => {
                if Self::streaming(replicating, &readers, lsn) < want {
                    return;
                }
                let Ok(c) = self.admin(rec, &w).await else {
                    return;
                };
                let waits = c
                    .query_one("SHOW synchronous_standby_names", &[])
                    .await
                    .map(|r| !r.get::<_, String>(0).is_empty())
                    .unwrap_or(false);
                if want > 0 && !waits {
                    // Written over since: start again.
                    inner.tightening = None;
                    return;
                }
                let (env, name) = (&rec.spec.env, &rec.spec.name);
                let Ok(Some(mut now)) = self.cluster(env, name) else {
                    return;
                };
                if now.writer().map(|n| &n.name) != Some(&w.name) {
                    return;
                }
                now.sync_relaxed = false;
                if self.save(&now).is_ok() {
                    inner.tightening = None;
                    self.event(
                        env,
                        name,
                        "synchronous",
                        &format!("{want} reader(s) caught up; commits wait for them again"),
                    );
                }
            }
            Some(_) => {}
        }
    }

    /// A planned switchover to `to` (the most caught-up reader when `None`): no
    /// acknowledged commit is lost.
    pub async fn switchover(
        self: &Arc<Self>,
        env: &str,
        name: &str,
        to: Option<&str>,
    ) -> Result<String, DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        if let Some(t) = to {
            match rec.node(t) {
                None => {
                    return Err(DbError::NotFound(format!(
                        "no node {t} in {name} (see `veeps db status {env} {name}`)"
                    )))
                }
                Some(n) if n.role == Role::Writer => {
                    return Err(DbError::Invalid(format!("{t} is the writer already")))
                }
                _ => {}
            }
        }
        let rt = self.rt(env, name);
        let mut inner = rt.inner.lock().await;
        self.failover_locked(&rec, &rt, &mut inner, to, true).await
    }

    /// Fences the writer, promotes the best reader, repoints everything and rebuilds the
    /// old writer as a reader. `planned`: stop the writer cleanly and wait for the target to
    /// replay all it wrote.
    pub(crate) async fn failover_locked(
        self: &Arc<Self>,
        rec: &ClusterRec,
        rt: &ClusterRt,
        inner: &mut Inner,
        to: Option<&str>,
        planned: bool,
    ) -> Result<String, DbError> {
        let started = Instant::now();
        let (env, name) = (rec.spec.env.clone(), rec.spec.name.clone());
        let old = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
        // Fence: no new connection reaches the old writer (its endpoint address is parked
        // where nothing listens, so clients are refused at once until the new writer takes
        // it), and its processes are stopped (killed, when it failed) before anything is
        // promoted. A failed writer's leftover processes are killed while its address is
        // still in place, so that their clients' connections end (a reset reaches them)
        // instead of waiting forever on an address that moved away.
        if !planned {
            self.event(
                &env,
                &name,
                "failover",
                &format!("writer {} is down; failing over", old.name),
            );
            self.stop_node(rec, &old, inner, true).await;
        }
        self.park_writer_address(rec).await;
        inner.address_on = None;
        let mut final_lsn: Option<String> = None;
        if planned {
            if let Ok(c) = self.admin(rec, &old).await {
                let _ = c.batch_execute("CHECKPOINT").await;
            }
            self.stop_node(rec, &old, inner, false).await;
            let ids = self.prepare()?;
            let out = pg::run(
                &self.node_dir(rec, &old.name),
                "",
                ids,
                "pg_controldata",
                &["-D", pg::PGDATA],
                &[],
            )
            .await
            .unwrap_or_default();
            final_lsn = out
                .lines()
                .find(|l| {
                    l.starts_with("Latest checkpoint's REDO location:")
                        || l.starts_with("Latest checkpoint location:")
                })
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string());
        }
        // The candidate: the reader with the most WAL received (or the one asked for).
        // None while the writer confirms commits alone: a reader may lack one of them.
        let mut best: Option<(NodeRec, i64)> = None;
        let eligible = planned || !rec.sync_relaxed;
        for n in rec
            .nodes
            .iter()
            .filter(|n| eligible && n.role == Role::Reader)
        {
            if to.is_some_and(|t| t != n.name) {
                continue;
            }
            if !self.running(inner, &n.name) {
                continue;
            }
            let Ok(c) = self.admin(rec, n).await else {
                continue;
            };
            let Ok(row) = c
                .query_one(
                    "SELECT COALESCE(pg_wal_lsn_diff(GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0'), 0)::bigint",
                    &[],
                )
                .await
            else {
                continue;
            };
            let lsn: i64 = row.get(0);
            if best.as_ref().is_none_or(|(_, b)| lsn > *b) {
                best = Some((n.clone(), lsn));
            }
        }
        let Some((target, _)) = best else {
            // Nobody to promote: bring the old writer back.
            let msg = if eligible {
                format!("no healthy reader to promote; restarting {}", old.name)
            } else {
                format!(
                    "no reader has every commit yet (since the last failover); restarting {}",
                    old.name
                )
            };
            self.event(&env, &name, "failover", &msg);
            let ids = self.prepare()?;
            let mut r = rec.clone();
            self.start_node(&mut r, &old, inner, ids).await?;
            self.place_writer_address(rec, &old).await?;
            inner.address_on = Some(old.name.clone());
            self.update_routes(rec, rt, inner);
            return Err(failed(msg));
        };
        if planned {
            // Wait until the target has replayed the old writer's last record.
            if let Some(lsn) = &final_lsn {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let caught = match self.admin(rec, &target).await {
                        Ok(c) => c
                            .query_one(
                                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), $1::text::pg_lsn) >= 0",
                                &[lsn],
                            )
                            .await
                            .map(|r| r.get::<_, bool>(0))
                            .unwrap_or(false),
                        Err(_) => false,
                    };
                    if caught || Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let c = self.admin(rec, &target).await?;
        // Record the new roles first (intent before action): a crash from here on restarts
        // the target as the writer (its configuration drops standby.signal, which promotes
        // it) and the old writer as a reader that rejoins, never the old roles over a
        // promoted node.
        let mut new = rec.clone();
        for n in &mut new.nodes {
            n.role = if n.name == target.name {
                Role::Writer
            } else {
                Role::Reader
            };
        }
        // The new writer confirms commits alone until its readers catch up (the old
        // writer is still to be rebuilt): writes go on meanwhile, and no reader is
        // promoted until then (`tighten`).
        new.sync_relaxed = rec.spec.synchronous_replicas > 0;
        inner.tightening = None;
        self.save(&new)?;
        crate::failpoint("db-before-promote");
        if let Err(e) = c.batch_execute("SELECT pg_promote(true, 60)").await {
            // Not promoted: the recorded roles go back to what runs.
            let _ = self.save(rec);
            return Err(failed(format!("promoting {}: {e}", target.name)));
        }
        let new_writer = new.writer().cloned().ok_or_else(|| failed("no writer"))?;
        for n in new.nodes.iter().filter(|n| n.name != new_writer.name) {
            let _ = self.ensure_slot(&new, &new_writer, &n.name).await;
        }
        self.place_writer_address(&new, &new_writer).await?;
        inner.address_on = Some(new_writer.name.clone());
        self.reconfigure(&new, inner).await?;
        if let Some(n) = inner.nodes.get_mut(&new_writer.name) {
            n.healthy = true;
            n.fails = 0;
        }
        self.update_routes(&new, rt, inner);
        let took = started.elapsed();
        let kind = if planned { "switchover" } else { "failover" };
        let msg = format!(
            "{} promoted to writer in {} ms (was {}); endpoints repointed",
            new_writer.name,
            took.as_millis(),
            old.name
        );
        self.event(&env, &name, kind, &msg);
        self.obs.record(&[Sample::new(
            "db_failover_seconds",
            &[("env", env.as_str()), ("cluster", name.as_str())],
            took.as_secs_f64(),
        )]);
        crate::failpoint("db-before-rejoin");
        // The new timeline must be in the new writer's control file before pg_rewind can
        // compare histories with it.
        if let Ok(c) = self.admin(&new, &new_writer).await {
            let _ = c.batch_execute("CHECKPOINT").await;
        }
        // The old writer returns as a reader: rewound, or copied afresh.
        if let Err(e) = self.rejoin(&new, &old, inner, planned).await {
            self.event(
                &env,
                &name,
                "error",
                &format!("{} cannot rejoin as a reader: {e}", old.name),
            );
        }
        self.update_routes(&new, rt, inner);
        Ok(msg)
    }

    /// Brings a former writer back as a reader of the current writer.
    pub(crate) async fn rejoin(
        self: &Arc<Self>,
        rec: &ClusterRec,
        old: &NodeRec,
        inner: &mut Inner,
        clean: bool,
    ) -> Result<(), DbError> {
        let ids = self.prepare()?;
        let dir = self.node_dir(rec, &old.name);
        let node = rec
            .node(&old.name)
            .cloned()
            .ok_or_else(|| failed("node gone"))?;
        let w = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
        let secrets = self.secrets(rec)?;
        let mut how = "rewound";
        let rewound = async {
            if !dir.join("pgdata/PG_VERSION").exists() {
                return Err("no data".to_string());
            }
            if !clean {
                // pg_rewind wants a cleanly shut down target: finish crash recovery alone.
                let _ = std::fs::remove_file(dir.join("pgdata/standby.signal"));
                let _ = std::fs::remove_file(dir.join("pgdata/postmaster.pid"));
                pg::run(
                    &dir,
                    "",
                    ids,
                    "postgres",
                    &[
                        "--single",
                        "-D",
                        pg::PGDATA,
                        "-c",
                        "archive_mode=off",
                        "postgres",
                    ],
                    &[],
                )
                .await?;
            }
            let src = format!(
                "host={} port={} user={} dbname=postgres sslmode=require",
                w.address, rec.spec.port, rec.spec.master_username
            );
            pg::run(
                &dir,
                &node.netns,
                ids,
                "pg_rewind",
                &["-D", pg::PGDATA, &format!("--source-server={src}")],
                &[("PGPASSWORD", &secrets.master)],
            )
            .await
            .map(|_| ())
        }
        .await;
        let mut r = rec.clone();
        let started = match rewound {
            Ok(()) => {
                self.ensure_slot(rec, &w, &node.name).await?;
                self.start_node(&mut r, &node, inner, ids).await
            }
            Err(e) => Err(failed(e)),
        };
        if let Err(e) = started {
            tracing::info!(node = %old.name, error = %e, "rewinding did not work; taking a fresh base backup");
            how = "copied afresh";
            self.stop_node(rec, &node, inner, true).await;
            self.base_backup(rec, &node, ids).await?;
            self.start_node(&mut r, &node, inner, ids).await?;
        }
        self.event(
            &rec.spec.env,
            &rec.spec.name,
            "rebuilt",
            &format!("{} rejoined as a reader ({how})", old.name),
        );
        Ok(())
    }

    /// Restarts every node for settings that need it: readers one at a time, then a
    /// switchover, then the former writer.
    pub async fn rolling_restart(self: &Arc<Self>, env: &str, name: &str) -> Result<(), DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        let ids = self.prepare()?;
        let rt = self.rt(env, name);
        {
            let mut inner = rt.inner.lock().await;
            for n in rec.nodes.iter().filter(|n| n.role == Role::Reader) {
                if let Some(r) = inner.nodes.get_mut(&n.name) {
                    r.healthy = false;
                }
                self.update_routes(&rec, &rt, &inner);
                self.stop_node(&rec, n, &mut inner, false).await;
                let mut r = rec.clone();
                self.start_node(&mut r, n, &mut inner, ids).await?;
                self.update_routes(&rec, &rt, &inner);
            }
        }
        if rec.nodes.len() > 1 {
            self.switchover(env, name, None).await?;
        } else {
            let mut inner = rt.inner.lock().await;
            let w = rec.writer().cloned().ok_or_else(|| failed("no writer"))?;
            self.stop_node(&rec, &w, &mut inner, false).await;
            let mut r = rec.clone();
            self.start_node(&mut r, &w, &mut inner, ids).await?;
            self.place_writer_address(&rec, &w).await?;
            self.update_routes(&rec, &rt, &inner);
        }
        self.event(
            env,
            name,
            "restarted",
            "rolling restart done (settings that need a restart applied)",
        );
        Ok(())
    }
}

/// A client replicating from the writer, as `pg_stat_replication` lists it.
struct Replica {
    /// Its `application_name`: the node's name.
    name: String,
    /// In the `streaming` state (not catching up).
    streaming: bool,
    /// The WAL position it has flushed, in bytes.
    flushed: i64,
}
