//! The fabric enforces Azure's rules, each checked with real traffic or hand-made frames:
//! one ARP answer (12:34:56:78:9a:bc) for every address, no broadcast, delivery by owned IP
//! with the owner NIC's MAC, spoofed MAC/ARP/IP dropped and counted per port.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use vnet_fabric::{Fabric, Kind, Nic, Spec, Uplink, HOST_MAC};

const FRAME: &str = include_str!("../../testdata/fabric/frame.py");
const MAC1: &str = "00:0d:3a:00:00:01";
const MAC2: &str = "00:0d:3a:00:00:02";
const OTHER_MAC: &str = "02:00:00:00:00:99";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A namespace this test made, deleted on drop (also when the test fails).
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("azf{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        testkit::add_netns(&name);
        Ns(name)
    }

    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.0, program]).args(args).output().unwrap()
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.0]).args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pings(&self, to: &str) -> bool {
        self.exec("ping", &["-c", "1", "-W", "1", to]).status.success()
    }

    fn neighbour_mac(&self, ip: &str) -> Option<String> {
        let line = self.ip(&["neigh", "show", ip, "dev", "eth0"]);
        let words: Vec<&str> = line.split_whitespace().collect();
        words.iter().position(|w| *w == "lladdr").map(|i| words[i + 1].to_string())
    }

    /// Sends one crafted frame out of eth0 (see testdata/fabric/frame.py).
    fn send(&self, args: &[&str]) {
        let mut all = vec!["-c", FRAME, "eth0"];
        all.extend_from_slice(args);
        let out = self.exec("python3", &all);
        assert!(out.status.success(), "frame.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Counts frames arriving on eth0 that match `filter` (an nft expression).
    fn watch(&self, name: &str, filter: &str) {
        let rules = format!(
            "table netdev watch {{\n counter {name} {{ }}\n chain {name} {{\n  type filter hook ingress device \"eth0\" priority -10; policy accept;\n  {filter} counter name {name}\n }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft watch rule: {rules}");
    }

    fn seen(&self, name: &str) -> u64 {
        let out = self.exec("nft", &["list", "counter", "netdev", "watch", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name}: {text}"))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        testkit::del_netns(&self.0);
    }
}

/// Waits (up to 10 s) for what a sent frame causes: a frame crosses several veths' backlogs,
/// which a loaded machine may run late. Fails loudly when it never happens.
fn settles(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "gave up waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Two nodes and an internet host on one fabric.
struct Bed {
    fabric: Fabric,
    nic2: Nic,
    node1: Ns,
    node2: Ns,
    inet: Ns,
    _fabric_ns: Ns,
}

fn bed(kind: Kind) -> Bed {
    let fabric_ns = Ns::new("fab");
    let spec =
        Spec { kind, subnet: "10.240.0.0/16".parse().unwrap(), gateway: "10.240.0.1".parse().unwrap() };
    let fabric = Fabric::create(&fabric_ns.0, &spec).unwrap();
    let nic1 = Nic {
        port: "pn1".into(),
        mac: MAC1.into(),
        primary: "10.240.0.4".parse().unwrap(),
        secondaries: vec!["10.240.1.1".parse().unwrap(), "10.240.1.2".parse().unwrap()],
    };
    let nic2 = Nic {
        port: "pn2".into(),
        mac: MAC2.into(),
        primary: "10.240.0.5".parse().unwrap(),
        secondaries: vec!["10.240.2.1".parse().unwrap()],
    };
    let (node1, node2, inet) = (Ns::new("n1"), Ns::new("n2"), Ns::new("inet"));
    for (node, nic) in [(&node1, &nic1), (&node2, &nic2)] {
        fabric.plug(&node.0, "eth0", nic).unwrap();
        node.ip(&["addr", "add", &format!("{}/16", nic.primary), "dev", "eth0"]);
        node.ip(&["route", "add", "default", "via", "10.240.0.1"]);
        // The nodes' own IPv6 chatter would only muddy the counters.
        node.exec("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
    }
    fabric
        .uplink(&Uplink {
            peer_ns: inet.0.clone(),
            local: "203.0.113.1/24".parse().unwrap(),
            peer: "203.0.113.10/24".parse().unwrap(),
        })
        .unwrap();
    Bed { fabric, nic2, node1, node2, inet, _fabric_ns: fabric_ns }
}

#[test]
fn every_arp_request_is_answered_with_the_host_mac() {
    let b = bed(Kind::Azure);
    assert!(b.node1.pings("10.240.0.5"), "node 1 reaches node 2");
    assert!(b.node1.pings("10.240.0.1"), "and the gateway");
    // Addresses nobody answers for still resolve: another NIC's secondary (not configured on
    // node 2), node 1's own secondary, and an address no NIC owns.
    for ip in ["10.240.2.1", "10.240.1.1", "10.240.9.9"] {
        assert!(!b.node1.pings(ip), "{ip} has no host behind it");
    }
    for ip in ["10.240.0.5", "10.240.0.1", "10.240.2.1", "10.240.1.1", "10.240.9.9"] {
        assert_eq!(b.node1.neighbour_mac(ip).as_deref(), Some(HOST_MAC), "ARP for {ip}");
    }
    assert_eq!(
        b.node2.neighbour_mac("10.240.0.4").as_deref(),
        Some(HOST_MAC),
        "node 2 learnt node 1 as the host"
    );
    assert_eq!(b.fabric.counters().unwrap().spoofed_total(), 0);
}

#[test]
fn delivery_is_by_owned_ip_with_the_owner_nics_mac_and_nothing_else_arrives() {
    let b = bed(Kind::Azure);
    b.node2.watch("secondary", &format!("ether saddr {HOST_MAC} ether daddr {MAC2} ip daddr 10.240.2.1"));
    b.node2.watch("anything", "meta pkttype != host");
    b.node2.watch("every", "ether saddr != 00:00:00:00:00:00");
    b.node1.pings("10.240.2.1");
    assert!(b.node2.seen("secondary") >= 1, "a secondary's packet arrived at its NIC with the NIC's MAC");
    // Broadcasts: node 1's ARP requests and a broadcast ping reach no other NIC.
    b.node1.exec("ping", &["-b", "-c", "2", "-i", "0.2", "-W", "1", "10.240.255.255"]);
    b.node1.send(&["ipv4", MAC1, "ff:ff:ff:ff:ff:ff", "10.240.0.4", "10.240.0.5", "7777"]);
    settles("the broadcasts to be counted", || b.fabric.counters().unwrap().port("pn1").broadcast >= 2);
    assert_eq!(b.node2.seen("anything"), 0, "node 2 saw a broadcast or a frame not addressed to it");
    // Unowned destinations are dropped by the fabric and counted.
    b.node1.pings("10.240.9.9");
    assert!(b.fabric.counters().unwrap().port("pn1").unowned >= 1);
    let before = b.node2.seen("every");
    assert!(b.node1.pings("10.240.0.5"));
    assert!(b.node2.seen("every") > before);
}

#[test]
fn spoofed_frames_are_dropped_and_counted_per_port() {
    let b = bed(Kind::Azure);
    b.node2.watch("spoofed", "udp dport 7777");
    b.node2.watch("genuine", "udp dport 9999");
    let n1 = &b.node1;
    n1.send(&["ipv4", OTHER_MAC, HOST_MAC, "10.240.0.4", "10.240.0.5", "7777"]);
    n1.send(&["ipv4", MAC1, HOST_MAC, "10.240.7.7", "10.240.0.5", "7777"]);
    n1.send(&["ipv4", MAC1, HOST_MAC, "10.240.2.1", "10.240.0.5", "7777"]); // node 2's address
    n1.send(&["arp", MAC1, "ff:ff:ff:ff:ff:ff", OTHER_MAC, "10.240.0.4", "10.240.0.5"]);
    n1.send(&["arp", MAC1, "ff:ff:ff:ff:ff:ff", MAC1, "10.240.7.7", "10.240.0.5"]);
    n1.send(&["arp", OTHER_MAC, "ff:ff:ff:ff:ff:ff", OTHER_MAC, "10.240.0.4", "10.240.0.5"]);
    n1.send(&["ipv4", MAC1, MAC2, "10.240.0.4", "10.240.0.5", "7777"]); // to node 2's MAC directly
    n1.send(&["ipv6", MAC1, HOST_MAC]);
    n1.send(&["ipv4", MAC1, HOST_MAC, "10.240.1.2", "10.240.0.5", "9999"]); // a secondary: genuine
    settles("every frame's verdict", || {
        let c = b.fabric.counters().unwrap().port("pn1");
        b.node2.seen("genuine") >= 1
            && c.spoofed_mac + c.spoofed_ip + c.spoofed_arp >= 6
            && c.not_for_host >= 1
            && c.other_protocol >= 1
    });
    let c = b.fabric.counters().unwrap().port("pn1");
    assert_eq!((c.spoofed_mac, c.spoofed_ip, c.spoofed_arp), (2, 2, 2), "{c:?}");
    assert_eq!(c.not_for_host, 1, "{c:?}");
    assert!(c.other_protocol >= 1, "{c:?}");
    assert_eq!(b.node2.seen("spoofed"), 0, "no spoofed frame reached node 2");
    assert_eq!(b.node2.seen("genuine"), 1, "a NIC may send from any of its addresses");
    assert_eq!(b.fabric.counters().unwrap().port("pn2").spoofed(), 0);
}

#[test]
fn a_pool_change_moves_ownership() {
    let mut b = bed(Kind::Azure);
    b.node2.watch("new", "ip daddr 10.240.2.2");
    b.node1.pings("10.240.2.2");
    assert_eq!(b.node2.seen("new"), 0, "not owned yet");
    b.nic2.secondaries.push("10.240.2.2".parse().unwrap());
    b.fabric.set_owned(&b.nic2).unwrap();
    b.node1.pings("10.240.2.2");
    assert!(b.node2.seen("new") >= 1, "delivered once node 2 owns it");
    b.node2.ip(&["addr", "add", "10.240.2.2/32", "dev", "eth0"]);
    assert!(b.node2.exec("ping", &["-c", "1", "-W", "1", "-I", "10.240.2.2", "10.240.0.4"]).status.success());
    assert!(b.node1.pings("10.240.0.5"), "the primary still routes after the change");
    assert_eq!(b.fabric.counters().unwrap().spoofed_total(), 0);
}

#[test]
fn the_uplink_carries_vnet_sources_unchanged() {
    let b = bed(Kind::Azure);
    b.inet.watch("from_node1", "ip saddr 10.240.0.4");
    assert!(b.node1.pings("203.0.113.10"), "node 1 reaches the internet host");
    assert!(b.inet.seen("from_node1") >= 1);
}

#[test]
fn the_switch_kind_is_a_plain_learning_switch() {
    let b = bed(Kind::Switch);
    assert!(b.node1.pings("10.240.0.5"));
    assert_eq!(b.node1.neighbour_mac("10.240.0.5").as_deref(), Some(MAC2), "the owner answers its own ARP");
    b.node2.watch("spoofed", "udp dport 7777");
    b.node1.send(&["ipv4", OTHER_MAC, MAC2, "10.240.7.7", "10.240.0.5", "7777"]);
    settles("the spoofed frame to arrive", || b.node2.seen("spoofed") >= 1);
    assert_eq!(b.node2.seen("spoofed"), 1, "a switch forwards spoofed frames");
    assert!(b.node1.pings("203.0.113.10"));
    assert_eq!(b.fabric.counters().unwrap().spoofed_total(), 0, "a switch counts nothing");
}
