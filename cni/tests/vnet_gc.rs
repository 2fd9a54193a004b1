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

#[test]
fn check_names_a_lost_translation_a_repeated_add_restores_it_and_status_needs_the_table() {
    let lab = Lab::new(1, 4);
    let node = &lab.nodes[0];
    let conf = node.config("1.1.0");
    let pod = Netns::new("t");
    let first = node.cni("ADD", &pod, &conf);
    let ip = first.address().split('/').next().unwrap().to_string();
    let nft = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &node.ns.name, "nft"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let element = format!("{{ {ip} }}");
    nft(&["delete", "element", "bridge", "azure-vnet-azure0", "endpoints", &element]);
    let mut check = conf.clone();
    check["prevResult"] = first.json.clone();
    let reply = node.cni("CHECK", &pod, &check);
    assert_eq!(reply.code(), 116, "{}", reply.json);
    assert!(reply.json["msg"].as_str().unwrap().contains("translation"), "names the step: {}", reply.json);
    let again = node.cni("ADD", &pod, &conf);
    assert_eq!(again.json, first.json, "the same result");
    assert!(nft(&["list", "map", "bridge", "azure-vnet-azure0", "endpoints"]).contains(&ip), "restored");
    assert!(node.cni("CHECK", &pod, &check).ok);
    assert_eq!(lab.spoofed(), 0, "a missing element leaks nothing: traffic for the pod stops at the node");
    // The node's shared state: without its table the pods' own MACs would leave through master
    // (the VNet drops those frames), so STATUS reports the node not ready until an ADD restores it.
    nft(&["delete", "table", "bridge", "azure-vnet-azure0"]);
    let status = node.cni("STATUS", &pod, &conf);
    assert_eq!(status.code(), 50, "{}", status.json);
    assert!(status.json["msg"].as_str().unwrap().contains("translation table"), "{}", status.json);
    // The next ADD finds it missing and puts it back (with every element still recorded).
    let other = Netns::new("u");
    node.cni("ADD", &other, &conf).address();
    assert!(node.cni("STATUS", &pod, &conf).ok, "the table is back");
    let map = nft(&["list", "map", "bridge", "azure-vnet-azure0", "endpoints"]);
    assert!(map.contains(&ip), "with the earlier pod's element too:\n{map}");
    assert!(node.cni("CHECK", &pod, &check).ok, "the earlier pod is whole again");
}
