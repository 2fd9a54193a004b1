//! azure-vnet killed (SIGKILL) right after each point of an ADD, in both modes, with a port
//! mapping so every kind of step is hit: after the IPAM ADD, after the record, after each
//! step of the plan. Then, for each point: a DEL cleans everything; or the runtime retries the
//! ADD, which succeeds and returns what a further ADD returns; or it forgets the pod and GC
//! cleans everything. "Everything": veths, records, addresses, MAC translation elements,
//! bridge neighbour entries, node routes to pods, port-mapping rules.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use common::lab::{Lab, LabNode};
use common::{pipe, Netns, Reply};
use serde_json::{json, Value};

fn add_killed_at(node: &LabNode, pod: &Netns, conf: &Value, point: &str) {
    let mut cmd = node.cni_command("ADD", &pod.name, &pod.path(), "eth0");
    cmd.env("AZURE_VNET_TEST_CRASH_AFTER", point);
    let out = pipe(cmd, conf);
    assert_eq!(out.status.signal(), Some(9), "ADD should have been killed after {point}: {out:?}");
}

fn run_in(node: &LabNode, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &node.ns.name]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one pod has left on the node once the reaper is done (DEL and GC leave the deletion
/// of veths and translation elements to it, about half a second later): empty when nothing.
/// Looks for up to 5 s, so a reaper that does not work fails the caller's check.
fn leftovers(node: &LabNode, pod: &Netns) -> Vec<String> {
    let mut left = Vec::new();
    for _ in 0..25 {
        left = leftovers_now(node, pod);
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    left
}

fn leftovers_now(node: &LabNode, pod: &Netns) -> Vec<String> {
    let mut out = Vec::new();

    let veth = cni::vnet::names::host_veth(&pod.name, "eth0");
    if node.veths().contains(&veth) {
        out.push(format!("veth {veth}"));
    }
    let state = std::fs::read_to_string(node.state_file()).unwrap_or_default();
    if state.contains(&pod.name) || node.endpoint(&pod.name).is_some() {
        out.push("endpoint record".into());
    }
    let ipam = std::fs::read_to_string(node.ipam_state_file()).unwrap_or_default();
    if ipam.contains(&pod.name) {
        out.push("address allocation".into());
    }
    let map = run_in(node, &["nft", "list", "map", "bridge", "azure-vnet-azure0", "endpoints"]);
    if map.contains("0a:58:") {
        out.push(format!("translation elements: {}", map.trim()));
    }
    for line in run_in(node, &["ip", "neigh", "show", "nud", "permanent"]).lines() {
        if line.contains("0a:58:") {
            out.push(format!("neighbour {line}"));
        }
    }
    for line in run_in(node, &["ip", "route"]).lines() {
        if line.contains("azv") {
            out.push(format!("route {line}"));
        }
    }
    if node.nat_rules().contains(&format!("azure-vnet:{}/eth0", pod.name)) {
        out.push("port-mapping rules".into());
    }
    out
}

/// The crash points of an ADD: from the recorded plan of `pod` (an ADD killed after its last
/// step, on a fresh node, so the plan includes the once-per-subnet SNAT).
fn points(node: &LabNode, pod: &Netns) -> Vec<String> {
    let state: cni::vnet::state::VnetState =
        serde_json::from_str(&std::fs::read_to_string(node.state_file()).unwrap()).unwrap();
    let ep = node.endpoint(&pod.name).expect("the killed ADD left its record");
    let node_view = cni::vnet::mode::Node::from_record(state.node.as_ref().unwrap());
    let steps = cni::vnet::mode::driver(ep.mode).plan(&node_view, ep.attach.as_ref().unwrap());
    let mut names = vec!["ipam".to_string(), "record".to_string()];
    for s in steps {
        if !names.contains(&s.name().to_string()) {
            names.push(s.name().to_string());
        }
    }
    names
}

fn crash_everywhere(mode: &str) {
    let lab = Lab::new(1, 8);
    let node = &lab.nodes[0];
    let mut conf = node.config_in(mode, "1.1.0");
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    // The first ADD of a subnet also programs its SNAT: a crash right after it, then DEL.
    let first = Netns::new("first");
    add_killed_at(node, &first, &conf, "snat");
    let points = points(node, &first);
    assert!(node.cni("DEL", &first, &conf).ok);
    assert_eq!(leftovers(node, &first), Vec::<String>::new(), "{mode}: DEL after a crash at snat");
    assert!(node.nat_rules().contains("-A AZURE-VNET-SNAT"), "the node-wide SNAT stays");
    assert!(points.len() >= 9 && points.contains(&"snat".to_string()), "{mode}: {points:?}");
    eprintln!("{mode}: crash points {points:?}");
    // The warm-up ADD records the subnet's SNAT, so later plans do not have that step.
    let warm = Netns::new("warm");
    assert!(node.cni("ADD", &warm, &conf).ok && node.cni("DEL", &warm, &conf).ok);
    for point in points.iter().filter(|p| *p != "snat") {
        // The runtime retries DEL.
        let pod = Netns::new("del");
        add_killed_at(node, &pod, &conf, point);
        let reply = node.cni("DEL", &pod, &conf);
        assert!(reply.ok, "{mode} DEL after a crash at {point}: {}", reply.json);
        assert_eq!(leftovers(node, &pod), Vec::<String>::new(), "{mode}: DEL after a crash at {point}");

        // The runtime retries ADD: it works, and a further ADD returns the same result.
        let pod = Netns::new("add");
        add_killed_at(node, &pod, &conf, point);
        let first = node.cni("ADD", &pod, &conf);
        assert!(first.ok, "{mode} ADD after a crash at {point}: {}", first.json);
        let again = node.cni("ADD", &pod, &conf);
        assert_eq!(first.json, again.json, "{mode}: a repeated ADD returns the same result");
        let mut check = conf.clone();
        check["prevResult"] = first.json.clone();
        let reply = node.cni("CHECK", &pod, &check);
        assert!(reply.ok, "{mode} CHECK after a crash at {point} and a retry: {}", reply.json);
        assert!(node.cni("DEL", &pod, &conf).ok);
        assert_eq!(leftovers(node, &pod), Vec::<String>::new(), "{mode}: retried ADD then DEL at {point}");

        // The runtime forgets the pod: GC (with nothing valid) cleans up.
        let pod = Netns::new("gc");
        add_killed_at(node, &pod, &conf, point);
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        let reply = node.cni("GC", &pod, &gc);
        assert!(reply.ok, "{mode} GC after a crash at {point}: {}", reply.json);
        assert_eq!(leftovers(node, &pod), Vec::<String>::new(), "{mode}: GC after a crash at {point}");
    }
    assert_eq!((node.veths().len(), node.endpoints(), node.allocations()), (0, 0, 0));
    assert_eq!(lab.spoofed(), 0);
}

#[test]
fn a_crash_at_any_add_step_is_cleaned_by_del_retry_or_gc_in_bridge_mode() {
    crash_everywhere("bridge");
}

#[test]
fn a_crash_at_any_add_step_is_cleaned_by_del_retry_or_gc_in_transparent_mode() {
    crash_everywhere("transparent");
}

#[test]
fn gc_removes_translation_elements_and_neighbours_nobody_holds() {
    let lab = Lab::new(1, 4);
    let node = &lab.nodes[0];
    let conf = node.config("1.1.0");
    let pod = Netns::new("kept");
    node.cni("ADD", &pod, &conf).address();
    let ns = &node.ns.name;
    let stray = "add element bridge azure-vnet-azure0 endpoints { 10.240.1.99 : 0a:58:0a:f0:01:63 }";
    assert!(Command::new("ip").args(["netns", "exec", ns, "nft", stray]).status().unwrap().success());
    common::ip(&[
        "-n",
        ns,
        "neigh",
        "replace",
        "10.240.1.98",
        "lladdr",
        "0a:58:0a:f0:01:62",
        "dev",
        "azure0",
        "nud",
        "permanent",
    ]);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pod.name, "ifname": "eth0"}]);
    let reply = Reply::from_output(pipe(node.cni_command("GC", &pod.name, &pod.path(), "eth0"), &gc));
    assert!(reply.ok, "{}", reply.json);
    let map = run_in(node, &["nft", "list", "map", "bridge", "azure-vnet-azure0", "endpoints"]);
    assert!(
        !map.contains("10.240.1.99") && map.contains("0a:58:0a:f0:01:01"),
        "{map}\n{}",
        std::fs::read_to_string(node.dir.path().join("azure-vnet.log")).unwrap_or_default()
    );
    let neigh = run_in(node, &["ip", "neigh", "show", "dev", "azure0", "nud", "permanent"]);
    assert!(!neigh.contains("10.240.1.98") && neigh.contains("10.240.1.1"), "{neigh}");
    let mut check = conf.clone();
    check["prevResult"] = node.cni("ADD", &pod, &conf).json;
    assert!(node.cni("CHECK", &pod, &check).ok, "the valid pod is untouched");
}
