//! What veeps answers: every zone with its records, one immutable snapshot per change, and
//! the answer to one query from one view (the internet, or inside one VPC).

use crate::model::{Failover, RecordSpec, ZoneSpec};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

/// Where a query comes from: the public listener, or a VPC's resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View<'a> {
    /// The internet: public zones only.
    Public,
    /// Inside this VPC: its private zones first, then public ones.
    Vpc(&'a str),
}

/// What answers depend on beyond the records: aliases' current addresses and health.
pub trait Live: Send + Sync {
    /// The addresses an alias target (a load balancer's id or ARN) has now; empty when it
    /// has none.
    fn alias(&self, target: &str) -> Vec<IpAddr>;
    /// Whether a health check passes (unknown checks pass).
    fn healthy(&self, check_id: &str) -> bool;
    /// Told when an answer depends on chance (a weighted choice among record sets).
    fn varies(&self) {}
}

/// Nothing live: aliases have no address, every check passes.
pub struct NoLive;

impl Live for NoLive {
    fn alias(&self, _target: &str) -> Vec<IpAddr> {
        vec![]
    }
    fn healthy(&self, _check_id: &str) -> bool {
        true
    }
}

/// How long a negative answer may be cached (the SOA's own TTL, as Route 53 does).
const SOA_TTL: u32 = 900;
/// Most CNAMEs followed inside a zone.
const MAX_CHAIN: usize = 8;

/// One record set: records of one name and type under one routing policy.
#[derive(Debug, Clone)]
struct Entry {
    rtype: RecordType,
    ttl: u32,
    data: Vec<RData>,
    alias: Option<(String, bool)>,
    weight: Option<u32>,
    failover: Option<Failover>,
    health_check: Option<String>,
}

/// A zone ready to answer from.
#[derive(Debug)]
pub struct Zone {
    /// The zone's id.
    pub id: String,
    /// Its apex, lower case.
    pub name: Name,
    /// The VPCs it is private to (none: public).
    pub vpcs: Vec<String>,
    /// Who may transfer it.
    pub allow_transfer: Vec<ipnet::IpNet>,
    soa: Record,
    ns: Vec<Record>,
    /// Record sets by owner name (lower case, fully qualified) and type.
    nodes: BTreeMap<String, Vec<Entry>>,
    /// Names that own records or lie above one (empty non-terminals answer NODATA).
    names: BTreeSet<String>,
}

fn key(n: &Name) -> String {
    n.to_lowercase().to_ascii()
}

/// A name from configuration: fully qualified, lower case.
pub fn parse_name(s: &str) -> Result<Name, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 253 {
        return Err(format!("\"{s}\" is not a domain name"));
    }
    let mut n = Name::from_ascii(s).map_err(|e| format!("\"{s}\" is not a domain name: {e}"))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// Parses one value of a record of type `rtype`, as Route 53 takes them (`10 mail.example.com`
/// for MX; TXT values unquoted, split into 255-byte strings).
pub fn parse_value(rtype: RecordType, v: &str) -> Result<RData, String> {
    let bad = |e: String| format!("\"{v}\" is not a {rtype} value: {e}");
    let fq = |s: &str| -> Result<Name, String> { parse_name(s) };
    Ok(match rtype {
        RecordType::A => RData::A(v.trim().parse().map_err(|e| bad(format!("{e}")))?),
        RecordType::AAAA => RData::AAAA(v.trim().parse().map_err(|e| bad(format!("{e}")))?),
        RecordType::CNAME => RData::CNAME(CNAME(fq(v).map_err(bad)?)),
        RecordType::NS => RData::NS(NS(fq(v).map_err(bad)?)),
        RecordType::TXT => {
            let unquoted = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            let bytes = unquoted.as_bytes();
            let chunks = bytes
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>();
            RData::TXT(TXT::new(if chunks.is_empty() {
                vec![String::new()]
            } else {
                chunks
            }))
        }
        RecordType::MX | RecordType::SRV => {
            // The target last: fully qualify it, as Route 53 reads it.
            let mut parts: Vec<String> = v.split_whitespace().map(String::from).collect();
            let want = if rtype == RecordType::MX { 2 } else { 4 };
            if parts.len() != want {
                return Err(bad(format!(
                    "give {}",
                    if rtype == RecordType::MX {
                        "PRIORITY TARGET"
                    } else {
                        "PRIORITY WEIGHT PORT TARGET"
                    }
                )));
            }
            let last = parts.pop().unwrap_or_default();
            parts.push(fq(&last).map_err(bad)?.to_ascii());
            RData::try_from_str(rtype, &parts.join(" ")).map_err(|e| bad(e.to_string()))?
        }
        RecordType::CAA => RData::try_from_str(rtype, v).map_err(|e| bad(e.to_string()))?,
        other => return Err(format!("record type {other} is not served")),
    })
}

