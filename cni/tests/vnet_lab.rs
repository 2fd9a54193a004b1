//! azure-vnet end to end: two nodes on an emulated VNet switch, a router and an internet host.
//! 250 pods on node 1 through the real binaries; they reach each other, their node, pods on
//! node 2 and (SNATed to the node's address) the internet; a port mapping answers node 2; DEL
//! of everything leaves nothing. The same suite runs for cniVersion 0.3.0, 0.4.0 and 1.0.0.

mod common;

use std::process::{Command, Stdio};

use common::lab::{
    count_from, forget_neighbors, pings, reaches, Lab, Server, GATEWAY, INTERNET_HOST, RETRIES,
};
use common::{run, Netns};
use serde_json::json;

const PODS: usize = 250;

const SERVE: &str = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',80))\ns.listen(8)\nwhile True:\n  c,a=s.accept()\n  c.sendall(b'hello from pod\\n')\n  c.close()\n";

fn fetch(from: &Netns, host: &str, port: u16) -> Option<String> {
    let code = format!(
        "import socket\nprint(socket.create_connection(('{host}',{port}),timeout=2).recv(64).decode())"
    );
    for _ in 0..20 {
        let out = from.command("python3").args(["-c", &code]).output().ok()?;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    None
}

/// What the kernel shows about some namespaces, for failure messages.
fn diagnose(lab: &Lab, pods: &[&Netns]) -> String {
    let mut out = String::new();
    for p in pods {
        for args in [&["-br", "addr"][..], &["route"], &["neigh"], &["-s", "link"]] {
            let o = Command::new("ip").args(["-n", &p.name]).args(args).output().unwrap();
            out += &format!("{} ip {}:\n{}\n", p.name, args.join(" "), String::from_utf8_lossy(&o.stdout));
        }
    }
    let node = &lab.nodes[0].ns.name;
    let o = Command::new("ip").args(["-n", node, "-br", "link"]).output().unwrap();
    out += &format!(
        "node links:\n{}\n",
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.contains("UP "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    out
}

fn address_of(reply: &common::Reply) -> String {
    reply.address().split('/').next().unwrap().to_string()
}

/// The suites share the kernel's ARP table (see `forget_neighbors`): one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn whole_suite(version: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(2, PODS);
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let conf = n1.config(version);
    let mut mapped = conf.clone();
    mapped["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});

    let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new(&format!("a{i}"))).collect();
    let mut addrs = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let reply = n1.cni("ADD", pod, if i == 0 { &mapped } else { &conf });
        assert_eq!(reply.json["cniVersion"], version);
        assert_eq!(
            reply.json["ips"][0].get("version").is_some(),
            version.starts_with("0."),
            "{}",
            reply.json
        );
        assert_eq!(reply.json["interfaces"][1]["sandbox"], pod.path().display().to_string());
        addrs.push(address_of(&reply));
    }
    assert_eq!(n1.veths().len(), PODS);

    // The node kept its address and connectivity after the bridge took over eth0.
    let bridge = run(Command::new("ip").args(["-n", &n1.ns.name, "-br", "addr", "show", "azure0"]));
    assert!(String::from_utf8_lossy(&bridge.stdout).contains(&format!("{}/16", n1.ip)));
    assert!(pings(&n1.ns, GATEWAY) && pings(&n1.ns, &n2.ip), "node 1 lost the VNet");

    let remote: Vec<Netns> = (0..2).map(|i| Netns::new(&format!("b{i}"))).collect();
    let remote_addrs: Vec<String> =
        remote.iter().map(|p| address_of(&n2.cni("ADD", p, &n2.config(version)))).collect();

    for (i, pod) in pods.iter().enumerate() {
        let next = &addrs[(i + 1) % PODS];
        assert!(
            reaches(pod, &pods[(i + 1) % PODS], next),
            "{} cannot reach pod {next}\n{}",
            pod.name,
            diagnose(&lab, &[pod, &pods[(i + 1) % PODS]])
        );
        assert!(reaches(pod, &n1.ns, &n1.ip), "{} cannot reach its node", pod.name);
        if i % 25 == 0 {
            assert!(
                reaches(pod, &remote[i % 2], &remote_addrs[i % 2]),
                "{} cannot reach a pod on node 2",
                pod.name
            );
        }
        forget_neighbors(pod);
        if i % 50 == 49 {
            forget_neighbors(&n1.ns);
        }
    }
    assert!(reaches(&remote[0], &pods[0], &addrs[0]), "node 2's pod cannot reach node 1's");
    eprintln!(
        "{version}: pod reachability needed {} retries",
        RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Outbound SNAT: the internet host sees node 1's address, never a pod's.
    let node_source = format!("{}/32", n1.ip);
    count_from(&lab.inet, &node_source);
    count_from(&lab.inet, "10.240.1.0/24");
    for pod in pods.iter().step_by(50) {
        assert!(
            pings(pod, INTERNET_HOST),
            "{} cannot reach the internet host\n{}",
            pod.name,
            diagnose(&lab, &[pod, &lab.inet])
        );
    }
    assert!(count_from(&lab.inet, &node_source) > 0, "no packet arrived from the node's address");
    assert_eq!(count_from(&lab.inet, "10.240.1.0/24"), 0, "a pod address leaked past SNAT");

    // The port mapping answers from node 2.
    let _server =
        Server(pods[0].command("python3").args(["-c", SERVE]).stdout(Stdio::null()).spawn().unwrap());
    let answer = fetch(&n2.ns, &n1.ip, 8080);
    assert_eq!(answer.as_deref().map(str::trim), Some("hello from pod"), "port mapping 8080 -> pod:80");

    if version != "0.3.0" {
        let mut check = conf.clone();
        check["prevResult"] = n1.cni("ADD", &pods[1], &conf).json; // a repeated ADD returns the result
        let reply = n1.cni("CHECK", &pods[1], &check);
        assert!(reply.ok, "CHECK: {} {}", reply.json, reply.stderr);
    }

    for (i, pod) in pods.iter().enumerate() {
        let reply = n1.cni("DEL", pod, if i == 0 { &mapped } else { &conf });
        assert!(reply.ok, "DEL {}: {}", pod.name, reply.json);
    }
    assert!(n1.veths().is_empty(), "veths left: {:?}", n1.veths());
    assert_eq!(n1.endpoints(), 0, "endpoint records left");
    assert_eq!(n1.allocations(), 0, "allocations left");
    let nat = n1.nat_rules();
    assert!(!nat.contains("-A AZURE-VNET-DNAT"), "pod-specific rules left:\n{nat}");
    assert!(nat.contains("-A AZURE-VNET-SNAT"), "the node-wide SNAT stays");
    assert_eq!(lab.spoofed(), 0, "the VNet dropped spoofed frames:\n{}", lab.counters());
}

#[test]
fn suite_with_cni_1_0_0() {
    whole_suite("1.0.0");
}

#[test]
fn suite_with_cni_0_4_0() {
    whole_suite("0.4.0");
}

#[test]
fn suite_with_cni_0_3_0() {
    whole_suite("0.3.0");
}
