//! One node's life: its configuration, start (initdb, bootstrap, or a base backup from the writer), readiness, health, reconfiguration and stop.

use super::*;

impl Dbs {
    /// Writes a node's configuration files (as its role wants them).
    pub(crate) fn write_conf(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let secrets = self.secrets(rec)?;
        let dir = self.node_dir(rec, &node.name);
        let pgdata = dir.join("pgdata");
        // Only nodes that have their data can confirm commits: listing one still being
        // created would stop every commit until it streams.
        let others: Vec<String> = rec
            .nodes
            .iter()
            .filter(|n| n.name != node.name)
            .filter(|n| {
                self.node_dir(rec, &n.name)
                    .join("pgdata/PG_VERSION")
                    .exists()
            })
            .map(|n| n.name.clone())
            .collect();
        let slot_name = slot(&node.name);
        let upstream = match node.role {
            Role::Writer => None,
            Role::Reader => rec.writer().map(|w| Upstream {
                host: w.address,
                slot: &slot_name,
            }),
        };
        // Relaxed: the writer waits for no reader (see `ClusterRec::sync_relaxed`).
        let mut spec = rec.spec.clone();
        if rec.sync_relaxed {
            spec.synchronous_replicas = 0;
        }
        let conf = postgresql_conf(
            &spec,
            node,
            &others,
            upstream,
            &secrets,
            rec.spec.backup_retention_days > 0,
        );
        std::fs::write(pgdata.join("postgresql.conf"), conf).map_err(failed)?;
        std::fs::write(pgdata.join("pg_hba.conf"), self.hba(rec)).map_err(failed)?;
        // ALTER SYSTEM would override veeps' settings; they come from `parameters` only.
        let _ = std::fs::write(pgdata.join("postgresql.auto.conf"), "");
        let standby = pgdata.join("standby.signal");
        match node.role {
            Role::Reader => std::fs::write(&standby, "").map_err(failed)?,
            Role::Writer => {
                let _ = std::fs::remove_file(&standby);
            }
        }
        pg::chown_tree(&pgdata, ids.0, ids.1).map_err(failed)
    }

