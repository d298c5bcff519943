//! Names a VPC's resolver answers itself, as AmazonProvidedDNS does, instead of relaying
//! them upstream: its addresses' host names both ways (`ip-10-0-1-5.ec2.internal` and the
//! matching `in-addr.arpa` name), `localhost` (RFC 6761), and the reverse zones RFC 6303
//! and RFC 7793 say must be served locally (private, loopback, link-local and
//! documentation ranges). A zone the user declares for any of these names comes first.

use crate::catalog::Outcome;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The domain of host names (AWS's in us-east-1, the region veeps reports).
pub const HOST_DOMAIN: &str = "ec2.internal.";

/// Time to live of every local answer, negative ones included: an address can be given to
/// an instance at any moment.
const TTL: u32 = 60;

/// What a locally served name belongs to.
enum Kind {
    Localhost,
    Hosts,
    /// An `in-addr.arpa` zone.
    Reverse4,
    /// An `ip6.arpa` zone (always empty here).
    Reverse6,
}

/// The IPv4 reverse zones served locally, as address prefixes (RFC 6303 section 4.2 to
/// 4.5, RFC 7793).
fn local_v4() -> impl Iterator<Item = Ipv4Net> {
    let fixed = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "192.168.0.0/16",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "255.255.255.255/32",
    ]
    .into_iter()
    .filter_map(|s| s.parse::<Ipv4Net>().ok());
    let private = (16u8..32).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let shared = (64u8..128).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(100, b, 0, 0), 16).ok());
    fixed.chain(private).chain(shared)
}

/// The IPv6 reverse zones served locally (RFC 6303 section 4.3 to 4.6), as nibble names.
const LOCAL_V6: &[&str] = &[
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "d.f.ip6.arpa.",
    "8.e.f.ip6.arpa.",
    "9.e.f.ip6.arpa.",
    "a.e.f.ip6.arpa.",
    "b.e.f.ip6.arpa.",
    "8.b.d.0.1.0.0.2.ip6.arpa.",
];

/// The reverse zone of an octet-aligned prefix (`10.in-addr.arpa.` for 10.0.0.0/8).
fn reverse_zone(net: Ipv4Net) -> String {
    let octets = net.network().octets();
    let n = usize::from(net.prefix_len() / 8);
    let mut s = String::new();
    for o in octets[..n].iter().rev() {
        s.push_str(&format!("{o}."));
    }
    s.push_str("in-addr.arpa.");
    s
}

/// The octets an `in-addr.arpa` name spells (most significant first), if it spells any.
fn reverse_octets(name: &str) -> Option<Vec<u8>> {
    let rest = name.strip_suffix("in-addr.arpa.")?;
    if rest.is_empty() {
        return Some(vec![]);
    }
    let labels: Vec<&str> = rest.strip_suffix('.')?.split('.').collect();
    if labels.len() > 4 {
        return None;
    }
    labels
        .iter()
        .rev()
        .map(|l| {
            // Octets are written without leading zeros.
            if l.len() > 1 && l.starts_with('0') {
                return None;
            }
            l.parse::<u8>().ok()
        })
        .collect()
}

/// The locally served zone that holds `name` (lower case, fully qualified), for a VPC of
/// range `cidr`.
fn zone_of(name: &str, cidr: Option<Ipv4Net>) -> Option<(String, Kind)> {
    let under = |zone: &str| name == zone || name.ends_with(&format!(".{zone}"));
    if under("localhost.") {
        return Some(("localhost.".into(), Kind::Localhost));
    }
    if under(HOST_DOMAIN) {
        return Some((HOST_DOMAIN.into(), Kind::Hosts));
    }
    if name.ends_with("ip6.arpa.") {
        return LOCAL_V6
            .iter()
            .find(|z| under(z))
            .map(|z| (z.to_string(), Kind::Reverse6));
    }
    if under("in-addr.arpa.") {
        // The most specific of the local zones and the VPC's own reverse zone.
        let zones = local_v4()
            .chain(cidr.map(|c| {
                Ipv4Net::new(c.network(), c.prefix_len() / 8 * 8)
                    .unwrap_or(c)
                    .trunc()
            }))
            .map(reverse_zone);
        return zones
            .filter(|z| under(z))
            .max_by_key(|z| z.len())
            .map(|z| (z, Kind::Reverse4));
    }
    None
}

