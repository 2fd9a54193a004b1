//! A benchmark "node": one network namespace with `eth0` (the VNet NIC, plugged into a VNet
//! fabric with Azure's rules, see `vnet-fabric`) and the host-agent emulator at 168.63.129.16,
//! plus pod namespaces; all removed on drop. The measuring half of a bench re-execs itself
//! inside the node (`ip netns exec`), so plugin calls pay no per-call namespace switch.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use vnet_fabric::{Fabric, Kind, Nic, Spec};

pub const MAC: &str = "00:0d:3a:00:00:01";

pub struct BenchNode {
    pub netns: String,
    pub fabric: String,
    pub dir: PathBuf,
    pub pods: Vec<String>,
    emulator: Option<Child>,
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.emulator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", p]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.fabric]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A binary built next to this one.
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found; build the workspace first (cargo build --release --workspace)",
            path.display()
        ))
    }
}

pub fn require_root() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        true => Ok(()),
        false => Err("needs root (it builds network namespaces)".into()),
    }
}

impl BenchNode {
    /// A node whose host agent lists 250 pod addresses, 10.240.0.5 – 10.240.0.254.
    pub fn new(tag: &str, pods: usize) -> Result<BenchNode, String> {
        require_root()?;
        let id = std::process::id();
        let mut node = BenchNode {
            netns: format!("{tag}-{id}"),
            fabric: format!("{tag}-{id}-vnet"),
            dir: std::env::temp_dir().join(format!("{tag}-{id}")),
            pods: Vec::new(),
            emulator: None,
        };
        std::fs::create_dir_all(&node.dir).map_err(|e| e.to_string())?;
        let n = node.netns.clone();
        sh(&["ip", "netns", "add", &n])?;
        sh(&["ip", "-n", &n, "link", "set", "lo", "up"])?;
        sh(&["ip", "netns", "add", &node.fabric])?;
        let spec = Spec {
            kind: Kind::Azure,
            subnet: "10.240.0.0/16".parse().map_err(|_| "subnet")?,
            gateway: Ipv4Addr::new(10, 240, 0, 1),
        };
        let fabric = Fabric::create(&node.fabric, &spec).map_err(|e| e.to_string())?;
        let nic = Nic {
            port: "pnode".into(),
            mac: MAC.into(),
            primary: Ipv4Addr::new(10, 240, 0, 4),
            secondaries: (5..=254).map(|last| Ipv4Addr::new(10, 240, 0, last)).collect(),
        };
        fabric.plug(&n, "eth0", &nic).map_err(|e| e.to_string())?;
        sh(&["ip", "-n", &n, "addr", "add", "10.240.0.4/16", "dev", "eth0"])?;
        sh(&["ip", "-n", &n, "route", "add", "default", "via", "10.240.0.1"])?;
        sh(&["ip", "-n", &n, "addr", "add", "168.63.129.16/32", "dev", "lo"])?;
        for i in 0..pods {
            let p = format!("{tag}-{id}-p{i}");
            sh(&["ip", "netns", "add", &p])?;
            node.pods.push(p);
        }
        let xml = node.dir.join("interfaces.xml");
        let mut doc = String::from(
            "<Interfaces><Interface MacAddress=\"000D3A000001\" IsPrimary=\"true\">\
             <IPSubnet Prefix=\"10.240.0.0/16\"><IPAddress Address=\"10.240.0.4\" IsPrimary=\"true\"/>",
        );
        for last in 5..=254 {
            doc += &format!("<IPAddress Address=\"10.240.0.{last}\" IsPrimary=\"false\"/>");
        }
        doc += "</IPSubnet></Interface></Interfaces>";
        std::fs::write(&xml, doc).map_err(|e| e.to_string())?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &n])
            .arg(sibling("azure-hostagent-emulator")?)
            .args(["--listen", "168.63.129.16:80", "--interfaces"])
            .arg(&xml)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line);
        node.emulator = Some(child);
        if !line.starts_with("listening") {
            return Err("host-agent emulator did not start".into());
        }
        Ok(node)
    }

    /// Runs this program again inside the node with `args` (the measuring half).
    pub fn run_inside(&self, args: &[String]) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let status = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(exe)
            .args(args)
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err("measurement failed".into())
        }
    }
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}
