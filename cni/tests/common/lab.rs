//! A small Azure VNet in network namespaces, for azure-vnet's tests:
//!
//! ```text
//!   node1 (eth0 10.240.0.4) ─┐                 ┌─ router (10.240.0.1 | 203.0.113.1) ── inet (203.0.113.10)
//!   node2 (eth0 10.240.0.5) ─┴── switch (sw0) ─┘
//! ```
//! Each node has its own host-agent emulator at 168.63.129.16 listing its pod pool
//! (node k: 10.240.k.1 – 10.240.k.250). Every namespace is removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{cni_env, ip, nmagent_xml_with_primary, pipe, Emulator, Netns, Reply};

pub const VNET: &str = env!("CARGO_BIN_EXE_azure-vnet");
pub const INTERNET_HOST: &str = "203.0.113.10";
pub const ROUTER: &str = "10.240.0.1";

pub struct Lab {
    pub nodes: Vec<LabNode>,
    pub router: Netns,
    pub inet: Netns,
    // Dropped last: the links of the others hang off it.
    pub switch: Netns,
}

pub struct LabNode {
    _emulator: Emulator,
    pub ns: Netns,
    pub ip: String,
    pub dir: tempfile::TempDir,
}

fn node_mac(k: usize) -> String {
    format!("00:0d:3a:00:00:{k:02x}")
}

/// Pod pool of node k.
pub fn pool(k: usize, count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("10.240.{k}.{i}")).collect()
}

