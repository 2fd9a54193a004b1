//! `azure-lab up --kube`: a real Kubernetes v1.20 cluster on the lab's Azure-faithful VNet.
//!
//! ```text
//!  control plane (netns cp, 10.240.0.2): etcd, kube-apiserver, kube-controller-manager, kube-scheduler
//!  node k (netns nk, 10.240.0.(4+k)):    host-agent emulator, containerd + runc, kubelet, kube-proxy
//!                                        (see node.rs: what is confined and how)
//!  pods: created by kubelet through containerd, attached by azure-vnet + azure-vnet-ipam (the
//!        conflist from manifests/), addresses from the node's secondary IPs (10.240.(1+k).x)
//!  azure-npm: the DaemonSet and RBAC from manifests/, from an image the lab builds
//! ```
//! Binaries come from `scripts/kube/build.sh` (target/kube), images from `scripts/kube/images.sh`.

pub mod node;
mod pki;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::net::{ip, sibling, spawn, tail, wait};
use crate::spec::{NodePlan, Plan};
use crate::state::State;
use crate::up::{self, Binaries, Options};

pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 2);
const SUBNET: &str = "10.240.0.0/16";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Secondary addresses per node (its pod pool): enough for 100-pod churn and the e2e suite.
const POOL: u8 = 200;

/// What `down` and the other commands need to know about the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KubeState {
    /// Certificates, tokens, the admin kubeconfig, the control plane's logs.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    /// The control plane's network namespace.
    pub netns: String,
    /// Kubernetes binaries (scripts/kube/build.sh), images (scripts/kube/images.sh), manifests/,
    /// and the directory holding azure-vnet and azure-vnet-ipam.
    pub bin: PathBuf,
    pub images: PathBuf,
    pub manifests: PathBuf,
    pub cni_bin: PathBuf,
    pub cluster_cidr: String,
}

/// The repository this azure-lab was built from (for scripts/, manifests/, target/kube).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A node's cgroup root (kubelet's `cgroupRoot`): `down` kills what is in it and removes it.
pub fn cgroup_root(lab: &str, node: &str) -> String {
    format!("{}{node}", State::prefix(lab))
}

fn plan(nodes: usize) -> Result<Plan, String> {
    if nodes == 0 || nodes > 8 {
        return Err(format!("--nodes {nodes}: 1 to 8"));
    }
    let subnet: Ipv4Net = SUBNET.parse().map_err(|_| "subnet")?;
    let nodes = (0..nodes)
        .map(|k| NodePlan {
            name: format!("node{k}"),
            ip: Ipv4Addr::new(10, 240, 0, 4 + k as u8),
            mac: format!("00:0d:3a:00:00:{:02x}", k + 1),
            pool: (1..=POOL).map(|h| Ipv4Addr::new(10, 240, 1 + k as u8, h)).collect(),
        })
        .collect();
    Ok(Plan {
        subnet,
        gateway: Ipv4Addr::new(10, 240, 0, 1),
        nodes,
        pods: Vec::new(),
        externals: vec![Ipv4Addr::new(203, 0, 113, 9)],
    })
}

/// `kubectl --kubeconfig admin ARGS` inside the control plane's namespace.
pub fn kubectl(kube: &KubeState, args: &[&str]) -> Result<String, String> {
    let config = kube.kubeconfig.display().to_string();
    let mut all = vec!["netns", "exec", &kube.netns, "kubectl", "--kubeconfig", &config];
    all.extend_from_slice(args);
    crate::net::run("ip", &all)
}