/// Whether a VPC of range `cidr` answers `name` itself.
pub fn serves(name: &Name, cidr: Option<Ipv4Net>) -> bool {
    zone_of(&name.to_lowercase().to_ascii(), cidr).is_some()
}

/// The address a host name of this domain stands for (`ip-10-0-1-5.ec2.internal.`).
fn host_address(name: &str) -> Option<Ipv4Addr> {
    let label = name.strip_suffix(&format!(".{HOST_DOMAIN}"))?;
    let dashed = label.strip_prefix("ip-")?;
    let parts: Vec<&str> = dashed.split('-').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    let o: Vec<u8> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    (o.len() == 4).then(|| Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// The host name of an address.
pub fn host_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("ip-{a}-{b}-{c}-{d}.{HOST_DOMAIN}")
}

fn record(owner: &Name, data: RData) -> Record {
    Record::from_rdata(owner.clone(), TTL, data)
}

fn soa(zone: &str) -> Option<Record> {
    let apex = Name::from_ascii(zone).ok()?;
    let rname = Name::from_ascii("nobody.invalid.").ok()?;
    // RFC 6303's values, but a minute to live: these names change with the VPC.
    let data = SOA::new(apex.clone(), rname, 1, 604_800, 86_400, 2_419_200, TTL);
    Some(Record::from_rdata(apex, TTL, RData::SOA(data)))
}

/// Answers `qname`/`qtype` in `resp` when a VPC of range `cidr` serves the name itself;
/// `None` when the name is not one of those.
pub fn answer(
    qname: &Name,
    qtype: RecordType,
    cidr: Option<Ipv4Net>,
    resp: &mut Message,
) -> Option<Outcome> {
    let name = qname.to_lowercase().to_ascii();
    let (zone, kind) = zone_of(&name, cidr)?;
    resp.metadata.authoritative = true;
    let in_vpc = |ip: Ipv4Addr| cidr.is_some_and(|c| c.contains(&ip));
    // What the name holds: Some(records) when it exists (empty: no data of any type).
    let mut held: Option<Vec<RData>> = match kind {
        Kind::Localhost => Some(vec![
            RData::A(A(Ipv4Addr::LOCALHOST)),
            RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
        ]),
        Kind::Hosts => match host_address(&name) {
            Some(ip) if in_vpc(ip) => Some(vec![RData::A(A(ip))]),
            _ => None,
        },
        Kind::Reverse4 => match reverse_octets(&name) {
            Some(o) if o.len() == 4 => {
                let ip = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
                in_vpc(ip)
                    .then(|| Name::from_ascii(host_name(ip)).ok())
                    .flatten()
                    .map(|h| vec![RData::PTR(PTR(h))])
            }
            // A name above the VPC's addresses exists, with nothing of its own.
            Some(o) => {
                let len = u8::try_from(o.len() * 8).unwrap_or(32);
                let mut b = [0u8; 4];
                b[..o.len()].copy_from_slice(&o);
                let above = Ipv4Net::new(Ipv4Addr::from(b), len).ok();
                above
                    .zip(cidr)
                    .is_some_and(|(a, c)| a.contains(&c.network()) || c.contains(&a.network()))
                    .then(Vec::new)
            }
            None => None,
        },
        Kind::Reverse6 => None,
    };
    if name == zone && held.is_none() {
        held = Some(vec![]);
    }
    let soa = soa(&zone)?;
    match held {
        None => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authority(soa);
            Some(Outcome::NxDomain)
        }
        Some(data) => {
            let mut found: Vec<Record> = data
                .into_iter()
                .filter(|d| qtype == RecordType::ANY || d.record_type() == qtype)
                .map(|d| record(qname, d))
                .collect();
            if name == zone && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                found.push(soa.clone());
            }
            if found.is_empty() {
                resp.add_authority(soa);
            } else {
                resp.add_answers(found);
            }
            Some(Outcome::Answered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;

    fn ask(name: &str, t: RecordType, cidr: &str) -> (Option<Outcome>, Message) {
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        let q = Name::from_ascii(name).unwrap();
        let o = answer(&q, t, cidr.parse().ok(), &mut m);
        (o, m)
    }

    fn data(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn a_vpcs_addresses_have_host_names_both_ways() {
        let (o, m) = ask("5.1.73.10.in-addr.arpa.", RecordType::PTR, "10.73.0.0/16");
        assert_eq!(o, Some(Outcome::Answered));
        assert_eq!(data(&m), ["ip-10-73-1-5.ec2.internal."]);
        assert!(m.metadata.authoritative);
        let (o, m) = ask("IP-10-73-1-5.ec2.internal.", RecordType::A, "10.73.0.0/16");
        assert_eq!(o, Some(Outcome::Answered));
        assert_eq!(data(&m), ["10.73.1.5"]);
        // Another VPC's address, or a name spelled two ways: no such name.
        for (n, t) in [
            ("5.1.72.10.in-addr.arpa.", RecordType::PTR),
            ("ip-10-72-1-5.ec2.internal.", RecordType::A),
            ("ip-10-73-01-5.ec2.internal.", RecordType::A),
            ("05.1.73.10.in-addr.arpa.", RecordType::PTR),
            ("x.5.1.73.10.in-addr.arpa.", RecordType::PTR),
        ] {
            let (o, m) = ask(n, t, "10.73.0.0/16");
            assert_eq!(o, Some(Outcome::NxDomain), "{n}");
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
            assert_eq!(m.authorities.len(), 1, "{n}: the zone's SOA");
        }
        // Other types at a host: no data, not no name.
        let (o, m) = ask(
            "ip-10-73-1-5.ec2.internal.",
            RecordType::AAAA,
            "10.73.0.0/16",
        );
        assert_eq!(o, Some(Outcome::Answered));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && m.authorities.len() == 1);
        // Names above the VPC's addresses exist (empty non-terminals).
        let (_, m) = ask("73.10.in-addr.arpa.", RecordType::PTR, "10.73.0.0/16");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let (_, m) = ask("74.10.in-addr.arpa.", RecordType::PTR, "10.73.0.0/16");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn private_and_special_reverse_zones_and_localhost_stay_local() {
        for n in [
            "1.0.168.192.in-addr.arpa.",
            "9.9.20.172.in-addr.arpa.",
            "1.0.0.127.in-addr.arpa.",
            "1.1.100.100.in-addr.arpa.",
            "b.a.9.8.7.6.5.4.3.2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.",
        ] {
            assert!(serves(&Name::from_ascii(n).unwrap(), None), "{n}");
            let (o, _) = ask(n, RecordType::PTR, "10.73.0.0/16");
            assert_eq!(o, Some(Outcome::NxDomain), "{n}");
        }
        // The zone's apex holds its SOA.
        let (_, m) = ask("10.in-addr.arpa.", RecordType::SOA, "10.73.0.0/16");
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        // Public space is the internet's to answer.
        for n in [
            "8.8.8.8.in-addr.arpa.",
            "example.com.",
            "32.172.in-addr.arpa.",
        ] {
            assert!(!serves(&Name::from_ascii(n).unwrap(), None), "{n}");
        }
        // Unless it is the VPC's own range.
        assert!(serves(
            &Name::from_ascii("9.0.0.44.in-addr.arpa.").unwrap(),
            "44.0.0.0/16".parse().ok()
        ));
        let (_, m) = ask("localhost.", RecordType::A, "10.73.0.0/16");
        assert_eq!(data(&m), ["127.0.0.1"]);
        let (_, m) = ask("db.localhost.", RecordType::AAAA, "10.73.0.0/16");
        assert_eq!(data(&m), ["::1"]);
    }
}
