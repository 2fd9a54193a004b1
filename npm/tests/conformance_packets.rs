//! Real packets for every conformance case, on each backend: the cases' pods (they share names
//! and addresses) and an external host are network namespaces on a Linux bridge in a "node"
//! namespace, where one `azure-npm start --source dir:` runs throughout. The cases are applied
//! one after the other — each is an update step from the previous one (policies replaced,
//! labels changed) — and after each step real TCP and UDP connections between every pair must
//! succeed exactly where the API semantics allow them. SCTP is left to the evaluators (no SCTP
//! in these kernels).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::Stdio;

use common::kernel::{Backend, Kernel};
use common::{wait_for, Netns, NPM};
use policy_compiler::compile::compile;
use policy_compiler::model::{Cluster, Protocol};
use policy_compiler::reach::{reachability, Engine};
use policy_compiler::snapshot::Snapshot;

const EXTERNAL: &str = "203.0.113.9";

/// TCP: accept and close; UDP: echo. On every port given.
const SERVE: &str = include_str!("../../testdata/probe/serve.py");

/// Reads [[protocol, address, port], ...] and prints whether each got through, all at once.
const PROBE: &str = include_str!("../../testdata/probe/probe.py");

fn cases() -> Vec<(String, String)> {
    let dir = format!("{}/../testdata/policy", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), std::fs::read_to_string(format!("{dir}/{n}")).unwrap())).collect()
}

/// The (protocol, port) pairs a case checks, without SCTP, plus TCP and UDP 80 always.
fn checks(text: &str) -> BTreeSet<(Protocol, u16)> {
    let mut out: BTreeSet<(Protocol, u16)> = [(Protocol::Tcp, 80), (Protocol::Udp, 80)].into();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if value["kind"] != "Expectations" {
            continue;
        }
        for c in value["checks"].as_sequence().into_iter().flatten() {
            let protocol = Protocol::parse(c["protocol"].as_str().unwrap()).unwrap();
            if protocol != Protocol::Sctp {
                out.insert((protocol, c["port"].as_u64().unwrap() as u16));
            }
        }
    }
    out
}

struct Host {
    name: String,
    ip: IpAddr,
    ns: Netns,
}

