//! Bringing a lab up:
//!
//! ```text
//!  pods ─ veth ─ azure0 (bridge mode: takes over eth0) ─ eth0 ─┐
//!       (transparent mode: routed by the node)                ├─ VNet fabric (Azure's rules, gateway) ─ inet
//!   node k: host-agent emulator at 168.63.129.16,             ┘     see vnet-fabric          (externals)
//!           azure-npm --source dir: --node-name k
//! ```
//! Pods are attached through the real azure-vnet + azure-vnet-ipam, exec'd with `CNI_*` and the
//! conflist exactly as a runtime does (`cni::runtime`), in their node's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cni::ipam::nmagent;
use cni::ipam::source::{Nic, Subnet};
use cni::runtime::{self, Attachment, ConfList};
use serde_json::json;
use vnet_fabric::{Fabric, Nic as FabricNic, Spec, Uplink};

use crate::net::{ip, sibling, spawn, wait, wait_log};
use crate::spec::Plan;
use crate::state::{NodeState, PodState, State};

const HOST_AGENT: &str = "168.63.129.16";
pub const METRICS_PORT: u16 = 10091;
pub const SERVE: &str = include_str!("../../testdata/probe/serve.py");

pub struct Binaries {
    pub dir: PathBuf,
    pub emulator: PathBuf,
    pub npm: PathBuf,
}

impl Binaries {
    pub fn find() -> Result<Binaries, String> {
        let vnet = sibling("azure-vnet")?;
        sibling("azure-vnet-ipam")?;
        Ok(Binaries {
            dir: vnet.parent().map(Path::to_path_buf).unwrap_or_default(),
            emulator: sibling("azure-hostagent-emulator")?,
            npm: sibling("azure-npm")?,
        })
    }
}

fn conflist(node_dir: &Path, mode: &str) -> serde_json::Value {
    let file = |f: &str| node_dir.join(f).display().to_string();
    json!({
        "cniVersion": "1.0.0",
        "name": "azure",
        "plugins": [{
            "type": "azure-vnet", "mode": mode, "master": "eth0", "bridge": "azure0",
            "stateFile": file("azure-vnet.json"), "logFile": file("azure-vnet.log"),
            "capabilities": {"ips": true, "portMappings": true},
            "ipam": {
                "type": "azure-vnet-ipam",
                "stateFile": file("azure-vnet-ipam.json"), "logFile": file("azure-vnet-ipam.log"),
            },
        }],
    })
}

/// A stable container ID for a pod (the runtime's sandbox ID).
pub fn container_id(lab: &str, key: &str) -> String {
    let hash = policy_compiler::ir::stable_hash(&format!("{lab}/{key}"));
    format!("azlab{hash:016x}")
}

/// The VNet (a fabric with Azure's rules, or a plain switch) with its gateway, and an uplink to
/// the namespace holding the external hosts.
pub fn network(state: &mut State, plan: &Plan) -> Result<Fabric, String> {
    let ns = state.add_netns("vnet")?;
    let spec = Spec { kind: state.vnet, subnet: plan.subnet, gateway: plan.gateway };
    let fabric = Fabric::create(&ns, &spec).map_err(|e| e.to_string())?;
    state.fabric = ns;
    let inet = state.add_netns("inet")?;
    let uplink = Uplink {
        peer_ns: inet.clone(),
        local: "100.64.0.1/30".parse().map_err(|_| "uplink")?,
        peer: "100.64.0.2/30".parse().map_err(|_| "uplink")?,
    };
    fabric.uplink(&uplink).map_err(|e| e.to_string())?;
    ip(&inet, &["route", "add", "default", "via", "100.64.0.1"])?;
    for e in &plan.externals {
        ip(&inet, &["addr", "add", &format!("{e}/32"), "dev", "eth0"])?;
    }
    state.inet = inet;
    state.externals = plan.externals.clone();
    state.save()?;
    Ok(fabric)
}

