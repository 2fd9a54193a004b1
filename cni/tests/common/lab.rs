//! A small Azure VNet in network namespaces, for azure-vnet's tests:
//!
//! ```text
//!   node1 (eth0 10.240.0.4) ─┐
//!   node2 (eth0 10.240.0.5) ─┴── fabric (Azure's rules; gateway 10.240.0.1 | 203.0.113.1) ── inet (203.0.113.10)
//! ```
//! The fabric (`vnet-fabric`) answers every ARP with 12:34:56:78:9a:bc, delivers by owned IP
//! with the owner NIC's MAC and drops (and counts) spoofed frames. Each node has its own
//! host-agent emulator at 168.63.129.16 listing its pod pool (node k: 10.240.k.1 –
//! 10.240.k.250), which is also what the fabric lets its NIC own. Every namespace is removed
//! on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use vnet_fabric::{Fabric, Kind, Nic, Spec, Uplink};

use super::{cni_env, ip, nmagent_xml_with_primary, pipe, Emulator, Netns, Reply};

pub const VNET: &str = env!("CARGO_BIN_EXE_azure-vnet");
pub const INTERNET_HOST: &str = "203.0.113.10";
pub const GATEWAY: &str = "10.240.0.1";

pub struct Lab {
    pub nodes: Vec<LabNode>,
    pub inet: Netns,
    pub fabric: Fabric,
    // Dropped last: the links of the others hang off it.
    pub fabric_ns: Netns,
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
    /// A VNet with Azure's rules.
    pub fn new(nodes: usize, pool_size: usize) -> Lab {
        Lab::with(Kind::Azure, nodes, pool_size)
    }

    pub fn with(kind: Kind, nodes: usize, pool_size: usize) -> Lab {
        let fabric_ns = Netns::new("fabric");
        let spec = Spec { kind, subnet: "10.240.0.0/16".parse().unwrap(), gateway: GATEWAY.parse().unwrap() };
        let fabric = Fabric::create(&fabric_ns.name, &spec).unwrap();
        let inet = Netns::new("inet");
        // The internet host can answer the VNet, so the test can see which source it used.
        fabric
            .uplink(&Uplink {
                peer_ns: inet.name.clone(),
                local: "203.0.113.1/24".parse().unwrap(),
                peer: format!("{INTERNET_HOST}/24").parse().unwrap(),
            })
            .unwrap();

        let nodes = (1..=nodes)
            .map(|k| {
                let ns = Netns::new(&format!("node{k}"));
                let node_ip = format!("10.240.0.{}", 3 + k);
                let nic = Nic {
                    port: format!("pnode{k}"),
                    mac: node_mac(k),
                    primary: node_ip.parse().unwrap(),
                    secondaries: pool(k, pool_size).iter().map(|a| a.parse().unwrap()).collect(),
                };
                fabric.plug(&ns.name, "eth0", &nic).unwrap();
                let n = ns.name.as_str();
                ip(&["-n", n, "addr", "add", &format!("{node_ip}/16"), "dev", "eth0"]);
                ip(&["-n", n, "route", "add", "default", "via", GATEWAY]);
                ip(&["-n", n, "addr", "add", "168.63.129.16/32", "dev", "lo"]);
                let dir = tempfile::tempdir().unwrap();
                let xml = dir.path().join("interfaces.xml");
                std::fs::write(&xml, nmagent_xml_with_primary(&node_mac(k), &node_ip, &pool(k, pool_size)))
                    .unwrap();
                let emulator = Emulator::start(&ns, "168.63.129.16:80", &xml, &[]);
                LabNode { ns, ip: node_ip, dir, _emulator: emulator }
            })
            .collect();
        Lab { nodes, inet, fabric, fabric_ns }
    }

    /// Frames and packets the VNet dropped as spoofed, over the whole run so far.
    pub fn spoofed(&self) -> u64 {
        self.fabric.counters().unwrap().spoofed_total()
    }