impl Lab {
    pub fn new(nodes: usize, pool_size: usize) -> Lab {
        let switch = Netns::new("switch");
        let sw = switch.name.as_str();
        ip(&["-n", sw, "link", "add", "sw0", "type", "bridge"]);
        ip(&["-n", sw, "link", "set", "sw0", "up"]);
        let plug = |ns: &Netns, port: &str, mac: Option<&str>| {
            let mut args = vec!["-n", &ns.name, "link", "add", "eth0"];
            if let Some(m) = mac {
                args.extend(["address", m]);
            }
            args.extend(["type", "veth", "peer", "name", port, "netns", sw]);
            ip(&args);
            ip(&["-n", sw, "link", "set", port, "master", "sw0", "up"]);
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        };

        let router = Netns::new("router");
        plug(&router, "prouter", None);
        let r = router.name.as_str();
        ip(&["-n", r, "addr", "add", "10.240.0.1/16", "dev", "eth0"]);
        let inet = Netns::new("inet");
        ip(&["-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &inet.name]);
        ip(&["-n", r, "addr", "add", "203.0.113.1/24", "dev", "eth1"]);
        ip(&["-n", r, "link", "set", "eth1", "up"]);
        ip(&["-n", &inet.name, "addr", "add", "203.0.113.10/24", "dev", "eth0"]);
        ip(&["-n", &inet.name, "link", "set", "eth0", "up"]);
        // The internet host can answer the VNet, so the test can see which source it used.
        ip(&["-n", &inet.name, "route", "add", "10.240.0.0/16", "via", "203.0.113.1"]);
        super::run(router.command("sysctl").args(["-q", "-w", "net.ipv4.ip_forward=1"]));

        let nodes = (1..=nodes)
            .map(|k| {
                let ns = Netns::new(&format!("node{k}"));
                plug(&ns, &format!("pnode{k}"), Some(&node_mac(k)));
                let n = ns.name.as_str();
                let node_ip = format!("10.240.0.{}", 3 + k);
                ip(&["-n", n, "addr", "add", &format!("{node_ip}/16"), "dev", "eth0"]);
                ip(&["-n", n, "route", "add", "default", "via", ROUTER]);
                ip(&["-n", n, "addr", "add", "168.63.129.16/32", "dev", "lo"]);
                let dir = tempfile::tempdir().unwrap();
                let xml = dir.path().join("interfaces.xml");
                std::fs::write(&xml, nmagent_xml_with_primary(&node_mac(k), &node_ip, &pool(k, pool_size)))
                    .unwrap();
                let emulator = Emulator::start(&ns, "168.63.129.16:80", &xml, &[]);
                LabNode { ns, ip: node_ip, dir, _emulator: emulator }
            })
            .collect();
        Lab { nodes, router, inet, switch }
    }
}

impl LabNode {
    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("azure-vnet.json")
    }

    pub fn ipam_state_file(&self) -> PathBuf {
        self.dir.path().join("azure-vnet-ipam.json")
    }

    /// The seed's sample config, with state and logs kept in this node's temp dir.
    pub fn config(&self, version: &str) -> Value {
        json!({
            "cniVersion": version, "name": "azure", "type": "azure-vnet", "mode": "bridge",
            "master": "eth0", "bridge": "azure0", "logLevel": "debug",
            "stateFile": self.state_file(), "logFile": self.dir.path().join("azure-vnet.log"),
            "ipam": {"type": "azure-vnet-ipam", "environment": "azure",
                     "stateFile": self.ipam_state_file(), "logFile": self.dir.path().join("azure-vnet-ipam.log")}
        })
    }

    /// Execs azure-vnet in the node like a runtime: CNI_* env, config on stdin.
    pub fn cni(&self, command: &str, pod: &Netns, conf: &Value) -> Reply {
        self.cni_raw(command, &pod.name, &pod.path(), "eth0", conf)
    }

    pub fn cni_raw(&self, command: &str, container: &str, netns: &Path, ifname: &str, conf: &Value) -> Reply {
        Reply::from_output(pipe(self.cni_command(command, container, netns, ifname), conf))
    }

    pub fn cni_command(&self, command: &str, container: &str, netns: &Path, ifname: &str) -> Command {
        let mut cmd = self.ns.command(VNET);
        cni_env(&mut cmd, command, container, ifname, netns);
        cmd
    }

    /// Names of the node's links.
    pub fn links(&self) -> Vec<String> {
        let out = super::run(Command::new("ip").args(["-n", &self.ns.name, "-o", "link", "show"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    pub fn veths(&self) -> Vec<String> {
        self.links().into_iter().filter(|l| l.starts_with("azv")).collect()
    }

    pub fn nat_rules(&self) -> String {
        let out = super::run(self.ns.command("iptables-save").args(["-t", "nat"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn endpoints(&self) -> usize {
        entries(&self.state_file(), "endpoints")
    }

    pub fn allocations(&self) -> usize {
        entries(&self.ipam_state_file(), "allocations")
    }
}

/// How many entries the object `field` of a JSON state file has (0 when there is no file).
fn entries(path: &Path, field: &str) -> usize {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v[field].as_object().map(|m| m.len()))
        .unwrap_or(0)
}

/// True when `from` (a namespace) gets an answer from `to` within the deadline.
pub fn pings(from: &Netns, to: &str) -> bool {
    from.command("ping")
        .args(["-c", "1", "-i", "0.2", "-w", "5", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Retries granted so far by `reaches` (printed by the tests, so they stay visible).
pub static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Like `pings`, but a first failure gets one more try after both sides forget their ARP
/// entries. With hundreds of namespaces on a bridge the kernel occasionally (about one pair
/// in several hundred, seen on this machine with br_netfilter loaded) leaves an ARP exchange
/// unanswered; a pair that fails twice is a real failure.
pub fn reaches(from: &Netns, to_ns: &Netns, to: &str) -> bool {
    if pings(from, to) {
        return true;
    }
    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    eprintln!("{} -> {to} failed once; retrying after flushing ARP entries", from.name);
    forget_neighbors(from);
    forget_neighbors(to_ns);
    pings(from, to)
}

/// The kernel's ARP table is shared by all namespaces and capped (gc_thresh3, 1024 by default,
/// a host setting tests must not change). With hundreds of pods pinging around, tests drop a
/// namespace's entries once they are done with it so later lookups are not refused.
pub fn forget_neighbors(ns: &Netns) {
    let _ = Command::new("ip").args(["-n", &ns.name, "neigh", "flush", "all"]).output();
}