/// A node: its namespace and NIC on the VNet, and its host-agent emulator.
pub fn node(
    state: &mut State,
    plan: &Plan,
    k: usize,
    fabric: &Fabric,
    bins: &Binaries,
) -> Result<(), String> {
    let n = &plan.nodes[k];
    let ns = state.add_netns(&format!("n{k}"))?;
    let nic =
        FabricNic { port: format!("pn{k}"), mac: n.mac.clone(), primary: n.ip, secondaries: n.pool.clone() };
    fabric.plug(&ns, "eth0", &nic).map_err(|e| e.to_string())?;
    ip(&ns, &["addr", "add", &format!("{}/{}", n.ip, plan.subnet.prefix_len()), "dev", "eth0"])?;
    ip(&ns, &["route", "add", "default", "via", &plan.gateway.to_string()])?;
    ip(&ns, &["addr", "add", &format!("{HOST_AGENT}/32"), "dev", "lo"])?;
    let dir = state.dir.join(&n.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let nic = Nic {
        mac: n.mac.parse()?,
        is_primary: true,
        subnets: vec![Subnet {
            prefix: plan.subnet.into(),
            primary: vec![n.ip.into()],
            secondary: n.pool.iter().map(|a| (*a).into()).collect(),
        }],
    };
    let xml = dir.join("interfaces.xml");
    std::fs::write(&xml, nmagent::render(&[nic])).map_err(|e| e.to_string())?;
    let log = dir.join("emulator.log");
    let listen = format!("{HOST_AGENT}:80");
    spawn(
        &ns,
        &log,
        &bins.emulator.display().to_string(),
        &["--listen", &listen, "--interfaces", &xml.display().to_string()],
    )?;
    wait_log(&log, "listening on", &format!("the host-agent emulator of {}", n.name))?;
    state.nodes.push(NodeState { name: n.name.clone(), netns: ns, ip: n.ip });
    state.save()
}

/// Attaches one pod through the conflist, as a runtime would; returns its address.
pub fn attach(
    state: &mut State,
    plan_pod: &crate::spec::PodPlan,
    prefix: u8,
    bins: &Binaries,
) -> Result<Ipv4Addr, String> {
    let k = state.pods.len();
    let ns = state.add_netns(&format!("p{k}"))?;
    let node = state.nodes.iter().find(|n| n.name == plan_pod.node).ok_or("pod on an unknown node")?.clone();
    let node_dir = state.dir.join(&node.name);
    let list =
        ConfList::parse(&std::fs::read(node_dir.join("10-azure.conflist")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let id = container_id(&state.name, &plan_pod.key);
    state.pods.push(PodState {
        key: plan_pod.key.clone(),
        node: node.name.clone(),
        netns: ns.clone(),
        container_id: id.clone(),
        ip: None,
    });
    state.save()?;
    let mut at = Attachment {
        container_id: id,
        netns: PathBuf::from(format!("/var/run/netns/{ns}")),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), plan_pod.key.split('/').next().unwrap_or_default().into()),
            ("K8S_POD_NAME".into(), plan_pod.key.split('/').nth(1).unwrap_or_default().into()),
        ],
        path: vec![bins.dir.clone()],
        wrapper: vec!["ip".into(), "netns".into(), "exec".into(), node.netns.clone()],
        ..Attachment::default()
    };
    if let Some(want) = plan_pod.ip {
        at.capabilities.insert("ips".into(), json!([format!("{want}/{prefix}")]));
    }
    let result = runtime::add(&list, &at).map_err(|e| format!("CNI ADD of {}: {e}", plan_pod.key))?;
    std::fs::write(node_dir.join(format!("{}.result.json", at.container_id)), result.to_string())
        .map_err(|e| e.to_string())?;
    let address = result["ips"][0]["address"]
        .as_str()
        .ok_or_else(|| format!("CNI ADD of {}: no address in {result}", plan_pod.key))?;
    let got: Ipv4Addr = address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("bad address {address}"))?;
    if plan_pod.ip.is_some_and(|want| want != got) {
        return Err(format!("{} asked for {:?} and got {got}", plan_pod.key, plan_pod.ip));
    }
    if let Some(p) = state.pods.last_mut() {
        p.ip = Some(got);
    }
    state.save()?;
    Ok(got)
}

/// Starts a pod's servers (TCP and UDP on its container ports, plus the probed ones).
pub fn serve(ns: &str, log: &Path, tcp: &[u16], udp: &[u16], address: &str) -> Result<(), String> {
    let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    spawn(ns, log, "python3", &["-c", SERVE, &list(tcp), &list(udp), address])?;
    wait_log(log, "ready", &format!("the servers in {ns}"))
}

