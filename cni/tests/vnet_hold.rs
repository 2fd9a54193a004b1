//! The hold on new pods (the contract with azure-npm, `cni/src/vnet/hold.rs`): with the agent's
//! `azure-npm-new` ipset present (its iptables backend), or its nftables table's `hold` set
//! (its nftables backend), ADD puts the pod's address in it and DEL takes it out, in both
//! modes; without either (no agent on the node) ADD and DEL work as before.

mod common;

use common::lab::Lab;
use common::Netns;

fn held(lab_node: &common::lab::LabNode) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab_node.ns.name, "ipset", "list", "azure-npm-new", "-o", "save"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("add azure-npm-new "))
        .map(str::to_string)
        .collect()
}

#[test]
fn add_holds_the_pods_address_for_the_agent_and_del_releases_it() {
    for mode in ["bridge", "transparent"] {
        // One node runs one mode.
        let lab = Lab::new(1, 8);
        let node = &lab.nodes[0];
        let conf = node.config_in(mode, "1.0.0");
        // No agent: nothing to hold, ADD and DEL as ever.
        let pod = Netns::new("nohold");
        let reply = node.cni("ADD", &pod, &conf);
        assert!(reply.ok, "{mode}: {} {}", reply.json, reply.stderr);
        assert!(node.cni("DEL", &pod, &conf).ok);

        common::run(node.ns.command("ipset").args(["create", "azure-npm-new", "hash:ip", "family", "inet"]));
        let pod = Netns::new("held");
        let ip = node.cni("ADD", &pod, &conf).address().split('/').next().unwrap().to_string();
        assert_eq!(held(node), std::slice::from_ref(&ip), "{mode}: held at ADD");
        // A repeated ADD (the runtime retrying) holds it again: harmless, still one entry.
        assert!(node.cni("ADD", &pod, &conf).ok);
        assert_eq!(held(node), [ip], "{mode}");
        // The agent lets it through; DEL then has nothing to release and succeeds.
        common::run(node.ns.command("ipset").args(["flush", "azure-npm-new"]));
        let other = Netns::new("held2");
        node.cni("ADD", &other, &conf).address();
        assert!(node.cni("DEL", &pod, &conf).ok);
        assert!(node.cni("DEL", &other, &conf).ok);
        assert!(held(node).is_empty(), "{mode}: released at DEL");

        // The nftables backend's set instead.
        common::run(node.ns.command("ipset").args(["destroy", "azure-npm-new"]));
        common::run(node.ns.command("nft").args(["add table inet azure-npm { comment \"azure-npm/1\"; }"]));
        common::run(node.ns.command("nft").args(["add set inet azure-npm hold { type ipv4_addr; }"]));
        let pod = Netns::new("nftheld");
        let ip = node.cni("ADD", &pod, &conf).address().split('/').next().unwrap().to_string();
        assert_eq!(nft_held(node), [ip], "{mode}: held in the nftables set at ADD");
        assert!(node.cni("DEL", &pod, &conf).ok);
        assert!(nft_held(node).is_empty(), "{mode}: released from the nftables set at DEL");
        // DEL of a pod the agent already let through: nothing to release, still fine.
        let pod = Netns::new("nftheld2");
        node.cni("ADD", &pod, &conf).address();
        common::run(node.ns.command("nft").args(["flush set inet azure-npm hold"]));
        assert!(node.cni("DEL", &pod, &conf).ok);
    }
}

fn nft_held(lab_node: &common::lab::LabNode) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab_node.ns.name, "nft", "list", "set", "inet", "azure-npm", "hold"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split("elements = { ").nth(1) {
        Some(rest) => rest.split('}').next().unwrap().split(',').map(|s| s.trim().to_string()).collect(),
        None => Vec::new(),
    }
}
