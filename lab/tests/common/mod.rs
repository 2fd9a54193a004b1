//! What the lab tests share: running azure-lab, the host's state before and after, and the
//! guard that brings a lab down however a test ends.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub const LAB: &str = env!("CARGO_BIN_EXE_azure-lab");

pub fn root() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "the lab builds network namespaces and needs root: sudo scripts/test.sh"
    );
    String::new()
}

pub fn testdata(path: &str) -> String {
    format!("{}/../testdata/{path}", env!("CARGO_MANIFEST_DIR"))
}

pub fn lab(name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(LAB).args(["--name", name]).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ok(name: &str, args: &[&str]) -> String {
    let (ok, out, err) = lab(name, args);
    assert!(ok, "azure-lab {args:?}:\n{out}\n{err}");
    out
}

/// What the host looks like, as far as a lab could change it.
pub fn host(name: &str) -> String {
    let run = |p: &str, a: &[&str]| {
        String::from_utf8_lossy(&Command::new(p).args(a).output().unwrap().stdout).into_owned()
    };
    let links: Vec<String> = run("ip", &["-o", "link", "show"])
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .collect();
    let rules: Vec<String> =
        run("iptables-save", &[]).lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect();
    let prefix = format!("azl-{name}-");
    let netns: Vec<String> = run("ip", &["netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    let files = Path::new("/run/azure-lab").join(name).exists();
    // What a node's kubelet, containerd or CNI would touch if it escaped its confinement.
    let paths: Vec<(&str, bool)> = [
        "/etc/cni",
        "/opt/cni",
        "/var/lib/cni",
        "/var/lib/kubelet",
        "/var/lib/containerd",
        "/run/containerd",
        "/var/log/pods",
    ]
    .iter()
    .map(|p| (*p, Path::new(p).exists()))
    .collect();
    let sysctls: Vec<String> =
        ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom"]
            .iter()
            .map(|k| {
                format!(
                    "{k}={}",
                    std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default().trim()
                )
            })
            .collect();
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .map(|d| d.path().display().to_string())
        .filter(|d| d.contains(&prefix))
        .collect();
    format!(
        "links {links:?}\nrules {rules:?}\nsets {}\nnft {}\nnetns {netns:?}\nfiles {files}\n\
         paths {paths:?}\nsysctls {sysctls:?}\ncgroups {cgroups:?}",
        run("ipset", &["list", "-n"]),
        run("nft", &["list", "ruleset"])
    )
}

/// Brings the lab down when the test ends, however it ends.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = lab(&self.0, &["down"]);
    }
}

/// The VNet's anti-spoofing dropped nothing over the lab's whole life.
pub fn assert_no_spoofing(name: &str) {
    let (clean, out, err) = lab(name, &["vnet", "--expect"]);
    assert!(clean, "the VNet dropped spoofed frames:\n{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&ok(name, &["vnet", "--output", "json"])).unwrap();
    assert!(json.as_object().is_some_and(|m| !m.is_empty()), "counters per node: {json}");
}
