//! Arbitrary cluster snapshots (YAML) through conversion and the semantic evaluator: refused or
//! evaluated, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use policy_compiler::model::Protocol;
use policy_compiler::reach::{reachability, Engine};
use policy_compiler::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(snap) = Snapshot::from_yaml(text) {
        if snap.cluster.pods.len() <= 32 {
            let externals = ["203.0.113.9".parse().unwrap()];
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                let semantic = reachability(&snap.cluster, &externals, protocol, 80, Engine::Semantic);
                let compiled = reachability(&snap.cluster, &externals, protocol, 80, Engine::Compiled);
                // Shared addresses (two pods, a pod and a node or an external) make address-based
                // answers ambiguous; otherwise the engines must agree.
                let mut ips: Vec<_> = snap.cluster.pods.iter().filter_map(|p| p.ip).collect();
                ips.extend(snap.cluster.nodes.iter().filter_map(|n| n.internal_ip));
                ips.extend(externals);
                ips.sort();
                let unique = ips.windows(2).all(|w| w[0] != w[1]);
                if unique {
                    assert_eq!(semantic, compiled, "engines disagree");
                }
            }
        }
    }
});
