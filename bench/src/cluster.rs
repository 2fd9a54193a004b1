//! The seeded synthetic cluster the policy benchmarks share: 1,000 namespaces, 100 nodes, pods
//! with app/tier/version labels and named ports, policies mixing selectors, named ports, port
//! ranges, ipBlocks and egress rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use policy_compiler::model::{
    Cluster, ContainerPort, Namespace, NetworkPolicy, Node, Peer, Pod, PortRef, PortSpec, Protocol, Rule,
};
use policy_compiler::selector::{Op, Requirement, Selector};
use rand::{rngs::StdRng, Rng};

pub const NAMESPACES: usize = 1000;

pub fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

pub fn pod(k: usize, rng: &mut StdRng) -> Pod {
    let ns = k % NAMESPACES;
    Pod {
        namespace: format!("ns-{ns}"),
        name: format!("pod-{k}"),
        labels: labels(&[
            ("app", format!("a{}", rng.gen_range(0..50))),
            ("tier", ["web", "api", "db"][rng.gen_range(0..3)].to_string()),
            ("version", format!("v{}", rng.gen_range(0..5))),
        ]),
        ip: Some(IpAddr::from((0x0a00_0001u32 + k as u32).to_be_bytes())),
        node: Some(format!("node-{}", k % 100)),
        ports: vec![
            ContainerPort { name: Some("http".into()), port: 8080, protocol: Protocol::Tcp },
            ContainerPort { name: Some("metrics".into()), port: 9090, protocol: Protocol::Tcp },
        ],
    }
}

pub fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector::from_labels(pairs.iter().copied())
}

pub fn policy(i: usize, rng: &mut StdRng) -> NetworkPolicy {
    let app = format!("a{}", rng.gen_range(0..50));
    let team = format!("t{}", rng.gen_range(0..20));
    let mut pod_selector = sel(&[("app", &app)]);
    if i.is_multiple_of(3) {
        pod_selector
            .requirements
            .push(Requirement { key: "tier".into(), op: Op::In(vec!["web".into(), "api".into()]) });
    }
    let peers = match i % 4 {
        0 => vec![Peer::Pods {
            namespaces: Some(sel(&[("team", &team)])),
            pods: Some(sel(&[("tier", "web")])),
        }],
        1 => vec![Peer::IpBlock {
            cidr: "172.16.0.0/12".parse().unwrap(),
            except: vec!["172.16.1.0/24".parse().unwrap()],
        }],
        2 => vec![Peer::Pods {
            namespaces: None,
            pods: Some(Selector {
                requirements: vec![Requirement { key: "app".into(), op: Op::NotIn(vec![app.clone()]) }],
            }),
        }],
        _ => vec![
            Peer::Pods { namespaces: Some(sel(&[("env", "prod")])), pods: None },
            Peer::Pods { namespaces: None, pods: Some(sel(&[("tier", "api")])) },
        ],
    };
    let ports = match i % 3 {
        0 => vec![PortSpec {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Name("http".into())),
            end_port: None,
        }],
        1 => vec![PortSpec {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(8000)),
            end_port: Some(8100),
        }],
        _ => vec![PortSpec { protocol: Protocol::Udp, port: Some(PortRef::Number(53)), end_port: None }],
    };
    let egress = if i.is_multiple_of(5) {
        vec![Rule {
            peers: Some(vec![Peer::Pods { namespaces: Some(Selector::default()), pods: None }]),
            ports: None,
        }]
    } else {
        Vec::new()
    };
    NetworkPolicy {
        namespace: format!("ns-{}", rng.gen_range(0..NAMESPACES)),
        name: format!("np-{i}"),
        pod_selector,
        ingress_isolation: true,
        egress_isolation: !egress.is_empty(),
        ingress: vec![Rule { peers: Some(peers), ports: Some(ports) }],
        egress,
    }
}

pub fn cluster(pods: usize, policies: usize, rng: &mut StdRng) -> Cluster {
    let namespaces = (0..NAMESPACES)
        .map(|i| {
            let name = format!("ns-{i}");
            let l = labels(&[
                ("team", format!("t{}", i % 20)),
                ("env", ["prod", "dev", "test"][i % 3].to_string()),
                ("kubernetes.io/metadata.name", name.clone()),
            ]);
            (name.clone(), Namespace { name, labels: l })
        })
        .collect();
    let nodes = (0..100)
        .map(|n| Node {
            name: format!("node-{n}"),
            internal_ip: Some(IpAddr::from([192, 168, 0, n as u8 + 1])),
        })
        .collect();
    Cluster {
        namespaces,
        pods: (0..pods).map(|k| pod(k, rng)).collect(),
        nodes,
        policies: (0..policies).map(|i| policy(i, rng)).collect(),
    }
}

/// The process's peak resident memory (VmHWM), in MiB.
pub fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
