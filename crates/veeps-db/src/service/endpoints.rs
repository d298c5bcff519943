//! The endpoints of a cluster: the writer's address, moved between nodes and announced, the reader endpoint's routes, TLS and the client sources pg_hba.conf admits.

use super::*;

impl Dbs {
    pub(crate) fn writer_prefix_len(&self, rec: &ClusterRec) -> u8 {
        self.net
            .endpoint(&format!("db/{}/{}/writer", rec.spec.env, rec.spec.name))
            .ok()
            .flatten()
            .map(|e| e.prefix_len)
            .unwrap_or(24)
    }

    /// Takes the writer endpoint's address off every node but `except` (and off its own
    /// namespace): no new connection reaches those nodes through it.
    pub(crate) async fn release_writer_address(&self, rec: &ClusterRec, except: Option<&str>) {
        let a = format!("{}/{}", rec.writer_ep.0, self.writer_prefix_len(rec));
        let mut nss: Vec<&str> = rec
            .nodes
            .iter()
            .filter(|n| Some(n.name.as_str()) != except)
            .map(|n| n.netns.as_str())
            .collect();
        nss.push(&rec.writer_ep.1);
        for ns in nss.into_iter().filter(|n| !n.is_empty()) {
            let _ = veeps_net::sys::ip(Some(ns), &["addr", "del", &a, "dev", "eth0"]).await;
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
        self.release_writer_address(rec, Some(&w.name)).await;
        let a = format!("{}/{}", rec.writer_ep.0, self.writer_prefix_len(rec));
        veeps_net::sys::ip(Some(&w.netns), &["addr", "replace", &a, "dev", "eth0"])
            .await
            .map_err(|e| {
                failed(format!(
                    "placing the writer endpoint's address on {}: {e}",
                    w.name
                ))
            })?;
        let (ns, ip) = (w.netns.clone(), rec.writer_ep.0);
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || veeps_net::garp::announce(&ns, ip)).await
        {
            tracing::warn!(error = %e, "gratuitous ARP for the writer endpoint failed; neighbours learn it when their caches expire");
        }
        Ok(())
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
        ];
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
}
