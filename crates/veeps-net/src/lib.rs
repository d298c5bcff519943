//! Networking on real Linux.
//!
//! Each VPC is a *router namespace* holding one bridge per subnet (the subnet's gateway
//! address on it), joined to the host by an uplink veth used for NAT egress and for the
//! host's routes to public subnets. Each endpoint (an instance, a database node, a probe)
//! is a namespace of its own with a veth into its subnet's bridge and an address from the
//! subnet (IPAM, recorded in the store). Security groups are stateful nftables rules in
//! each endpoint's namespace (address sets stand for "members of group X"); network ACLs
//! are stateless rules on the router's forward path, at the subnet boundary; tiers decide
//! what reaches the uplink (public and private-app get NAT, private-persistence nothing)
//! and what the host may reach (public subnets only). Peering is a veth between two router
//! namespaces with routes both ways; the host never forwards between VPCs.
//!
//! Every name on the host carries a prefix derived from the data directory, so two veeps
//! servers never collide. Without CAP_NET_ADMIN the service falls back, loudly, to an
//! unisolated mode where endpoints get distinct loopback addresses.

pub use veeps_sys::garp;
mod nftgen;
pub mod part;
pub mod resources;
pub mod sys;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use veeps_state::Store;

/// Errors of the network service.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system command failed.
    #[error("{0}")]
    Command(String),
    /// The request is impossible as given.
    #[error("{0}")]
    Invalid(String),
    /// Something it refers to does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    State(#[from] veeps_state::StateError),
}

/// How endpoints are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Namespaces, veth, bridges and nftables.
    Isolated,
    /// No isolation: endpoints get distinct loopback addresses (the reason is kept).
    Unisolated(String),
}

/// The three subnet tiers of the reference architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// Reachable from the host ("the internet"); NAT egress.
    #[serde(rename = "public")]
    Public,
    /// Not reachable from outside; NAT egress.
    #[serde(rename = "private-app")]
    PrivateApp,
    /// Not reachable from outside; no egress at all.
    #[serde(rename = "private-persistence")]
    PrivatePersistence,
}

impl Tier {
    /// Parses a tier name.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "public" => Some(Tier::Public),
            "private-app" => Some(Tier::PrivateApp),
            "private-persistence" => Some(Tier::PrivatePersistence),
            _ => None,
        }
    }
}

/// A VPC as the network service knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vpc {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its range.
    pub cidr: Ipv4Net,
    /// The router namespace.
    pub router_ns: String,
    /// The host side of the uplink.
    pub uplink: String,
    /// The /30 of the uplink (host .1, router .2).
    pub link: Ipv4Net,
}

impl Vpc {
    /// Its DNS resolver's address: the base of its range + 2, as AWS's.
    pub fn resolver(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 2)
    }
}

/// A subnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subnet {
    /// Its id.
    pub id: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its range.
    pub cidr: Ipv4Net,
    /// Its tier.
    pub tier: Tier,
    /// Its bridge in the router namespace.
    pub bridge: String,
}

impl Subnet {
    /// The gateway address (the first host).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }
}

/// A security group rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SgRule {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// First port.
    pub from_port: u16,
    /// Last port.
    pub to_port: u16,
    /// Peers by range.
    pub cidr_blocks: Vec<Ipv4Net>,
    /// Peers by security group id.
    pub security_groups: Vec<String>,
    /// Members of this group itself.
    pub self_: bool,
}

/// A security group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecurityGroup {
    /// Its id.
    pub id: String,
    /// Its VPC.
    pub vpc_id: String,
    /// What may come in.
    pub ingress: Vec<SgRule>,
    /// What may go out.
    pub egress: Vec<SgRule>,
}

/// A network ACL rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AclRule {
    /// Evaluation order (lowest first).
    pub rule_no: u32,
    /// Allow or deny.
    pub allow: bool,
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// First port.
    pub from_port: u16,
    /// Last port.
    pub to_port: u16,
    /// The peer range (source for ingress, destination for egress).
    pub cidr: Ipv4Net,
}

/// A network ACL attached to subnets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkAcl {
    /// Its id.
    pub id: String,
    /// Its VPC.
    pub vpc_id: String,
    /// The subnets it guards.
    pub subnet_ids: Vec<String>,
    /// Rules for traffic entering the subnets.
    pub ingress: Vec<AclRule>,
    /// Rules for traffic leaving them.
    pub egress: Vec<AclRule>,
}

/// A peering between two VPCs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Peering {
    /// Its id.
    pub id: String,
    /// One VPC.
    pub vpc_id: String,
    /// The other.
    pub peer_vpc_id: String,
    /// The /30 between the two routers (.1 on the first, .2 on the second).
    pub link: Ipv4Net,
    /// The interface name in both router namespaces.
    pub ifname: String,
}