impl Zone {
    /// Builds a zone from its specification and records (already checked).
    pub fn build(z: &ZoneSpec, records: &[RecordSpec]) -> Result<Zone, String> {
        let name = parse_name(&z.name)?;
        let ns_names: Vec<Name> = z
            .name_servers
            .iter()
            .map(|s| parse_name(s))
            .collect::<Result<_, _>>()?;
        let soa = Record::from_rdata(
            name.clone(),
            SOA_TTL,
            RData::SOA(SOA::new(
                ns_names.first().cloned().unwrap_or_else(|| name.clone()),
                Name::from_str("hostmaster")
                    .ok()
                    .and_then(|h| h.append_domain(&name).ok())
                    .unwrap_or_else(|| name.clone()),
                z.serial,
                7200,
                900,
                1_209_600,
                86_400,
            )),
        );
        let ns = ns_names
            .iter()
            .map(|n| Record::from_rdata(name.clone(), 172_800, RData::NS(NS(n.clone()))))
            .collect();
        let mut zone = Zone {
            id: z.id.clone(),
            name: name.clone(),
            vpcs: z.vpcs.clone(),
            allow_transfer: z.allow_transfer.clone(),
            soa,
            ns,
            nodes: BTreeMap::new(),
            names: BTreeSet::new(),
        };
        zone.names.insert(key(&name));
        for r in records {
            let owner = parse_name(&r.name)?;
            if !name.zone_of(&owner) {
                return Err(format!("{} is not inside zone {}", r.name, z.name));
            }
            let rtype = RecordType::from_str(&r.rtype).map_err(|e| e.to_string())?;
            let data = r
                .values
                .iter()
                .map(|v| parse_value(rtype, v))
                .collect::<Result<Vec<_>, _>>()?;
            let entry = Entry {
                rtype,
                ttl: r.ttl,
                data,
                alias: r
                    .alias
                    .as_ref()
                    .map(|a| (a.target.clone(), a.evaluate_target_health)),
                weight: r.weight,
                failover: r.failover,
                health_check: r.health_check_id.clone(),
            };
            let mut n = owner.clone();
            while name.zone_of(&n) && n != name {
                zone.names.insert(key(&n));
                n = n.base_name();
            }
            zone.nodes.entry(key(&owner)).or_default().push(entry);
        }
        Ok(zone)
    }

    /// The SOA record (negative answers carry it).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Every record of the zone, as a transfer sends it (between two copies of the SOA).
    pub fn transfer(&self, live: &dyn Live) -> Vec<Record> {
        let mut out = vec![self.soa.clone()];
        out.extend(self.ns.iter().cloned());
        for (owner, entries) in &self.nodes {
            let Ok(name) = Name::from_ascii(owner) else {
                continue;
            };
            for e in entries {
                out.extend(records_of(&name, e, live));
            }
        }
        out.push(self.soa.clone());
        out
    }
}

fn records_of(owner: &Name, e: &Entry, live: &dyn Live) -> Vec<Record> {
    let data: Vec<RData> = match &e.alias {
        Some((target, _)) => live
            .alias(target)
            .into_iter()
            .filter_map(|ip| match (ip, e.rtype) {
                (IpAddr::V4(a), RecordType::A) => Some(RData::A(a.into())),
                (IpAddr::V6(a), RecordType::AAAA) => Some(RData::AAAA(a.into())),
                _ => None,
            })
            .collect(),
        None => e.data.clone(),
    };
    // An alias answers with the TTL of what it points at; 60 s, as Route 53's do.
    let ttl = if e.alias.is_some() { 60 } else { e.ttl };
    data.into_iter()
        .map(|d| Record::from_rdata(owner.clone(), ttl, d))
        .collect()
}

