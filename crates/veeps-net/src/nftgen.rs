//! nftables rulesets: the host's, each router's (tiers and network ACLs) and each
//! endpoint's (security groups). Each is loaded whole, replacing the previous one
//! atomically.

use crate::{AclRule, Endpoint, NetworkAcl, SecurityGroup, SgRule, Subnet, Tier};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Replaces table `inet NAME` with `body` in one transaction.
fn replace(name: &str, body: &str) -> String {
    format!("table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{body}}}\n")
}

/// The host's table: no forwarding between VPC uplinks, masquerade of VPC egress.
pub fn host(table: &str, prefix: &str) -> String {
    let body = format!(
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"{prefix}*\" oifname \"{prefix}*\" drop\n  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    iifname \"{prefix}*\" oifname != \"{prefix}*\" masquerade\n  }}\n"
    );
    replace(table, &body)
}

fn ports(proto: &str, from: u16, to: u16, dir: &str) -> String {
    match proto {
        "tcp" | "udp" if from == 0 && to == 65535 => format!("meta l4proto {proto} "),
        "tcp" | "udp" if from == to => format!("{proto} {dir} {from} "),
        "tcp" | "udp" => format!("{proto} {dir} {from}-{to} "),
        "icmp" => "meta l4proto icmp ".into(),
        _ => String::new(),
    }
}

fn acl_rule(r: &AclRule, ingress: bool) -> String {
    let peer = if r.cidr.prefix_len() == 0 {
        String::new()
    } else {
        format!("ip {} {} ", if ingress { "saddr" } else { "daddr" }, r.cidr)
    };
    format!(
        "    {peer}{}{}\n",
        ports(&r.protocol, r.from_port, r.to_port, "dport"),
        if r.allow { "return" } else { "drop" }
    )
}

/// A router's table: network ACLs at subnet boundaries (stateless), then tiers.
pub fn router(subnets: &[Subnet], acls: &[NetworkAcl]) -> String {
    let mut b = String::new();
    let mut fwd = String::from(
        "  chain forward {\n    type filter hook forward priority filter; policy drop;\n",
    );
    for acl in acls {
        let name = acl.id.replace('-', "_");
        for s in subnets.iter().filter(|s| acl.subnet_ids.contains(&s.id)) {
            let _ = writeln!(fwd, "    oifname \"{}\" jump {name}_in", s.bridge);
            let _ = writeln!(fwd, "    iifname \"{}\" jump {name}_out", s.bridge);
        }
        for (suffix, rules, ingress) in [("in", &acl.ingress, true), ("out", &acl.egress, false)] {
            let mut sorted: Vec<&AclRule> = rules.iter().collect();
            sorted.sort_by_key(|r| r.rule_no);
            let _ = writeln!(b, "  chain {name}_{suffix} {{");
            for r in sorted {
                b.push_str(&acl_rule(r, ingress));
            }
            b.push_str("    drop\n  }\n");
        }
    }
    let names = |tiers: &[Tier]| -> Vec<String> {
        subnets
            .iter()
            .filter(|s| tiers.contains(&s.tier))
            .map(|s| format!("\"{}\"", s.bridge))
            .collect()
    };
    let set = |v: &[String]| format!("{{ {} }}", v.join(", "));
    fwd.push_str("    ct state established,related accept\n    ct state invalid drop\n");
    let private = names(&[Tier::PrivateApp, Tier::PrivatePersistence]);
    let public = names(&[Tier::Public]);
    let persistence = names(&[Tier::PrivatePersistence]);
    if !private.is_empty() {
        let _ = writeln!(fwd, "    iifname \"uplink\" oifname {} drop", set(&private));
    }
    if !public.is_empty() {
        let _ = writeln!(
            fwd,
            "    iifname \"uplink\" oifname {} accept",
            set(&public)
        );
    }
    if !persistence.is_empty() {
        let _ = writeln!(
            fwd,
            "    iifname {} oifname \"uplink\" drop",
            set(&persistence)
        );
    }
    fwd.push_str("    iifname \"b*\" oifname \"uplink\" accept\n    iifname \"b*\" oifname \"b*\" accept\n    iifname \"p*\" oifname \"b*\" accept\n    iifname \"b*\" oifname \"p*\" accept\n  }\n");
    b.push_str(&fwd);
    b.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"uplink\" masquerade\n  }\n");
    replace("veeps", &b)
}

