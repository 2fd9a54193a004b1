//! azure-vnet's bad input and faults, each with its exact CNI code, through the real binary.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::lab::{Lab, LabNode};
use common::{Netns, Reply};
use serde_json::{json, Value};

fn with(conf: &Value, key: &str, value: Value) -> Value {
    let mut c = conf.clone();
    c[key] = value;
    c
}

fn assert_clean(node: &LabNode) {
    assert!(node.veths().is_empty(), "veths left: {:?}", node.veths());
    assert_eq!(node.endpoints(), 0, "endpoint records left");
    assert_eq!(node.allocations(), 0, "allocations left");
}

#[test]
fn bad_configs_and_environments_get_exact_codes() {
    let lab = Lab::new(1, 4);
    let node = &lab.nodes[0];
    let conf = node.config("1.0.0");
    let pod = Netns::new("p");
    // Before any successful ADD, so the bridge takeover is what fails.
    let reply = node.cni("ADD", &pod, &with(&conf, "master", json!("eth9")));
    assert_eq!(reply.code(), 110, "master not on the host: {}", reply.json);
    assert!(!node.links().contains(&"azure0".to_string()), "a failed takeover leaves no bridge");

    let cases: Vec<(&str, Value, u64, &str)> = vec![
        ("unknown mode", with(&conf, "mode", json!("vxlan")), 7, "mode"),
        ("bridge name too long", with(&conf, "bridge", json!("azure-bridge-0123")), 7, "bridge"),
        ("bridge name with a slash", with(&conf, "bridge", json!("az/0")), 7, "bridge"),
        ("master is loopback", with(&conf, "master", json!("lo")), 7, "master"),
        ("master is the bridge", with(&conf, "master", json!("azure0")), 7, "master"),
        ("IPAM plugin missing", with(&conf, "ipam", json!({"type": "no-such-ipam"})), 111, "no-such-ipam"),
        ("cniVersion unsupported", with(&conf, "cniVersion", json!("0.2.0")), 1, "0.2.0"),
    ];
    for (what, c, code, needle) in cases {
        let reply = node.cni("ADD", &pod, &c);
        assert_eq!(reply.code(), code, "{what}: {}", reply.json);
        assert!(reply.json["msg"].as_str().unwrap().contains(needle), "{what}: {}", reply.json);
        assert!(!node.links().contains(&"azure0".to_string()), "{what} left a bridge");
        assert!(!node.state_file().exists() || node.endpoints() == 0, "{what} left a record");
    }
    let long_ifname = node.cni_raw("ADD", "c1", &pod.path(), "eth0-much-too-long", &conf);
    assert_eq!(long_ifname.code(), 4, "ifname > 15 chars");
    let no_netns = node.cni_raw("ADD", "c1", Path::new("/var/run/netns/does-not-exist"), "eth0", &conf);
    assert_eq!(no_netns.code(), 4, "netns path missing: {}", no_netns.json);
    assert!(no_netns.json["msg"].as_str().unwrap().contains("CNI_NETNS"));
    assert_clean(node);

    // None of that shaped what a valid ADD does; then a mode the node is not in is refused.
    node.cni("ADD", &pod, &conf).address();
    let other = Netns::new("other");
    let reply = node.cni("ADD", &other, &with(&conf, "mode", json!("transparent")));
    assert_eq!(reply.code(), 7, "{}", reply.json);
    assert!(reply.json["msg"].as_str().unwrap().contains("bridge mode"), "{}", reply.json);
    assert!(node.cni("DEL", &pod, &conf).ok);
    assert_clean(node);
}

#[test]
fn an_address_outside_the_vnet_is_refused_and_released() {
    let lab = Lab::new(1, 4);
    let node = &lab.nodes[0];
    let data = node.dir.path().join("host-local");
    let ipam = json!({"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.99.0.0/24"}]]});
    let conf = with(&node.config("1.0.0"), "ipam", ipam);
    let pod = Netns::new("p");
    let mut cmd = node.cni_command("ADD", &pod.name, &pod.path(), "eth0");
    cmd.env("CNI_PATH", "/usr/lib/cni");
    let reply = Reply::from_output(common::pipe(cmd, &conf));
    assert_eq!(reply.code(), 117, "{}", reply.json);
    let msg = reply.json["msg"].as_str().unwrap();
    assert!(
        msg.contains("10.99.0.") && msg.contains("outside the VNet") && msg.contains("10.240.0.0/16"),
        "{msg}"
    );
    let held: Vec<_> =
        std::fs::read_dir(data.join("azure")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(
        held.iter().all(|e| !e.file_name().to_string_lossy().starts_with("10.99.")),
        "released: {held:?}"
    );
    assert_clean(node);
}

