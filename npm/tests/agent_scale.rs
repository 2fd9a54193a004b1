//! Finding 4 of issue 13, reproduced: a policy with 100k ipBlocks and then 10k policies come and
//! go through `dir:`. Each is programmed (the 100k CIDRs share one set; the kernel holds at most
//! 65535), the metrics tell the kernel's truth, and once the files are removed the kernel reads
//! back exactly as before them and the agent's RSS is back under twice its starting value.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{wait_for, Netns, NPM};

const BASE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: x, labels: {pod: p1}}\n\
spec: {nodeName: node-1, containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.1.1}\n---\n\
apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\n\
spec: {podSelector: {matchLabels: {pod: p1}}}\n";

fn ip_blocks(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: blocks, namespace: x}\n\
         spec:\n  podSelector: {}\n  ingress:\n  - from:\n",
    );
    for i in 0..n {
        s += &format!("    - ipBlock: {{cidr: 172.{}.{}.{}/32}}\n", 16 + (i >> 16), (i >> 8) & 255, i & 255);
    }
    s
}

fn policies(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i}, namespace: x}}\n\
                 spec:\n  podSelector: {{matchLabels: {{pod: p1}}}}\n  ingress:\n  - from:\n\
                 \x20   - podSelector: {{matchLabels: {{app: a{i}}}}}\n    - ipBlock: {{cidr: 192.168.{}.{}/32}}\n\
                 \x20   ports: [{{port: {}}}]\n---\n",
                i >> 8,
                i & 255,
                1000 + i
            )
        })
        .collect()
}

/// The kernel's sets and the filter table, without counters, sorted.
fn read_back(ns: &Netns) -> Vec<String> {
    let mut lines: Vec<String> = ns.run(&["ipset", "save"]).lines().map(str::to_string).collect();
    lines.extend(
        ns.run(&["iptables-save", "-t", "filter"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string()),
    );
    lines.sort();
    lines
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metric(ns: &Netns, name: &str) -> Option<f64> {
    let (_, body) = ns.http_get(10091, "/metrics")?;
    body.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok())
}

#[test]
fn big_policies_come_and_go_and_the_kernel_and_memory_return() {
    let mut ns = Netns::new("scale");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), BASE).unwrap();
    let source = format!("dir:{}", dir.path().display());
    let agent = ns
        .command(NPM)
        .args(["start", "--source", &source, "--interval-ms", "200", "--metrics-addr", "127.0.0.1:10091"])
        .args(["--dataplane", "iptables"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = agent.id(); // `ip netns exec` execs the agent in place
    ns.children.push(agent);
    wait_for("the first program", 30, || metric(&ns, "npm_num_policies") == Some(1.0));
    std::thread::sleep(Duration::from_secs(2));
    let (start, start_rss) = (read_back(&ns), rss_kib(pid));

    for (file, text, policies) in
        [("blocks.yaml", ip_blocks(100_000), 2.0), ("many.yaml", policies(10_000), 10_001.0)]
    {
        // Written aside and renamed in, as an operator's tool (or a ConfigMap) does.
        let tmp = dir.path().join(".incoming");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join(file)).unwrap();
        wait_for(file, 300, || metric(&ns, "npm_num_policies") == Some(policies));
        let sets = ns.run(&["ipset", "list", "-n"]).lines().count() as f64;
        assert_eq!(metric(&ns, "npm_num_ipsets"), Some(sets), "{file}: the set count is the kernel's");
        let peak = rss_kib(pid);

        std::fs::remove_file(dir.path().join(file)).unwrap();
        wait_for("the removal", 300, || metric(&ns, "npm_num_policies") == Some(1.0));
        assert_eq!(read_back(&ns), start, "{file}: the kernel is back where it was");
        let deadline = Instant::now() + Duration::from_secs(60);
        while rss_kib(pid) >= 2 * start_rss && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        let after = rss_kib(pid);
        eprintln!("{file}: RSS {start_rss} KiB at start, {peak} KiB with it, {after} KiB after");
        assert!(after < 2 * start_rss, "{file}: RSS {after} KiB is not back under twice {start_rss} KiB");
    }
}