/// Whether a record set may be answered with: its health check passes, and an alias that
/// evaluates its target's health has addresses.
fn usable(e: &Entry, live: &dyn Live) -> bool {
    if let Some(h) = &e.health_check {
        if !live.healthy(h) {
            return false;
        }
    }
    match &e.alias {
        Some((target, true)) => !live.alias(target).is_empty(),
        _ => true,
    }
}

/// The record set to answer from among those of one name and type, by routing policy:
/// failover takes the primary while it is healthy; weighted picks by weight among the
/// healthy ones (among all when none is, as Route 53 does).
fn choose<'a>(sets: &[&'a Entry], live: &dyn Live, pick: u64) -> Vec<&'a Entry> {
    if sets.iter().any(|e| e.failover.is_some()) {
        let primary = sets.iter().find(|e| e.failover == Some(Failover::Primary));
        let secondary = sets
            .iter()
            .find(|e| e.failover == Some(Failover::Secondary));
        return match (primary, secondary) {
            (Some(p), _) if usable(p, live) => vec![*p],
            (_, Some(s)) => vec![*s],
            (Some(p), None) => vec![*p],
            (None, None) => vec![],
        };
    }
    if sets.iter().any(|e| e.weight.is_some()) {
        let healthy: Vec<&&Entry> = sets.iter().filter(|e| usable(e, live)).collect();
        let pool: Vec<&&Entry> = if healthy.is_empty() {
            sets.iter().collect()
        } else {
            healthy
        };
        let total: u64 = pool.iter().map(|e| u64::from(e.weight.unwrap_or(0))).sum();
        if total == 0 {
            return pool.first().map(|e| vec![**e]).unwrap_or_default();
        }
        if pool.len() > 1 {
            live.varies();
        }
        let mut at = pick % total;
        for e in &pool {
            let w = u64::from(e.weight.unwrap_or(0));
            if at < w {
                return vec![**e];
            }
            at -= w;
        }
        return vec![];
    }
    sets.to_vec()
}

/// Every zone.
#[derive(Default)]
pub struct Catalog {
    zones: Vec<Zone>,
    /// Each VPC's range, by id: the names its resolver answers itself ([`crate::local`]).
    vpcs: BTreeMap<String, ipnet::Ipv4Net>,
}

/// What one query got, besides the message: for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a zone.
    Answered,
    /// A name that does not exist.
    NxDomain,
    /// Not ours (no recursion here).
    Refused,
    /// Malformed, or an operation not served.
    Error,
}

impl Catalog {
    /// A catalog of these zones.
    pub fn new(zones: Vec<Zone>) -> Catalog {
        Catalog {
            zones,
            vpcs: BTreeMap::new(),
        }
    }

    /// The same, knowing each VPC's range (by id).
    pub fn with_vpcs(mut self, vpcs: BTreeMap<String, ipnet::Ipv4Net>) -> Catalog {
        self.vpcs = vpcs;
        self
    }

    /// Whether `view` answers `name` itself although no zone holds it (a VPC's host names,
    /// `localhost`, private reverse zones).
    pub fn local(&self, name: &Name, view: View<'_>) -> bool {
        match view {
            View::Vpc(v) => crate::local::serves(name, self.vpcs.get(v).copied()),
            View::Public => false,
        }
    }

