//! Both modes on a VNet with Azure's rules (every ARP answered by the host's MAC, delivery by
//! owned IP, spoofed frames dropped and counted). 30 pods on node 1, twice: all DEL'd, then
//! 30 new pods ADD'd that get the same addresses back. In both rounds, tried once each (a stale
//! neighbour entry would be a failure, not a wait): pod <-> pod on the node, pod <-> a pod on
//! node 2, pod <-> node 2, node 1 <-> its pods, a long-lived pod -> the new pods (it still
//! holds neighbour entries for the old ones), pod -> 168.63.129.16, pod -> the internet (seen
//! from node 1's address), TCP and UDP, and a port mapping from node 2. The VNet's
//! anti-spoofing drops nothing over the whole run.

mod common;

use std::collections::BTreeSet;

use common::lab::{count_from, probe, serve, Lab, LabNode, Server, INTERNET_HOST};
use common::Netns;
use serde_json::{json, Value};

const PODS: usize = 30;
const NODE_PORT: u16 = 9000;

struct Pod {
    ns: Netns,
    ip: String,
    _server: Server,
}

fn add(node: &LabNode, name: &str, conf: &Value) -> Pod {
    let ns = Netns::new(name);
    let reply = node.cni("ADD", &ns, conf);
    let ip = reply.address().split('/').next().unwrap().to_string();
    let server = serve(&ns, 80, "0.0.0.0");
    Pod { ns, ip, _server: server }
}

/// (protocol, address, port)
type Target = (&'static str, String, u16);

/// Probes from one namespace: source address, targets, strict (a refusal is a failure).
type Group<'a> = (&'a Netns, &'a str, Vec<Target>, bool);

/// Runs every probe group; returns a description of each failure.
fn failures(groups: Vec<Group<'_>>) -> Vec<String> {
    let mut out = Vec::new();
    for (ns, src, probes, strict) in groups {
        for (ok, (proto, dst, port)) in probe(ns, src, &probes, strict).into_iter().zip(&probes) {
            if !ok {
                out.push(format!("{} ({src}) -> {proto} {dst}:{port}", ns.name));
            }
        }
    }
    out
}

fn both(proto_targets: impl Iterator<Item = (String, u16)>) -> Vec<Target> {
    proto_targets.flat_map(|(a, p)| [("TCP", a.clone(), p), ("UDP", a, p)]).collect()
}

fn two_rounds(mode: &str) {
    let lab = Lab::new(2, PODS + 1); // the anchor and the 30: round 2 must reuse every address
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let conf = n1.config_in(mode, "1.0.0");
    let mut mapped = conf.clone();
    mapped["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let _node_servers = [serve(&n1.ns, NODE_PORT, "0.0.0.0"), serve(&n2.ns, NODE_PORT, "0.0.0.0")];
    let _inet_server = serve(&lab.inet, 80, INTERNET_HOST);
    let node_source = format!("{}/32", n1.ip);
    count_from(&lab.inet, &node_source);
    count_from(&lab.inet, "10.240.1.0/24");

    let anchor = add(n1, "anchor", &conf);
    let remote = add(n2, "remote", &n2.config_in(mode, "1.0.0"));
    let mut first_round: BTreeSet<String> = BTreeSet::new();
    for round in 0..2 {
        let pods: Vec<Pod> = (0..PODS)
            .map(|i| add(n1, &format!("r{round}p{i}"), if i == 0 { &mapped } else { &conf }))
            .collect();
        let addresses: BTreeSet<String> = pods.iter().map(|p| p.ip.clone()).collect();
        if round == 0 {
            first_round = addresses;
        } else {
            assert_eq!(addresses, first_round, "round 2 reuses round 1's addresses");
        }
        let mut groups = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            let next = &pods[(i + 1) % PODS];
            let mut targets = both(
                [
                    (next.ip.clone(), 80),
                    (remote.ip.clone(), 80),
                    (n2.ip.clone(), NODE_PORT),
                    (n1.ip.clone(), NODE_PORT),
                    (INTERNET_HOST.to_string(), 80),
                ]
                .into_iter(),
            );
            targets.push(("TCP", "168.63.129.16".into(), 80));
            groups.push((&p.ns, p.ip.as_str(), targets, false));
        }
        let everyone = || both(pods.iter().map(|p| (p.ip.clone(), 80)));
        groups.push((&anchor.ns, anchor.ip.as_str(), everyone(), false));
        groups.push((&remote.ns, remote.ip.as_str(), everyone(), false));
        groups.push((&n1.ns, n1.ip.as_str(), everyone(), false));
        groups.push((&n2.ns, n2.ip.as_str(), everyone(), false));
        groups.push((&n2.ns, n2.ip.as_str(), vec![("TCP", n1.ip.clone(), 8080)], true));
        let failed = failures(groups);
        assert!(
            failed.is_empty(),
            "{mode} round {}: {} probes failed:\n{}\nVNet counters:\n{}",
            round + 1,
            failed.len(),
            failed.join("\n"),
            lab.counters()
        );
        for (i, p) in pods.iter().enumerate() {
            let reply = n1.cni("DEL", &p.ns, if i == 0 { &mapped } else { &conf });
            assert!(reply.ok, "DEL {}: {}", p.ns.name, reply.json);
        }
        assert_eq!(n1.veths().len(), 1, "only the anchor's veth is left: {:?}", n1.veths());
        assert_eq!((n1.endpoints(), n1.allocations()), (1, 1), "only the anchor is recorded");
    }
    assert!(count_from(&lab.inet, &node_source) > 0, "the internet host saw node 1's address");
    assert_eq!(count_from(&lab.inet, "10.240.1.0/24"), 0, "no pod address left the VNet");
    assert_eq!(lab.spoofed(), 0, "{mode}: the VNet dropped spoofed frames:\n{}", lab.counters());
    assert!(n1.cni("DEL", &anchor.ns, &conf).ok);
    assert_eq!((n1.veths().len(), n1.endpoints(), n1.allocations()), (0, 0, 0));
    let nat = n1.nat_rules();
    assert!(!nat.contains("-A AZURE-VNET-DNAT"), "pod-specific rules left:\n{nat}");
}

#[test]
fn bridge_mode_on_an_azure_vnet() {
    two_rounds("bridge");
}

#[test]
fn transparent_mode_on_an_azure_vnet() {
    two_rounds("transparent");
}