    /// Starts a node, creating its data first (initdb for a new cluster's writer, a base
    /// backup from the writer for a reader).
    pub(crate) async fn start_node(
        self: &Arc<Self>,
        rec: &mut ClusterRec,
        node: &NodeRec,
        inner: &mut Inner,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let dir = self.node_dir(rec, &node.name);
        if self.adopt_node(rec, node, inner, ids).await {
            return Ok(());
        }
        self.clear_leftovers(rec, node, &dir).await;
        for d in ["run", "spool", "restore"] {
            std::fs::create_dir_all(dir.join(d)).map_err(failed)?;
        }
        pg::chown_tree(&dir, ids.0, ids.1).map_err(failed)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        self.tls(rec, node, &dir, ids)?;
        let has_data = dir.join("pgdata/PG_VERSION").exists();
        // A new cluster's writer (not restored) gets its roles and database once.
        let fresh = node.role == Role::Writer && !rec.initialised && rec.spec.restore.is_none();
        if !has_data {
            match node.role {
                Role::Writer if !rec.initialised => {
                    if rec.spec.restore.is_some() {
                        self.restore_into(rec, node, ids).await?;
                    } else {
                        self.initdb(rec, node, ids).await?;
                    }
                }
                Role::Writer => {
                    return Err(failed(format!(
                        "the writer {}'s data directory is missing; promote a reader with `veeps db failover`",
                        node.name
                    )))
                }
                Role::Reader => self.base_backup(rec, node, ids).await?,
            }
        }
        self.write_conf(rec, node, ids)?;
        // A restore in progress: recover from the archive, then promote.
        let recovering = std::fs::read_to_string(dir.join("recovery.extra")).ok();
        if let Some(extra) = &recovering {
            let conf = dir.join("pgdata/postgresql.conf");
            let mut c = std::fs::read_to_string(&conf).map_err(failed)?;
            c.push_str(extra);
            std::fs::write(&conf, c).map_err(failed)?;
            std::fs::write(dir.join("pgdata/recovery.signal"), "").map_err(failed)?;
            pg::chown_tree(&dir.join("pgdata"), ids.0, ids.1).map_err(failed)?;
        }
        let cg = self.cgroup(rec, &node.name);
        if let Err(e) = cg.create(limits(&rec.spec)) {
            tracing::warn!(error = %e, "cannot limit the node's CPU and memory");
        }
        // A fresh spool for this run (its `exit` names this run's end only).
        let _ = std::fs::remove_file(dir.join("log").join(veeps_compute::shim::EXIT));
        let mut cmd = pg::server_command(&dir, &node.netns, ids, &self.shim_exe, cg.procs_files())
            .map_err(failed)?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().map_err(|e| failed(format!("postgres: {e}")))?;
        let pid = child.id();
        let started = veeps_sys::proc::start_time(pid).unwrap_or(0);
        // Not waited for here: its end is read from its spool (by whichever control plane
        // runs then); a thread reaps it if it ends while this one runs.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let _ = std::fs::write(dir.join("shim.pid"), format!("{pid} {started}\n"));
        self.follow_node(rec, node, &dir);
        inner.nodes.insert(
            node.name.clone(),
            NodeRt {
                shim: Some((pid, started)),
                dir: dir.clone(),
                fails: 0,
                healthy: false,
                unseen: 0,
            },
        );
        self.wait_ready(rec, node, inner).await?;
        if let Some(n) = inner.nodes.get_mut(&node.name) {
            n.healthy = true;
        }
        if fresh {
            self.bootstrap(rec, node).await?;
        }
        if recovering.is_some() {
            self.finish_restore(rec, node).await?;
            self.write_conf(rec, node, ids)?;
            if let Ok(c) = self.admin(rec, node).await {
                let _ = c.batch_execute("SELECT pg_reload_conf()").await;
            }
        }
        if node.role == Role::Writer && !rec.initialised {
            rec.initialised = true;
            self.save(rec)?;
        }
        Ok(())
    }

    /// Reads a node's output into the log store.
    fn follow_node(&self, rec: &ClusterRec, node: &NodeRec, dir: &Path) {
        self.obs.follow(
            &format!("db/{}/{}/{}", rec.spec.env, rec.spec.name, node.name),
            &dir.join("log"),
            &rec.spec.env,
            &format!("db/{}", rec.spec.name),
            &node.name,
        );
    }

    /// Takes over a node an earlier control plane left running (its shim alive, the server
    /// answering): no restart, connections and transactions go on. Its configuration is
    /// written again and reloaded.
    async fn adopt_node(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        inner: &mut Inner,
        ids: (u32, u32),
    ) -> bool {
        let dir = self.node_dir(rec, &node.name);
        let Some((pid, started)) = veeps_sys::proc::read_pidfile(&dir.join("shim.pid")) else {
            return false;
        };
        let rt = NodeRt {
            shim: Some((pid, started)),
            dir: dir.clone(),
            fails: 0,
            healthy: true,
            unseen: 0,
        };
        if !rt.runs() {
            return false;
        }
        // Only a node in the role recorded for it (a crash in the middle of a failover
        // leaves a reader recorded as the writer: it is restarted as one).
        let h = self.health(rec, node).await;
        if !h.serving || h.in_recovery != (node.role == Role::Reader) {
            tracing::info!(node = %node.name, "a running node is not in its recorded role; restarting it");
            return false;
        }
        tracing::info!(node = %node.name, pid, "adopted a running database node");
        inner.nodes.insert(node.name.clone(), rt);
        self.follow_node(rec, node, &dir);
        if self.write_conf(rec, node, ids).is_ok() {
            if let Ok(c) = self.admin(rec, node).await {
                let _ = c.batch_execute("SELECT pg_reload_conf()").await;
            }
        }
        true
    }

