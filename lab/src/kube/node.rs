//! One Kubernetes node, run by `azure-lab node-run` inside the node's network namespace (started
//! through `ip netns exec`, which also gives it a mount namespace of its own, a slave of the
//! host's: nothing mounted here shows outside). It confines containerd, runc and kubelet:
//!
//! - cgroups: the v1 hierarchies re-mounted (`ip netns exec` mounts a fresh, empty sysfs), and
//!   the node's own cgroup root `/<prefix><node>` (kubelet's `cgroupRoot`), removed by `down`;
//! - files: `/etc`, `/var/lib`, `/var/log` and `/opt` are overlays whose writes land in the
//!   node's directory (so /etc/cni/net.d, /opt/cni/bin, /var/lib/cni, /var/lib/kubelet are the
//!   node's own and the host's stay untouched); `/run` is the node's directory too (containerd's
//!   hard-coded /run/containerd, azure-vnet's /var/run state files, the xtables lock), with the
//!   lab's directory and /run/netns bound back in;
//! - sysctls kubelet insists on (vm.overcommit_memory, kernel.panic, ...): files holding the
//!   values it wants are bound over those /proc/sys entries, so it never writes the host's.
//!
//! Then it starts containerd, imports the lab's images, installs the CNI from manifests/ and
//! starts kubelet and kube-proxy, restarting any of them that exits (as systemd would), so
//! `azure-lab restart` can kill one and watch the node recover.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::mount::{mount, MsFlags};

use super::KubeState;
use crate::state::State;

/// The sysctls kubelet 1.20 sets at start (pkg/kubelet/cm), with the values it wants.
const SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

const OVERLAID: [&str; 4] = ["/etc", "/var/lib", "/var/log", "/opt"];

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn mnt(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data)
        .map_err(|e| format!("mount {} on {target} ({}): {e}", src.unwrap_or("-"), fstype.unwrap_or("bind")))
}

/// The cgroup v1/v2 mounts of the host (PID 1's view): (mount point, fs type, options).
fn host_cgroups() -> Result<Vec<(String, String, String)>, String> {
    let text = std::fs::read_to_string("/proc/1/mounts").map_err(io("/proc/1/mounts"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (point, fstype, opts) = (*f.get(1)?, *f.get(2)?, *f.get(3)?);
            (point.starts_with("/sys/fs/cgroup/") && (fstype == "cgroup" || fstype == "cgroup2"))
                .then(|| (point.to_string(), fstype.to_string(), opts.to_string()))
        })
        .collect())
}

fn mount_cgroups(root: &str) -> Result<(), String> {
    mnt(Some("tmpfs"), "/sys/fs/cgroup", Some("tmpfs"), MsFlags::empty(), Some("mode=755"))?;
    for (point, fstype, opts) in host_cgroups()? {
        std::fs::create_dir_all(&point).map_err(io(&point))?;
        let data: Vec<&str> = opts.split(',').filter(|o| !matches!(*o, "rw" | "ro" | "relatime")).collect();
        let data = data.join(",");
        mnt(Some(&fstype), &point, Some(&fstype), MsFlags::empty(), Some(&data))?;
        if fstype == "cgroup2" {
            continue;
        }
        let dir = Path::new(&point).join(root);
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        if point.ends_with("/cpuset") {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let parent = std::fs::read_to_string(Path::new(&point).join(f)).map_err(io(f))?;
                std::fs::write(dir.join(f), parent.trim()).map_err(io(dir.join(f).display()))?;
            }
        }
    }
    Ok(())
}