/// Starts a prober in namespace `ns` with source address `src`.
fn probe(ns: &Netns, src: IpAddr, probes: &[(Protocol, IpAddr, u16)]) -> std::process::Child {
    let list: Vec<(String, String, u16)> =
        probes.iter().map(|(p, ip, port)| (p.to_string(), ip.to_string(), *port)).collect();
    let mut child = ns
        .command("python3")
        .args(["-c", PROBE, &src.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(&list).unwrap().as_bytes()).unwrap();
    child
}

#[test]
fn every_case_in_turn_gives_its_truth_table_in_real_tcp_and_udp_iptables() {
    every_case_in_turn(Backend::Iptables);
}

#[test]
fn every_case_in_turn_gives_its_truth_table_in_real_tcp_and_udp_nftables() {
    every_case_in_turn(Backend::Nftables);
}

fn every_case_in_turn(backend: Backend) {
    let all = cases();
    let first: Cluster = Snapshot::from_yaml(&all[0].1).unwrap().cluster;
    let node_ip = first.nodes[0].internal_ip.unwrap();
    // Short names: the namespaces of both runs exist at once.
    let tag = &backend.arg()[..3];
    let mut node = Netns::new(&format!("cnode{tag}"));
    let bridge_nf = node.run(&["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]);
    assert_eq!(
        bridge_nf.trim(),
        "1",
        "bridged traffic must pass the IPv4 hooks (br_netfilter) for the agent to see it"
    );
    node.run(&["ip", "link", "add", "br0", "type", "bridge"]);
    node.run(&["ip", "link", "set", "br0", "up"]);
    node.run(&["ip", "addr", "add", &format!("{node_ip}/32"), "dev", "br0"]);

    // The union of every case's checks decides what the servers listen on.
    let wanted: BTreeSet<(Protocol, u16)> = all.iter().flat_map(|(_, t)| checks(t)).collect();
    let ports = |p: Protocol| {
        wanted.iter().filter(|w| w.0 == p).map(|w| w.1.to_string()).collect::<Vec<_>>().join(",")
    };
    let (tcp, udp) = (ports(Protocol::Tcp), ports(Protocol::Udp));

    let mut hosts: Vec<Host> = Vec::new();
    let mut endpoints: Vec<(String, IpAddr)> = first.pods.iter().map(|p| (p.key(), p.ip.unwrap())).collect();
    endpoints.push((EXTERNAL.to_string(), EXTERNAL.parse().unwrap()));
    for (i, (name, ip)) in endpoints.into_iter().enumerate() {
        let mut ns = Netns::new(&format!("ch{tag}{i}"));
        let veth = format!("vc{i}");
        node.run(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        node.run(&["ip", "link", "set", &veth, "master", "br0", "up"]);
        node.run(&["ip", "route", "add", &format!("{ip}/32"), "dev", "br0"]);
        ns.run(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.run(&["ip", "link", "set", "eth0", "up"]);
        // Everything is on the link: pods reach each other and the node through the bridge.
        ns.run(&["ip", "route", "add", "default", "dev", "eth0"]);
        let mut server =
            ns.command("python3").args(["-c", SERVE, &tcp, &udp]).stdout(Stdio::piped()).spawn().unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the server in {name} did not start");
        ns.children.push(server);
        hosts.push(Host { name, ip, ns });
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, "").unwrap();
    let agent = node
        .command(NPM)
        .args(["start", "--source", &format!("dir:{}", dir.path().display()), "--interval-ms", "100"])
        .args(["--metrics-addr", "off", "--dataplane", backend.arg()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    node.children.push(agent);

    let external: IpAddr = EXTERNAL.parse().unwrap();
    let mut failures = Vec::new();
    let mut probed = 0;
    for (case, text) in &all {
        // The update step: replace the objects (write + rename, as a ConfigMap update does).
        let staged = dir.path().join("cluster.yaml.new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &file).unwrap();
        let cluster = Snapshot::from_yaml(text).unwrap().cluster;
        let expected_ir = compile(&cluster);
        wait_for(&format!("{case} to be programmed"), 20, || {
            Kernel::read(&node, backend).is_some_and(|k| k.holds(&expected_ir))
        });

        // New connections only: a flow an earlier case allowed (same ports, by chance) would be
        // let through as established, by either backend, as stateful firewalls do.
        node.enter(|| nfnl::conntrack::flush(&mut nfnl::Socket::open()?)).expect("flushing conntrack");

        // (source host, or None for the node; destination; protocol; port; allowed; names)
        let mut truth = Vec::new();
        for &(protocol, port) in &checks(text) {
            for row in reachability(&cluster, &[external], protocol, port, Engine::Semantic) {
                let dst = hosts.iter().find(|h| h.name == row.to).unwrap().ip;
                let src = hosts.iter().position(|h| h.name == row.from);
                assert!(src.is_some() || row.from == node_ip.to_string(), "unknown source {}", row.from);
                truth.push((src, dst, protocol, port, row.allowed, row.from, row.to));
            }
        }
        // One prober per source, all at once.
        let mut runs = Vec::new();
        for src in (0..hosts.len()).map(Some).chain([None]) {
            let mine: Vec<_> = truth.iter().filter(|t| t.0 == src).collect();
            let probes: Vec<(Protocol, IpAddr, u16)> = mine.iter().map(|t| (t.2, t.1, t.3)).collect();
            let child = match src {
                Some(i) => probe(&hosts[i].ns, hosts[i].ip, &probes),
                None => probe(&node, node_ip, &probes),
            };
            runs.push((mine, child));
        }
        for (mine, child) in runs {
            let out = child.wait_with_output().unwrap();
            let got: Vec<bool> =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("prober: {:?}", out));
            for (t, ok) in mine.iter().zip(got) {
                probed += 1;
                if ok != t.4 {
                    failures.push(format!(
                        "{case}: {} -> {} {}/{}: expected {}, the kernel {}",
                        t.5,
                        t.6,
                        t.2,
                        t.3,
                        if t.4 { "allowed" } else { "denied" },
                        if ok { "let it through" } else { "dropped it" }
                    ));
                }
            }
        }
    }
    eprintln!("{}: {probed} real connections over {} cases", backend.arg(), all.len());
    assert!(
        failures.is_empty(),
        "{} of {probed} connections disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