    /// A node left running by an earlier server (killed without stopping its nodes) is
    /// shut down (fast, then killed) before veeps starts it under its own supervision.
    pub(crate) async fn clear_leftovers(&self, rec: &ClusterRec, node: &NodeRec, dir: &Path) {
        let cg = self.cgroup(rec, &node.name);
        let pid: Option<i32> = std::fs::read_to_string(dir.join("pgdata/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        if let Some(pid) = pid.filter(|p| cg.pids().contains(p)) {
            tracing::info!(node = %node.name, pid, "stopping a node left by an earlier server run");
            veeps_sys::proc::signal(pid as u32, libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while cg.pids().contains(&pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Its shim and every process left go too, before anything starts there again.
        tokio::task::spawn_blocking(move || cg.kill_all())
            .await
            .ok();
    }

    pub(crate) async fn wait_ready(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        inner: &mut Inner,
    ) -> Result<(), DbError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.admin(rec, node).await.is_ok() {
                return Ok(());
            }
            let exited = match inner.nodes.get(&node.name).map(NodeRt::state) {
                Some(veeps_compute::shim::ShimState::Exited(s)) => Some(s),
                Some(veeps_compute::shim::ShimState::Gone) => Some("its supervisor is gone".into()),
                _ => None,
            };
            if let Some(status) = exited {
                return Err(failed(format!(
                    "node {} exited while starting ({status}); see `veeps logs {} db/{}/{}`",
                    node.name, rec.spec.env, rec.spec.name, node.name
                )));
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "node {} did not start within 120 s",
                    node.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A superuser connection over the node's local socket.
    pub(crate) async fn admin(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
    ) -> Result<tokio_postgres::Client, DbError> {
        let sock = self.node_dir(rec, &node.name).join("run");
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&sock)
            .port(rec.spec.port)
            .user(&rec.spec.master_username)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2));
        let (client, conn) = tokio::time::timeout(Duration::from_secs(3), cfg.connect(NoTls))
            .await
            .map_err(|_| failed("timed out connecting"))?
            .map_err(failed)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub(crate) async fn initdb(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let dir = self.node_dir(rec, &node.name);
        let secrets = self.secrets(rec)?;
        let pw = dir.join("pwfile");
        veeps_kms::write_private(&pw, secrets.master.as_bytes()).map_err(failed)?;
        pg::chown_tree(&pw, ids.0, ids.1).map_err(failed)?;
        let r = pg::run(
            &dir,
            "",
            ids,
            "initdb",
            &[
                "-D",
                pg::PGDATA,
                "-U",
                &rec.spec.master_username,
                &format!("--pwfile={}/pwfile", pg::MOUNT),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--data-checksums",
            ],
            &[],
        )
        .await;
        let _ = std::fs::remove_file(&pw);
        r.map_err(failed)?;
        Ok(())
    }

    /// After the first start: the replication role and the database.
    pub(crate) async fn bootstrap(&self, rec: &ClusterRec, node: &NodeRec) -> Result<(), DbError> {
        let secrets = self.secrets(rec)?;
        let c = self.admin(rec, node).await?;
        // Readers may not be streaming yet: these commits must not wait for them.
        c.batch_execute("SET synchronous_commit TO local")
            .await
            .map_err(failed)?;
        let has_role = !c
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&REPLICATOR])
            .await
            .map_err(failed)?
            .is_empty();
        c.batch_execute(&format!(
            "{} ROLE {REPLICATOR} WITH REPLICATION LOGIN PASSWORD {}",
            if has_role { "ALTER" } else { "CREATE" },
            literal(&secrets.replication)
        ))
        .await
        .map_err(failed)?;
        let has_db = !c
            .query(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&rec.spec.database_name],
            )
            .await
            .map_err(failed)?
            .is_empty();
        if !has_db {
            c.batch_execute(&format!(
                "CREATE DATABASE {} OWNER {}",
                ident(&rec.spec.database_name),
                ident(&rec.spec.master_username)
            ))
            .await
            .map_err(failed)?;
        }
        Ok(())
    }