/// The node's private files (see the module comment).
fn mount_files(node_dir: &Path, lab_dir: &Path) -> Result<(), String> {
    for target in OVERLAID {
        let name = target.trim_start_matches('/').replace('/', "-");
        let (up, work) = (node_dir.join("fs").join(&name), node_dir.join("fs").join(format!("{name}.work")));
        std::fs::create_dir_all(&up).map_err(io(up.display()))?;
        std::fs::create_dir_all(&work).map_err(io(work.display()))?;
        let data = format!("lowerdir={target},upperdir={},workdir={}", up.display(), work.display());
        mnt(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(&data))?;
    }
    let run = node_dir.join("run");
    let (labs, netns) = (run.join("azure-lab"), run.join("netns"));
    std::fs::create_dir_all(&labs).map_err(io(labs.display()))?;
    std::fs::create_dir_all(&netns).map_err(io(netns.display()))?;
    let root = lab_dir.parent().ok_or("the lab directory has no parent")?;
    mnt(Some(&root.display().to_string()), &labs.display().to_string(), None, MsFlags::MS_BIND, None)?;
    mnt(Some("/run/netns"), &netns.display().to_string(), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    mnt(Some(&run.display().to_string()), "/run", None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    let sys = node_dir.join("sysctl");
    std::fs::create_dir_all(&sys).map_err(io(sys.display()))?;
    for (key, value) in SYSCTLS {
        let file = sys.join(key.replace('/', "."));
        std::fs::write(&file, format!("{value}\n")).map_err(io(file.display()))?;
        let target = format!("/proc/sys/{key}");
        mnt(Some(&file.display().to_string()), &target, None, MsFlags::MS_BIND, None)?;
    }
    Ok(())
}

fn containerd_config(node_dir: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  # Root here lacks CAP_SYS_RESOURCE: runc could not lower oom_score_adj below the parent's.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"#,
        root = node_dir.join("containerd").display()
    )
}

/// The node's kubelet configuration.
/// - kubelet 1.20's own API rate limits (5 QPS, shared by status updates and events) would make
///   a burst of 100 pods wait on the client, not on the node: the lab uses the defaults of later
///   kubelets (50/100, since 1.27).
/// - Disk-based eviction is off ("0%" disables a signal): the node's filesystem is the whole
///   shared machine's, whose free space says nothing about the lab, and a kubelet evicting a
///   test's pods under DiskPressure fails the test for a reason that is not the network's (a
///   pod gone some 10 s after it started, its sandbox stopped and its CNI DEL run).
fn kubelet_config(cgroup_root: &str) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         cgroupDriver: cgroupfs\ncgroupRoot: /{cgroup_root}\nfailSwapOn: false\n\
         authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
         authorization: {{mode: AlwaysAllow}}\n\
         evictionHard: {{memory.available: 100Mi, nodefs.available: 0%, imagefs.available: 0%}}\n\
         imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n\
         resolvConf: /etc/resolv.conf\nreadOnlyPort: 0\nhealthzBindAddress: 127.0.0.1\n\
         clusterDomain: cluster.local\nenforceNodeAllocatable: [pods]\n\
         nodeStatusUpdateFrequency: 4s\nsyncFrequency: 10s\n\
         kubeAPIQPS: 50\nkubeAPIBurst: 100\neventRecordQPS: 50\neventBurst: 100\n"
    )
}

/// A process the node keeps running.
struct Service {
    name: &'static str,
    program: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", self.program)))?;
        println!("started {} (pid {})", self.name, child.id());
        std::fs::write(self.log.with_extension("pid"), child.id().to_string()).map_err(|e| e.to_string())?;
        self.child = Some(child);
        Ok(())
    }
}

/// The CNI as the installer DaemonSet would leave it: the plugins in /opt/cni/bin (with the
/// reference `loopback`, which containerd calls for every sandbox's `lo`) and the conflist from
/// manifests/ in /etc/cni/net.d, with the lab's mode.
fn install_cni(kube: &KubeState, bin_dir: &Path, mode: &str) -> Result<(), String> {
    std::fs::create_dir_all("/opt/cni/bin").map_err(io("/opt/cni/bin"))?;
    std::fs::create_dir_all("/etc/cni/net.d").map_err(io("/etc/cni/net.d"))?;
    for (from, name) in [
        (bin_dir.join("azure-vnet"), "azure-vnet"),
        (bin_dir.join("azure-vnet-ipam"), "azure-vnet-ipam"),
        (PathBuf::from("/usr/lib/cni/loopback"), "loopback"),
    ] {
        let to = Path::new("/opt/cni/bin").join(name);
        std::fs::copy(&from, &to).map_err(io(format!("{} -> {}", from.display(), to.display())))?;
    }
    let conflist = kube.manifests.join("10-azure.conflist");
    let text = std::fs::read_to_string(&conflist).map_err(io(conflist.display()))?;
    let mut list: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", conflist.display()))?;
    list["plugins"][0]["mode"] = mode.into();
    std::fs::write("/etc/cni/net.d/10-azure.conflist", list.to_string()).map_err(io("/etc/cni/net.d"))
}

