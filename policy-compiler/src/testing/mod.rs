//! Random clusters and policies for property tests: the compiler's own, and the dataplanes'
//! (feature `testing`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::incremental::Event;
use crate::model::{
    Cluster, ContainerPort, Labels, Namespace, NetworkPolicy, Node, Peer, Pod, PortRef, PortSpec, Protocol,
    Rule,
};
use crate::selector::{Op, Requirement, Selector};
use ipnet::IpNet;
use proptest::prelude::*;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const VALUES: [&str; 5] = ["web", "db", "a", "b", ""];
pub const PORTS: [(&str, u16, Protocol); 5] = [
    ("http", 80, Protocol::Tcp),
    ("dns", 53, Protocol::Udp),
    ("alt", 81, Protocol::Tcp),
    ("sctp", 80, Protocol::Sctp),
    ("http", 8080, Protocol::Udp),
];
pub const QUERIES: [(Protocol, u16); 7] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Tcp, 8080),
    (Protocol::Udp, 53),
    (Protocol::Udp, 8080),
    (Protocol::Sctp, 80),
    (Protocol::Tcp, 82),
];

pub fn labels(keys: &'static [&'static str]) -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(
        proptest::sample::select(keys),
        proptest::sample::select(&VALUES[..]),
        0..3,
    )
    .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

pub fn selector() -> impl Strategy<Value = Selector> {
    let values = proptest::collection::vec(proptest::sample::select(&VALUES[..]), 1..3)
        .prop_map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>());
    let op = prop_oneof![
        values.clone().prop_map(Op::In),
        values.prop_map(Op::NotIn),
        Just(Op::Exists),
        Just(Op::DoesNotExist),
    ];
    let req = (proptest::sample::select(&["app", "tier", "ns", "env"][..]), op)
        .prop_map(|(k, op)| Requirement { key: k.to_string(), op });
    proptest::collection::vec(req, 0..3).prop_map(|requirements| Selector { requirements })
}

pub fn peer() -> impl Strategy<Value = Peer> {
    const CIDRS: [&str; 5] = ["10.0.0.0/16", "10.0.1.0/24", "10.0.0.0/8", "203.0.113.0/24", "0.0.0.0/0"];
    const EXCEPTS: [&str; 4] = ["10.0.1.0/25", "10.0.1.2/32", "10.0.2.0/24", "10.0.0.0/16"];
    prop_oneof![
        (proptest::option::of(selector()), selector())
            .prop_map(|(namespaces, pods)| Peer::Pods { namespaces, pods: Some(pods) }),
        selector().prop_map(|ns| Peer::Pods { namespaces: Some(ns), pods: None }),
        (proptest::sample::select(&CIDRS[..]), proptest::sample::subsequence(&EXCEPTS[..], 0..3)).prop_map(
            |(c, ex)| {
                let cidr: IpNet = c.parse().unwrap();
                let except =
                    ex.iter().map(|e| e.parse::<IpNet>().unwrap()).filter(|e| cidr.contains(e)).collect();
                Peer::IpBlock { cidr, except }
            }
        ),
    ]
}

pub fn port_spec() -> impl Strategy<Value = PortSpec> {
    let protocol = proptest::sample::select(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp][..]);
    let port = prop_oneof![
        Just((None, None)),
        proptest::sample::select(&[53u16, 80, 81, 8080][..]).prop_map(|p| (Some(PortRef::Number(p)), None)),
        proptest::sample::select(&[80u16, 8079][..]).prop_map(|p| (Some(PortRef::Number(p)), Some(p + 1))),
        proptest::sample::select(&["http", "dns", "alt", "sctp", "nope"][..])
            .prop_map(|n| (Some(PortRef::Name(n.to_string())), None)),
    ];
    (protocol, port).prop_map(|(protocol, (port, end_port))| PortSpec { protocol, port, end_port })
}