fn control_plane(state: &mut State, fabric: &vnet_fabric::Fabric, plan: &Plan) -> Result<KubeState, String> {
    let ns = state.add_netns("cp")?;
    let nic = vnet_fabric::Nic {
        port: "pcp".into(),
        mac: "00:0d:3a:00:01:00".into(),
        primary: CONTROL_PLANE_IP,
        secondaries: Vec::new(),
    };
    fabric.plug(&ns, "eth0", &nic).map_err(|e| e.to_string())?;
    ip(&ns, &["addr", "add", &format!("{CONTROL_PLANE_IP}/{}", plan.subnet.prefix_len()), "dev", "eth0"])?;
    ip(&ns, &["route", "add", "default", "via", &plan.gateway.to_string()])?;
    let dir = state.dir.join("control-plane");
    pki::make(&dir, CONTROL_PLANE_IP, KUBERNETES_SERVICE_IP)?;
    let server = format!("https://{CONTROL_PLANE_IP}:6443");
    let bin = std::env::var_os("AZURE_LAB_KUBE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/kube"));
    for b in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"] {
        if !bin.join(b).exists() {
            return Err(format!("{} is missing: scripts/kube/build.sh builds it", bin.join(b).display()));
        }
    }
    let kube = KubeState {
        kubeconfig: pki::kubeconfig(&dir, &server)?,
        dir: dir.clone(),
        server,
        netns: ns.clone(),
        images: state.dir.join("images"),
        manifests: repo().join("manifests"),
        cni_bin: Binaries::find()?.dir,
        bin,
        cluster_cidr: plan.subnet.to_string(),
    };
    state.kube = Some(kube.clone());
    state.save()?;

    let p = |f: &str| dir.join(f).display().to_string();
    // Each component in the control plane's namespace, logging to NAME.log.
    let start = |name: &str, program: &str, args: &[&str]| {
        spawn(&ns, &dir.join(format!("{name}.log")), program, args)
    };
    let etcd_dir = p("etcd");
    start(
        "etcd",
        "etcd",
        &[
            "--data-dir",
            &etcd_dir,
            "--listen-client-urls",
            "http://127.0.0.1:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
        ],
    )?;
    let advertise = CONTROL_PLANE_IP.to_string();
    let (ca, crt, key, tokens, sa_pub, sa_key) =
        (p("ca.crt"), p("apiserver.crt"), p("apiserver.key"), p("tokens.csv"), p("sa.pub"), p("sa.key"));
    let apiserver = kube.bin.join("kube-apiserver").display().to_string();
    start(
        "kube-apiserver",
        &apiserver,
        &[
            "--advertise-address",
            &advertise,
            "--bind-address",
            "0.0.0.0",
            "--secure-port",
            "6443",
            "--etcd-servers",
            "http://127.0.0.1:2379",
            "--service-cluster-ip-range",
            SERVICE_CIDR,
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            &sa_pub,
            "--service-account-signing-key-file",
            &sa_key,
            "--tls-cert-file",
            &crt,
            "--tls-private-key-file",
            &key,
            "--client-ca-file",
            &ca,
            "--token-auth-file",
            &tokens,
            "--authorization-mode",
            "RBAC",
            "--allow-privileged=true",
            // Reach kubelets (exec, logs) by the address they register, not by DNS.
            "--kubelet-preferred-address-types",
            "InternalIP",
        ],
    )?;
    wait("kube-apiserver to be ready", Duration::from_secs(60), || {
        kubectl(&kube, &["get", "--raw", "/readyz"]).is_ok_and(|s| s.trim() == "ok")
    })
    .map_err(|e| format!("{e}; {}", tail(&dir.join("kube-apiserver.log"), 15)))?;
    let config = kube.kubeconfig.display().to_string();
    // Both controllers: the admin kubeconfig, no leader election, no insecure port, their
    // serving certs (self-signed) in their own directories.
    let (cm_certs, sched_certs) = (p("controller-manager"), p("scheduler"));
    for (name, certs, extra) in [
        (
            "kube-controller-manager",
            &cm_certs,
            vec!["--service-account-private-key-file", &sa_key, "--root-ca-file", &ca],
        ),
        ("kube-scheduler", &sched_certs, vec![]),
    ] {
        let program = kube.bin.join(name).display().to_string();
        let mut args = vec!["--kubeconfig", &config, "--leader-elect=false", "--port", "0"];
        args.extend(["--bind-address", "127.0.0.1", "--cert-dir", certs]);
        args.extend(extra);
        start(name, &program, &args)?;
    }
    Ok(kube)
}

