//! azure-vnet's CNI 1.1.0 commands: GC removes every attachment the runtime no longer lists
//! (veth, port mappings, record, address); STATUS reports a node that lost its bridge.

mod common;

use common::lab::Lab;
use common::Netns;
use serde_json::json;

#[test]
fn gc_removes_unlisted_attachments_and_status_sees_a_missing_bridge() {
    let lab = Lab::new(1, 8);
    let node = &lab.nodes[0];
    let conf = node.config("1.1.0");
    let mut mapped = conf.clone();
    mapped["runtimeConfig"] = json!({"portMappings": [{"hostPort": 9000, "containerPort": 80}]});
    let pods: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("gc{i}"))).collect();
    for (i, p) in pods.iter().enumerate() {
        node.cni("ADD", p, if i == 2 { &mapped } else { &conf }).address();
    }
    assert!(node.cni("STATUS", &pods[0], &conf).ok);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pods[0].name, "ifname": "eth0"}]);
    let reply = node.cni("GC", &pods[0], &gc);
    assert!(reply.ok, "GC: {} {}", reply.json, reply.stderr);
    assert_eq!(node.veths(), [cni::vnet::names::host_veth(&pods[0].name, "eth0")]);
    assert_eq!(node.endpoints(), 1);
    assert_eq!(node.allocations(), 1, "GC reached the IPAM plugin too");
    assert!(!node.nat_rules().contains("--dport 9000"), "the port mapping went with its pod");

    common::ip(&["-n", &node.ns.name, "link", "del", "azure0"]);
    assert_eq!(node.cni("STATUS", &pods[0], &conf).code(), 50);
}
