//! Serving DNS over UDP and TCP: each datagram is answered where it is read (no task per
//! query); TCP connections are capped, framed (RFC 1035 4.2.2) and timed out. Every query
//! passes the per-source rate limit, every answer response rate limiting (RRL: identical
//! answers to one /24 beyond a rate are dropped, every `slip`-th sent truncated so that a
//! real client retries over TCP). Malformed packets get FORMERR when their header is
//! readable, silence otherwise.

use crate::catalog::{Live, Outcome, View};
use crate::Dns;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most TCP connections open at once per listener.
pub const MAX_TCP: usize = 256;
/// How long a TCP connection may sit idle.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most queries on one TCP connection.
const MAX_TCP_QUERIES: usize = 1000;
/// Most sources (or answer buckets) tracked at once by a limiter.
const MAX_TRACKED: usize = 100_000;
/// The largest UDP answer without EDNS.
const PLAIN_UDP: usize = 512;
/// The largest UDP answer with EDNS (the 2020 DNS flag day's size).
const EDNS_UDP: usize = 1232;

/// Rates (per second); 0 turns a limit off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Queries from one address.
    pub per_source: u32,
    /// Identical answers (name, type, response code) to one /24 (IPv6: /56).
    pub responses: u32,
    /// Every `slip`-th answer over the response limit is sent truncated instead of
    /// dropped (0: all dropped).
    pub slip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_source: 1000,
            responses: 100,
            slip: 2,
        }
    }
}

/// Token buckets by key, bounded in number.
pub(crate) struct Buckets<K> {
    map: Mutex<HashMap<K, (f64, Instant, u32)>>,
}

impl<K: std::hash::Hash + Eq + Clone> Buckets<K> {
    pub(crate) fn new() -> Self {
        Buckets {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `k`'s bucket (`rate` per second, a second's worth of burst);
    /// `Err(n)` with the count of refusals so far when it is empty.
    pub(crate) fn take(&self, k: &K, rate: u32, now: Instant) -> Result<(), u32> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_TRACKED && !m.contains_key(k) {
            // Forget buckets that have refilled: they hold nothing worth keeping.
            m.retain(|_, (tokens, at, _)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < rate
            });
            if m.len() >= MAX_TRACKED {
                m.clear();
            }
        }
        let e = m.entry(k.clone()).or_insert((rate, now, 0));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * rate).min(rate);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            Ok(())
        } else {
            e.2 = e.2.wrapping_add(1);
            Err(e.2)
        }
    }
}

fn net_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            IpAddr::V4([o[0], o[1], o[2], 0].into())
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[7..].fill(0);
            IpAddr::V6(o.into())
        }
    }
}

/// A FORMERR for a packet whose header can be read (and that is a query).
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let op = OpCode::from_u8((bytes[2] >> 3) & 0x0f);
    let mut m = Message::error_msg(id, op, ResponseCode::FormErr);
    m.metadata.recursion_desired = bytes[2] & 1 != 0;
    m.to_vec().ok()
}

impl Dns {
    /// The answers to one packet from `src` (none: stay silent). Over UDP at most one,
    /// truncated to what the client can take; over TCP a zone transfer may take several.
    pub fn respond(&self, bytes: &[u8], src: IpAddr, view: View<'_>, tcp: bool) -> Vec<Vec<u8>> {
        match self.respond_or_forward(bytes, src, view, tcp) {
            Reply::Send(v) => v,
            // No upstream from here: what a resolver without one says.
            Reply::Forward => servfail(bytes).into_iter().collect(),
        }
    }

    /// Like [`Dns::respond`], but a VPC's query for a name outside every zone it sees is
    /// handed back to be forwarded upstream (as AmazonProvidedDNS resolves the internet's
    /// names); the public listener never recurses.
    pub fn respond_or_forward(
        &self,
        bytes: &[u8],
        src: IpAddr,
        view: View<'_>,
        tcp: bool,
    ) -> Reply {
        if let (View::Vpc(_), false) = (view, self.upstreams.is_empty()) {
            if let Ok(m) = Message::from_vec(bytes) {
                let outside = m.metadata.message_type == MessageType::Query
                    && m.metadata.op_code == OpCode::Query
                    && m.queries.len() == 1
                    && !matches!(
                        m.queries[0].query_type(),
                        RecordType::AXFR | RecordType::IXFR
                    )
                    && self.catalog().zone_for(m.queries[0].name(), view).is_none();
                if outside {
                    self.stats.queries.fetch_add(1, Ordering::Relaxed);
                    if self
                        .buckets
                        .take(&src, self.limits.per_source, Instant::now())
                        .is_err()
                    {
                        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        return Reply::Send(vec![]);
                    }
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    return Reply::Forward;
                }
            }
        }
        Reply::Send(self.respond_inner(bytes, src, view, tcp))
    }