/// The images every node imports.
fn images(state: &State, bins: &Binaries) -> Result<(), String> {
    let kube = state.kube.as_ref().ok_or("no cluster")?;
    let out = Command::new(repo().join("scripts/kube/images.sh"))
        .arg(&kube.images)
        .arg(&kube.bin)
        .arg(&bins.dir)
        .output()
        .map_err(|e| format!("scripts/kube/images.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("building the images: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn nodes_ready(kube: &KubeState, want: usize) -> bool {
    let Ok(text) = kubectl(kube, &["get", "nodes", "-o", "json"]) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    let ready = v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
                .count()
        })
        .unwrap_or(0);
    ready == want
}

/// Applies manifests/ files, as an operator would.
pub fn apply_manifests(kube: &KubeState, files: &[&str]) -> Result<(), String> {
    for f in files {
        kubectl(kube, &["apply", "-f", &kube.manifests.join(f).display().to_string()])?;
    }
    Ok(())
}

/// The agent's manifest as shipped, with its ConfigMap's dataplane set to `dataplane`.
fn npm_manifest(path: &Path, dataplane: &str) -> Result<String, String> {
    const SHIPPED: &str = "AZURE_NPM_DATAPLANE: \"auto\"";
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !text.contains(SHIPPED) {
        return Err(format!("{} no longer sets {SHIPPED}; cannot choose the dataplane", path.display()));
    }
    Ok(text.replace(SHIPPED, &format!("AZURE_NPM_DATAPLANE: \"{dataplane}\"")))
}

fn daemonset_ready(kube: &KubeState, want: usize) -> bool {
    let Ok(text) = kubectl(kube, &["-n", "kube-system", "get", "daemonset", "azure-npm", "-o", "json"])
    else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v["status"]["numberReady"].as_u64() == Some(want as u64))
}

pub fn up(name: &str, nodes: usize, opts: Options) -> Result<State, String> {
    let bins = Binaries::find()?;
    let plan = plan(nodes)?;
    let mut state = up::begin(name, &plan, opts)?;
    let fabric = up::network(&mut state, &plan)?;
    control_plane(&mut state, &fabric, &plan)?;
    images(&state, &bins)?;
    let me = sibling("azure-lab")?.display().to_string();
    for k in 0..plan.nodes.len() {
        up::node(&mut state, &plan, k, &fabric, &bins)?;
        let n = state.nodes[k].clone();
        let log = state.dir.join(&n.name).join("node.log");
        spawn(&n.netns, &log, &me, &["--name", name, "node-run", "--node", &n.name])?;
    }
    let kube = state.kube.clone().ok_or("no cluster")?;
    wait(&format!("{nodes} nodes to be Ready"), Duration::from_secs(180), || nodes_ready(&kube, nodes))
        .map_err(|e| {
            let logs = ["node.log", "containerd.log", "kubelet.log"];
            let tails: Vec<String> =
                logs.iter().map(|l| tail(&state.dir.join("node0").join(l), 12)).collect();
            format!("{e}; {}", tails.join("\n"))
        })?;
    apply_manifests(&kube, &["azure-npm-rbac.yaml"])?;
    let agent = npm_manifest(&kube.manifests.join("azure-npm.yaml"), &state.dataplane)?;
    let file = state.dir.join("azure-npm.yaml");
    std::fs::write(&file, agent).map_err(|e| format!("{}: {e}", file.display()))?;
    kubectl(&kube, &["apply", "-f", &file.display().to_string()])?;
    wait("the azure-npm DaemonSet to be ready on every node", Duration::from_secs(120), || {
        daemonset_ready(&kube, nodes)
    })?;
    Ok(state)
}