pub fn rule() -> impl Strategy<Value = Rule> {
    (
        proptest::option::weighted(0.8, proptest::collection::vec(peer(), 1..3)),
        proptest::option::weighted(0.6, proptest::collection::vec(port_spec(), 1..3)),
    )
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

pub fn policy() -> impl Strategy<Value = NetworkPolicy> {
    (
        proptest::sample::select(&NAMESPACES[..]),
        selector(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(rule(), 0..3),
        proptest::collection::vec(rule(), 0..3),
    )
        .prop_map(|(ns, pod_selector, ing, egr, ingress, egress)| NetworkPolicy {
            namespace: ns.to_string(),
            name: "p".into(),
            pod_selector,
            ingress_isolation: ing,
            egress_isolation: egr,
            ingress,
            egress,
        })
}

pub fn pod() -> impl Strategy<Value = (usize, Labels, Option<usize>, Vec<usize>)> {
    (
        0..3usize,
        labels(&["app", "tier"]),
        proptest::option::of(0..2usize),
        proptest::sample::subsequence(vec![0, 1, 2, 3, 4], 0..4),
    )
}

pub fn cluster() -> impl Strategy<Value = Cluster> {
    (
        proptest::collection::vec(labels(&["ns", "env"]), 3),
        proptest::collection::vec(pod(), 1..8),
        proptest::collection::vec(policy(), 0..4),
    )
        .prop_map(|(ns_labels, pods, mut policies)| {
            let namespaces: BTreeMap<String, Namespace> = NAMESPACES
                .iter()
                .zip(ns_labels)
                .map(|(n, mut l)| {
                    l.insert("kubernetes.io/metadata.name".into(), n.to_string());
                    (n.to_string(), Namespace { name: n.to_string(), labels: l })
                })
                .collect();
            let pods = pods
                .into_iter()
                .enumerate()
                .map(|(i, (ns, labels, node, ports))| {
                    make_pod(ns, i, labels, Some(IpAddr::from([10, 0, ns as u8, i as u8 + 1])), node, &ports)
                })
                .collect();
            for (i, p) in policies.iter_mut().enumerate() {
                p.name = format!("np{i}");
            }
            let nodes = (0..2)
                .map(|n| Node { name: format!("n{n}"), internal_ip: Some(IpAddr::from([10, 240, 0, n + 1])) })
                .collect();
            Cluster { namespaces, pods, nodes, policies }
        })
}

/// A pod `p{i}` in namespace `NAMESPACES[ns]` with the given `PORTS` entries.
pub fn make_pod(
    ns: usize,
    i: usize,
    labels: Labels,
    ip: Option<IpAddr>,
    node: Option<usize>,
    ports: &[usize],
) -> Pod {
    Pod {
        namespace: NAMESPACES[ns].to_string(),
        name: format!("p{i}"),
        labels,
        ip,
        node: node.map(|n| format!("n{n}")),
        ports: ports
            .iter()
            .map(|&k| ContainerPort { name: Some(PORTS[k].0.into()), port: PORTS[k].1, protocol: PORTS[k].2 })
            .collect(),
    }
}

/// A random cluster event (pods come and go, change labels and reuse addresses; namespaces,
/// policies and nodes change).
pub fn event() -> impl Strategy<Value = Event> {
    let pod = (
        0..3usize,
        0..10usize,
        labels(&["app", "tier"]),
        // A small address pool, so pods share and reuse addresses.
        proptest::option::weighted(0.9, 1..12u8),
        proptest::option::of(0..2usize),
        proptest::sample::subsequence(vec![0, 1, 2, 3, 4], 0..4),
    )
        .prop_map(|(ns, i, labels, ip, node, ports)| {
            Event::UpsertPod(make_pod(
                ns,
                i,
                labels,
                ip.map(|last| IpAddr::from([10, 0, 0, last])),
                node,
                &ports,
            ))
        });
    prop_oneof![
        5 => pod,
        2 => (0..3usize, 0..10usize)
            .prop_map(|(ns, i)| Event::DeletePod { namespace: NAMESPACES[ns].into(), name: format!("p{i}") }),
        1 => (0..3usize, labels(&["ns", "env"])).prop_map(|(ns, mut l)| {
            l.insert("kubernetes.io/metadata.name".into(), NAMESPACES[ns].into());
            Event::UpsertNamespace(Namespace { name: NAMESPACES[ns].into(), labels: l })
        }),
        1 => (policy(), 0..4usize).prop_map(|(mut p, i)| {
            p.name = format!("np{i}");
            Event::UpsertPolicy(p)
        }),
        1 => (0..3usize, 0..4usize)
            .prop_map(|(ns, i)| Event::DeletePolicy { namespace: NAMESPACES[ns].into(), name: format!("np{i}") }),
        1 => (0..3u8).prop_map(|n| Event::UpsertNode(Node { name: format!("n{n}"), internal_ip: Some(IpAddr::from([10, 240, 0, n + 9])) })),
        1 => (0..3u8).prop_map(|n| Event::DeleteNode(format!("n{n}"))),
    ]
}

pub mod conformance;
