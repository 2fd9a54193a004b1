//! The intermediate representation: named IP sets and ordered rules, dataplane-neutral but
//! shaped like ipset + iptables (and HNS ACLs). Deterministic: the same cluster always yields
//! the same IR, names included.
//!
//! Evaluation model (what `compiled` simulates and the renderers emit):
//! 1. `accept` rules: the first match accepts (traffic from a pod's own node).
//! 2. `egress` allow rules, when the source is a pod: any match sets the egress-allowed mark;
//!    then a source in the egress-isolated set without the mark is dropped.
//! 3. `ingress` the same for the destination.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Protocol;
use crate::selector::Selector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Pod addresses (selector results, node addresses).
    HashIp,
    /// CIDRs, with `nomatch` entries carving exceptions (ipBlock with except).
    HashNet,
    /// (address, protocol, port): pods' named ports.
    HashIpPort,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    Ip(IpAddr),
    Net { net: IpNet, nomatch: bool },
    IpPort { ip: IpAddr, protocol: Protocol, port: u16 },
}

impl Member {
    /// IPv4 members are what the Linux dataplane writes (and reads back).
    pub fn is_v4(&self) -> bool {
        match self {
            Member::Ip(ip) | Member::IpPort { ip, .. } => ip.is_ipv4(),
            Member::Net { net, .. } => net.addr().is_ipv4(),
        }
    }
}

/// Where a set's members come from; pod events are compiled by asking each definition what
/// the pod contributes (`SetDef::member`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetDef {
    /// Pods of one namespace matching a selector (policy targets; peers without
    /// namespaceSelector), only those on `node` when compiling one node's view.
    PodsIn {
        namespace: String,
        pods: Selector,
        node: Option<String>,
    },
    /// Pods matching a selector in namespaces matching a selector.
    PodsWhere {
        namespaces: Selector,
        pods: Selector,
    },
    PodsOnNode(String),
    NamedPort {
        name: String,
        protocol: Protocol,
    },
    /// Pods some policy isolates (for ingress, or egress), only those on `node` in a node's view.
    Isolated {
        ingress: bool,
        node: Option<String>,
    },
    /// Not derived from pods: node addresses, ipBlocks.
    Fixed,
}

/// What a set is for: its kind of members, and whether adding to it narrows (an isolation
/// set: the dataplane orders changes by it so no state in between allows more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetRole {
    /// Addresses (`i`).
    Ip,
    /// CIDRs with exceptions (`n`).
    Net,
    /// (address, protocol, port) (`p`).
    IpPort,
    /// Addresses of isolated pods (`x`).
    Isolation,
}

impl SetRole {
    fn letter(self) -> char {
        match self {
            SetRole::Ip => 'i',
            SetRole::Net => 'n',
            SetRole::IpPort => 'p',
            SetRole::Isolation => 'x',
        }
    }

    pub fn kind(self) -> SetKind {
        match self {
            SetRole::Ip | SetRole::Isolation => SetKind::HashIp,
            SetRole::Net => SetKind::HashNet,
            SetRole::IpPort => SetKind::HashIpPort,
        }
    }
}

/// A set's identity: its role and 48 bits of a stable hash of its key. As a kernel name
/// (`Display`): `azn-` + the role's letter + 12 hex digits, 17 characters (within ipset's 31
/// and nftables' 32), the same across builds, agents and restarts. Ordered as the names are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetId {
    pub role: SetRole,
    pub hash: u64,
}

pub const SET_PREFIX: &str = "azn-";

impl SetId {
    pub fn new(role: SetRole, key: &str) -> SetId {
        SetId { role, hash: stable_hash(key) & 0xffff_ffff_ffff }
    }

    pub fn kind(self) -> SetKind {
        self.role.kind()
    }

    /// Adding to an isolation set narrows what is allowed; adding to any other set widens it.
    pub fn is_isolation(self) -> bool {
        self.role == SetRole::Isolation
    }
}

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SET_PREFIX}{}{:012x}", self.role.letter(), self.hash)
    }
}

