//! What a running lab is, on disk (`/run/azure-lab/NAME/lab.json`), so `probe`, `apply` and
//! `down` work from another process — and `down` works after the lab itself crashed: every
//! namespace is recorded *before* it is created, and `down` also sweeps namespaces carrying the
//! lab's prefix. Every process the lab starts lives in one of its namespaces, so `down` stops them
//! by namespace (`ip netns pids`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vnet_fabric::{Fabric, Kind, Spec};

pub use cni::vnet::mode::Mode;

pub const ROOT: &str = "/run/azure-lab";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodState {
    pub key: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub dir: PathBuf,
    /// Every namespace the lab made or is about to make.
    pub netns: Vec<String>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// The namespace holding the external hosts, and their addresses.
    pub inet: String,
    pub externals: Vec<Ipv4Addr>,
    /// azure-vnet's mode on every node.
    #[serde(default)]
    pub mode: Mode,
    /// What azure-npm programs on every node: `nftables` or `iptables`.
    #[serde(default = "iptables")]
    pub dataplane: String,
    /// The VNet: Azure's rules or a plain switch; its namespace, address space and gateway.
    #[serde(default, serialize_with = "kind_out", deserialize_with = "kind_in")]
    pub vnet: Kind,
    #[serde(default)]
    pub fabric: String,
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// A real Kubernetes cluster (`up --kube`): control plane, kubelets, containerd.
    #[serde(default)]
    pub kube: Option<crate::kube::KubeState>,
}

fn iptables() -> String {
    "iptables".into()
}

fn kind_out<S: Serializer>(k: &Kind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

fn kind_in<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    Kind::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

impl State {
    pub fn dir_of(name: &str) -> PathBuf {
        Path::new(ROOT).join(name)
    }

    pub fn prefix(name: &str) -> String {
        format!("azl-{name}-")
    }

    pub fn load(name: &str) -> Result<State, String> {
        let path = State::dir_of(name).join("lab.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!("{}: {e} (is lab {name:?} up? azure-lab up --name {name} ...)", path.display())
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Written whole and renamed into place: a crash never leaves half a state file.
    pub fn save(&self) -> Result<(), String> {
        let path = self.dir.join("lab.json");
        let tmp = self.dir.join("lab.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The lab's VNet, reopened (for its counters).
    pub fn fabric(&self) -> Result<Fabric, String> {
        let (Some(subnet), Some(gateway)) = (self.subnet, self.gateway) else {
            return Err("this lab's state has no VNet (made by an older azure-lab?)".into());
        };
        Ok(Fabric::open(&self.fabric, Spec { kind: self.vnet, subnet, gateway }))
    }

    /// Records a namespace, then creates it with `lo` up.
    pub fn add_netns(&mut self, suffix: &str) -> Result<String, String> {
        let name = format!("{}{suffix}", State::prefix(&self.name));
        self.netns.push(name.clone());
        self.save()?;
        crate::net::run("ip", &["netns", "add", &name])?;
        crate::net::run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }
}

/// The lab's namespaces: recorded ones and any left with its prefix.
fn namespaces(name: &str, recorded: &[String]) -> Vec<String> {
    let mut all: Vec<String> = recorded.to_vec();
    let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&listed).lines() {
        let ns = line.split_whitespace().next().unwrap_or_default();
        if ns.starts_with(&State::prefix(name)) && !all.iter().any(|a| a == ns) {
            all.push(ns.to_string());
        }
    }
    all
}

/// Stops every process in the lab's namespaces, deletes the namespaces (pods first, the switch
/// last) and the lab's directory. Works from a partial or missing state file.
pub fn down(name: &str) -> Result<usize, String> {
    let recorded = State::load(name).map(|s| s.netns).unwrap_or_default();
    let all = namespaces(name, &recorded);
    for ns in &all {
        let pids =
            Command::new("ip").args(["netns", "pids", ns]).output().map(|o| o.stdout).unwrap_or_default();
        for pid in String::from_utf8_lossy(&pids).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
    // A cluster's pods live in namespaces of containerd's, in the nodes' cgroups.
    let cgroups = crate::kube::remove_cgroups(name);
    for ns in all.iter().rev() {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    cgroups?;
    let dir = State::dir_of(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let left = namespaces(name, &[]);
    if !left.is_empty() {
        return Err(format!("namespaces still present: {}", left.join(" ")));
    }
    Ok(all.len())
}