#[test]
fn ipam_failures_pass_through_and_roll_back() {
    let lab = Lab::new(1, 1);
    let node = &lab.nodes[0];
    let conf = node.config("1.0.0");
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    node.cni("ADD", &a, &conf).address();
    let reply = node.cni("ADD", &b, &conf);
    assert_eq!(reply.code(), 101, "the IPAM plugin's own code: {}", reply.json);
    assert_eq!(node.veths().len(), 1, "the failed ADD left no veth");

    // An IPAM plugin that crashes without a CNI error.
    let bin = node.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let broken = bin.join("broken-ipam");
    std::fs::write(&broken, "#!/bin/sh\necho 'segfault, sort of' >&2\nexit 139\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = node.cni_command("ADD", &b.name, &b.path(), "eth0");
    cmd.env("CNI_PATH", &bin);
    let reply = Reply::from_output(common::pipe(cmd, &with(&conf, "ipam", json!({"type": "broken-ipam"}))));
    assert_eq!(reply.code(), 112, "{}", reply.json);
    assert!(reply.json["msg"].as_str().unwrap().contains("segfault"), "keeps the plugin's words");

    assert!(node.cni("DEL", &a, &conf).ok);
    assert_clean(node);
}

#[test]
fn an_address_already_on_the_node_is_refused_and_released() {
    let lab = Lab::new(1, 1);
    let node = &lab.nodes[0];
    common::ip(&["-n", &node.ns.name, "addr", "add", "10.240.1.1/32", "dev", "lo"]);
    let pod = Netns::new("p");
    let reply = node.cni("ADD", &pod, &node.config("1.0.0"));
    assert_eq!(reply.code(), 113, "{}", reply.json);
    assert!(reply.json["msg"].as_str().unwrap().contains("lo"), "names the interface: {}", reply.json);
    assert_clean(node);
}

#[test]
fn duplicate_add_del_twice_and_vanished_netns_are_harmless() {
    let lab = Lab::new(1, 4);
    let node = &lab.nodes[0];
    let conf = node.config("1.0.0");
    let pod = Netns::new("p");
    let first = node.cni("ADD", &pod, &conf);
    let again = node.cni("ADD", &pod, &conf);
    assert_eq!(first.json, again.json, "a repeated ADD returns the same result");
    assert_eq!(node.veths().len(), 1, "and makes no second veth");
    assert!(node.cni("DEL", &pod, &conf).ok);
    assert!(node.cni("DEL", &pod, &conf).ok, "DEL twice");
    assert_clean(node);

    let gone = Netns::new("gone");
    node.cni("ADD", &gone, &conf).address();
    let path = gone.path();
    drop(gone);
    let reply = node.cni_raw("DEL", &path.file_name().unwrap().to_string_lossy(), &path, "eth0", &conf);
    assert!(reply.ok, "DEL after the netns is gone: {}", reply.json);
    assert_clean(node);
    let unknown = Netns::new("unknown");
    assert_eq!(node.cni("CHECK", &unknown, &with(&conf, "prevResult", first.json.clone())).code(), 3);
}

#[test]
fn an_add_killed_midway_is_retried_cleanly() {
    let lab = Lab::new(1, 8);
    let node = &lab.nodes[0];
    let conf = node.config("1.0.0");
    node.cni("ADD", &Netns::new("warm"), &conf); // the bridge takeover is not what we interrupt
    let pod = Netns::new("p");
    for delay_ms in [1u64, 3, 6, 10, 15, 25] {
        let mut child = node
            .cni_command("ADD", &pod.name, &pod.path(), "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // The runtime retries: the ADD must succeed and leave exactly one veth for the pod.
        let reply = node.cni("ADD", &pod, &conf);
        assert!(reply.ok, "retry after a kill at {delay_ms} ms: {}", reply.json);
        let veth = node.veths().into_iter().filter(|v| *v == host_veth_of(&pod)).count();
        assert_eq!(veth, 1);
        assert!(node.cni("DEL", &pod, &conf).ok);
    }
    assert_eq!(node.allocations(), 1, "only the warm-up pod holds an address");
}

fn host_veth_of(pod: &Netns) -> String {
    cni::vnet::names::host_veth(&pod.name, "eth0")
}