/// Runs the node until killed.
pub fn run(lab: &str, node: &str) -> Result<(), String> {
    let state = State::load(lab)?;
    let kube = state.kube.clone().ok_or("this lab has no Kubernetes (azure-lab up --kube)")?;
    let me = state.nodes.iter().find(|n| n.name == node).ok_or_else(|| format!("no node {node}"))?.clone();
    let node_dir = state.dir.join(node);
    let cgroup_root = super::cgroup_root(lab, node);
    // `azure-lab exec`, `cni` and `restart` enter this process's namespaces (nsenter -t PID).
    std::fs::write(node_dir.join("node.pid"), std::process::id().to_string()).map_err(io("node.pid"))?;
    mnt(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)?;
    mount_cgroups(&cgroup_root)?;
    mount_files(&node_dir, &state.dir)?;
    println!("node {node}: mounts ready (cgroup root /{cgroup_root})");

    let file = |name: &str, text: String| -> Result<String, String> {
        let path = node_dir.join(name);
        std::fs::write(&path, text).map_err(io(path.display()))?;
        Ok(path.display().to_string())
    };
    let containerd_conf = file("containerd.toml", containerd_config(&node_dir))?;
    let kubelet_conf = file("kubelet.yaml", kubelet_config(&cgroup_root))?;
    let kubeconfig = kube.kubeconfig.display().to_string();
    let log = |name: &str| node_dir.join(format!("{name}.log"));
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    let mut containerd = Service {
        name: "containerd",
        program: "containerd".into(),
        args: s(&["--config", &containerd_conf]),
        child: None,
        log: log("containerd"),
    };
    containerd.start()?;
    let socket = Path::new("/run/containerd/containerd.sock");
    crate::net::wait("containerd's socket", Duration::from_secs(30), || socket.exists())?;
    for image in std::fs::read_dir(&kube.images).map_err(io(kube.images.display()))? {
        let path = image.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "tar") {
            let out = Command::new("ctr")
                .args(["--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import"])
                .arg(&path)
                .output()
                .map_err(io("ctr"))?;
            if !out.status.success() {
                return Err(format!(
                    "importing {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            println!("imported {}", path.display());
        }
    }
    install_cni(&kube, &kube.cni_bin, state.mode.as_str())?;

    let ip = me.ip.to_string();
    let mut services = [
        containerd,
        Service {
            name: "kubelet",
            program: kube.bin.join("kubelet").display().to_string(),
            args: s(&[
                "--config",
                &kubelet_conf,
                "--kubeconfig",
                &kubeconfig,
                "--container-runtime",
                "remote",
                "--container-runtime-endpoint",
                "unix:///run/containerd/containerd.sock",
                "--hostname-override",
                node,
                "--node-ip",
                &ip,
                "--v",
                "1",
            ]),
            child: None,
            log: log("kubelet"),
        },
        Service {
            name: "kube-proxy",
            program: kube.bin.join("kube-proxy").display().to_string(),
            args: s(&[
                "--kubeconfig",
                &kubeconfig,
                "--hostname-override",
                node,
                "--proxy-mode",
                "iptables",
                "--cluster-cidr",
                &kube.cluster_cidr,
                // The conntrack table size is the host's: never set it from a node.
                "--conntrack-max-per-core",
                "0",
                "--conntrack-tcp-timeout-established",
                "0",
                "--conntrack-tcp-timeout-close-wait",
                "0",
                "--oom-score-adj",
                "0",
                "--metrics-bind-address",
                "127.0.0.1:10249",
                "--healthz-bind-address",
                "127.0.0.1:10256",
            ]),
            child: None,
            log: log("kube-proxy"),
        },
    ];
    for svc in services.iter_mut().skip(1) {
        svc.start()?;
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        for svc in services.iter_mut() {
            let exited = match svc.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if let Some(status) = exited {
                println!("{} exited ({status}); restarting it", svc.name);
                std::thread::sleep(Duration::from_secs(1));
                svc.start()?;
            }
        }
    }
}
