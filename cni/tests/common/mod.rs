//! Shared fixtures for the integration tests: network namespaces the test owns (removed on
//! drop, even when the test fails), a "node" with a dummy `eth0` and the host-agent emulator
//! at 168.63.129.16 inside it, and a runner that execs the plugin the way a runtime does.
#![allow(dead_code)]

pub mod lab;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

pub const IPAM: &str = env!("CARGO_BIN_EXE_azure-vnet-ipam");
pub const EMULATOR: &str = env!("CARGO_BIN_EXE_azure-hostagent-emulator");
pub const NODE_MAC: &str = "00:0d:3a:00:00:01";

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace this test created; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("azt{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        testkit::add_netns(&name);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A command run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        testkit::del_netns(&self.name);
    }
}

/// A host-agent emulator process; killed on drop.
pub struct Emulator {
    child: Child,
}

impl Emulator {
    pub fn start(ns: &Netns, listen: &str, xml: &Path, extra: &[&str]) -> Emulator {
        let mut child = ns
            .command(EMULATOR)
            .args(["--listen", listen, "--interfaces"])
            .arg(xml)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on"), "emulator did not start: {line:?}");
        Emulator { child }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node: its own namespace, `eth0` with the node's MAC and primary address, and the
/// host agent at 168.63.129.16:80 answering the interface list from `xml`.
pub struct Node {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub xml: PathBuf,
    _emulator: Emulator,
}

/// `count` secondary addresses 10.240.0.5, .6, … (crossing into 10.240.1.x past .254).
pub fn secondaries(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let n = 5 + i as u32;
            format!("10.240.{}.{}", n / 256, n % 256)
        })
        .collect()
}

pub fn nmagent_xml(mac: &str, secondaries: &[String]) -> String {
    nmagent_xml_with_primary(mac, "10.240.0.4", secondaries)
}

/// The host agent's answer for one NIC in 10.240.0.0/16.
pub fn nmagent_xml_with_primary(mac: &str, primary: &str, secondaries: &[String]) -> String {
    let mac: String = mac.chars().filter(|c| *c != ':').collect::<String>().to_uppercase();
    let mut xml = format!(
        "<Interfaces><Interface MacAddress=\"{mac}\" IsPrimary=\"true\"><IPSubnet Prefix=\"10.240.0.0/16\">\
         <IPAddress Address=\"{primary}\" IsPrimary=\"true\"/>"
    );
    for a in secondaries {
        xml += &format!("<IPAddress Address=\"{a}\" IsPrimary=\"false\"/>");
    }
    xml + "</IPSubnet></Interface></Interfaces>"
}

impl Node {
    pub fn new(tag: &str, pool: usize) -> Node {
        let ns = Netns::new(tag);
        let n = ns.name.as_str();
        // A veth pair stands in for the VNet NIC (the dummy driver is not on every kernel).
        ip(&["-n", n, "link", "add", "eth0", "address", NODE_MAC, "type", "veth", "peer", "name", "vnet0"]);
        ip(&["-n", n, "link", "set", "vnet0", "up"]);
        ip(&["-n", n, "addr", "add", "10.240.0.4/16", "dev", "eth0"]);
        ip(&["-n", n, "link", "set", "eth0", "up"]);
        ip(&["-n", n, "addr", "add", "168.63.129.16/32", "dev", "lo"]);
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("interfaces.xml");
        std::fs::write(&xml, nmagent_xml(NODE_MAC, &secondaries(pool))).unwrap();
        let emulator = Emulator::start(&ns, "168.63.129.16:80", &xml, &[]);
        Node { ns, dir, xml, _emulator: emulator }
    }

    /// Replaces what the host agent answers (atomically, like a real refresh).
    pub fn set_answer(&self, body: &str) {
        let tmp = self.dir.path().join("interfaces.xml.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &self.xml).unwrap();
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("azure-vnet-ipam.json")
    }

    /// The ipam section with state and log inside this node's temp dir.
    pub fn ipam(&self) -> Value {
        json!({
            "type": "azure-vnet-ipam",
            "environment": "azure",
            "stateFile": self.state_file(),
            "logFile": self.dir.path().join("azure-vnet-ipam.log"),
            "logLevel": "debug",
        })
    }

    pub fn config(&self, version: &str) -> Value {
        json!({"cniVersion": version, "name": "vnet", "type": "bridge", "ipam": self.ipam()})
    }

    /// Execs azure-vnet-ipam inside the node like a runtime or a network plugin would.
    pub fn ipam_call(&self, command: &str, container: &str, config: &Value) -> Reply {
        self.ipam_call_env(command, container, config, &[])
    }

    pub fn ipam_call_env(
        &self,
        command: &str,
        container: &str,
        config: &Value,
        env: &[(&str, &str)],
    ) -> Reply {
        let mut cmd = self.ns.command(IPAM);
        cni_env(&mut cmd, command, container, "eth0", &self.ns.path());
        cmd.envs(env.iter().copied());
        Reply::from_output(pipe(cmd, config))
    }

    /// All current allocations as (address, containerID), from the state file.
    pub fn allocations(&self) -> Vec<(String, String)> {
        let Ok(text) = std::fs::read_to_string(self.state_file()) else { return Vec::new() };
        let v: Value = serde_json::from_str(&text).expect("state file parses");
        v["allocations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(ip, a)| (ip.clone(), a["containerID"].as_str().unwrap().to_string()))
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("azure-vnet-ipam.log")).unwrap_or_default()
    }
}

pub fn cni_env(cmd: &mut Command, command: &str, container: &str, ifname: &str, netns: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", Path::new(IPAM).parent().unwrap());
}

/// Runs a command with `stdin_json` on stdin.
pub fn pipe(cmd: Command, stdin_json: &Value) -> Output {
    spawn_with_stdin(cmd, stdin_json.to_string().as_bytes()).wait_with_output().unwrap()
}

/// Starts a command with its output captured and `stdin` written to it (then closed).
pub fn spawn_with_stdin(mut cmd: Command, stdin: &[u8]) -> Child {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // A plugin may exit before reading all of it; that is for the caller's assertions.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl Reply {
    pub fn from_output(out: Output) -> Reply {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
        };
        Reply { ok: out.status.success(), json, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }

    /// The address of a successful ADD.
    pub fn address(&self) -> String {
        assert!(self.ok, "expected success, got {} / {}", self.json, self.stderr);
        self.json["ips"][0]["address"].as_str().expect("an address").to_string()
    }

    /// The error code of a failed call.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected an error, got success: {}", self.json);
        self.json["code"].as_u64().unwrap_or_else(|| panic!("no code in {}", self.json))
    }
}