    /// Relays a query to the upstream resolvers in turn (2 s each); their answer, if any.
    pub async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        let _permit = self.forwards.try_acquire().ok()?;
        if query.len() < 2 {
            return None;
        }
        for up in &self.upstreams {
            let bind: SocketAddr = if up.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(query, up).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 65_535];
            let got = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await.ok()?;
                    // Only the upstream's answer to this query.
                    if from == *up && n >= 2 && buf[..2] == query[..2] {
                        return Some(buf[..n].to_vec());
                    }
                }
            })
            .await;
            if let Ok(Some(answer)) = got {
                return Some(answer);
            }
        }
        self.stats.forward_failed.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn respond_inner(&self, bytes: &[u8], src: IpAddr, view: View<'_>, tcp: bool) -> Vec<Vec<u8>> {
        let now = Instant::now();
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        if self
            .buckets
            .take(&src, self.limits.per_source, now)
            .is_err()
        {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            return vec![];
        }
        let req = match Message::from_vec(bytes) {
            Ok(m) if m.metadata.message_type == MessageType::Query => m,
            Ok(_) => return vec![],
            Err(_) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return formerr(bytes).into_iter().collect();
            }
        };
        let catalog = self.catalog();
        let live: &dyn Live = self.live();
        if let Some(q) = req.queries.first() {
            if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
                return self.transfer(&req, src, view, tcp);
            }
        }
        let pick = rand::random::<u64>();
        let (resp, outcome) = catalog.answer(&req, view, live, pick);
        match outcome {
            Outcome::Answered => self.stats.answered.fetch_add(1, Ordering::Relaxed),
            Outcome::NxDomain => self.stats.nxdomain.fetch_add(1, Ordering::Relaxed),
            Outcome::Refused => self.stats.refused.fetch_add(1, Ordering::Relaxed),
            Outcome::Error => self.stats.errors.fetch_add(1, Ordering::Relaxed),
        };
        let Ok(mut out) = resp.to_vec() else {
            return vec![];
        };
        if !tcp {
            // Response rate limiting: one answer to one network, again and again, is what
            // a reflection attack looks like.
            if let Some(q) = req.queries.first() {
                let k = (
                    net_of(src),
                    q.name().to_lowercase().to_ascii(),
                    u16::from(q.query_type()),
                    resp.metadata.response_code.low(),
                );
                if let Err(n) = self.answers.take(&k, self.limits.responses, now) {
                    self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    if self.limits.slip == 0 || n % self.limits.slip != 0 {
                        return vec![];
                    }
                    return resp.truncate().to_vec().into_iter().collect();
                }
            }
            let limit = match &req.edns {
                Some(e) => usize::from(e.max_payload()).clamp(PLAIN_UDP, EDNS_UDP),
                None => PLAIN_UDP,
            };
            if out.len() > limit {
                out = resp.truncate().to_vec().unwrap_or_default();
            }
        }
        vec![out]
    }

    /// AXFR: over TCP, to an allowed peer, the whole zone (in messages of at most 500
    /// records); otherwise refused.
    fn transfer(&self, req: &Message, src: IpAddr, view: View<'_>, tcp: bool) -> Vec<Vec<u8>> {
        let catalog = self.catalog();
        let q = &req.queries[0];
        let mut refused = Message::error_msg(req.metadata.id, OpCode::Query, ResponseCode::Refused);
        refused.queries = req.queries.clone();
        let zone = catalog
            .zone_for(q.name(), view)
            .filter(|z| z.name == q.name().to_lowercase());
        let allowed = zone.is_some_and(|z| z.allow_transfer.iter().any(|n| n.contains(&src)));
        let (Some(zone), true, true, RecordType::AXFR) = (zone, allowed, tcp, q.query_type())
        else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return refused.to_vec().into_iter().collect();
        };
        self.stats.transfers.fetch_add(1, Ordering::Relaxed);
        let records = zone.transfer(self.live());
        records
            .chunks(500)
            .filter_map(|chunk| {
                let mut m = Message::response(req.metadata.id, OpCode::Query);
                m.metadata.authoritative = true;
                m.queries = req.queries.clone();
                m.add_answers(chunk.iter().cloned());
                m.to_vec().ok()
            })
            .collect()
    }
}

/// What to do with a packet.
pub enum Reply {
    /// Send these (none: stay silent).
    Send(Vec<Vec<u8>>),
    /// Relay it to the upstream resolvers.
    Forward,
}

/// SERVFAIL for a query whose upstream did not answer.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::from_vec(query).ok()?;
    m.metadata.message_type = MessageType::Response;
    m.metadata.response_code = ResponseCode::ServFail;
    m.metadata.recursion_available = true;
    m.to_vec().ok()
}

