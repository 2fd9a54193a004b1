//! What a lab is made of, planned from the objects alone (pure, no kernel): the VNet subnet that
//! holds every node and pod address, its gateway, each node's MAC and host-agent pool, and the
//! address each pod asks for. Pods with `status.podIP` ask for it (CNI `ips` capability); the
//! others take a spare address from their node's pool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use policy_compiler::model::Cluster;
use policy_compiler::snapshot::Snapshot;

/// Spare pool addresses per node beyond the pods that ask for one.
const SPARE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Secondary addresses the host agent lists for this node.
    pub pool: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// `namespace/name`.
    pub key: String,
    pub node: String,
    /// The address the pod asks for (`None`: any from the pool).
    pub ip: Option<Ipv4Addr>,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    pub externals: Vec<Ipv4Addr>,
}

pub fn load(text: &str) -> Result<Cluster, String> {
    let snap = Snapshot::from_yaml(text).map_err(|e| e.to_string())?;
    if let Some(bad) = snap.refused.iter().find(|r| r.kind != "NetworkPolicy") {
        return Err(format!("invalid object: {bad}"));
    }
    Ok(snap.cluster)
}

fn v4(ip: IpAddr, what: &str) -> Result<Ipv4Addr, String> {
    match ip {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(format!("{what}: the lab is IPv4 only")),
    }
}

/// The smallest subnet (at most /24) that holds every address.
fn covering(addresses: &[Ipv4Addr]) -> Ipv4Net {
    let first = u32::from(addresses[0]);
    let mut prefix = 24u8;
    while prefix > 0 {
        let mask = u32::MAX << (32 - prefix);
        if addresses.iter().all(|a| u32::from(*a) & mask == first & mask) {
            break;
        }
        prefix -= 1;
    }
    Ipv4Net::new(addresses[0], prefix).map(|n| n.trunc()).unwrap_or_default()
}

pub fn plan(cluster: Cluster, externals: &[IpAddr]) -> Result<Plan, String> {
    if cluster.nodes.is_empty() {
        return Err("the objects have no Node (each needs status.addresses with an InternalIP)".into());
    }
    let mut nodes = Vec::new();
    for (k, n) in cluster.nodes.iter().enumerate() {
        let ip = n.internal_ip.ok_or_else(|| format!("node {} has no InternalIP", n.name))?;
        let mac = format!("00:0d:3a:00:{:02x}:{:02x}", (k + 1) >> 8, (k + 1) & 0xff);
        nodes.push(NodePlan { name: n.name.clone(), ip: v4(ip, &n.name)?, mac, pool: Vec::new() });
    }
    let mut pods = Vec::new();
    for p in &cluster.pods {
        let node = p.node.clone().ok_or_else(|| format!("pod {} has no spec.nodeName", p.key()))?;
        if !nodes.iter().any(|n| n.name == node) {
            return Err(format!("pod {} is on node {node}, which is not among the objects", p.key()));
        }
        let ip = p.ip.map(|a| v4(a, &p.key())).transpose()?;
        let ports = |proto| p.ports.iter().filter(|c| c.protocol == proto).map(|c| c.port).collect();
        pods.push(PodPlan {
            key: p.key(),
            node,
            ip,
            tcp_ports: ports(policy_compiler::model::Protocol::Tcp),
            udp_ports: ports(policy_compiler::model::Protocol::Udp),
        });
    }
    let mut used: BTreeSet<Ipv4Addr> = nodes.iter().map(|n| n.ip).collect();
    for p in &pods {
        if let Some(ip) = p.ip {
            if !used.insert(ip) {
                return Err(format!("address {ip} is used twice (pod {})", p.key));
            }
        }
    }
    let all: Vec<Ipv4Addr> = used.iter().copied().collect();
    let subnet = covering(&all);
    let gateway = subnet.hosts().next().ok_or("the addresses leave no room for a gateway")?;
    if used.contains(&gateway) {
        return Err(format!("{gateway}, the subnet's gateway, is used by a node or pod"));
    }
    used.insert(gateway);
    let mut spare = subnet.hosts().filter(|a| !used.contains(a));
    let by_node: BTreeMap<&str, Vec<&PodPlan>> = pods.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p.node.as_str()).or_default().push(p);
        m
    });
    for n in &mut nodes {
        let mine = by_node.get(n.name.as_str()).cloned().unwrap_or_default();
        n.pool = mine.iter().filter_map(|p| p.ip).collect();
        let extra = mine.iter().filter(|p| p.ip.is_none()).count() + SPARE;
        for _ in 0..extra {
            n.pool.push(spare.next().ok_or("the subnet has no spare addresses left")?);
        }
    }
    let externals = externals.iter().map(|e| v4(*e, "external")).collect::<Result<Vec<_>, _>>()?;
    if let Some(e) = externals.iter().find(|e| subnet.contains(*e)) {
        return Err(format!("external {e} is inside the VNet {subnet}"));
    }
    Ok(Plan { subnet, gateway, nodes, pods, externals })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_NODES: &str = "
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 10.240.0.4}]}
---
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 10.240.0.5}]}
---
kind: Pod
metadata: {name: a, namespace: x}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.240.1.7}
---
kind: Pod
metadata: {name: b, namespace: x}
spec: {nodeName: n2, containers: [{name: c}]}
";

    #[test]
    fn addresses_pools_and_gateway_are_planned_from_the_objects() {
        let p = plan(load(TWO_NODES).unwrap(), &["203.0.113.9".parse().unwrap()]).unwrap();
        assert_eq!(p.subnet.to_string(), "10.240.0.0/23");
        assert_eq!(p.gateway.to_string(), "10.240.0.1");
        assert_eq!(p.nodes[0].pool[0].to_string(), "10.240.1.7", "a requested address is in its node's pool");
        assert_eq!(p.nodes[0].pool.len(), 1 + SPARE);
        assert_eq!(p.nodes[1].pool.len(), 1 + SPARE);
        let all: BTreeSet<_> = p.nodes.iter().flat_map(|n| n.pool.iter()).collect();
        assert_eq!(all.len(), 2 + 2 * SPARE, "pools never overlap");
        assert!(!all.contains(&p.gateway) && !all.iter().any(|a| p.nodes.iter().any(|n| n.ip == **a)));
        assert_eq!(p.pods[0].tcp_ports, [80].into());
        assert_eq!(p.pods[0].udp_ports, [53].into());
        assert_ne!(p.nodes[0].mac, p.nodes[1].mac);
    }

    #[test]
    fn what_a_lab_cannot_build_is_refused_with_a_reason() {
        let cases = [
            ("kind: Namespace\nmetadata: {name: x}", "no Node"),
            (&TWO_NODES.replace("nodeName: n2, ", "nodeName: n9, "), "not among"),
            (&TWO_NODES.replace("10.240.1.7", "10.240.0.5"), "used twice"),
            (&TWO_NODES.replace("10.240.1.7", "10.240.0.1"), "gateway"),
        ];
        for (text, needle) in cases {
            let err = plan(load(text).unwrap(), &[]).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let err = plan(load(TWO_NODES).unwrap(), &["10.240.0.9".parse().unwrap()]).unwrap_err();
        assert!(err.contains("inside the VNet"), "{err}");
    }
}
