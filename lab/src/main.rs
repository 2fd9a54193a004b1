//! azure-lab: a whole Azure node data path in network namespaces, from Kubernetes YAML.

mod kube;
mod net;
mod objects;
mod probe;
mod spec;
mod state;
mod up;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use npm::cli::{Output, ProtocolArg};
use npm::dataplane::iptables::readback::{kernel_shape, KernelView};
use policy_compiler::compile::compile_for;
use policy_compiler::model::{Cluster, Protocol};
use serde::Serialize;

use crate::state::State;

#[derive(Parser)]
#[command(
    name = "azure-lab",
    version,
    about = "A local Azure VNet in network namespaces: nodes, the host agent, pods attached through \
             azure-vnet, azure-npm per node, and real TCP/UDP probes",
    long_about = None
)]
struct Cli {
    /// Lab name (several labs can run side by side); its files live in /run/azure-lab/NAME
    #[arg(long, global = true, default_value = "lab")]
    name: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab from multi-document Kubernetes YAML (Nodes with InternalIP, Namespaces, Pods
    /// with spec.nodeName, labels, container ports and optional status.podIP, NetworkPolicies)
    Up {
        /// YAML files, read as one (repeatable); not with --kube
        #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
        objects: Vec<PathBuf>,
        /// A real Kubernetes v1.20 cluster instead: control plane, and per node containerd +
        /// kubelet + kube-proxy; pods come from the API (azure-lab kubectl), azure-npm runs as
        /// the DaemonSet from manifests/ (binaries: scripts/kube/build.sh)
        #[arg(long)]
        kube: bool,
        /// Nodes of the --kube cluster
        #[arg(long, default_value = "1", requires = "kube")]
        nodes: usize,
        /// A host outside the VNet, behind the lab's router (repeatable)
        #[arg(long = "external")]
        externals: Vec<IpAddr>,
        /// Extra PROTOCOL/PORT every pod and external serves, e.g. TCP/8080 (TCP/80 and UDP/80 always)
        #[arg(long = "serve")]
        serve: Vec<String>,
        /// azure-vnet's mode on every node
        #[arg(long, value_enum, default_value = "bridge")]
        mode: ModeArg,
        /// The VNet: `azure` enforces Azure's rules (one ARP answer, delivery by owned IP,
        /// anti-spoofing); `switch` is a plain learning switch, for comparisons only
        #[arg(long, value_enum, default_value = "azure")]
        vnet: VnetArg,
        /// What azure-npm programs on every node [default: nftables; with --kube: the
        /// DaemonSet's ConfigMap as shipped, `auto`]
        #[arg(long, value_enum)]
        dataplane: Option<DataplaneArg>,
    },
    /// Try a real connection between every pair and print the matrix
    Probe {
        #[arg(long, value_enum, default_value = "TCP")]
        protocol: ProtocolArg,
        #[arg(long, default_value = "80")]
        port: u16,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// Compare with the compiled engine's verdicts; exit 1 on any difference
        #[arg(long)]
        expect: bool,
    },
    /// Apply changed objects (pod labels, namespaces, policies) and wait until every node's
    /// agent has programmed them
    Apply {
        /// YAML files, read as one (repeatable): the whole desired state, not a patch
        #[arg(long, required = true)]
        objects: Vec<PathBuf>,
    },
    /// Run a command in a node's namespace (e.g. azure-npm debug explain --dataplane, iptables-save)
    Exec {
        #[arg(long)]
        node: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Print what the VNet dropped, per node port: spoofed source MAC, ARP sender or source IP
    /// (Azure's anti-spoofing), and frames not for the host, broadcasts, other protocols and
    /// packets to addresses no NIC owns
    Vnet {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// Exit 1 if the anti-spoofing dropped anything
        #[arg(long)]
        expect: bool,
    },
    /// Print a node's azure-npm metrics (lines starting with PREFIX, default npm_); in a --kube
    /// lab, scraped from the control plane as Prometheus would, where the agent pod's
    /// prometheus.io/{scrape,port,path} annotations say
    Metrics {
        #[arg(long)]
        node: String,
        #[arg(long, default_value = "npm_")]
        prefix: String,
    },
    /// Kill a service of a --kube lab's node (SIGKILL, as a crash) and wait until the node has
    /// started it again
    Restart {
        #[arg(long)]
        node: String,
        #[arg(value_enum)]
        service: ServiceArg,
    },
    /// CNI CHECK for every pod attached on a --kube lab's node (from containerd's cached
    /// results), then STATUS; an endpoint azure-vnet holds without a cached result is an error too;
    /// exit 1 if any fails
    CniCheck {
        #[arg(long)]
        node: String,
    },
    /// kubectl against a --kube lab's cluster, as its admin (e.g. azure-lab kubectl get pods -A)
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Stop every process and remove every namespace and file of the lab (also after a crash)
    Down,
    /// Run one node of a --kube lab (started by `up` inside the node's namespace)
    #[command(hide = true)]
    NodeRun {
        #[arg(long)]
        node: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Bridge,
    Transparent,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DataplaneArg {
    Nftables,
    Iptables,
}

impl DataplaneArg {
    fn name(self) -> &'static str {
        match self {
            DataplaneArg::Nftables => "nftables",
            DataplaneArg::Iptables => "iptables",
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ServiceArg {
    Kubelet,
    Containerd,
    KubeProxy,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VnetArg {
    Azure,
    Switch,
}

impl From<ModeArg> for state::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Bridge => state::Mode::Bridge,
            ModeArg::Transparent => state::Mode::Transparent,
        }
    }
}

impl From<VnetArg> for vnet_fabric::Kind {
    fn from(v: VnetArg) -> Self {
        match v {
            VnetArg::Azure => vnet_fabric::Kind::Azure,
            VnetArg::Switch => vnet_fabric::Kind::Switch,
        }
    }
}

#[derive(Serialize)]
struct Matrix<'a> {
    protocol: String,
    port: u16,
    engine: &'static str,
    results: &'a [policy_compiler::reach::Reach],
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_all(paths: &[PathBuf]) -> Result<String, String> {
    let texts = paths.iter().map(read).collect::<Result<Vec<_>, _>>()?;
    Ok(texts.join("\n---\n"))
}

fn parse_serve(list: &[String]) -> Result<Vec<(bool, u16)>, String> {
    let mut out = vec![(true, 80), (false, 80)];
    for s in list {
        let (proto, port) =
            s.split_once('/').ok_or_else(|| format!("--serve {s}: expected PROTOCOL/PORT"))?;
        let port: u16 = port.parse().map_err(|_| format!("--serve {s}: bad port"))?;
        match Protocol::parse(proto) {
            Some(Protocol::Tcp) => out.push((true, port)),
            Some(Protocol::Udp) => out.push((false, port)),
            _ => return Err(format!("--serve {s}: TCP or UDP")),
        }
    }
    Ok(out)
}

fn node_netns(state: &State, node: &str) -> Result<String, String> {
    let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
    state
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.netns.clone())
        .ok_or_else(|| format!("no node {node} in the lab (nodes: {})", names.join(", ")))
}

/// The objects the agents read now.
fn current(state: &State) -> Result<Cluster, String> {
    spec::load(&read(&state.dir.join("objects/cluster.yaml"))?)
}

/// Waits until every node's kernel holds that node's compiled view of `cluster`.
fn wait_programmed(state: &State, cluster: &Cluster) -> Result<(), String> {
    for n in &state.nodes {
        let ir = compile_for(cluster, Some(&n.name));
        let what = format!("azure-npm on {} to program the change", n.name);
        if state.dataplane == "nftables" {
            let expected = npm::dataplane::nftables::render::render(&ir).map_err(|e| e.to_string())?;
            net::wait(&what, Duration::from_secs(30), || {
                let got = net::inside(&n.netns, || npm::dataplane::nftables::Nftables::new()?.read());
                got.is_ok_and(|v| v.is_ok_and(|v| v.fixed_ok && v.ruleset == expected))
            })?;
            continue;
        }
        let expected = kernel_shape(&ir);
        net::wait(&what, Duration::from_secs(30), || {
            let (Ok(sets), Ok(rules)) = (
                net::exec(&n.netns, &["ipset", "save"]),
                net::exec(&n.netns, &["iptables-save", "-t", "filter"]),
            ) else {
                return false;
            };
            KernelView::read(&sets, &rules).is_ok_and(|v| v.ir == expected)
        })?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Up { kube: true, nodes, mode, vnet, dataplane, .. } => {
            let dataplane = dataplane.map_or("auto", DataplaneArg::name);
            let opts = up::Options { mode: mode.into(), vnet: vnet.into(), dataplane };
            let state = match kube::up(&cli.name, nodes, opts) {
                Ok(s) => s,
                Err(e) => {
                    let _ = state::down(&cli.name);
                    return Err(format!("{e} (the partial lab was removed)"));
                }
            };
            println!(
                "lab {} is up: Kubernetes v1.20 with {} nodes ({} mode) on an Azure VNet, azure-npm as a \
                 DaemonSet; azure-lab --name {0} kubectl get pods -A; files in {}",
                cli.name,
                state.nodes.len(),
                state.mode.as_str(),
                state.dir.display()
            );
        }
        Command::Up { objects, externals, serve, mode, vnet, dataplane, .. } => {
            let text = read_all(&objects)?;
            let plan = spec::plan(spec::load(&text)?, &externals)?;
            let ports = parse_serve(&serve)?;
            if State::dir_of(&cli.name).join("lab.json").exists() {
                return Err(format!("lab {:?} is already up (azure-lab --name {0} down)", cli.name));
            }
            let dataplane = dataplane.unwrap_or(DataplaneArg::Nftables).name();
            let opts = up::Options { mode: mode.into(), vnet: vnet.into(), dataplane };
            let state = match up::up(&cli.name, &plan, &text, &ports, opts) {
                Ok(s) => s,
                Err(e) => {
                    let _ = state::down(&cli.name);
                    return Err(format!("{e} (the partial lab was removed)"));
                }
            };
            wait_programmed(&state, &current(&state)?)?;
            println!(
                "lab {} is up: {} nodes ({} mode, azure-npm on {}), {} pods, VNet {} ({}, gateway {}); files in {}",
                cli.name,
                state.nodes.len(),
                state.mode.as_str(),
                state.dataplane,
                state.pods.len(),
                plan.subnet,
                if state.vnet == vnet_fabric::Kind::Azure { "Azure's rules" } else { "a plain switch" },
                plan.gateway,
                state.dir.display()
            );
            for p in &state.pods {
                println!(
                    "  {:<24} {:<16} on {}",
                    p.key,
                    p.ip.map(|i| i.to_string()).unwrap_or_default(),
                    p.node
                );
            }
        }
        Command::Probe { protocol, port, output, expect } => {
            let state = State::load(&cli.name)?;
            let cluster = current(&state)?;
            let protocol: Protocol = protocol.into();
            if protocol == Protocol::Sctp {
                return Err("the lab probes TCP and UDP (these kernels have no SCTP)".into());
            }
            let (got, expected) = probe::probe(&state, &cluster, protocol, port)?;
            let m = Matrix { protocol: protocol.to_string(), port, engine: "lab", results: &got };
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?),
                Output::Table => print!(
                    "{}",
                    npm::debug::reach_table(&format!("real connections {protocol}/{port}"), &got)
                ),
            }
            if expect {
                let diff = probe::differences(&got, &expected);
                if !diff.is_empty() {
                    eprintln!("{} of {} pairs differ from the compiled engine:", diff.len(), got.len());
                    for d in &diff {
                        eprintln!("  {d}");
                    }
                    return Ok(false);
                }
                eprintln!("all {} pairs match the compiled engine", got.len());
            }
        }
        Command::Apply { objects } => {
            let state = State::load(&cli.name)?;
            let text = read_all(&objects)?;
            let new = spec::load(&text)?;
            let before = current(&state)?;
            let keys = |c: &Cluster| c.pods.iter().map(|p| (p.key(), p.node.clone())).collect::<Vec<_>>();
            let (mut a, mut b) = (keys(&before), keys(&new));
            a.sort();
            b.sort();
            if a != b {
                return Err("apply changes labels, namespaces and policies; to add, remove or move pods, \
                            bring the lab down and up again"
                    .into());
            }
            let ips: BTreeMap<String, std::net::Ipv4Addr> =
                state.pods.iter().filter_map(|p| Some((p.key.clone(), p.ip?))).collect();
            let published = objects::with_pod_ips(&text, &ips)?;
            objects::publish(&state.dir.join("objects"), &published)?;
            wait_programmed(&state, &spec::load(&published)?)?;
            let names: Vec<String> = objects.iter().map(|o| o.display().to_string()).collect();
            println!("applied {}: every node's agent has programmed it", names.join(" + "));
        }
        Command::Exec { node, command } => {
            let state = State::load(&cli.name)?;
            let ns = node_netns(&state, &node)?;
            // A --kube node has its own mount namespace too (its /run, /etc/cni, /var/lib).
            let wrapper = match state.kube {
                Some(_) => kube::node_wrapper(&state, &node)?,
                None => vec!["ip".into(), "netns".into(), "exec".into(), ns],
            };
            let status = std::process::Command::new(&wrapper[0])
                .args(&wrapper[1..])
                .args(&command)
                .env("AZURE_LAB_OBJECTS", state.dir.join("objects/cluster.yaml"))
                .status()
                .map_err(|e| format!("{}: {e}", command[0]))?;
            return Ok(status.success());
        }
        Command::Vnet { output, expect } => {
            let state = State::load(&cli.name)?;
            let counters = state.fabric()?.counters().map_err(|e| e.to_string())?;
            if state.vnet == vnet_fabric::Kind::Switch {
                eprintln!("this lab's VNet is a plain switch: it drops nothing and counts nothing");
            }
            // Node k's NIC is port pn{k} of the fabric (see up.rs).
            let rows: Vec<(&str, vnet_fabric::PortCounters)> = state
                .nodes
                .iter()
                .enumerate()
                .map(|(k, n)| (n.name.as_str(), counters.port(&format!("pn{k}"))))
                .collect();
            match output {
                Output::Table => print!("{}", vnet_fabric::table("node", rows.iter().copied())),
                Output::Json => {
                    let by_node: BTreeMap<&str, serde_json::Value> = rows
                        .iter()
                        .map(|(name, c)| {
                            let v = serde_json::json!({
                                "spoofedMac": c.spoofed_mac, "spoofedArp": c.spoofed_arp, "spoofedIp": c.spoofed_ip,
                                "notForHost": c.not_for_host, "broadcast": c.broadcast,
                                "otherProtocol": c.other_protocol, "unowned": c.unowned,
                            });
                            (*name, v)
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&by_node).map_err(|e| e.to_string())?);
                }
            }
            let spoofed = counters.spoofed_total();
            if expect && spoofed > 0 {
                eprintln!("the VNet dropped {spoofed} spoofed frames or packets");
                return Ok(false);
            }
        }
        Command::Metrics { node, prefix } => {
            let state = State::load(&cli.name)?;
            let (status, body) = match &state.kube {
                // As Prometheus does: the pod's annotations say where, from another host.
                Some(k) => kube::scrape(k, &node)?,
                None => net::http_get(&node_netns(&state, &node)?, up::METRICS_PORT, "/metrics")?,
            };
            if !status.contains("200") {
                return Err(format!("/metrics on {node}: {status}"));
            }
            for line in body.lines().filter(|l| l.starts_with(&prefix)) {
                println!("{line}");
            }
        }
        Command::Kubectl { args } => {
            let state = State::load(&cli.name)?;
            let kube = state.kube.as_ref().ok_or("this lab has no cluster (azure-lab up --kube)")?;
            let config = kube.kubeconfig.display().to_string();
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &kube.netns, "kubectl", "--kubeconfig", &config])
                .args(&args)
                .status()
                .map_err(|e| format!("kubectl: {e}"))?;
            return Ok(status.success());
        }
        Command::Restart { node, service } => {
            let state = State::load(&cli.name)?;
            let name = match service {
                ServiceArg::Kubelet => "kubelet",
                ServiceArg::Containerd => "containerd",
                ServiceArg::KubeProxy => "kube-proxy",
            };
            let pid = kube::restart(&state, &node, name)?;
            println!("{name} on {node} was killed and runs again (pid {pid})");
        }
        Command::CniCheck { node } => {
            let state = State::load(&cli.name)?;
            let (lines, all_ok) = kube::cni_check(&state, &node)?;
            for l in lines {
                println!("{l}");
            }
            return Ok(all_ok);
        }
        Command::NodeRun { node } => {
            kube::node::run(&cli.name, &node)?;
        }
        Command::Down => {
            let n = state::down(&cli.name)?;
            println!("lab {} is down ({n} namespaces removed)", cli.name);
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("azure-lab: {e}");
            ExitCode::from(2)
        }
    }
}
