//! Arbitrary cluster snapshots (YAML) through conversion and the semantic evaluator: refused or
//! evaluated, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use policy_compiler::model::Protocol;
use policy_compiler::semantic::reachability;
use policy_compiler::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(snap) = Snapshot::from_yaml(text) {
        if snap.cluster.pods.len() <= 32 {
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                let _ = reachability(&snap.cluster, &["203.0.113.9".parse().unwrap()], protocol, 80);
            }
        }
    }
});