impl std::str::FromStr for SetId {
    type Err = crate::Error;

    /// A kernel name the agent writes (`azn-i0123456789ab`); anything else is refused.
    fn from_str(name: &str) -> Result<SetId, crate::Error> {
        let bad = || crate::Error::SetName(name.to_string());
        let rest = name.strip_prefix(SET_PREFIX).ok_or_else(bad)?;
        let mut chars = rest.chars();
        let role = match chars.next() {
            Some('i') => SetRole::Ip,
            Some('n') => SetRole::Net,
            Some('p') => SetRole::IpPort,
            Some('x') => SetRole::Isolation,
            _ => return Err(bad()),
        };
        let hex = chars.as_str();
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        let hash = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
        Ok(SetId { role, hash })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub id: SetId,
    /// What the set stands for, e.g. `pods ns{ns=y} pod{pod=b}`; also the rule comments' words.
    pub key: String,
    pub def: SetDef,
    pub members: BTreeSet<Member>,
}

impl IpSet {
    pub fn kind(&self) -> SetKind {
        self.id.kind()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Chain {
    Accept,
    Egress,
    Ingress,
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Chain::Accept => "AZURE-NPM-ACCEPT",
            Chain::Egress => "AZURE-NPM-EGRESS",
            Chain::Ingress => "AZURE-NPM-INGRESS",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    /// Sets the chain's allowed mark and goes on.
    MarkAllowed,
    /// Drops unless the chain's allowed mark is set.
    DropUnlessAllowed,
}

/// One rule. Every present criterion must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `namespace/name ingress[i]` for policy rules; a description otherwise.
    pub comment: String,
    pub src_set: Option<SetId>,
    pub dst_set: Option<SetId>,
    pub protocol: Option<Protocol>,
    /// Inclusive destination port range.
    pub dports: Option<(u16, u16)>,
    /// A hash:ip,port set matched on (destination address, protocol, destination port).
    pub dst_named_port: Option<SetId>,
    pub action: Action,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ir {
    pub sets: BTreeMap<SetId, IpSet>,
    pub accept: Vec<Rule>,
    pub egress: Vec<Rule>,
    pub ingress: Vec<Rule>,
}

impl Ir {
    pub fn chain(&self, chain: Chain) -> &[Rule] {
        match chain {
            Chain::Accept => &self.accept,
            Chain::Egress => &self.egress,
            Chain::Ingress => &self.ingress,
        }
    }

    pub fn rule_count(&self) -> usize {
        self.accept.len() + self.egress.len() + self.ingress.len()
    }

    pub fn member_count(&self) -> usize {
        self.sets.values().map(|s| s.members.len()).sum()
    }
}

/// A stable 64-bit FNV-1a hash (set names must not change between builds or machines).
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ids_print_as_kernel_names_parse_back_and_sort_as_names() {
        let ids = [
            SetId::new(SetRole::Isolation, "isolated ingress"),
            SetId::new(SetRole::Ip, "pods ns=x pod{}"),
            SetId::new(SetRole::IpPort, "named port http/TCP"),
            SetId::new(SetRole::Net, "cidr 10.0.0.0/8 except []"),
        ];
        let mut by_id = ids.to_vec();
        by_id.sort();
        let mut by_name: Vec<String> = ids.iter().map(SetId::to_string).collect();
        by_name.sort();
        assert_eq!(by_id.iter().map(SetId::to_string).collect::<Vec<_>>(), by_name);
        for id in ids {
            let name = id.to_string();
            assert_eq!(name.len(), 17);
            assert_eq!(name.parse::<SetId>().unwrap(), id);
        }
        for bad in ["azn-q000000000000", "azn-i00000000000", "azn-i00000000000G", "KUBE-X", "azure-npm-new"] {
            assert!(bad.parse::<SetId>().is_err(), "{bad}");
        }
    }
}
