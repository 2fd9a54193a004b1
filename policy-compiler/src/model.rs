//! The trimmed domain model: only what policy semantics need, converted from Kubernetes
//! objects at the boundary (`convert`). Everything here is plain data.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::selector::Selector;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    /// Includes `kubernetes.io/metadata.name`, which the API server sets on every namespace.
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ip: Option<IpAddr>,
    pub node: Option<String>,
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// `namespace/name`, the pod's name in reports.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The number of the container port called `name` for `protocol`, if the pod has one.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports.iter().find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol).map(|p| p.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub internal_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortRef>,
    /// With a numeric port: the range `port..=end_port`.
    pub end_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods chosen by namespace and/or pod selector. A missing namespace selector means the
    /// policy's own namespace; a missing pod selector means every pod there.
    Pods { namespaces: Option<Selector>, pods: Option<Selector> },
    /// Addresses in `cidr` but in none of `except` (pod addresses included).
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
}

impl Peer {
    /// An ipBlock without `except`: a rule's such peers share one set (see `compile`).
    pub fn is_plain_block(&self) -> bool {
        matches!(self, Peer::IpBlock { except, .. } if except.is_empty())
    }
}

/// One ingress or egress rule. `None` peers or ports mean "all" (the field was absent or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    /// After defaulting: Ingress always unless given; Egress when given or when egress rules exist.
    pub ingress_isolation: bool,
    pub egress_isolation: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl NetworkPolicy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the evaluators look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub policies: Vec<NetworkPolicy>,
}

impl Cluster {
    pub fn namespace_labels(&self, name: &str) -> Option<&Labels> {
        self.namespaces.get(name).map(|n| &n.labels)
    }

    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.key() == key)
    }

    pub fn node_ip(&self, node: &str) -> Option<IpAddr> {
        self.nodes.iter().find(|n| n.name == node).and_then(|n| n.internal_ip)
    }
}
