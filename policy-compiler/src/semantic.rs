//! The semantic evaluator: answers "is this connection allowed, and by what?" straight from
//! the NetworkPolicy API semantics, with no compilation. It is the reference the compiled IR is
//! checked against.

use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Cluster, NetworkPolicy, Peer, Pod, PortRef, PortSpec, Protocol, Rule};

/// One end of a connection: a pod, or an address outside the cluster (or a node).
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    Pod(&'a Pod),
    Ip(IpAddr),
}

impl Endpoint<'_> {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Endpoint::Pod(p) => p.ip,
            Endpoint::Ip(ip) => Some(*ip),
        }
    }

    /// `namespace/pod` or the address, as reports name it.
    pub fn name(&self) -> String {
        match self {
            Endpoint::Pod(p) => p.key(),
            Endpoint::Ip(ip) => ip.to_string(),
        }
    }
}

/// What one direction (the source's egress or the destination's ingress) decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Direction {
    /// False when the endpoint is not a pod (no policy can apply to it).
    pub judged: bool,
    /// Some policy of this direction selects the endpoint.
    pub isolated: bool,
    /// The policies that select it (`namespace/name`).
    pub selected_by: Vec<String>,
    /// The rules that allow this connection (`namespace/name ingress[i]`).
    pub allowed_by: Vec<String>,
}

impl Direction {
    pub fn allows(&self) -> bool {
        !self.isolated || !self.allowed_by.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: Direction,
    pub ingress: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub fn evaluate(cluster: &Cluster, from: Endpoint, to: Endpoint, protocol: Protocol, port: u16) -> Verdict {
    let egress = match from {
        Endpoint::Pod(src) => judge(
            cluster,
            src,
            |p| p.egress_isolation,
            |p| &p.egress,
            "egress",
            |rule, policy| peers_match(cluster, rule, policy, to) && ports_match(rule, to, protocol, port),
        ),
        Endpoint::Ip(_) => Direction::default(),
    };
    let mut note = None;
    let ingress = match to {
        Endpoint::Pod(dst) => {
            let from_own_node =
                from.ip().is_some_and(|ip| dst.node.as_deref().and_then(|n| cluster.node_ip(n)) == Some(ip));
            if from_own_node && matches!(from, Endpoint::Ip(_)) {
                note = Some("traffic from the pod's own node is always allowed".to_string());
                Direction { judged: true, ..Direction::default() }
            } else {
                judge(
                    cluster,
                    dst,
                    |p| p.ingress_isolation,
                    |p| &p.ingress,
                    "ingress",
                    |rule, policy| {
                        peers_match(cluster, rule, policy, from) && ports_match(rule, to, protocol, port)
                    },
                )
            }
        }
        Endpoint::Ip(_) => Direction::default(),
    };
    Verdict { allowed: egress.allows() && ingress.allows(), egress, ingress, note }
}

/// Which policies of one direction select `pod`, and which of their rules allow the connection.
fn judge(
    cluster: &Cluster,
    pod: &Pod,
    isolates: impl Fn(&NetworkPolicy) -> bool,
    rules: impl Fn(&NetworkPolicy) -> &Vec<Rule>,
    direction: &str,
    allows: impl Fn(&Rule, &NetworkPolicy) -> bool,
) -> Direction {
    let mut d = Direction { judged: true, ..Direction::default() };
    for policy in cluster.policies.iter().filter(|p| p.namespace == pod.namespace && isolates(p)) {
        if !policy.pod_selector.matches(&pod.labels) {
            continue;
        }
        d.isolated = true;
        d.selected_by.push(policy.key());
        for (i, rule) in rules(policy).iter().enumerate() {
            if allows(rule, policy) {
                d.allowed_by.push(format!("{} {direction}[{i}]", policy.key()));
            }
        }
    }
    d
}

/// Does the rule's peer list admit `other` (the far end, seen from the policy's pod)?
fn peers_match(cluster: &Cluster, rule: &Rule, policy: &NetworkPolicy, other: Endpoint) -> bool {
    let Some(peers) = &rule.peers else { return true };
    peers.iter().any(|peer| match (peer, other) {
        (Peer::Pods { namespaces, pods }, Endpoint::Pod(p)) => {
            let ns_ok = match namespaces {
                None => p.namespace == policy.namespace,
                Some(sel) => cluster.namespace_labels(&p.namespace).is_some_and(|l| sel.matches(l)),
            };
            ns_ok && pods.as_ref().is_none_or(|sel| sel.matches(&p.labels))
        }
        (Peer::Pods { .. }, Endpoint::Ip(_)) => false,
        (Peer::IpBlock { cidr, except }, e) => {
            e.ip().is_some_and(|ip| cidr.contains(&ip) && !except.iter().any(|x| x.contains(&ip)))
        }
    })
}

/// Does the rule's port list admit `port`/`protocol` at the destination `to`?
fn ports_match(rule: &Rule, to: Endpoint, protocol: Protocol, port: u16) -> bool {
    let Some(specs) = &rule.ports else { return true };
    specs.iter().any(|s| port_matches(s, to, protocol, port))
}

pub fn port_matches(spec: &PortSpec, to: Endpoint, protocol: Protocol, port: u16) -> bool {
    if spec.protocol != protocol {
        return false;
    }
    match &spec.port {
        None => true,
        Some(PortRef::Number(p)) => match spec.end_port {
            None => port == *p,
            Some(end) => (*p..=end).contains(&port),
        },
        // Named ports resolve on the destination pod, by name and protocol; never on an IP.
        Some(PortRef::Name(name)) => match to {
            Endpoint::Pod(pod) => pod.named_port(name, protocol) == Some(port),
            Endpoint::Ip(_) => false,
        },
    }
}
