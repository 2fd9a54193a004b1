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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Kernel name: `azn-` + kind letter + 12 hex digits of a hash of `key` (17 characters,
    /// within ipset's 31); stable across runs and agents.
    pub name: String,
    pub kind: SetKind,
    /// What the set stands for, e.g. `pods ns{ns=y} pod{pod=b}`; also the rule comments' words.
    pub key: String,
    pub def: SetDef,
    pub members: BTreeSet<Member>,
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
    pub src_set: Option<String>,
    pub dst_set: Option<String>,
    pub protocol: Option<Protocol>,
    /// Inclusive destination port range.
    pub dports: Option<(u16, u16)>,
    /// A hash:ip,port set matched on (destination address, protocol, destination port).
    pub dst_named_port: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ir {
    pub sets: BTreeMap<String, IpSet>,
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

/// Isolation sets (`SetDef::Isolated`) get the letter `x`: their role is in their name, so the
/// dataplane can order changes so that no intermediate state allows more than the old or the
/// new one (adding to an isolation set narrows, adding to any other set widens).
pub fn isolation_set_name(key: &str) -> String {
    format!("{ISOLATION_PREFIX}{:012x}", stable_hash(key) & 0xffff_ffff_ffff)
}

pub const ISOLATION_PREFIX: &str = "azn-x";

pub fn is_isolation_set(name: &str) -> bool {
    name.starts_with(ISOLATION_PREFIX)
}

pub fn set_name(kind: SetKind, key: &str) -> String {
    let letter = match kind {
        SetKind::HashIp => 'i',
        SetKind::HashNet => 'n',
        SetKind::HashIpPort => 'p',
    };
    format!("azn-{letter}{:012x}", stable_hash(key) & 0xffff_ffff_ffff)
}
