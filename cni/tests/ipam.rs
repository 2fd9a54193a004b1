//! azure-vnet-ipam exec'd as a runtime would, inside a node namespace with the emulated host agent.

mod common;

use common::{secondaries, Node, IPAM};
use serde_json::json;

#[test]
fn add_returns_a_pool_address_with_azures_gateway_route_and_dns_in_every_version() {
    let node = Node::new("versions", 10);
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let reply = node.ipam_call("ADD", &format!("c{i}"), &node.config(version));
        let addr = reply.address();
        assert!(secondaries(10).iter().any(|s| addr == format!("{s}/16")), "{addr} is from the pool");
        let r = &reply.json;
        assert_eq!(r["cniVersion"], *version);
        assert_eq!(r["ips"][0]["gateway"], "10.240.0.1");
        assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.240.0.1"}));
        assert_eq!(r["dns"]["nameservers"], json!(["168.63.129.16"]));
        assert_eq!(r["ips"][0].get("version").is_some(), version.starts_with("0."), "{version}");
        assert!(r.get("interfaces").is_none());
    }
}

#[test]
fn the_node_primary_address_is_never_handed_out_and_repeated_add_is_stable() {
    let node = Node::new("stable", 3);
    let conf = node.config("1.0.0");
    let first = node.ipam_call("ADD", "c1", &conf).address();
    assert_ne!(first, "10.240.0.4/16");
    assert_eq!(node.ipam_call("ADD", "c1", &conf).address(), first, "a retried ADD gets the same address");
    assert_eq!(node.allocations().len(), 1);
}

#[test]
fn del_releases_and_del_of_the_unknown_succeeds() {
    let node = Node::new("del", 3);
    let conf = node.config("1.0.0");
    assert!(node.ipam_call("DEL", "never-added", &conf).ok, "DEL before any state exists");
    node.ipam_call("ADD", "c1", &conf).address();
    let del = node.ipam_call("DEL", "c1", &conf);
    assert!(del.ok && del.json.is_null(), "{del:?}");
    assert!(node.allocations().is_empty());
    assert!(node.ipam_call("DEL", "c1", &conf).ok, "DEL twice");
}

#[test]
fn check_confirms_a_live_allocation_only() {
    let node = Node::new("check", 3);
    let conf = node.config("1.0.0");
    let added = node.ipam_call("ADD", "c1", &conf);
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = added.json.clone();
    assert!(node.ipam_call("CHECK", "c1", &with_prev).ok);
    assert_eq!(node.ipam_call("CHECK", "c2", &conf).code(), 3);
}

#[test]
fn the_ips_capability_and_cni_args_request_a_specific_address() {
    let node = Node::new("ips", 10);
    let mut conf = node.config("1.0.0");
    conf["runtimeConfig"] = json!({"ips": ["10.240.0.9/16"]});
    assert_eq!(node.ipam_call("ADD", "c1", &conf).address(), "10.240.0.9/16");
    let plain = node.config("1.0.0");
    let via_args = node.ipam_call_env("ADD", "c2", &plain, &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.240.0.11")]);
    assert_eq!(via_args.address(), "10.240.0.11/16");
}

#[test]
fn the_mas_environment_reads_the_interfaces_file() {
    let node = Node::new("mas", 0);
    let file = node.dir.path().join("interfaces.json");
    let doc = json!({"Interfaces": [{"MacAddress": "000D3A000001", "IsPrimary": true, "IPSubnets": [
        {"Prefix": "10.240.0.0/16", "IPAddresses": [
            {"Address": "10.240.0.4", "IsPrimary": true}, {"Address": "10.240.0.77", "IsPrimary": false}]}]}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let mut conf = node.config("1.0.0");
    conf["ipam"]["environment"] = "mas".into();
    conf["ipam"]["interfacesFile"] = json!(file);
    assert_eq!(node.ipam_call("ADD", "c1", &conf).address(), "10.240.0.77/16");
}

#[test]
fn a_refresh_picks_up_new_addresses_and_keeps_vanished_ones_in_use() {
    let node = Node::new("refresh", 1);
    let mut conf = node.config("1.0.0");
    conf["ipam"]["refreshIntervalMs"] = 0.into();
    let held = node.ipam_call("ADD", "c1", &conf).address();
    assert_eq!(node.ipam_call("ADD", "c2", &conf).code(), 101, "one address, already held");
    // The host agent now lists two other addresses and no longer the held one.
    node.set_answer(&common::nmagent_xml(common::NODE_MAC, &["10.240.0.50".into(), "10.240.0.51".into()]));
    let fresh = node.ipam_call("ADD", "c2", &conf).address();
    assert!(fresh == "10.240.0.50/16" || fresh == "10.240.0.51/16", "{fresh}");
    assert_eq!(
        node.ipam_call("ADD", "c1", &conf).address(),
        held,
        "the vanished address stays with its holder"
    );
    assert!(node.log().contains("no longer listed"), "the orphan is reported in the log");
    assert!(node.ipam_call("DEL", "c1", &conf).ok);
    assert_eq!(node.allocations().len(), 1);
}

#[test]
fn a_full_pool_is_refetched_before_giving_up() {
    let node = Node::new("refetch", 1);
    let conf = node.config("1.0.0"); // default refresh interval: 10 s, so only exhaustion refetches
    node.ipam_call("ADD", "c1", &conf).address();
    node.set_answer(&common::nmagent_xml(common::NODE_MAC, &secondaries(2)));
    node.ipam_call("ADD", "c2", &conf).address();
}

#[test]
fn a_host_agent_outage_is_ridden_out_on_the_cached_pool() {
    let node = Node::new("outage", 4);
    let mut conf = node.config("1.0.0");
    conf["ipam"]["refreshIntervalMs"] = 0.into();
    node.ipam_call("ADD", "c1", &conf).address();
    node.set_answer("<<< the host agent is broken");
    node.ipam_call("ADD", "c2", &conf).address();
    assert!(node.log().contains("using the cached pool"));
}

#[test]
fn gc_releases_every_attachment_not_listed_as_valid() {
    let node = Node::new("gc", 5);
    let conf = node.config("1.1.0");
    for c in ["keep", "drop1", "drop2"] {
        node.ipam_call("ADD", c, &conf).address();
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let reply = node.ipam_call("GC", "", &gc);
    assert!(reply.ok, "{reply:?}");
    let left: Vec<String> = node.allocations().into_iter().map(|(_, c)| c).collect();
    assert_eq!(left, ["keep"]);
}

#[test]
fn status_reports_availability() {
    let node = Node::new("status", 1);
    let conf = node.config("1.1.0");
    assert!(node.ipam_call("STATUS", "", &conf).ok);
    node.ipam_call("ADD", "c1", &conf).address();
    assert_eq!(node.ipam_call("STATUS", "", &conf).code(), 50, "no free address left");
}

#[test]
fn version_and_help_work_without_a_runtime() {
    let out = std::process::Command::new(IPAM).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("1.1.0"));
    let out = std::process::Command::new(IPAM).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("docs/cni-config.md"));
    let out = std::process::Command::new(IPAM).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