/// An endpoint placed in a subnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    /// Its name (unique per server).
    pub name: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its security groups.
    pub security_groups: Vec<String>,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Its gateway.
    pub gateway: Ipv4Addr,
    /// Its network namespace (empty in unisolated mode: the host's).
    pub netns: String,
}

/// What to attach.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// A name unique on this server (like `stage/asg-web/i-3`).
    pub name: String,
    /// The subnet.
    pub subnet_id: String,
    /// Security groups.
    pub security_groups: Vec<String>,
}

/// The network service of one server.
pub struct Net {
    prefix: String,
    store: Arc<Store>,
    mode: Mode,
    lock: tokio::sync::Mutex<()>,
    /// Per VPC: how many rule changes were asked for, and how many are on the kernel.
    sg_sync: std::sync::Mutex<BTreeMap<String, (u64, u64)>>,
    sg_sync_lock: tokio::sync::Mutex<()>,
    /// What each endpoint namespace's rules were last set to (namespace inode, digest of
    /// the ruleset), so a VPC-wide pass rewrites only the endpoints whose rules change:
    /// an instance joining a group without security groups others refer to costs one
    /// `nft`, not one per endpoint of the VPC.
    endpoint_rules: std::sync::Mutex<HashMap<String, (u64, [u8; 32])>>,
}

fn short(s: &str, n: usize) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))[..n].to_string()
}

/// A deterministic resource id: `{kind}-{8 hex}` from the environment and address.
pub fn resource_id(kind: &str, env: &str, address: &str) -> String {
    format!("{kind}-{}", short(&format!("{env}/{address}"), 8))
}

const K_VPC: &str = "net/vpc/";
const K_SUBNET: &str = "net/subnet/";
const K_SG: &str = "net/sg/";
const K_ACL: &str = "net/acl/";
const K_PEER: &str = "net/peering/";
const K_EP: &str = "net/endpoint/";

/// The prefix of every name a server with this data directory creates on the host.
pub fn prefix_for(data_dir: &Path) -> String {
    let canon = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("v{}", short(&canon.to_string_lossy(), 5))
}

impl Net {
    /// The network service for a data directory. Decides once whether it can isolate.
    pub fn new(data_dir: &Path, store: Arc<Store>) -> Net {
        let prefix = prefix_for(data_dir);
        let mode = match std::env::var("VEEPS_NETWORK").as_deref() {
            Ok("unisolated") => Mode::Unisolated("VEEPS_NETWORK=unisolated".into()),
            _ => match sys::can_isolate() {
                Ok(()) => Mode::Isolated,
                Err(why) => Mode::Unisolated(why),
            },
        };
        if let Mode::Unisolated(why) = &mode {
            tracing::warn!("NETWORK ISOLATION IS OFF: {why}. Endpoints get distinct loopback addresses on the host; security groups, ACLs and tiers are not enforced.");
        }
        Net {
            prefix,
            store,
            mode,
            lock: tokio::sync::Mutex::new(()),
            sg_sync: Default::default(),
            sg_sync_lock: tokio::sync::Mutex::new(()),
            endpoint_rules: Default::default(),
        }
    }

    /// The prefix of every name this service creates on the host.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Isolated or not.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Whether endpoints get namespaces of their own.
    pub fn isolated(&self) -> bool {
        self.mode == Mode::Isolated
    }