    pub(crate) async fn ensure_slot(
        &self,
        rec: &ClusterRec,
        writer: &NodeRec,
        node: &str,
    ) -> Result<(), DbError> {
        let c = self.admin(rec, writer).await?;
        c.execute(
            "SELECT pg_create_physical_replication_slot($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot(node)],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// A fresh copy of the writer's data for a reader, over the network, with its slot.
    pub(crate) async fn base_backup(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let w = rec
            .writer()
            .cloned()
            .ok_or_else(|| failed("no writer to copy from"))?;
        self.ensure_slot(rec, &w, &node.name).await?;
        let secrets = self.secrets(rec)?;
        let dir = self.node_dir(rec, &node.name);
        let _ = std::fs::remove_dir_all(dir.join("pgdata"));
        let host = w.address.to_string();
        let port = rec.spec.port.to_string();
        let slot_name = slot(&node.name);
        pg::run(
            &dir,
            &node.netns,
            ids,
            "pg_basebackup",
            &[
                "-D",
                pg::PGDATA,
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                REPLICATOR,
                "-X",
                "stream",
                "-S",
                &slot_name,
                "-c",
                "fast",
                "--no-password",
            ],
            &[
                ("PGPASSWORD", &secrets.replication),
                ("PGSSLMODE", "require"),
            ],
        )
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// Stops a node: fast shutdown (or SIGKILL when `kill`), then everything in its cgroup.
    pub(crate) async fn stop_node(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        inner: &mut Inner,
        kill: bool,
    ) {
        if let Some(rt) = inner.nodes.remove(&node.name) {
            if !kill && rt.runs() {
                // Fast shutdown: the shim's init passes SIGINT on to postgres.
                if let Some(pm) = rt.postmaster() {
                    veeps_sys::proc::signal(pm, libc::SIGINT);
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                while rt.runs() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.obs.unfollow(&format!(
            "db/{}/{}/{}",
            rec.spec.env, rec.spec.name, node.name
        ));
        let cg = self.cgroup(rec, &node.name);
        tokio::task::spawn_blocking(move || cg.kill_all())
            .await
            .ok();
    }

    /// Rewrites every node's configuration and reloads those running (roles, sources,
    /// parameters that need no restart).
    pub(crate) async fn reconfigure(
        &self,
        rec: &ClusterRec,
        inner: &mut Inner,
    ) -> Result<(), DbError> {
        let ids = self.prepare()?;
        inner.hba = self.hba(rec);
        // The writer waits for its readers again once that is under way.
        let tight;
        let rec = if rec.sync_relaxed && inner.tightening.is_some() {
            tight = ClusterRec {
                sync_relaxed: false,
                ..rec.clone()
            };
            &tight
        } else {
            rec
        };
        for n in &rec.nodes {
            if !self
                .node_dir(rec, &n.name)
                .join("pgdata/PG_VERSION")
                .exists()
            {
                continue;
            }
            self.write_conf(rec, n, ids)?;
            if self.running(inner, &n.name) {
                if let Ok(c) = self.admin(rec, n).await {
                    let _ = c.batch_execute("SELECT pg_reload_conf()").await;
                }
            }
        }
        Ok(())
    }

    /// Checks one node.
    pub(crate) async fn health(&self, rec: &ClusterRec, node: &NodeRec) -> Health {
        let q = async {
            let c = self.admin(rec, node).await.ok()?;
            let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
            Some(row.get::<_, bool>(0))
        };
        match tokio::time::timeout(Duration::from_secs(2), q).await {
            Ok(Some(r)) => Health {
                serving: true,
                in_recovery: r,
            },
            _ => Health {
                serving: false,
                in_recovery: false,
            },
        }
    }
}