fn set_name(id: &str) -> String {
    format!("sg_{}", id.replace('-', "_"))
}

fn sg_rule(r: &SgRule, own: &str, ingress: bool) -> Vec<String> {
    let dir = if ingress { "saddr" } else { "daddr" };
    let p = ports(&r.protocol, r.from_port, r.to_port, "dport");
    let mut peers: Vec<String> = vec![];
    for c in &r.cidr_blocks {
        peers.push(if c.prefix_len() == 0 {
            String::new()
        } else {
            format!("ip {dir} {c} ")
        });
    }
    for g in &r.security_groups {
        peers.push(format!("ip {dir} @{} ", set_name(g)));
    }
    if r.self_ {
        peers.push(format!("ip {dir} @{} ", set_name(own)));
    }
    peers
        .into_iter()
        .map(|peer| format!("    {peer}{p}accept\n"))
        .collect()
}

/// An endpoint's table: the union of its security groups, stateful.
pub fn endpoint(
    ep: &Endpoint,
    sgs: &BTreeMap<String, SecurityGroup>,
    members: &BTreeMap<String, Vec<Ipv4Addr>>,
    resolver: Option<Ipv4Addr>,
) -> String {
    let mut b = String::new();
    // Every group of the VPC gets a set, so any rule may refer to any group.
    for id in sgs.keys() {
        let _ = write!(b, "  set {} {{\n    type ipv4_addr\n", set_name(id));
        if let Some(m) = members.get(id).filter(|m| !m.is_empty()) {
            let _ = writeln!(
                b,
                "    elements = {{ {} }}",
                m.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        b.push_str("  }\n");
    }
    let mine: Vec<&SecurityGroup> = ep
        .security_groups
        .iter()
        .filter_map(|g| sgs.get(g))
        .collect();
    b.push_str("  chain input {\n    type filter hook input priority filter; policy drop;\n    iif \"lo\" accept\n    ct state established,related accept\n    ct state invalid drop\n");
    for g in &mine {
        for r in &g.ingress {
            for line in sg_rule(r, &g.id, true) {
                b.push_str(&line);
            }
        }
    }
    b.push_str("  }\n  chain output {\n    type filter hook output priority filter; policy drop;\n    oif \"lo\" accept\n    ct state established,related accept\n");
    // The VPC's resolver, as AWS's: security groups do not filter it.
    if let Some(r) = resolver {
        let _ = writeln!(
            b,
            "    ip daddr {r} meta l4proto {{ tcp, udp }} th dport 53 accept"
        );
    }
    if mine.is_empty() {
        b.push_str("    accept\n");
    }
    for g in &mine {
        for r in &g.egress {
            for line in sg_rule(r, &g.id, false) {
                b.push_str(&line);
            }
        }
    }
    b.push_str("  }\n");
    replace("veeps", &b)
}

#[cfg(test)]
mod tests {
    //! Rulesets, data-driven: the input and the ruleset it gives.
    //! `UPDATE_EXPECT=1 cargo test -p veeps-net nftgen` rewrites them after a deliberate change.
    use super::*;
    use expect_test::{expect, Expect};

    fn subnet(id: &str, cidr: &str, tier: Tier) -> Subnet {
        Subnet {
            id: id.into(),
            vpc_id: "vpc-1".into(),
            cidr: cidr.parse().unwrap(),
            tier,
            bridge: format!("br-{id}"),
        }
    }

    fn rule(protocol: &str, from: u16, to: u16, cidr: &str, sgs: &[&str]) -> SgRule {
        SgRule {
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            cidr_blocks: if cidr.is_empty() {
                vec![]
            } else {
                vec![cidr.parse().unwrap()]
            },
            security_groups: sgs.iter().map(|s| s.to_string()).collect(),
            self_: false,
        }
    }

    fn check(got: String, want: Expect) {
        want.assert_eq(&got);
    }

    #[test]
    fn routers_put_acls_before_tiers() {
        let subnets = [
            subnet("pub", "10.0.0.0/24", Tier::Public),
            subnet("app", "10.0.16.0/24", Tier::PrivateApp),
            subnet("db", "10.0.32.0/24", Tier::PrivatePersistence),
        ];
        let acl = NetworkAcl {
            id: "acl-1".into(),
            vpc_id: "vpc-1".into(),
            subnet_ids: vec!["db".into()],
            ingress: vec![
                AclRule {
                    rule_no: 200,
                    allow: false,
                    protocol: "all".into(),
                    from_port: 0,
                    to_port: 65535,
                    cidr: "0.0.0.0/0".parse().unwrap(),
                },
                AclRule {
                    rule_no: 100,
                    allow: true,
                    protocol: "tcp".into(),
                    from_port: 5432,
                    to_port: 5432,
                    cidr: "10.0.16.0/24".parse().unwrap(),
                },
            ],
            egress: vec![],
        };
        check(
            router(&subnets, &[acl]),
            expect![[r#"
            table inet veeps {}
            delete table inet veeps
            table inet veeps {
              chain acl_1_in {
                ip saddr 10.0.16.0/24 tcp dport 5432 return
                drop
                drop
              }
              chain acl_1_out {
                drop
              }
              chain forward {
                type filter hook forward priority filter; policy drop;
                oifname "br-db" jump acl_1_in
                iifname "br-db" jump acl_1_out
                ct state established,related accept
                ct state invalid drop
                iifname "uplink" oifname { "br-app", "br-db" } drop
                iifname "uplink" oifname { "br-pub" } accept
                iifname { "br-db" } oifname "uplink" drop
                iifname "b*" oifname "uplink" accept
                iifname "b*" oifname "b*" accept
                iifname "p*" oifname "b*" accept
                iifname "b*" oifname "p*" accept
              }
              chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                oifname "uplink" masquerade
              }
            }
        "#]],
        );
    }

    #[test]
    fn endpoints_allow_what_their_groups_allow() {
        let ep = Endpoint {
            name: "stage/web".into(),
            subnet_id: "app".into(),
            security_groups: vec!["sg-app".into()],
            address: "10.0.16.5".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.16.1".parse().unwrap(),
            netns: "ns".into(),
        };
        let sgs: BTreeMap<String, SecurityGroup> = [
            (
                "sg-app".to_string(),
                SecurityGroup {
                    id: "sg-app".into(),
                    vpc_id: "vpc-1".into(),
                    ingress: vec![rule("tcp", 8080, 8080, "", &["sg-lb"])],
                    egress: vec![rule("all", 0, 65535, "0.0.0.0/0", &[])],
                },
            ),
            (
                "sg-lb".to_string(),
                SecurityGroup {
                    id: "sg-lb".into(),
                    vpc_id: "vpc-1".into(),
                    ingress: vec![rule("tcp", 80, 443, "0.0.0.0/0", &[])],
                    egress: vec![],
                },
            ),
        ]
        .into();
        let members: BTreeMap<String, Vec<Ipv4Addr>> =
            [("sg-lb".to_string(), vec!["10.0.0.9".parse().unwrap()])].into();
        check(
            endpoint(&ep, &sgs, &members, Some("10.0.0.2".parse().unwrap())),
            expect![[r#"
                table inet veeps {}
                delete table inet veeps
                table inet veeps {
                  set sg_sg_app {
                    type ipv4_addr
                  }
                  set sg_sg_lb {
                    type ipv4_addr
                    elements = { 10.0.0.9 }
                  }
                  chain input {
                    type filter hook input priority filter; policy drop;
                    iif "lo" accept
                    ct state established,related accept
                    ct state invalid drop
                    ip saddr @sg_sg_lb tcp dport 8080 accept
                  }
                  chain output {
                    type filter hook output priority filter; policy drop;
                    oif "lo" accept
                    ct state established,related accept
                    ip daddr 10.0.0.2 meta l4proto { tcp, udp } th dport 53 accept
                    accept
                  }
                }
            "#]],
        );
    }

    #[test]
    fn the_host_masquerades_vpc_egress_and_never_forwards_between_vpcs() {
        check(
            host("veeps-x", "vx"),
            expect![[r#"
            table inet veeps-x {}
            delete table inet veeps-x
            table inet veeps-x {
              chain forward {
                type filter hook forward priority filter; policy accept;
                iifname "vx*" oifname "vx*" drop
              }
              chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
                iifname "vx*" oifname != "vx*" masquerade
              }
            }
        "#]],
        );
    }
}