    fn load<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        id: &str,
    ) -> Result<Option<T>, NetError> {
        Ok(self.store.kv_get(&format!("{prefix}{id}"))?)
    }

    fn all<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, NetError> {
        Ok(self
            .store
            .kv_scan::<T>(prefix)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Every VPC.
    pub fn vpcs(&self) -> Vec<Vpc> {
        self.all(K_VPC).unwrap_or_default()
    }

    /// A VPC.
    pub fn vpc(&self, id: &str) -> Result<Vpc, NetError> {
        self.load(K_VPC, id)?
            .ok_or_else(|| NetError::NotFound(format!("VPC {id} does not exist")))
    }

    /// A subnet by id.
    pub fn subnet(&self, id: &str) -> Result<Subnet, NetError> {
        self.load(K_SUBNET, id)?
            .ok_or_else(|| NetError::NotFound(format!("subnet {id} does not exist")))
    }

    /// An endpoint by name.
    pub fn endpoint(&self, name: &str) -> Result<Option<Endpoint>, NetError> {
        self.load(K_EP, name)
    }

    fn host_table(&self) -> String {
        self.prefix.clone()
    }

    /// Creates (or adopts) a VPC: its router namespace, uplink and rules.
    pub async fn ensure_vpc(&self, id: &str, name: &str, cidr: Ipv4Net) -> Result<Vpc, NetError> {
        let _g = self.lock.lock().await;
        let existing: Option<Vpc> = self.load(K_VPC, id)?;
        let vpc = match existing {
            Some(v) if v.cidr == cidr => Vpc {
                name: name.to_string(),
                ..v
            },
            Some(v) => {
                return Err(NetError::Invalid(format!(
                    "VPC {id} exists with range {}; a new range needs a new VPC",
                    v.cidr
                )))
            }
            None => {
                let k = short(id, 5);
                let link = self.free_link(id).await?;
                Vpc {
                    id: id.to_string(),
                    name: name.to_string(),
                    cidr,
                    router_ns: format!("{}-{k}", self.prefix),
                    uplink: format!("{}{k}", self.prefix),
                    link,
                }
            }
        };
        self.store.kv_put(&format!("{K_VPC}{id}"), &vpc)?;
        if self.isolated() {
            self.plumb_vpc(&vpc).await?;
            self.sync_host().await?;
            self.sync_router(&vpc.id).await?;
        }
        Ok(vpc)
    }

    async fn free_link(&self, id: &str) -> Result<Ipv4Net, NetError> {
        let used: Vec<Vpc> = self.all(K_VPC)?;
        let host_addrs = if self.isolated() {
            sys::ip(None, &["-4", "-o", "addr", "show"])
                .await
                .unwrap_or_default()
        } else {
            String::new()
        };
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
        let start = u32::from_str_radix(&short(&format!("{}{id}", self.prefix), 5), 16)
            .unwrap_or(0)
            % (1 << 20);
        for i in 0..(1u32 << 20) {
            let idx = (start + i) % (1 << 20);
            let net = Ipv4Net::new(Ipv4Addr::from(base + idx * 4), 30)
                .map_err(|e| NetError::Invalid(e.to_string()))?;
            let taken = used.iter().any(|v| v.link == net)
                || (0..4).any(|o| {
                    host_addrs.contains(&format!(" {}/", Ipv4Addr::from(base + idx * 4 + o)))
                });
            if !taken {
                return Ok(net);
            }
        }
        Err(NetError::Invalid(
            "no free uplink address in 100.64.0.0/10".into(),
        ))
    }

    fn hosts(link: &Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
        let b = u32::from(link.network());
        (Ipv4Addr::from(b + 1), Ipv4Addr::from(b + 2))
    }

    async fn plumb_vpc(&self, vpc: &Vpc) -> Result<(), NetError> {
        let r = vpc.router_ns.as_str();
        if !sys::netns_exists(r) {
            sys::ip(None, &["netns", "add", r]).await?;
        }
        sys::ip(Some(r), &["link", "set", "dev", "lo", "up"]).await?;
        sys::sysctl(Some(r), "net.ipv4.ip_forward", "1").await?;
        // Traffic inside one subnet is bridged: security groups filter it at the
        // endpoints, and network ACLs apply only at the subnet boundary, so the router's
        // rules (and conntrack) must not see it even where br_netfilter is loaded.
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            let _ = sys::sysctl(Some(r), key, "0").await;
        }
        let (host_addr, router_addr) = Net::hosts(&vpc.link);
        if !sys::ip_ok(None, &["link", "show", &vpc.uplink]).await {
            let _ = sys::ip(Some(r), &["link", "del", "uplink"]).await;
            // Both ends created where they belong, with their final names: moving links
            // between namespaces is slow.
            sys::ip(
                None,
                &[
                    "link",
                    "add",
                    &vpc.uplink,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "uplink",
                    "netns",
                    r,
                ],
            )
            .await?;
        }
        let plen = vpc.link.prefix_len().to_string();
        sys::ip(
            None,
            &[
                "addr",
                "replace",
                &format!("{host_addr}/{plen}"),
                "dev",
                &vpc.uplink,
            ],
        )
        .await?;
        sys::ip(None, &["link", "set", "dev", &vpc.uplink, "up"]).await?;
        sys::ip(
            Some(r),
            &[
                "addr",
                "replace",
                &format!("{router_addr}/{plen}"),
                "dev",
                "uplink",
            ],
        )
        .await?;
        sys::ip(Some(r), &["link", "set", "dev", "uplink", "up"]).await?;
        sys::ip(
            Some(r),
            &["route", "replace", "default", "via", &host_addr.to_string()],
        )
        .await?;
        // NAT egress needs the host to forward.
        sys::sysctl(None, "net.ipv4.ip_forward", "1").await?;
        Ok(())
    }

    /// Deletes a VPC. Its subnets and peerings must be gone.
    pub async fn delete_vpc(&self, id: &str) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let Some(vpc) = self.load::<Vpc>(K_VPC, id)? else {
            return Ok(());
        };
        let subnets: Vec<Subnet> = self
            .all::<Subnet>(K_SUBNET)?
            .into_iter()
            .filter(|s| s.vpc_id == id)
            .collect();
        if !subnets.is_empty() {
            return Err(NetError::Invalid(format!(
                "VPC {id} still has subnets: {}",
                subnets
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.isolated() {
            let _ = sys::ip(None, &["link", "del", &vpc.uplink]).await;
            if sys::netns_exists(&vpc.router_ns) {
                sys::ip(None, &["netns", "del", &vpc.router_ns]).await?;
            }
        }
        self.store.kv_delete(&format!("{K_VPC}{id}"))?;
        if self.isolated() {
            self.sync_host().await?;
        }
        Ok(())
    }

    /// True if the VPC's kernel objects exist (always true when unisolated).
    pub async fn vpc_exists(&self, id: &str) -> bool {
        let Ok(Some(vpc)) = self.load::<Vpc>(K_VPC, id) else {
            return false;
        };
        !self.isolated()
            || (sys::netns_exists(&vpc.router_ns)
                && sys::ip_ok(None, &["link", "show", &vpc.uplink]).await)
    }

    /// Creates (or adopts) a subnet.
    pub async fn ensure_subnet(
        &self,
        id: &str,
        vpc_id: &str,
        cidr: Ipv4Net,
        tier: Tier,
    ) -> Result<Subnet, NetError> {
        let _g = self.lock.lock().await;
        let vpc = self.vpc(vpc_id)?;
        if !vpc.cidr.contains(&cidr) {
            return Err(NetError::Invalid(format!(
                "subnet {cidr} is not inside VPC {vpc_id} ({})",
                vpc.cidr
            )));
        }
        let subnet = Subnet {
            id: id.to_string(),
            vpc_id: vpc_id.to_string(),
            cidr,
            tier,
            bridge: format!("b{}", short(id, 8)),
        };
        self.store.kv_put(&format!("{K_SUBNET}{id}"), &subnet)?;
        if self.isolated() {
            let r = vpc.router_ns.as_str();
            if !sys::ip_ok(Some(r), &["link", "show", &subnet.bridge]).await {
                sys::ip(Some(r), &["link", "add", &subnet.bridge, "type", "bridge"]).await?;
            }
            sys::ip(
                Some(r),
                &[
                    "addr",
                    "replace",
                    &format!("{}/{}", subnet.gateway(), cidr.prefix_len()),
                    "dev",
                    &subnet.bridge,
                ],
            )
            .await?;
            sys::ip(Some(r), &["link", "set", "dev", &subnet.bridge, "up"]).await?;
            let (_, router_addr) = Net::hosts(&vpc.link);
            if tier == Tier::Public {
                sys::ip(
                    None,
                    &[
                        "route",
                        "replace",
                        &cidr.to_string(),
                        "via",
                        &router_addr.to_string(),
                        "dev",
                        &vpc.uplink,
                    ],
                )
                .await?;
            }
            self.sync_router(vpc_id).await?;
        }
        Ok(subnet)
    }

    /// Deletes a subnet. Its endpoints must be gone.
    pub async fn delete_subnet(&self, id: &str) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let Some(subnet) = self.load::<Subnet>(K_SUBNET, id)? else {
            return Ok(());
        };
        let eps: Vec<Endpoint> = self
            .all::<Endpoint>(K_EP)?
            .into_iter()
            .filter(|e| e.subnet_id == id)
            .collect();
        if !eps.is_empty() {
            return Err(NetError::Invalid(format!(
                "subnet {id} still has endpoints: {}",
                eps.iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.isolated() {
            if let Ok(vpc) = self.vpc(&subnet.vpc_id) {
                if subnet.tier == Tier::Public {
                    let _ = sys::ip(
                        None,
                        &["route", "del", &subnet.cidr.to_string(), "dev", &vpc.uplink],
                    )
                    .await;
                }
                let _ = sys::ip(Some(&vpc.router_ns), &["link", "del", &subnet.bridge]).await;
            }
        }
        self.store.kv_delete(&format!("{K_SUBNET}{id}"))?;
        if self.isolated() {
            self.sync_router(&subnet.vpc_id).await?;
        }
        Ok(())
    }

    /// True if the subnet's bridge exists.
    pub async fn subnet_exists(&self, id: &str) -> bool {
        let Ok(Some(s)) = self.load::<Subnet>(K_SUBNET, id) else {
            return false;
        };
        let Ok(vpc) = self.vpc(&s.vpc_id) else {
            return false;
        };
        !self.isolated() || sys::ip_ok(Some(&vpc.router_ns), &["link", "show", &s.bridge]).await
    }

    /// Creates or updates a security group; every endpoint of its VPC gets new rules.
    pub async fn ensure_sg(&self, sg: SecurityGroup) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        self.vpc(&sg.vpc_id)?;
        self.store.kv_put(&format!("{K_SG}{}", sg.id), &sg)?;
        self.sync_endpoints(&sg.vpc_id).await
    }

    /// Deletes a security group.
    pub async fn delete_sg(&self, id: &str) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let Some(sg) = self.load::<SecurityGroup>(K_SG, id)? else {
            return Ok(());
        };
        self.store.kv_delete(&format!("{K_SG}{id}"))?;
        self.sync_endpoints(&sg.vpc_id).await
    }

    /// A security group by id.
    pub fn sg(&self, id: &str) -> Result<Option<SecurityGroup>, NetError> {
        self.load(K_SG, id)
    }

    /// Every endpoint attached on this server.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, NetError> {
        self.all(K_EP)
    }

    /// Creates or updates a network ACL.
    pub async fn ensure_acl(&self, acl: NetworkAcl) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        self.vpc(&acl.vpc_id)?;
        for s in &acl.subnet_ids {
            let sub = self.subnet(s)?;
            if sub.vpc_id != acl.vpc_id {
                return Err(NetError::Invalid(format!(
                    "subnet {s} is not in VPC {}",
                    acl.vpc_id
                )));
            }
        }
        self.store.kv_put(&format!("{K_ACL}{}", acl.id), &acl)?;
        self.sync_router(&acl.vpc_id).await
    }

    /// Deletes a network ACL.
    pub async fn delete_acl(&self, id: &str) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let Some(acl) = self.load::<NetworkAcl>(K_ACL, id)? else {
            return Ok(());
        };
        self.store.kv_delete(&format!("{K_ACL}{id}"))?;
        self.sync_router(&acl.vpc_id).await
    }

    /// True if the network ACL is recorded and, when isolated, its chains are in its VPC
    /// router's ruleset.
    pub async fn acl_in_force(&self, id: &str) -> bool {
        let Ok(Some(acl)) = self.load::<NetworkAcl>(K_ACL, id) else {
            return false;
        };
        if !self.isolated() {
            return true;
        }
        let Ok(vpc) = self.vpc(&acl.vpc_id) else {
            return false;
        };
        let chain = format!("chain {}_in ", id.replace('-', "_"));
        sys::nft_list(&vpc.router_ns)
            .await
            .is_ok_and(|rules| rules.contains(&chain))
    }

    /// Creates (or adopts) a peering.
    pub async fn ensure_peering(
        &self,
        id: &str,
        vpc_id: &str,
        peer_vpc_id: &str,
    ) -> Result<Peering, NetError> {
        let _g = self.lock.lock().await;
        let a = self.vpc(vpc_id)?;
        let b = self.vpc(peer_vpc_id)?;
        if a.cidr.contains(&b.cidr.network()) || b.cidr.contains(&a.cidr.network()) {
            return Err(NetError::Invalid(format!(
                "cannot peer {} and {}: their ranges {} and {} overlap",
                a.id, b.id, a.cidr, b.cidr
            )));
        }
        let k = short(id, 6);
        let idx = u32::from_str_radix(&k[..4], 16).unwrap_or(0) % 16384;
        let link = Ipv4Net::new(
            Ipv4Addr::from(u32::from(Ipv4Addr::new(169, 254, 0, 0)) + idx * 4),
            30,
        )
        .map_err(|e| NetError::Invalid(e.to_string()))?;
        let p = Peering {
            id: id.to_string(),
            vpc_id: vpc_id.to_string(),
            peer_vpc_id: peer_vpc_id.to_string(),
            link,
            ifname: format!("p{k}"),
        };
        self.store.kv_put(&format!("{K_PEER}{id}"), &p)?;
        if self.isolated() {
            let (x, y) = Net::hosts(&link);
            if !sys::ip_ok(Some(&a.router_ns), &["link", "show", &p.ifname]).await {
                let _ = sys::ip(Some(&b.router_ns), &["link", "del", &p.ifname]).await;
                sys::ip(
                    None,
                    &[
                        "link",
                        "add",
                        &p.ifname,
                        "netns",
                        &a.router_ns,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        &p.ifname,
                        "netns",
                        &b.router_ns,
                    ],
                )
                .await?;
            }
            for (ns, addr, peer_addr, peer_cidr) in
                [(&a.router_ns, x, y, b.cidr), (&b.router_ns, y, x, a.cidr)]
            {
                sys::ip(
                    Some(ns),
                    &["addr", "replace", &format!("{addr}/30"), "dev", &p.ifname],
                )
                .await?;
                sys::ip(Some(ns), &["link", "set", "dev", &p.ifname, "up"]).await?;
                sys::ip(
                    Some(ns),
                    &[
                        "route",
                        "replace",
                        &peer_cidr.to_string(),
                        "via",
                        &peer_addr.to_string(),
                    ],
                )
                .await?;
            }
            self.sync_router(vpc_id).await?;
            self.sync_router(peer_vpc_id).await?;
        }
        Ok(p)
    }

    /// Deletes a peering.
    pub async fn delete_peering(&self, id: &str) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let Some(p) = self.load::<Peering>(K_PEER, id)? else {
            return Ok(());
        };
        if self.isolated() {
            for (v, other) in [(&p.vpc_id, &p.peer_vpc_id), (&p.peer_vpc_id, &p.vpc_id)] {
                if let (Ok(vpc), Ok(o)) = (self.vpc(v), self.vpc(other)) {
                    let _ =
                        sys::ip(Some(&vpc.router_ns), &["route", "del", &o.cidr.to_string()]).await;
                    let _ = sys::ip(Some(&vpc.router_ns), &["link", "del", &p.ifname]).await;
                }
            }
        }
        self.store.kv_delete(&format!("{K_PEER}{id}"))?;
        if self.isolated() {
            let _ = self.sync_router(&p.vpc_id).await;
            let _ = self.sync_router(&p.peer_vpc_id).await;
        }
        Ok(())
    }

    /// True if the peering's link exists.
    pub async fn peering_exists(&self, id: &str) -> bool {
        let Ok(Some(p)) = self.load::<Peering>(K_PEER, id) else {
            return false;
        };
        let Ok(a) = self.vpc(&p.vpc_id) else {
            return false;
        };
        !self.isolated() || sys::ip_ok(Some(&a.router_ns), &["link", "show", &p.ifname]).await
    }

    /// Places an endpoint in a subnet: a namespace, a veth into the subnet's bridge, an
    /// address (the same one again if the endpoint already exists), and its security
    /// groups' rules. Idempotent.
    pub async fn attach(&self, req: AttachRequest) -> Result<Endpoint, NetError> {
        let _g = self.lock.lock().await;
        let subnet = self.subnet(&req.subnet_id)?;
        let vpc = self.vpc(&subnet.vpc_id)?;
        for sg in &req.security_groups {
            let g: SecurityGroup = self
                .load(K_SG, sg)?
                .ok_or_else(|| NetError::NotFound(format!("security group {sg} does not exist")))?;
            if g.vpc_id != vpc.id {
                return Err(NetError::Invalid(format!(
                    "security group {sg} belongs to another VPC than subnet {}",
                    subnet.id
                )));
            }
        }
        let key = short(&format!("{}/{}", self.prefix, req.name), 8);
        let existing: Option<Endpoint> = self.load(K_EP, &req.name)?;
        let ep = match existing {
            Some(e) if e.subnet_id == req.subnet_id => Endpoint {
                security_groups: req.security_groups.clone(),
                ..e
            },
            Some(e) => {
                return Err(NetError::Invalid(format!(
                    "endpoint {} is already in subnet {}",
                    req.name, e.subnet_id
                )))
            }
            None => {
                let address = if self.isolated() {
                    self.allocate(&subnet)?
                } else {
                    self.loopback_address()?
                };
                Endpoint {
                    name: req.name.clone(),
                    subnet_id: subnet.id.clone(),
                    security_groups: req.security_groups.clone(),
                    address,
                    prefix_len: subnet.cidr.prefix_len(),
                    gateway: subnet.gateway(),
                    netns: if self.isolated() {
                        format!("{}-e{key}", self.prefix)
                    } else {
                        String::new()
                    },
                }
            }
        };
        // Record first: a crash after this point re-attaches with the same address.
        self.store.kv_put(&format!("{K_EP}{}", ep.name), &ep)?;
        if self.isolated() {
            self.plumb_endpoint(&ep, &subnet, &vpc, &key).await?;
            drop(_g);
            self.sync_endpoints_coalesced(&vpc.id).await?;
        }
        Ok(ep)
    }

    /// Brings every endpoint's rules of a VPC up to date; concurrent callers share one
    /// pass that starts after their change (each pass reads the latest model).
    async fn sync_endpoints_coalesced(&self, vpc_id: &str) -> Result<(), NetError> {
        let my_gen = {
            let mut m = self.sg_sync.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(vpc_id.to_string()).or_insert((0, 0));
            e.0 += 1;
            e.0
        };
        let _s = self.sg_sync_lock.lock().await;
        let done = self
            .sg_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(vpc_id)
            .map(|e| e.1)
            .unwrap_or(0);
        if done >= my_gen {
            return Ok(());
        }
        let target = self
            .sg_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(vpc_id)
            .map(|e| e.0)
            .unwrap_or(my_gen);
        let _g = self.lock.lock().await;
        self.sync_endpoints(vpc_id).await?;
        if let Some(e) = self
            .sg_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(vpc_id)
        {
            e.1 = e.1.max(target);
        }
        Ok(())
    }

    fn allocate(&self, subnet: &Subnet) -> Result<Ipv4Addr, NetError> {
        let used: Vec<Ipv4Addr> = self
            .all::<Endpoint>(K_EP)?
            .into_iter()
            .filter(|e| e.subnet_id == subnet.id)
            .map(|e| e.address)
            .collect();
        let base = u32::from(subnet.cidr.network());
        let last = u32::from(subnet.cidr.broadcast());
        // Like AWS: the first four addresses and the last are reserved.
        (base + 4..last)
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                NetError::Invalid(format!(
                    "subnet {} ({}) has no free addresses",
                    subnet.id, subnet.cidr
                ))
            })
    }

    fn loopback_address(&self) -> Result<Ipv4Addr, NetError> {
        let used: Vec<Ipv4Addr> = self
            .all::<Endpoint>(K_EP)?
            .into_iter()
            .map(|e| e.address)
            .collect();
        let seed = u32::from_str_radix(&self.prefix[1..], 16).unwrap_or(0) % 250 + 2;
        (1..=65000u32)
            .map(|i| Ipv4Addr::new(127, seed as u8, (i >> 8) as u8, (i & 0xff) as u8))
            .find(|a| a.octets()[3] != 0 && !used.contains(a))
            .ok_or_else(|| NetError::Invalid("no free loopback address".into()))
    }

    async fn plumb_endpoint(
        &self,
        ep: &Endpoint,
        subnet: &Subnet,
        vpc: &Vpc,
        key: &str,
    ) -> Result<(), NetError> {
        let ns = ep.netns.as_str();
        self.forget_rules(ns);
        let r = vpc.router_ns.as_str();
        let router_if = format!("e{key}");
        if !sys::netns_exists(ns) {
            sys::ip(None, &["netns", "add", ns]).await?;
        }
        sys::ip(Some(ns), &["link", "set", "dev", "lo", "up"]).await?;
        if !sys::ip_ok(Some(ns), &["link", "show", "eth0"]).await
            || !sys::ip_ok(Some(r), &["link", "show", &router_if]).await
        {
            let _ = sys::ip(Some(ns), &["link", "del", "eth0"]).await;
            let _ = sys::ip(Some(r), &["link", "del", &router_if]).await;
            sys::ip(
                None,
                &[
                    "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &router_if,
                    "netns", r,
                ],
            )
            .await?;
        }
        sys::ip(
            Some(r),
            &[
                "link",
                "set",
                "dev",
                &router_if,
                "master",
                &subnet.bridge,
                "up",
            ],
        )
        .await?;
        sys::ip(
            Some(ns),
            &[
                "addr",
                "replace",
                &format!("{}/{}", ep.address, ep.prefix_len),
                "dev",
                "eth0",
            ],
        )
        .await?;
        sys::ip(Some(ns), &["link", "set", "dev", "eth0", "up"]).await?;
        // The address may have been another interface's a moment ago (a replaced instance):
        // neighbours must not keep sending to the old one.
        let (ns_name, ip) = (ns.to_string(), ep.address);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || garp::announce(&ns_name, ip)).await
        {
            tracing::debug!(address = %ip, error = %e, "gratuitous ARP failed");
        }
        sys::ip(
            Some(ns),
            &[
                "route",
                "replace",
                "default",
                "via",
                &ep.gateway.to_string(),
            ],
        )
        .await?;
        Ok(())
    }

    /// True if the endpoint's namespace and link exist.
    pub async fn endpoint_exists(&self, name: &str) -> bool {
        let Ok(Some(ep)) = self.load::<Endpoint>(K_EP, name) else {
            return false;
        };
        !self.isolated()
            || (sys::netns_exists(&ep.netns)
                && sys::ip_ok(Some(&ep.netns), &["link", "show", "eth0"]).await)
    }

    /// Removes an endpoint: its namespace (and with it the veth) and its address.
    pub async fn detach(&self, name: &str) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let Some(ep) = self.load::<Endpoint>(K_EP, name)? else {
            return Ok(());
        };
        if self.isolated() && sys::netns_exists(&ep.netns) {
            sys::ip(None, &["netns", "del", &ep.netns]).await?;
        }
        self.forget_rules(&ep.netns);
        self.store.kv_delete(&format!("{K_EP}{name}"))?;
        if self.isolated() {
            if let Ok(s) = self.subnet(&ep.subnet_id) {
                self.sync_endpoints(&s.vpc_id).await?;
            }
        }
        Ok(())
    }

    /// A command that runs `program` inside the endpoint's namespace.
    pub fn command(&self, ep: &Endpoint, program: &str) -> tokio::process::Command {
        if ep.netns.is_empty() {
            return tokio::process::Command::new(program);
        }
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &ep.netns, program]);
        c
    }

    async fn sync_host(&self) -> Result<(), NetError> {
        let vpcs: Vec<Vpc> = self.all(K_VPC)?;
        let table = self.host_table();
        let ruleset = if vpcs.is_empty() {
            format!("table inet {table} {{}}\ndelete table inet {table}\n")
        } else {
            nftgen::host(&table, &self.prefix)
        };
        sys::nft(None, &ruleset).await
    }

    async fn sync_router(&self, vpc_id: &str) -> Result<(), NetError> {
        let Ok(vpc) = self.vpc(vpc_id) else {
            return Ok(());
        };
        let subnets: Vec<Subnet> = self
            .all::<Subnet>(K_SUBNET)?
            .into_iter()
            .filter(|s| s.vpc_id == vpc_id)
            .collect();
        let acls: Vec<NetworkAcl> = self
            .all::<NetworkAcl>(K_ACL)?
            .into_iter()
            .filter(|a| a.vpc_id == vpc_id)
            .collect();
        sys::nft(Some(&vpc.router_ns), &nftgen::router(&subnets, &acls)).await
    }

    async fn sync_endpoints(&self, vpc_id: &str) -> Result<(), NetError> {
        if !self.isolated() {
            return Ok(());
        }
        let subnets: BTreeMap<String, Subnet> = self
            .all::<Subnet>(K_SUBNET)?
            .into_iter()
            .filter(|s| s.vpc_id == vpc_id)
            .map(|s| (s.id.clone(), s))
            .collect();
        let eps: Vec<Endpoint> = self
            .all::<Endpoint>(K_EP)?
            .into_iter()
            .filter(|e| subnets.contains_key(&e.subnet_id))
            .collect();
        let sgs: BTreeMap<String, SecurityGroup> = self
            .all::<SecurityGroup>(K_SG)?
            .into_iter()
            .filter(|g| g.vpc_id == vpc_id)
            .map(|g| (g.id.clone(), g))
            .collect();
        let mut members: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        for e in &eps {
            for g in &e.security_groups {
                members.entry(g.clone()).or_default().push(e.address);
            }
        }
        let resolver = self.vpc(vpc_id).ok().map(|v| v.resolver());
        for e in &eps {
            let Some(ino) = sys::netns_inode(&e.netns) else {
                continue;
            };
            let rules = nftgen::endpoint(e, &sgs, &members, resolver);
            let digest: [u8; 32] = sha2::Sha256::digest(rules.as_bytes()).into();
            let same = self
                .endpoint_rules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&e.netns)
                == Some(&(ino, digest));
            if same {
                continue;
            }
            self.forget_rules(&e.netns);
            sys::nft(Some(&e.netns), &rules).await?;
            self.endpoint_rules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(e.netns.clone(), (ino, digest));
        }
        Ok(())
    }

    /// Forgets what an endpoint namespace's rules were (it is new, or gone): the next pass
    /// writes them.
    fn forget_rules(&self, netns: &str) {
        self.endpoint_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(netns);
    }

    /// Removes every kernel object of this server (namespaces, links, rules) and keeps
    /// the records: the next start recreates them. What `veeps up` does when stopped.
    pub async fn stop_all(&self) {
        if !self.isolated() {
            return;
        }
        let _g = self.lock.lock().await;
        self.endpoint_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for ns in sys::netns_list().await {
            if ns.starts_with(&self.prefix) {
                let _ = sys::ip(None, &["netns", "del", &ns]).await;
            }
        }
        if let Ok(out) = sys::ip(None, &["-o", "link"]).await {
            for l in out.lines() {
                let name = l
                    .split(": ")
                    .nth(1)
                    .and_then(|n| n.split('@').next())
                    .unwrap_or_default();
                if name.starts_with(&self.prefix) {
                    let _ = sys::ip(None, &["link", "del", name]).await;
                }
            }
        }
        let table = self.host_table();
        let _ = sys::nft(
            None,
            &format!("table inet {table} {{}}\ndelete table inet {table}\n"),
        )
        .await;
    }

    /// After a restart: recreates the kernel objects of everything recorded (adopting what
    /// exists). The resource controllers call the `ensure_*` methods one by one; this is
    /// the whole-service equivalent, used by tests and tools.
    pub async fn reconcile_all(&self) -> Result<(), NetError> {
        for v in self.all::<Vpc>(K_VPC)? {
            self.ensure_vpc(&v.id, &v.name, v.cidr).await?;
        }
        for s in self.all::<Subnet>(K_SUBNET)? {
            self.ensure_subnet(&s.id, &s.vpc_id, s.cidr, s.tier).await?;
        }
        for p in self.all::<Peering>(K_PEER)? {
            self.ensure_peering(&p.id, &p.vpc_id, &p.peer_vpc_id)
                .await?;
        }
        for e in self.all::<Endpoint>(K_EP)? {
            self.attach(AttachRequest {
                name: e.name.clone(),
                subnet_id: e.subnet_id.clone(),
                security_groups: e.security_groups.clone(),
            })
            .await?;
        }
        Ok(())
    }
}