/// How the lab is built: the CNI mode of every node, the kind of VNet, and what azure-npm
/// programs (`nftables` or `iptables`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mode: crate::state::Mode,
    pub vnet: vnet_fabric::Kind,
    pub dataplane: &'static str,
}

/// The lab's directory and first state file.
pub fn begin(name: &str, plan: &Plan, opts: Options) -> Result<State, String> {
    let dir = State::dir_of(name);
    if dir.join("lab.json").exists() {
        return Err(format!("lab {name:?} is already up (azure-lab down --name {name})"));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let state = State {
        name: name.into(),
        dir,
        mode: opts.mode,
        vnet: opts.vnet,
        dataplane: opts.dataplane.into(),
        subnet: Some(plan.subnet),
        gateway: Some(plan.gateway),
        ..State::default()
    };
    state.save()?;
    Ok(state)
}

pub fn up(
    name: &str,
    plan: &Plan,
    objects: &str,
    extra_ports: &[(bool, u16)],
    opts: Options,
) -> Result<State, String> {
    let bins = Binaries::find()?;
    let mut state = begin(name, plan, opts)?;
    let dir = state.dir.clone();
    let fabric = network(&mut state, plan)?;
    for k in 0..plan.nodes.len() {
        node(&mut state, plan, k, &fabric, &bins)?;
        let node_dir = dir.join(&plan.nodes[k].name);
        let list = conflist(&node_dir, state.mode.as_str());
        std::fs::write(node_dir.join("10-azure.conflist"), list.to_string()).map_err(|e| e.to_string())?;
    }

    let mut ips = BTreeMap::new();
    for p in &plan.pods {
        let got = attach(&mut state, p, plan.subnet.prefix_len(), &bins)?;
        ips.insert(p.key.clone(), got);
    }
    // Servers: each pod on its container ports and the `--serve` ports; the externals on all.
    let with_extra = |ports: &mut dyn Iterator<Item = u16>, tcp: bool| -> Vec<u16> {
        let extra = extra_ports.iter().filter(|e| e.0 == tcp).map(|e| e.1);
        ports.chain(extra).collect::<BTreeSet<u16>>().into_iter().collect()
    };
    for (p, s) in plan.pods.iter().zip(state.pods.clone()) {
        let tcp = with_extra(&mut p.tcp_ports.iter().copied(), true);
        let udp = with_extra(&mut p.udp_ports.iter().copied(), false);
        serve(&s.netns, &dir.join(format!("{}.serve.log", s.netns)), &tcp, &udp, "0.0.0.0")?;
    }
    let tcp = with_extra(&mut plan.pods.iter().flat_map(|p| p.tcp_ports.iter().copied()), true);
    let udp = with_extra(&mut plan.pods.iter().flat_map(|p| p.udp_ports.iter().copied()), false);
    // One server per external address, so UDP answers come from the address that was asked.
    for e in &plan.externals {
        serve(&state.inet, &dir.join(format!("inet-{e}.serve.log")), &tcp, &udp, &e.to_string())?;
    }

    crate::objects::publish(&dir.join("objects"), &crate::objects::with_pod_ips(objects, &ips)?)?;
    for n in &state.nodes {
        let log = dir.join(&n.name).join("azure-npm.log");
        let source = format!("dir:{}", dir.join("objects").display());
        let metrics = format!("127.0.0.1:{METRICS_PORT}");
        spawn(
            &n.netns,
            &log,
            &bins.npm.display().to_string(),
            &[
                "start",
                "--source",
                &source,
                "--node-name",
                &n.name,
                "--interval-ms",
                "200",
                "--verify-interval-secs",
                "5",
                "--metrics-addr",
                &metrics,
                "--dataplane",
                &state.dataplane,
            ],
        )?;
    }
    for n in &state.nodes {
        wait(&format!("azure-npm on {} to be ready", n.name), std::time::Duration::from_secs(30), || {
            crate::net::http_get(&n.netns, METRICS_PORT, "/readyz")
                .is_ok_and(|(status, _)| status.contains("200"))
        })?;
    }
    state.save()?;
    Ok(state)
}