/// Serves UDP on `sock` with `workers` loops sharing it, until the task is aborted.
pub fn serve_udp(
    dns: Arc<Dns>,
    sock: Arc<tokio::net::UdpSocket>,
    vpc: Option<String>,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers.max(1))
        .map(|_| {
            let (dns, sock, vpc) = (dns.clone(), sock.clone(), vpc.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                        continue;
                    };
                    let view = match &vpc {
                        Some(v) => View::Vpc(v),
                        None => View::Public,
                    };
                    match dns.respond_or_forward(&buf[..n], peer.ip(), view, false) {
                        Reply::Send(outs) => {
                            for out in outs {
                                let _ = sock.send_to(&out, peer).await;
                            }
                        }
                        Reply::Forward => {
                            let (dns, sock, q) = (dns.clone(), sock.clone(), buf[..n].to_vec());
                            tokio::spawn(async move {
                                let answer = dns.forward(&q).await.or_else(|| servfail(&q));
                                if let Some(a) = answer {
                                    let _ = sock.send_to(&a, peer).await;
                                }
                            });
                        }
                    }
                }
            })
        })
        .collect()
}

/// Serves TCP on `listener` until the task is aborted.
pub fn serve_tcp(
    dns: Arc<Dns>,
    listener: tokio::net::TcpListener,
    vpc: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                dns.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                continue; // dropped: closed at once
            };
            let (dns, vpc) = (dns.clone(), vpc.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp_conn(&dns, stream, peer, vpc.as_deref()).await;
            });
        }
    })
}