    /// The fabric's drop counters, for failure messages.
    pub fn counters(&self) -> String {
        self.fabric.counters().map(|c| c.to_string()).unwrap_or_else(|e| e.to_string())
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
        self.config_in("bridge", version)
    }

    /// The config for `mode` (`bridge` or `transparent`).
    pub fn config_in(&self, mode: &str, version: &str) -> Value {
        json!({
            "cniVersion": version, "name": "azure", "type": "azure-vnet", "mode": mode,
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

    /// The node's host veths once the reaper is done: DEL parks a veth (down, in the reaper's
    /// link group) and a detached reaper deletes it about half a second later. Waits up to 5 s
    /// for every parked one to go, so a reaper that does not work fails the caller's check.
    pub fn veths(&self) -> Vec<String> {
        let group = format!(" group {} ", cni::vnet::reaper::REAP_GROUP);
        for _ in 0..50 {
            let out = super::run(Command::new("ip").args(["-n", &self.ns.name, "-o", "-d", "link", "show"]));
            if !String::from_utf8_lossy(&out.stdout).contains(&group) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.links().into_iter().filter(|l| l.starts_with("azv")).collect()
    }

    pub fn nat_rules(&self) -> String {
        let out = super::run(self.ns.command("iptables-save").args(["-t", "nat"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Endpoint records: one file each in `<stateFile>.d/` (plus any in the state file itself).
    pub fn endpoints(&self) -> usize {
        let files = cni::vnet::records::Records::beside(&self.state_file()).all().unwrap().0.len();
        files + entries(&self.state_file(), "endpoints")
    }

    /// The record of one attachment, if any.
    pub fn endpoint(&self, container: &str) -> Option<cni::vnet::state::Endpoint> {
        cni::vnet::records::Records::beside(&self.state_file()).get(&format!("{container}/eth0")).unwrap()
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

/// A process in a namespace, killed on drop.
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SERVE: &str = include_str!("../../../testdata/probe/serve.py");
const PROBE: &str = include_str!("../../../testdata/probe/probe.py");

/// TCP (accept, close) and UDP (echo) servers on `port` in `ns`, bound to `address`; returns
/// once they listen.
pub fn serve(ns: &Netns, port: u16, address: &str) -> Server {
    use std::io::BufRead;
    let p = port.to_string();
    let mut child = ns
        .command("python3")
        .args(["-c", SERVE, &p, &p, address])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "servers in {}", ns.name);
    Server(child)
}

/// Tries every (protocol, address, port) from `ns` with source `src`, all at once; `strict`
/// counts a refused TCP connection as a failure. Each probe is tried once: a stale neighbour
/// entry shows up as a failure, not as a delay.
pub fn probe(ns: &Netns, src: &str, probes: &[(&str, String, u16)], strict: bool) -> Vec<bool> {
    let list: Vec<(&str, &str, u16)> = probes.iter().map(|(p, a, port)| (*p, a.as_str(), *port)).collect();
    let mut cmd = ns.command("python3");
    cmd.args(["-c", PROBE, src]);
    if strict {
        cmd.arg("strict");
    }
    let out = super::pipe(cmd, &serde_json::to_value(&list).unwrap());
    assert!(out.status.success(), "probe.py in {}: {}", ns.name, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Packets `ns` received from `source` (a CIDR), counted by an INPUT rule added the first time.
pub fn count_from(ns: &Netns, source: &str) -> u64 {
    let rules = super::run(ns.command("iptables-save").args(["-c", "-t", "filter"]));
    let text = String::from_utf8_lossy(&rules.stdout).into_owned();
    let ours = |l: &&str| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.windows(2).any(|w| w == ["-s", source]) && words.len() == 5
    };
    if !text.lines().any(|l| ours(&l)) {
        super::run(ns.command("iptables").args(["-A", "INPUT", "-s", source]));
        return 0;
    }
    text.lines()
        .filter(ours)
        .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
        .sum()
}
