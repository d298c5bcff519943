//! The endpoints of a cluster: the writer's address, moved between nodes and announced, the reader endpoint's routes, TLS and the client sources pg_hba.conf admits.

use super::*;
use crate::proxy;

impl Dbs {
    /// The writer endpoint's address with its prefix (`10.0.1.4/24`), and its subnet's
    /// gateway.
    fn writer_net(&self, rec: &ClusterRec) -> (String, Option<std::net::Ipv4Addr>) {
        let ep = self
            .net
            .endpoint(&format!("db/{}/{}/writer", rec.spec.env, rec.spec.name))
            .ok()
            .flatten();
        let len = ep.as_ref().map(|e| e.prefix_len).unwrap_or(24);
        (format!("{}/{len}", rec.writer_ep.0), ep.map(|e| e.gateway))
    }

    /// Moves the writer endpoint's address to namespace `to` and announces it there
    /// (gratuitous ARP), then takes it off every other node and the endpoint's own
    /// namespace, and announces it again. Added before it is taken away: at no moment does
    /// a connection to it find nobody (a SYN that no one answers is sent again only a
    /// second later); while both hold it, a client reaching the old holder is refused at
    /// once and tries again.
    async fn move_writer_address(&self, rec: &ClusterRec, to: &str) -> Result<(), String> {
        let (a, gateway) = self.writer_net(rec);
        veeps_net::sys::ip(Some(to), &["addr", "replace", &a, "dev", "eth0"])
            .await
            .map_err(|e| e.to_string())?;
        let announce = || async {
            let (ns, ip) = (to.to_string(), rec.writer_ep.0);
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || veeps_net::garp::announce(&ns, ip)).await
            {
                tracing::warn!(error = %e, "gratuitous ARP for the writer endpoint failed; neighbours learn it when their caches expire");
            }
        };
        if to == rec.writer_ep.1 {
            // The endpoint's own namespace lost its routes with its address: without the
            // default route its refusals would not reach clients in other subnets.
            if let Some(gw) = gateway {
                veeps_net::sys::ip(
                    Some(to),
                    &[
                        "route",
                        "replace",
                        "default",
                        "via",
                        &gw.to_string(),
                        "dev",
                        "eth0",
                    ],
                )
                .await
                .map_err(|e| e.to_string())?;
            }
        }
        announce().await;
        let others = rec
            .nodes
            .iter()
            .map(|n| n.netns.as_str())
            .chain([rec.writer_ep.1.as_str()])
            .filter(|ns| !ns.is_empty() && *ns != to);
        for ns in others {
            let _ = veeps_net::sys::ip(Some(ns), &["addr", "del", &a, "dev", "eth0"]).await;
        }
        announce().await;
        Ok(())
    }

    /// Parks the writer endpoint's address on the endpoint's own namespace, where nothing
    /// listens: no connection reaches a node through it (the fence before a promotion),
    /// and clients are refused at once until the new writer takes it.
    pub(crate) async fn park_writer_address(&self, rec: &ClusterRec) {
        let home = rec.writer_ep.1.clone();
        if home.is_empty() {
            return;
        }
        if let Err(e) = self.move_writer_address(rec, &home).await {
            tracing::warn!(error = %e, "cannot park the writer endpoint's address; taking it off the nodes");
            let (a, _) = self.writer_net(rec);
            for n in rec.nodes.iter().filter(|n| !n.netns.is_empty()) {
                let _ =
                    veeps_net::sys::ip(Some(&n.netns), &["addr", "del", &a, "dev", "eth0"]).await;
            }
        }
    }

    /// Moves the writer endpoint's address to `w` and announces it (gratuitous ARP), so
    /// clients reach the new writer directly, with no proxy in the way.
    pub(crate) async fn place_writer_address(
        &self,
        rec: &ClusterRec,
        w: &NodeRec,
    ) -> Result<(), DbError> {
        if w.netns.is_empty() {
            return Ok(());
        }
        self.move_writer_address(rec, &w.netns).await.map_err(|e| {
            failed(format!(
                "placing the writer endpoint's address on {}: {e}",
                w.name
            ))
        })
    }

    /// Points the endpoints at the writer and the healthy readers.
    pub(crate) fn update_routes(&self, rec: &ClusterRec, rt: &ClusterRt, inner: &Inner) {
        let port = rec.spec.port;
        let writer: Vec<SocketAddr> = rec
            .writer()
            .filter(|w| {
                inner
                    .nodes
                    .get(&w.name)
                    .is_some_and(|n| n.healthy || n.fails == 0)
            })
            .map(|w| SocketAddr::from((w.address, port)))
            .into_iter()
            .collect();
        let readers: Vec<SocketAddr> = rec
            .nodes
            .iter()
            .filter(|n| n.role == Role::Reader)
            .filter(|n| inner.nodes.get(&n.name).is_some_and(|r| r.healthy))
            .map(|n| SocketAddr::from((n.address, port)))
            .collect();
        rt.reader
            .set(if readers.is_empty() { writer } else { readers });
    }

    /// Issues the node's certificate and writes its TLS files.
    pub(crate) fn tls(
        &self,
        rec: &ClusterRec,
        node: &NodeRec,
        dir: &Path,
        ids: (u32, u32),
    ) -> Result<(), DbError> {
        let id = format!("db:{}:{}:{}", rec.spec.env, rec.spec.name, node.name);
        let names = vec![
            node.address.to_string(),
            rec.writer_ep.0.to_string(),
            rec.reader_ep.0.to_string(),
            format!("{}.{}.db.veeps.internal", rec.spec.name, rec.spec.env),
        ]
        .into_iter()
        .chain(rec.spec.dns_names.iter().cloned())
        .collect::<Vec<_>>();
        let cert = match self.certs.get(&id) {
            Some(c) if c.names == names => c,
            _ => self.certs.issue(&id, &names).map_err(failed)?,
        };
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(failed)?;
        std::fs::write(tls.join("server.crt"), &cert.chain_pem).map_err(failed)?;
        veeps_kms::write_private(&tls.join("server.key"), cert.key_pem.as_bytes())
            .map_err(failed)?;
        std::fs::write(tls.join("ca.crt"), &self.ca_pem).map_err(failed)?;
        pg::chown_tree(&tls, ids.0, ids.1).map_err(failed)
    }

    /// The sources `pg_hba.conf` admits besides nodes and endpoints: the ranges and members
    /// of the security groups' rules for the port.
    pub(crate) fn sources(&self, rec: &ClusterRec) -> Vec<ipnet::Ipv4Net> {
        let port = rec.spec.port;
        let eps = self.net.endpoints().unwrap_or_default();
        let mut out = vec![];
        for id in &rec.spec.security_groups {
            let Ok(Some(g)) = self.net.sg(id) else {
                continue;
            };
            for r in &g.ingress {
                let covers = (r.protocol == "tcp" || r.protocol == "all" || r.protocol == "-1")
                    && (r.protocol != "tcp" || (r.from_port <= port && port <= r.to_port));
                if !covers {
                    continue;
                }
                out.extend(r.cidr_blocks.iter().copied());
                for e in &eps {
                    let member = e
                        .security_groups
                        .iter()
                        .any(|s| r.security_groups.contains(s) || (r.self_ && s == id));
                    if member {
                        if let Ok(n) = ipnet::Ipv4Net::new(e.address, 32) {
                            out.push(n);
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    pub(crate) fn hba(&self, rec: &ClusterRec) -> String {
        let nodes: Vec<Ipv4Addr> = rec.nodes.iter().map(|n| n.address).collect();
        pg_hba(&nodes, &[rec.reader_ep.0], &self.sources(rec))
    }

    fn reader_dir(&self, rec: &ClusterRec) -> std::path::PathBuf {
        self.cluster_dir(&rec.spec.env, &rec.spec.name)
            .join("reader-endpoint")
    }

    /// The reader endpoint's process, if it runs.
    fn reader_pid(dir: &Path) -> Option<u32> {
        veeps_sys::proc::live_pidfile(&dir.join(proxy::PID)).map(|(pid, _)| pid)
    }

    /// Makes sure the reader endpoint's process runs where the cluster says: the running
    /// one is adopted as it is; else one is started.
    pub(crate) async fn ensure_reader_endpoint(
        &self,
        rec: &ClusterRec,
        rt: &ClusterRt,
    ) -> Result<(), DbError> {
        let dir = self.reader_dir(rec);
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let (addr, ns) = &rec.reader_ep;
        let want = proxy::EndpointFile {
            listen: SocketAddr::from((*addr, rec.spec.port)),
            netns: ns.clone(),
        };
        rt.reader.write_to(&dir.join(proxy::ROUTES));
        let same = std::fs::read(dir.join(proxy::ENDPOINT))
            .ok()
            .and_then(|b| serde_json::from_slice::<proxy::EndpointFile>(&b).ok())
            .is_some_and(|e| e == want);
        if same && Self::reader_pid(&dir).is_some() {
            tracing::info!(cluster = %rec.spec.name, "adopted the running reader endpoint");
            return Ok(());
        }
        self.stop_reader_endpoint(rec).await;
        std::fs::write(
            dir.join(proxy::ENDPOINT),
            serde_json::to_vec(&want).map_err(failed)?,
        )
        .map_err(failed)?;
        std::fs::write(
            dir.join(proxy::ROUTES),
            serde_json::to_vec(&rt.reader.targets()).map_err(failed)?,
        )
        .map_err(failed)?;
        let log = std::fs::File::create(dir.join("proxy.log")).map_err(failed)?;
        let mut cmd = std::process::Command::new(&self.shim_exe);
        cmd.arg("db-proxy")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(failed)?)
            .stderr(log);
        // A session of its own: it outlives the control plane.
        veeps_sys::confine::confine(
            &mut cmd,
            &veeps_sys::confine::Confine {
                session: true,
                ..Default::default()
            },
        )
        .map_err(failed)?;
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(format!("reader endpoint: {e}")))?;
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if Self::reader_pid(&dir) == Some(pid) {
                return Ok(());
            }
            if veeps_sys::proc::start_time(pid).is_none() || tokio::time::Instant::now() > deadline
            {
                let why = std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
                return Err(failed(format!(
                    "reader endpoint {}: {}",
                    want.listen,
                    why.trim()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the reader endpoint's process (it notices its endpoint file gone).
    pub(crate) async fn stop_reader_endpoint(&self, rec: &ClusterRec) {
        let dir = self.reader_dir(rec);
        let _ = std::fs::remove_file(dir.join(proxy::ENDPOINT));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Some(pid) = Self::reader_pid(&dir) {
            if tokio::time::Instant::now() > deadline {
                veeps_sys::proc::signal(pid, libc::SIGKILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The reader endpoint's counters.
    pub(crate) fn reader_stats(&self, rec: &ClusterRec) -> proxy::StatsFile {
        std::fs::read(self.reader_dir(rec).join(proxy::STATS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}