async fn tcp_conn(
    dns: &Dns,
    mut s: tokio::net::TcpStream,
    peer: SocketAddr,
    vpc: Option<&str>,
) -> std::io::Result<()> {
    for _ in 0..MAX_TCP_QUERIES {
        let mut len = [0u8; 2];
        let read = async {
            s.read_exact(&mut len).await?;
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut msg).await?;
            Ok::<_, std::io::Error>(msg)
        };
        let msg = match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(m)) => m,
            _ => return Ok(()),
        };
        let view = match vpc {
            Some(v) => View::Vpc(v),
            None => View::Public,
        };
        let outs = match dns.respond_or_forward(&msg, peer.ip(), view, true) {
            Reply::Send(outs) => outs,
            Reply::Forward => dns
                .forward(&msg)
                .await
                .or_else(|| servfail(&msg))
                .into_iter()
                .collect(),
        };
        if outs.is_empty() {
            return Ok(());
        }
        for out in outs {
            let Ok(n) = u16::try_from(out.len()) else {
                return Ok(());
            };
            let write = async {
                s.write_all(&n.to_be_bytes()).await?;
                s.write_all(&out).await
            };
            if tokio::time::timeout(TCP_IDLE, write).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecordSpec, ZoneSpec};
    use hickory_proto::op::{Edns, Query};
    use hickory_proto::rr::Name;

    async fn dns(limits: Limits) -> (Arc<Dns>, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(veeps_state::Store::open(&d.path().join("s.redb")).unwrap());
        let dns = Dns::new(store, None, None, limits);
        dns.put_zone(ZoneSpec {
            id: "Z1".into(),
            env: "e".into(),
            name: "example.com".into(),
            vpcs: vec![],
            allow_transfer: vec!["192.0.2.0/24".parse().unwrap()],
            name_servers: vec!["ns1.example.com".into()],
            serial: 0,
        })
        .await
        .unwrap();
        let many: Vec<String> = (1..=60)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        dns.put_record(RecordSpec {
            id: "big".into(),
            zone_id: "Z1".into(),
            name: "big.example.com".into(),
            rtype: "A".into(),
            ttl: 60,
            values: many,
            alias: None,
            set_identifier: None,
            weight: None,
            failover: None,
            health_check_id: None,
        })
        .await
        .unwrap();
        (dns, d)
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            q.set_edns(e);
        }
        q.to_vec().unwrap()
    }

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test]
    async fn malformed_packets_get_formerr_or_silence_and_never_a_panic() {
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        // Too short for a header: silence. A readable header: FORMERR with its id.
        assert!(d.respond(&[1, 2, 3], SRC, View::Public, false).is_empty());
        let mut bad = query("www.example.com.", RecordType::A, false);
        bad.truncate(bad.len() - 3);
        let out = d.respond(&bad, SRC, View::Public, false);
        let m = Message::from_vec(&out[0]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, u16::from_be_bytes([bad[0], bad[1]]));
        // A response sent to us is never answered (no loops).
        let mut resp = query("www.example.com.", RecordType::A, false);
        resp[2] |= 0x80;
        assert!(d.respond(&resp, SRC, View::Public, false).is_empty());
        // Fuzz: random packets and valid ones with bytes flipped.
        let valid = query("big.example.com.", RecordType::A, true);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..20_000 {
            let pkt: Vec<u8> = if i % 2 == 0 {
                (0..(next() % 600) as usize).map(|_| next() as u8).collect()
            } else {
                let mut p = valid.clone();
                for _ in 0..(1 + next() % 4) {
                    let at = (next() as usize) % p.len();
                    p[at] = next() as u8;
                }
                p
            };
            for out in d.respond(&pkt, SRC, View::Public, i % 3 == 0) {
                if let Ok(m) = Message::from_vec(&out) {
                    assert_eq!(m.metadata.message_type, MessageType::Response);
                }
            }
        }
    }

    #[tokio::test]
    async fn big_answers_truncate_over_udp_and_fit_over_tcp() {
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        let plain = d.respond(
            &query("big.example.com.", RecordType::A, false),
            SRC,
            View::Public,
            false,
        );
        let m = Message::from_vec(&plain[0]).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty());
        assert!(plain[0].len() <= 512);
        let with_edns = d.respond(
            &query("big.example.com.", RecordType::A, true),
            SRC,
            View::Public,
            false,
        );
        let m = Message::from_vec(&with_edns[0]).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        let tcp = d.respond(
            &query("big.example.com.", RecordType::A, false),
            SRC,
            View::Public,
            true,
        );
        assert_eq!(Message::from_vec(&tcp[0]).unwrap().answers.len(), 60);
    }

    #[tokio::test]
    async fn floods_are_limited_per_source_and_per_answer() {
        let (d, _t) = dns(Limits {
            per_source: 50,
            responses: 10,
            slip: 2,
        })
        .await;
        let q = query("www.example.com.", RecordType::A, false);
        // One source: at most a second's burst answered.
        let answered = (0..200)
            .filter(|_| !d.respond(&q, SRC, View::Public, false).is_empty())
            .count();
        assert!(answered <= 50, "{answered}");
        // Many sources in one /24 asking the same: RRL, every second one truncated.
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 10,
            slip: 2,
        })
        .await;
        let mut full = 0;
        let mut truncated = 0;
        for i in 0..100u8 {
            let src = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, i));
            for out in d.respond(&q, src, View::Public, false) {
                if Message::from_vec(&out).unwrap().metadata.truncation {
                    truncated += 1;
                } else {
                    full += 1;
                }
            }
        }
        assert!(full <= 10, "{full}");
        assert!((40..=50).contains(&truncated), "{truncated}");
        // Another network is not held back by that one.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
        assert!(!d.respond(&q, other, View::Public, false).is_empty());
    }

    /// Hostile TCP clients: idle connections beyond the cap are closed at once, and an
    /// idle one is closed after the idle time; a client that asks is answered meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_connections_are_capped_and_idle_ones_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (d, _t) = dns(Limits {
            per_source: 0,
            responses: 0,
            slip: 0,
        })
        .await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        let task = serve_tcp(d.clone(), l, None);
        let started = Instant::now();
        let mut idle = vec![];
        for _ in 0..MAX_TCP {
            idle.push(tokio::net::TcpStream::connect(at).await.unwrap());
        }
        // One more: closed without a word.
        let mut extra = tokio::net::TcpStream::connect(at).await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut b))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // Idle ones are closed after the idle time, which frees room for a real client.
        let n = tokio::time::timeout(TCP_IDLE * 3, idle[0].read(&mut b))
            .await
            .expect("closed when idle")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= TCP_IDLE);
        drop(idle);
        let q = query("www.example.com.", RecordType::A, false);
        let mut c = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
                c.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
                c.write_all(&q).await.unwrap();
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).await.is_ok() {
                    return (c, u16::from_be_bytes(len));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("a client is answered once the idle ones are gone");
        let mut body = vec![0u8; usize::from(c.1)];
        c.0.read_exact(&mut body).await.unwrap();
        assert_eq!(
            Message::from_vec(&body).unwrap().metadata.id,
            u16::from_be_bytes([q[0], q[1]])
        );
        task.abort();
    }

    #[tokio::test]
    async fn zone_transfers_go_over_tcp_to_allowed_peers_only() {
        let (d, _t) = dns(Limits::default()).await;
        let q = query("example.com.", RecordType::AXFR, false);
        let refused = |out: Vec<Vec<u8>>| {
            Message::from_vec(&out[0]).unwrap().metadata.response_code == ResponseCode::Refused
        };
        assert!(refused(d.respond(&q, SRC, View::Public, false)), "over UDP");
        let stranger = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));
        assert!(
            refused(d.respond(&q, stranger, View::Public, true)),
            "to a stranger"
        );
        let out = d.respond(&q, SRC, View::Public, true);
        let m = Message::from_vec(&out[0]).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.first().unwrap().record_type(), RecordType::SOA);
        assert_eq!(m.answers.last().unwrap().record_type(), RecordType::SOA);
        assert!(m.answers.len() >= 60 + 3);
    }
}
