//! azure-vnet under parallel load on a fresh node: an 8-way ADD/DEL storm, and a burst of 250
//! ADDs started at once (Azure's plugin times out on its node-wide lock past ~150). Both end
//! with no failures and, after DEL of everything, nothing left behind.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Stdio};
use std::sync::Mutex;

use common::lab::{Lab, LabNode};
use common::{Netns, Reply};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn assert_nothing_left(node: &LabNode) {
    assert!(node.veths().is_empty(), "veths left: {:?}", node.veths());
    assert_eq!(node.endpoints(), 0, "endpoint records left");
    assert_eq!(node.allocations(), 0, "allocations left");
    let nat = node.nat_rules();
    assert!(!nat.contains("-A AZURE-VNET-DNAT"), "port-mapping rules left:\n{nat}");
    let out = common::run(std::process::Command::new("ip").args(["-n", &node.ns.name, "-o", "addr"]));
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(!addrs.contains("10.240.1."), "pod addresses on the node:\n{addrs}");
}

#[test]
fn an_8_way_storm_on_a_fresh_node_has_no_failures_and_no_leftovers() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(1, 250);
    let node = &lab.nodes[0];
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    std::thread::scope(|s| {
        for w in 0..8u64 {
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed + w);
                let pods: Vec<Netns> = (0..5).map(|i| Netns::new(&format!("w{w}p{i}"))).collect();
                let mut live = vec![false; pods.len()];
                for _ in 0..30 {
                    let i = rng.gen_range(0..pods.len());
                    // Some pods carry a port mapping, so iptables changes race too.
                    let mut conf = node.config("1.0.0");
                    if i == 0 {
                        let port = 20000 + w * 10;
                        conf["runtimeConfig"] =
                            json!({"portMappings": [{"hostPort": port, "containerPort": 80}]});
                    }
                    let command = if live[i] && rng.gen_bool(0.6) { "DEL" } else { "ADD" };
                    let reply = node.cni(command, &pods[i], &conf);
                    assert!(reply.ok, "{command} {}: {} {}", pods[i].name, reply.json, reply.stderr);
                    live[i] = command == "ADD";
                }
                for (i, pod) in pods.iter().enumerate() {
                    let mut conf = node.config("1.0.0");
                    if i == 0 {
                        conf["runtimeConfig"] =
                            json!({"portMappings": [{"hostPort": 20000 + w * 10, "containerPort": 80}]});
                    }
                    assert!(node.cni("DEL", pod, &conf).ok);
                }
            });
        }
    });
    assert_nothing_left(node);
}

fn start(node: &LabNode, command: &str, pod: &Netns, conf: &Value) -> Child {
    let mut child = node
        .cni_command(command, &pod.name, &pod.path(), "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    child
}

#[test]
fn a_burst_of_250_adds_at_once_all_succeed_without_lock_timeouts() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(1, 250);
    let node = &lab.nodes[0];
    let conf = node.config("1.0.0");
    let pods: Vec<Netns> = (0..250).map(|i| Netns::new(&format!("burst{i}"))).collect();
    let children: Vec<Child> = pods.iter().map(|p| start(node, "ADD", p, &conf)).collect();
    let mut addresses = HashSet::new();
    for (pod, child) in pods.iter().zip(children) {
        let reply = Reply::from_output(child.wait_with_output().unwrap());
        assert!(reply.ok, "ADD {}: {} {}", pod.name, reply.json, reply.stderr);
        assert!(addresses.insert(reply.address()), "address handed out twice");
    }
    assert_eq!(node.veths().len(), 250);
    let children: Vec<Child> = pods.iter().map(|p| start(node, "DEL", p, &conf)).collect();
    for (pod, child) in pods.iter().zip(children) {
        let reply = Reply::from_output(child.wait_with_output().unwrap());
        assert!(reply.ok, "DEL {}: {}", pod.name, reply.json);
    }
    assert_nothing_left(node);
}