    /// The zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zone answering for `name` in `view`: in a VPC its private zones first (the most
    /// specific), then public ones.
    pub fn zone_for(&self, name: &Name, view: View<'_>) -> Option<&Zone> {
        let best = |private: bool| {
            self.zones
                .iter()
                .filter(|z| match view {
                    View::Public => z.vpcs.is_empty(),
                    View::Vpc(v) => {
                        if private {
                            z.vpcs.iter().any(|x| x == v)
                        } else {
                            z.vpcs.is_empty()
                        }
                    }
                })
                .filter(|z| z.name.zone_of(name))
                .max_by_key(|z| z.name.num_labels())
        };
        match view {
            View::Vpc(_) => best(true).or_else(|| best(false)),
            View::Public => best(false),
        }
    }

    /// The answer to `req` from `view`. `pick` chooses among weighted records.
    pub fn answer(
        &self,
        req: &Message,
        view: View<'_>,
        live: &dyn Live,
        pick: u64,
    ) -> (Message, Outcome) {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.queries = req.queries.clone();
        if let Some(e) = &req.edns {
            let mut out = Edns::new();
            out.set_max_payload(1232);
            resp.set_edns(out);
            if e.version() > 0 {
                resp.metadata.response_code = ResponseCode::BADVERS;
                return (resp, Outcome::Error);
            }
        }
        if req.metadata.message_type != MessageType::Query {
            resp.metadata.response_code = ResponseCode::FormErr;
            return (resp, Outcome::Error);
        }
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return (resp, Outcome::Error);
        }
        if req.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::FormErr;
            return (resp, Outcome::Error);
        }
        let q = &req.queries[0];
        if q.query_class() != DNSClass::IN {
            resp.metadata.response_code = ResponseCode::Refused;
            return (resp, Outcome::Refused);
        }
        let qname = q.name().clone();
        let Some(zone) = self.zone_for(&qname, view) else {
            if let View::Vpc(v) = view {
                let cidr = self.vpcs.get(v).copied();
                if let Some(o) = crate::local::answer(&qname, q.query_type(), cidr, &mut resp) {
                    return (resp, o);
                }
            }
            resp.metadata.response_code = ResponseCode::Refused;
            return (resp, Outcome::Refused);
        };
        let qtype = q.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Transfers are the server's to grant (TCP, allowed peers); never here.
            resp.metadata.response_code = ResponseCode::Refused;
            return (resp, Outcome::Refused);
        }
        resp.metadata.authoritative = true;
        let negative = |resp: &mut Message| {
            let mut soa = zone.soa.clone();
            soa.ttl = soa.ttl.min(86_400);
            resp.add_authority(soa);
        };
        // A delegation between the apex and the name: refer.
        let mut n = qname.to_lowercase();
        let mut cut = None;
        while zone.name.zone_of(&n) && n != zone.name {
            if let Some(es) = zone.nodes.get(&key(&n)) {
                if es.iter().any(|e| e.rtype == RecordType::NS) {
                    cut = Some(n.clone());
                }
            }
            n = n.base_name();
        }
        if let Some(cut) = cut {
            if !(cut == qname.to_lowercase() && qtype == RecordType::DS) {
                resp.metadata.authoritative = false;
                for e in zone.nodes.get(&key(&cut)).into_iter().flatten() {
                    if e.rtype == RecordType::NS {
                        for r in records_of(&cut, e, live) {
                            if let RData::NS(ns) = &r.data {
                                // Glue, when the server's name is inside the zone.
                                for g in zone.nodes.get(&key(&ns.0)).into_iter().flatten() {
                                    if matches!(g.rtype, RecordType::A | RecordType::AAAA) {
                                        resp.add_additionals(records_of(&ns.0, g, live));
                                    }
                                }
                            }
                            resp.add_authority(r);
                        }
                    }
                }
                return (resp, Outcome::Answered);
            }
        }
        let mut owner = qname.clone();
        for _ in 0..=MAX_CHAIN {
            let k = key(&owner);
            let (entries, found) = match zone.nodes.get(&k) {
                Some(es) => (Some(es), true),
                None => {
                    // A wildcard at the closest encloser.
                    let mut wild = None;
                    let mut up = owner.to_lowercase().base_name();
                    while zone.name.zone_of(&up) {
                        if zone.names.contains(&key(&up)) {
                            if let Ok(w) = Name::from_ascii("*").and_then(|s| s.append_domain(&up))
                            {
                                wild = zone.nodes.get(&key(&w));
                            }
                            break;
                        }
                        if up == zone.name {
                            break;
                        }
                        up = up.base_name();
                    }
                    let found = wild.is_some();
                    (wild, found)
                }
            };
            let apex = owner.to_lowercase() == zone.name;
            if !found && !apex {
                if zone.names.contains(&k) {
                    negative(&mut resp); // an empty non-terminal: NODATA
                    return (resp, Outcome::Answered);
                }
                // Also at the end of a CNAME chain (RFC 6604).
                resp.metadata.response_code = ResponseCode::NXDomain;
                negative(&mut resp);
                return (resp, Outcome::NxDomain);
            }
            let entries: Vec<&Entry> = entries.map(|v| v.iter().collect()).unwrap_or_default();
            let mut sets: Vec<&Entry> = entries
                .iter()
                .copied()
                .filter(|e| e.rtype == qtype)
                .collect();
            if qtype == RecordType::ANY {
                sets = entries.clone();
            }
            let mut answered = false;
            if apex && (qtype == RecordType::SOA || qtype == RecordType::ANY) {
                resp.add_answer(zone.soa.clone());
                answered = true;
            }
            if apex && (qtype == RecordType::NS || qtype == RecordType::ANY) {
                resp.add_answers(zone.ns.iter().cloned());
                answered = true;
            }
            for e in choose(&sets, live, pick) {
                let rs = records_of(&owner, e, live);
                answered |= !rs.is_empty();
                resp.add_answers(rs);
            }
            if answered {
                return (resp, Outcome::Answered);
            }
            // A CNAME stands for every type at its name.
            let cnames: Vec<&Entry> = entries
                .iter()
                .copied()
                .filter(|e| e.rtype == RecordType::CNAME)
                .collect();
            if let Some(c) = choose(&cnames, live, pick).first() {
                if let Some(RData::CNAME(target)) = c.data.first() {
                    resp.add_answer(Record::from_rdata(
                        owner.clone(),
                        c.ttl,
                        RData::CNAME(target.clone()),
                    ));
                    if !zone.name.zone_of(&target.0) {
                        return (resp, Outcome::Answered);
                    }
                    owner = target.0.clone();
                    continue;
                }
            }
            negative(&mut resp);
            return (resp, Outcome::Answered);
        }
        resp.metadata.response_code = ResponseCode::ServFail;
        (resp, Outcome::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Alias;
    use hickory_proto::op::Query;

    fn zone(id: &str, name: &str, vpcs: &[&str]) -> ZoneSpec {
        ZoneSpec {
            id: id.into(),
            env: "e".into(),
            name: name.into(),
            vpcs: vpcs.iter().map(|s| s.to_string()).collect(),
            allow_transfer: vec![],
            name_servers: vec![format!("ns1.{name}")],
            serial: 7,
        }
    }

    fn rec(zone: &str, name: &str, t: &str, values: &[&str]) -> RecordSpec {
        RecordSpec {
            id: format!("{name}_{t}_{}", values.len()),
            zone_id: zone.into(),
            name: name.into(),
            rtype: t.into(),
            ttl: 300,
            values: values.iter().map(|s| s.to_string()).collect(),
            alias: None,
            set_identifier: None,
            weight: None,
            failover: None,
            health_check_id: None,
        }
    }

    fn ask(c: &Catalog, name: &str, t: RecordType, view: View<'_>, live: &dyn Live) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        c.answer(&q, view, live, 0).0
    }

    fn answers(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    fn catalog() -> Catalog {
        let public = zone("Z1", "example.com", &[]);
        let private = zone("Z2", "internal.example.com", &["vpc-a"]);
        let public_records = vec![
            rec("Z1", "www.example.com", "A", &["192.0.2.1", "192.0.2.2"]),
            rec("Z1", "alias.example.com", "CNAME", &["www.example.com"]),
            rec("Z1", "out.example.com", "CNAME", &["elsewhere.org"]),
            rec(
                "Z1",
                "dangling.example.com",
                "CNAME",
                &["nothing.example.com"],
            ),
            rec("Z1", "*.apps.example.com", "A", &["192.0.2.9"]),
            rec("Z1", "deep.er.example.com", "TXT", &["v=spf1 -all"]),
            rec("Z1", "example.com", "MX", &["10 mail.example.com"]),
            rec("Z1", "sub.example.com", "NS", &["ns.sub.example.com"]),
            rec("Z1", "ns.sub.example.com", "A", &["192.0.2.53"]),
        ];
        let private_records = vec![rec("Z2", "db.internal.example.com", "A", &["10.0.0.5"])];
        Catalog::new(vec![
            Zone::build(&public, &public_records).unwrap(),
            Zone::build(&private, &private_records).unwrap(),
        ])
    }

    #[test]
    fn answers_nxdomain_nodata_cnames_wildcards_and_referrals_per_rfc() {
        let c = catalog();
        let p = View::Public;
        let m = ask(&c, "WWW.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(answers(&m), ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(
            m.answers[0].name.to_ascii(),
            "WWW.example.com.",
            "the query's case is kept"
        );
        // NODATA: the name exists, the type does not: the SOA in authority.
        let m = ask(&c, "www.example.com.", RecordType::AAAA, p, &NoLive);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        // NXDOMAIN.
        let m = ask(&c, "nope.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        // An empty non-terminal is NODATA, not NXDOMAIN.
        let m = ask(&c, "er.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        // CNAME followed inside the zone; left to the client outside it.
        let m = ask(&c, "alias.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(answers(&m), ["www.example.com.", "192.0.2.1", "192.0.2.2"]);
        let m = ask(&c, "out.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(answers(&m), ["elsewhere.org."]);
        // A chain ending nowhere: NXDOMAIN with the CNAME (RFC 6604).
        let m = ask(&c, "dangling.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(answers(&m), ["nothing.example.com."]);
        // Wildcards answer with the name asked.
        let m = ask(&c, "x.apps.example.com.", RecordType::A, p, &NoLive);
        assert_eq!(answers(&m), ["192.0.2.9"]);
        assert_eq!(m.answers[0].name.to_ascii(), "x.apps.example.com.");
        // Apex: SOA, NS, MX.
        let m = ask(&c, "example.com.", RecordType::SOA, p, &NoLive);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        let m = ask(&c, "example.com.", RecordType::MX, p, &NoLive);
        assert_eq!(answers(&m), ["10 mail.example.com."]);
        // Below a delegation: a referral, not authoritative, with glue.
        let m = ask(&c, "host.sub.example.com.", RecordType::A, p, &NoLive);
        assert!(!m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::NS);
        assert_eq!(m.additionals[0].data.to_string(), "192.0.2.53");
        // Not ours: refused, never recursed.
        let m = ask(&c, "example.org.", RecordType::A, p, &NoLive);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available);
    }

    #[test]
    fn private_zones_answer_only_inside_their_vpcs() {
        let c = catalog();
        let inside = ask(
            &c,
            "db.internal.example.com.",
            RecordType::A,
            View::Vpc("vpc-a"),
            &NoLive,
        );
        assert_eq!(answers(&inside), ["10.0.0.5"]);
        // Another VPC and the internet see the public zone, where the name does not exist.
        for view in [View::Vpc("vpc-b"), View::Public] {
            let m = ask(&c, "db.internal.example.com.", RecordType::A, view, &NoLive);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{view:?}");
        }
        // Inside, the public zone still answers for its other names.
        let m = ask(
            &c,
            "www.example.com.",
            RecordType::A,
            View::Vpc("vpc-a"),
            &NoLive,
        );
        assert_eq!(answers(&m), ["192.0.2.1", "192.0.2.2"]);
    }

    struct Fake {
        lb: Vec<IpAddr>,
        down: Vec<&'static str>,
    }

    impl Live for Fake {
        fn alias(&self, target: &str) -> Vec<IpAddr> {
            if target == "lb-1" {
                self.lb.clone()
            } else {
                vec![]
            }
        }
        fn healthy(&self, id: &str) -> bool {
            !self.down.contains(&id)
        }
    }

    #[test]
    fn aliases_follow_their_target_and_routing_policies_follow_health() {
        let z = zone("Z1", "example.com", &[]);
        let mut alias = rec("Z1", "example.com", "A", &[]);
        alias.alias = Some(Alias {
            target: "lb-1".into(),
            evaluate_target_health: true,
        });
        let mut primary = rec("Z1", "app.example.com", "A", &["192.0.2.10"]);
        primary.id = "p".into();
        primary.failover = Some(Failover::Primary);
        primary.set_identifier = Some("p".into());
        primary.health_check_id = Some("hc-p".into());
        let mut secondary = rec("Z1", "app.example.com", "A", &["192.0.2.20"]);
        secondary.id = "s".into();
        secondary.failover = Some(Failover::Secondary);
        secondary.set_identifier = Some("s".into());
        let mut heavy = rec("Z1", "w.example.com", "A", &["192.0.2.30"]);
        heavy.id = "h".into();
        heavy.weight = Some(3);
        heavy.set_identifier = Some("h".into());
        let mut light = rec("Z1", "w.example.com", "A", &["192.0.2.31"]);
        light.id = "l".into();
        light.weight = Some(1);
        light.set_identifier = Some("l".into());
        light.health_check_id = Some("hc-l".into());
        let c = Catalog::new(vec![Zone::build(
            &z,
            &[alias, primary, secondary, heavy, light],
        )
        .unwrap()]);
        let mut live = Fake {
            lb: vec!["10.1.0.4".parse().unwrap()],
            down: vec![],
        };
        let a = ask(&c, "example.com.", RecordType::A, View::Public, &live);
        assert_eq!(answers(&a), ["10.1.0.4"]);
        live.lb = vec!["10.1.0.77".parse().unwrap()];
        let a = ask(&c, "example.com.", RecordType::A, View::Public, &live);
        assert_eq!(answers(&a), ["10.1.0.77"], "the alias follows the balancer");
        assert_eq!(
            answers(&ask(
                &c,
                "app.example.com.",
                RecordType::A,
                View::Public,
                &live
            )),
            ["192.0.2.10"]
        );
        live.down = vec!["hc-p"];
        assert_eq!(
            answers(&ask(
                &c,
                "app.example.com.",
                RecordType::A,
                View::Public,
                &live
            )),
            ["192.0.2.20"]
        );
        // Weighted: 3 to 1 over the picks; an unhealthy set drops out.
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("w.example.com.").unwrap(),
            RecordType::A,
        ));
        let picks: Vec<String> = (0..4)
            .map(|p| answers(&c.answer(&q, View::Public, &live, p).0)[0].clone())
            .collect();
        assert_eq!(
            picks,
            ["192.0.2.30", "192.0.2.30", "192.0.2.30", "192.0.2.31"]
        );
        live.down = vec!["hc-l"];
        let picks: Vec<String> = (0..4)
            .map(|p| answers(&c.answer(&q, View::Public, &live, p).0)[0].clone())
            .collect();
        assert!(picks.iter().all(|a| a == "192.0.2.30"), "{picks:?}");
    }

    #[test]
    fn values_parse_as_route_53_takes_them() {
        assert!(parse_value(RecordType::MX, "10 mail.example.com").is_ok());
        assert!(parse_value(RecordType::SRV, "1 2 5060 sip.example.com").is_ok());
        assert!(parse_value(RecordType::CAA, "0 issue \"letsencrypt.org\"").is_ok());
        let long = "x".repeat(600);
        match parse_value(RecordType::TXT, &long).unwrap() {
            RData::TXT(t) => assert_eq!(t.txt_data.len(), 3),
            other => panic!("{other:?}"),
        }
        for (t, v) in [
            (RecordType::A, "10.0.0"),
            (RecordType::AAAA, "1.2.3.4"),
            (RecordType::MX, "mail.example.com"),
            (RecordType::SRV, "1 2 sip.example.com"),
            (RecordType::CNAME, "bad name"),
        ] {
            assert!(parse_value(t, v).is_err(), "{t} {v}");
        }
    }
}
