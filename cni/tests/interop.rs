//! Interop: Debian's reference `bridge` plugin delegating to azure-vnet-ipam attaches 250
//! containers on one node; they reach each other; DEL of all leaves no allocation.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;

use common::lab::{forget_neighbors, reaches, RETRIES};
use common::{cni_env, pipe, Netns, Node, Reply, IPAM};
use serde_json::json;

const BRIDGE: &str = "/usr/lib/cni/bridge";
const CONTAINERS: usize = 250;

fn bridge_call(node: &Node, command: &str, container: &Netns, conf: &serde_json::Value) -> Reply {
    let mut cmd = node.ns.command(BRIDGE);
    cni_env(&mut cmd, command, &container.name, "eth0", &container.path());
    let cni_path = format!("{}:/usr/lib/cni", Path::new(IPAM).parent().unwrap().display());
    cmd.env("CNI_PATH", cni_path);
    Reply::from_output(pipe(cmd, conf))
}

#[test]
fn the_reference_bridge_plugin_attaches_250_containers_that_ping_each_other() {
    assert!(
        Path::new(BRIDGE).exists(),
        "{BRIDGE} missing: install containernetworking-plugins (scripts/install-deps.sh)"
    );
    let node = Node::new("interop", CONTAINERS);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "vnet", "type": "bridge", "bridge": "azbr0",
        "ipam": node.ipam(),
    });
    let containers: Vec<Netns> = (0..CONTAINERS).map(|i| Netns::new(&format!("c{i}"))).collect();
    let mut addresses = Vec::new();
    for c in &containers {
        let reply = bridge_call(&node, "ADD", c, &conf);
        let cidr = reply.address();
        assert_eq!(reply.json["ips"][0]["gateway"], "10.240.0.1");
        addresses.push(cidr.split('/').next().unwrap().to_string());
    }
    let unique: HashSet<&String> = addresses.iter().collect();
    assert_eq!(unique.len(), CONTAINERS, "every container got its own address");
    assert_eq!(node.allocations().len(), CONTAINERS);
    let pool: HashSet<String> = common::secondaries(CONTAINERS).into_iter().collect();
    assert!(addresses.iter().all(|a| pool.contains(a)), "all from the host agent's pool");

    // Each container pings the next one: a ring covers every veth and the bridge both ways.
    // `reaches` grants one retry after both sides forget their ARP entries (an ARP exchange is
    // occasionally left unanswered with hundreds of ports on one bridge); twice is a failure.
    for (i, c) in containers.iter().enumerate() {
        let next = (i + 1) % CONTAINERS;
        let target = &addresses[next];
        assert!(reaches(c, &containers[next], target), "{} cannot reach {target}", c.name);
        // The ARP table is shared by all namespaces and capped; forget what this one learnt.
        forget_neighbors(c);
    }
    eprintln!("ping retries granted: {}", RETRIES.load(Ordering::Relaxed));

    for c in &containers {
        let reply = bridge_call(&node, "DEL", c, &conf);
        assert!(reply.ok, "DEL {}: {} {}", c.name, reply.json, reply.stderr);
    }
    assert!(node.allocations().is_empty(), "DEL of all leaves no allocation");
}