/// Scrapes the azure-npm pod on `node` where its Prometheus annotations say, from the control
/// plane's namespace (another host on the VNet): (status line, body).
pub fn scrape(kube: &KubeState, node: &str) -> Result<(String, String), String> {
    let text = kubectl(
        kube,
        &["-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=azure-npm", "-o", "json"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("kubectl get pods: {e}"))?;
    let pod = v["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["spec"]["nodeName"] == node))
        .ok_or_else(|| format!("no azure-npm pod on node {node}"))?;
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let notes = &pod["metadata"]["annotations"];
    if notes["prometheus.io/scrape"] != "true" {
        return Err(format!("pod {name} is not annotated prometheus.io/scrape: \"true\""));
    }
    let port: u16 = notes["prometheus.io/port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("pod {name}: no numeric prometheus.io/port annotation"))?;
    let path = notes["prometheus.io/path"].as_str().unwrap_or("/metrics");
    let ip: std::net::IpAddr = pod["status"]["podIP"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("pod {name} has no podIP yet"))?;
    crate::net::http_get_from(&kube.netns, ip, port, path)
}

fn pid_in(file: &Path) -> Result<i32, String> {
    std::fs::read_to_string(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a pid", file.display()))
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The command prefix that runs a program as on `node`: its network and mount namespaces.
pub fn node_wrapper(state: &State, node: &str) -> Result<Vec<String>, String> {
    let pid = pid_in(&state.dir.join(node).join("node.pid"))?;
    if !alive(pid) {
        return Err(format!("node {node} is not running (its azure-lab node-run, pid {pid}, is gone)"));
    }
    Ok(["nsenter", "-t", &pid.to_string(), "-m", "-n"].iter().map(|s| s.to_string()).collect())
}

/// Kills `service` on `node` (SIGKILL, as a crash); the node starts it again. Returns the new pid.
pub fn restart(state: &State, node: &str, service: &str) -> Result<i32, String> {
    let file = state.dir.join(node).join(format!("{service}.pid"));
    let old = pid_in(&file)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("killing {service} (pid {old}): {e}"))?;
    let mut new = old;
    wait(&format!("{service} on {node} to be started again"), Duration::from_secs(30), || {
        new = pid_in(&file).unwrap_or(old);
        new != old && alive(new)
    })?;
    Ok(new)
}

/// CHECK for every pod attached on `node` (from the runtime's cached results, as containerd
/// keeps them in /var/lib/cni/results), then STATUS. An endpoint azure-vnet holds that the runtime
/// has no result for is named as an error too (a pod CHECK never saw: a leak, or a sandbox between
/// its DEL and its next ADD). Returns one line per pod and whether all passed.
pub fn cni_check(state: &State, node: &str) -> Result<(Vec<String>, bool), String> {
    use cni::runtime::{self, Attachment, ConfList};
    let fs = state.dir.join(node).join("fs");
    let wrapper = node_wrapper(state, node)?;
    // The node's /opt/cni/bin as seen from here (and from inside: the lab's directory is
    // bound into every node).
    let bin_dir = fs.join("opt/cni/bin");
    let conflist = fs.join("etc/cni/net.d/10-azure.conflist");
    let list =
        ConfList::parse(&std::fs::read(&conflist).map_err(|e| format!("{}: {e}", conflist.display()))?)
            .map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    let mut all_ok = true;
    let results = fs.join("var-lib/cni/results");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&results).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|f| {
        f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{}-", list.name)))
    });
    files.sort();
    let mut checked = std::collections::BTreeSet::new();
    for f in files {
        let cache: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).map_err(|e| e.to_string())?)
                .map_err(|e| format!("{}: {e}", f.display()))?;
        let result = &cache["result"];
        let netns = result["interfaces"]
            .as_array()
            .and_then(|i| i.iter().find_map(|i| i["sandbox"].as_str()))
            .unwrap_or_default();
        let args: Vec<(String, String)> = cache["cniArgs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let pod = |k: &str| args.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
        let container_id = cache["containerId"].as_str().unwrap_or_default().to_string();
        let ifname = cache["ifName"].as_str().unwrap_or("eth0").to_string();
        checked.insert((container_id.clone(), ifname.clone()));
        let at = Attachment {
            container_id,
            netns: netns.into(),
            ifname,
            args: args.clone(),
            path: vec![bin_dir.clone()],
            capabilities: cache["capabilityArgs"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            wrapper: wrapper.clone(),
        };
        let who = format!(
            "{}/{} {}",
            pod("K8S_POD_NAMESPACE"),
            pod("K8S_POD_NAME"),
            result["ips"][0]["address"].as_str().unwrap_or("-")
        );
        match runtime::check(&list, &at, result) {
            Ok(()) => lines.push(format!("CHECK ok    {who}")),
            Err(e) => {
                all_ok = false;
                lines.push(format!("CHECK error {who}: {e}"));
            }
        }
    }
    // The node's state file is azure-vnet's default, /var/run/azure-vnet.json: /run is the node's.
    let records = cni::vnet::records::Records::beside(&state.dir.join(node).join("run/azure-vnet.json"));
    let (held, unreadable) = records.all().map_err(|e| e.to_string())?;
    for ep in held.iter().filter(|ep| !checked.contains(&(ep.container_id.clone(), ep.ifname.clone()))) {
        all_ok = false;
        lines.push(format!(
            "CHECK error {} {}: azure-vnet holds this endpoint ({}) but the runtime has no result for it",
            ep.container_id, ep.address, ep.host_veth
        ));
    }
    for e in unreadable {
        all_ok = false;
        lines.push(format!("CHECK error: {e}"));
    }
    let at = Attachment { path: vec![bin_dir], wrapper, ..Attachment::default() };
    // STATUS is CNI 1.1; containerd 1.6 speaks 1.0 (the conflist's version) and never asks, so
    // it is asked here as a 1.1 runtime would, with the same plugins.
    let list = ConfList { cni_version: "1.1.0".into(), ..list };
    match runtime::status(&list, &at) {
        Ok(()) => lines.push("STATUS ok (asked as CNI 1.1)".into()),
        Err(e) => {
            all_ok = false;
            lines.push(format!("STATUS error: {e}"));
        }
    }
    Ok((lines, all_ok))
}

/// Kills what runs in the lab's node cgroups and removes them (deepest first). The cgroups are
/// found by the lab's prefix at the top of every hierarchy, so this works without a state file.
pub fn remove_cgroups(lab: &str) -> Result<(), String> {
    let prefix = State::prefix(lab);
    let mut dirs = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return Ok(()) };
    for h in hierarchies.flatten() {
        let Ok(top) = std::fs::read_dir(h.path()) else { continue };
        for d in top.flatten() {
            if d.file_name().to_string_lossy().starts_with(&prefix) && d.path().is_dir() {
                collect_dirs(&d.path(), &mut dirs);
            }
        }
    }
    for _ in 0..50 {
        let mut any = false;
        for d in &dirs {
            for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().split_whitespace()
            {
                any = true;
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deepest first: a cgroup with children cannot be removed.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mut left = Vec::new();
    for d in &dirs {
        if std::fs::remove_dir(d).is_err() && d.exists() {
            left.push(d.display().to_string());
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("cgroups still present: {}", left.join(" ")))
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cni_and_the_agent_name_the_same_hold_set() {
        assert_eq!(cni::vnet::hold::HOLD_SET, npm::dataplane::iptables::render::HOLD_SET);
        assert_eq!(cni::vnet::hold::NFT_HOLD.table, npm::dataplane::nftables::TABLE);
        assert_eq!(cni::vnet::hold::NFT_HOLD.set, npm::dataplane::nftables::HOLD);
        assert_eq!(cni::vnet::hold::NFT_HOLD.family, npm::dataplane::nftables::FAMILY);
    }

    #[test]
    fn the_shipped_agent_manifest_lets_the_lab_choose_the_dataplane() {
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/azure-npm.yaml");
        let text = super::npm_manifest(std::path::Path::new(shipped), "iptables").unwrap();
        assert!(text.contains("AZURE_NPM_DATAPLANE: \"iptables\"") && !text.contains("\"auto\""));
        let auto = super::npm_manifest(std::path::Path::new(shipped), "auto").unwrap();
        assert_eq!(auto, std::fs::read_to_string(shipped).unwrap());
    }

    #[test]
    fn node_cgroup_roots_carry_the_labs_prefix() {
        let root = super::cgroup_root("lab", "node0");
        assert!(root.starts_with(&crate::state::State::prefix("lab")), "{root}");
    }
}
