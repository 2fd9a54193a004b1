//! Real packets: the pods of a conformance case become network namespaces routed through a
//! "node" namespace (no bridge, so no dependence on br_netfilter), the agent programs the node
//! from the case's YAML, and a TCP connection is tried for every ordered pair. The connections
//! that succeed must be exactly the ones the case expects.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

use policy_compiler::model::Protocol;
use policy_compiler::reach::{endpoints, reachability, Engine};
use policy_compiler::snapshot::Snapshot;

const NPM: &str = env!("CARGO_BIN_EXE_azure-npm");
const CASE: &str = "04-namespace-and-pod-selector-and";
const EXTERNAL: &str = "203.0.113.9";

struct Guard {
    netns: Vec<String>,
    servers: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        for n in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const SERVE: &str =
    "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',80))\ns.listen(64)\nwhile True:\n  c,a=s.accept()\n  c.close()\n";

fn connects(netns: &str, source: &str, to: IpAddr) -> bool {
    let code = format!(
        "import socket\ns=socket.socket()\ns.settimeout(1)\ns.bind(('{source}',0))\ns.connect(('{to}',80))\nprint('ok')"
    );
    let out = Command::new("ip").args(["netns", "exec", netns, "python3", "-c", &code]).output().unwrap();
    out.status.success()
}

#[test]
fn kernel_verdicts_match_the_expected_truth_table() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "this test builds network namespaces and needs root: sudo scripts/test.sh"
    );
    let path = format!("{}/../testdata/policy/{CASE}.yaml", env!("CARGO_MANIFEST_DIR"));
    let cluster = Snapshot::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap().cluster;
    let external: IpAddr = EXTERNAL.parse().unwrap();
    let node_ip = cluster.nodes[0].internal_ip.unwrap().to_string();

    let tag = std::process::id();
    let node = format!("aznp{tag}-node");
    let mut g = Guard { netns: vec![node.clone()], servers: Vec::new() };
    sh(&["ip", "netns", "add", &node]);
    sh(&["ip", "-n", &node, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &node, "addr", "add", &format!("{node_ip}/32"), "dev", "lo"]);
    sh(&["ip", "netns", "exec", &node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    // Every host's gateway: a node address, answered on every veth (Linux's default ARP).
    sh(&["ip", "-n", &node, "addr", "add", "169.254.1.1/32", "dev", "lo"]);

    // Every endpoint (pods and the external host) gets a namespace routed through the node.
    let mut hosts: Vec<(String, IpAddr, String)> = Vec::new(); // (name, address, namespace)
    for p in &cluster.pods {
        hosts.push((p.key(), p.ip.unwrap(), String::new()));
    }
    hosts.push((EXTERNAL.to_string(), external, String::new()));
    for (i, (_, ip, ns)) in hosts.iter_mut().enumerate() {
        *ns = format!("aznp{tag}-h{i}");
        g.netns.push(ns.clone());
        let veth = format!("vh{i}");
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        sh(&["ip", "-n", &node, "link", "set", &veth, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv4.conf.{veth}.proxy_arp=1"),
        ]);
        sh(&["ip", "-n", &node, "route", "add", &format!("{ip}/32"), "dev", &veth]);
        sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0"]);
        sh(&["ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]);
        let server = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", SERVE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        g.servers.push(server);
    }

    // Before any policy, every host reaches every server (this proves the fabric and that the
    // servers listen, so denials below mean policy).
    for (_, ip, _) in &hosts {
        let start = std::time::Instant::now();
        while !connects(&node, &node_ip, *ip) {
            assert!(start.elapsed().as_secs() < 10, "{ip} is not reachable before any policy");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert!(
        connects(&hosts[0].2, &hosts[0].1.to_string(), hosts[1].1),
        "pod to pod does not work before policy"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&path, dir.path().join("cluster.yaml")).unwrap();
    sh(&[
        "ip",
        "netns",
        "exec",
        &node,
        NPM,
        "start",
        "--source",
        &format!("dir:{}", dir.path().display()),
        "--once",
    ]);

    let expected = reachability(&cluster, &[external], Protocol::Tcp, 80, Engine::Semantic);
    let (sources, _) = endpoints(&cluster, &[external]);
    assert_eq!(sources.len(), hosts.len() + 1, "pods, the external host and the node");
    let mut wrong = Vec::new();
    for row in &expected {
        let to = hosts.iter().find(|h| h.0 == row.to).unwrap().1;
        let (ns, source) = match hosts.iter().find(|h| h.0 == row.from) {
            Some(h) => (h.2.clone(), h.1.to_string()),
            None => (node.clone(), node_ip.clone()), // the node's own address
        };
        if connects(&ns, &source, to) != row.allowed {
            wrong.push(format!(
                "{} -> {}: expected {}",
                row.from,
                row.to,
                if row.allowed { "allowed" } else { "denied" }
            ));
        }
    }
    assert!(wrong.is_empty(), "the kernel disagrees on {} pairs:\n{}", wrong.len(), wrong.join("\n"));
}
