//! What a cluster looks like from outside: its status, where psql connects, and its metrics.

use super::*;

impl Dbs {
    /// Each node's role, health, lag and process, as JSON.
    pub async fn status(
        self: &Arc<Self>,
        env: &str,
        name: &str,
    ) -> Result<veeps_wire::DbStatus, DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        let rt = self.rt(env, name);
        let (pids, address_on): (HashMap<String, Option<u32>>, Option<String>) = {
            let inner = rt.inner.lock().await;
            let pids = inner
                .nodes
                .iter()
                .map(|(k, v)| (k.clone(), v.runs().then(|| v.postmaster()).flatten()))
                .collect();
            (pids, inner.address_on.clone())
        };
        // The node holding the writer endpoint's address.
        let writer_targets: Vec<String> = address_on
            .and_then(|n| {
                rec.node(&n)
                    .map(|n| format!("{}:{}", n.address, rec.spec.port))
            })
            .into_iter()
            .collect();
        let mut lag: HashMap<String, (i64, f64)> = HashMap::new();
        if let Some(w) = rec.writer() {
            if let Ok(c) = self.admin(&rec, w).await {
                if let Ok(rows) = c
                    .query(
                        "SELECT application_name, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 FROM pg_stat_replication",
                        &[],
                    )
                    .await
                {
                    for r in rows {
                        lag.insert(r.get(0), (r.get(1), r.get(2)));
                    }
                }
            }
        }
        let mut nodes = vec![];
        for n in &rec.nodes {
            let h = self.health(&rec, n).await;
            let (bytes, secs) = lag.get(&n.name).copied().unwrap_or((0, 0.0));
            nodes.push(veeps_wire::DbNode {
                name: n.name.clone(),
                role: match n.role {
                    Role::Writer => "writer",
                    Role::Reader => "reader",
                }
                .into(),
                address: n.address.to_string(),
                subnet: n.subnet.clone(),
                healthy: h.serving && h.in_recovery == (n.role == Role::Reader),
                lag_bytes: bytes,
                lag_seconds: secs,
                pid: pids.get(&n.name).copied().flatten(),
            });
        }
        Ok(veeps_wire::DbStatus {
            cluster: name.to_string(),
            env: env.to_string(),
            endpoint: format!("{}:{}", rec.writer_ep.0, rec.spec.port),
            reader_endpoint: format!("{}:{}", rec.reader_ep.0, rec.spec.port),
            writer_targets,
            reader_targets: rt.reader.targets().iter().map(|a| a.to_string()).collect(),
            nodes,
            synchronous: match (rec.spec.synchronous_replicas, rec.sync_relaxed) {
                (0, _) => "off",
                (_, true) => "relaxed",
                _ => "on",
            }
            .into(),
        })
    }

    /// The namespace and connection settings for an operator's `psql` (run in the writer
    /// or reader endpoint's namespace, against that endpoint, with the master credentials).
    pub fn psql_target(
        &self,
        env: &str,
        name: &str,
        reader: bool,
    ) -> Result<(String, Vec<(String, String)>), DbError> {
        let rec = self
            .cluster(env, name)?
            .ok_or_else(|| DbError::NotFound(format!("no cluster {name} in {env}")))?;
        let secrets = self.secrets(&rec)?;
        // From the reader endpoint's namespace: an address of the cluster's own, inside
        // its VPC, admitted by its security groups and pg_hba.
        let ns = &rec.reader_ep.1;
        let addr = if reader {
            &rec.reader_ep.0
        } else {
            &rec.writer_ep.0
        };
        let ca = self.data_dir.join("pki").join("ca.crt");
        if !ca.exists() {
            let _ = std::fs::write(&ca, &self.ca_pem);
        }
        Ok((
            ns.clone(),
            vec![
                ("PGHOST".into(), addr.to_string()),
                ("PGPORT".into(), rec.spec.port.to_string()),
                ("PGUSER".into(), rec.spec.master_username.clone()),
                ("PGPASSWORD".into(), secrets.master),
                ("PGDATABASE".into(), rec.spec.database_name.clone()),
                ("PGSSLMODE".into(), "verify-ca".into()),
                ("PGSSLROOTCERT".into(), ca.display().to_string()),
            ],
        ))
    }

    pub(crate) async fn collect_samples(&self) {
        let mut out = vec![];
        for rec in self.clusters() {
            let (env, name) = (rec.spec.env.as_str(), rec.spec.name.as_str());
            let l = [("env", env), ("cluster", name)];
            let Some(w) = rec.writer() else { continue };
            if let Ok(c) = self.admin(&rec, w).await {
                if let Ok(r) = c
                    .query_one(
                        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::float8, \
                         COALESCE(sum(xact_commit + xact_rollback), 0)::float8, COALESCE(sum(deadlocks), 0)::float8 FROM pg_stat_database",
                        &[],
                    )
                    .await
                {
                    out.push(Sample::new("db_connections", &l, r.get(0)));
                    out.push(Sample::new("db_transactions_total", &l, r.get(1)));
                    out.push(Sample::new("db_deadlocks_total", &l, r.get(2)));
                }
                if let Ok(rows) = c
                    .query(
                        "SELECT application_name, COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8, COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8 FROM pg_stat_replication",
                        &[],
                    )
                    .await
                {
                    for r in rows {
                        let node: String = r.get(0);
                        let nl = [("env", env), ("cluster", name), ("node", node.as_str())];
                        out.push(Sample::new("db_replication_lag_bytes", &nl, r.get(1)));
                        out.push(Sample::new("db_replication_lag_seconds", &nl, r.get(2)));
                    }
                }
            }
            for n in &rec.nodes {
                let bytes = dir_size(&self.node_dir(&rec, &n.name).join("pgdata"));
                let nl = [("env", env), ("cluster", name), ("node", n.name.as_str())];
                out.push(Sample::new("db_disk_used_bytes", &nl, bytes as f64));
            }
            let el = [("env", env), ("cluster", name), ("endpoint", "reader")];
            let st = self.reader_stats(&rec);
            out.push(Sample::new(
                "db_endpoint_connections_total",
                &el,
                st.accepted as f64,
            ));
            out.push(Sample::new(
                "db_endpoint_failed_connections_total",
                &el,
                st.failed as f64,
            ));
        }
        *self.samples.lock().unwrap_or_else(|p| p.into_inner()) = out;
    }

    /// The latest metrics.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
