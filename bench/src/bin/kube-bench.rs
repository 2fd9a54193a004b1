//! kube-bench: pod churn through a real node (kubelet + containerd + azure-vnet) in an
//! `azure-lab up --kube` cluster: N pods created with one `kubectl apply`, then deleted, for
//! several rounds. Prints, per round, the time from `kubectl apply` to each pod Ready (p50/p99,
//! seen by polling the API every 100 ms), the CNI's own ADD and DEL times from azure-vnet's log
//! (`… in Xms`, the plugin process's lifetime) and their share of apply -> Ready, and whether any
//! address, endpoint record or veth leaked (checked after each round). Figures only.
//!
//! Usage: sudo kube-bench [--pods 100] [--rounds 2] [--mode bridge|transparent]
//! (needs scripts/kube/build.sh's binaries; builds its own lab named `kbench`, removes it after)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bench::args::number;
use bench::node::sibling;
use bench::stats::percentile_ms;

const LAB: &str = "kbench";

fn lab(args: &[&str]) -> Result<String, String> {
    let out = Command::new(sibling("azure-lab")?)
        .args(["--name", LAB])
        .args(args)
        .output()
        .map_err(|e| format!("azure-lab: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "azure-lab {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    let all: Vec<&str> = ["kubectl"].iter().chain(args).copied().collect();
    lab(&all)
}

fn pods_yaml(n: usize, round: usize) -> String {
    (0..n)
        .map(|k| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: churn-{round}-{k}, labels: {{app: churn}}}}\n\
                 spec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    \
                 image: docker.io/library/busybox:1.29\n    command: [sleep, \"86400\"]\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Names of the churn pods that are Ready now.
fn ready() -> Result<Vec<String>, String> {
    let text = kubectl(&["get", "pods", "-l", "app=churn", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|p| {
                    p["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// ADD and DEL durations logged by azure-vnet (`… in 12.3ms`), from line `skip` on.
fn cni_times(log: &Path, skip: usize) -> (Vec<Duration>, Vec<Duration>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for l in lines.iter().skip(skip) {
        let Some(took) = l.rsplit(" in ").next().and_then(parse_duration) else { continue };
        if l.contains("cmd=Add") && l.contains(": ADD ") {
            adds.push(took);
        } else if l.contains("cmd=Del") && l.contains(": DEL ") {
            dels.push(took);
        }
    }
    (adds, dels, lines.len())
}

/// Rust's `Debug` of a Duration: `12.345ms`, `1.2s`, `850µs`.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| c.is_alphabetic() || c == 'µ').map(|i| s.split_at(i))?;
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" | "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// (addresses, records, pod veths) on node0.
fn leaks(dir: &Path) -> (usize, usize, usize) {
    let run = dir.join("node0/run");
    let ipam: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("azure-vnet-ipam.json")).unwrap_or_default())
            .unwrap_or_default();
    let addresses = ipam["allocations"].as_object().map(|m| m.len()).unwrap_or(0);
    let records = std::fs::read_dir(run.join("azure-vnet.json.d"))
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0);
    let out = Command::new("ip")
        .args(["-n", &format!("azl-{LAB}-n0"), "-o", "link", "show", "type", "veth"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let veths =
        out.lines().filter(|l| l.split(':').nth(1).is_some_and(|n| n.trim().starts_with("azv"))).count();
    (addresses, records, veths)
}

fn round(n: usize, r: usize, dir: &Path, log: &Path, skip: &mut usize) -> Result<(), String> {
    let file = dir.join(format!("churn-{r}.yaml"));
    std::fs::write(&file, pods_yaml(n, r)).map_err(|e| e.to_string())?;
    let start = Instant::now();
    kubectl(&["apply", "-f", &file.display().to_string()])?;
    let mut seen: std::collections::BTreeMap<String, Duration> = Default::default();
    while seen.len() < n {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {} of {n} pods Ready after 10 minutes", seen.len()));
        }
        for p in ready()? {
            seen.entry(p).or_insert_with(|| start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_ready = start.elapsed();
    let to_ready: Vec<Duration> = seen.values().copied().collect();
    let del_start = Instant::now();
    kubectl(&["delete", "-f", &file.display().to_string(), "--wait=true", "--timeout=600s"])?;
    let deleted = del_start.elapsed();
    // The reaper removes parked veths shortly after each DEL.
    let mut left = leaks(dir);
    let settle = Instant::now();
    while left != (0, 0, 0) && settle.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        left = leaks(dir);
    }
    let (adds, dels, lines) = cni_times(log, *skip);
    *skip = lines;
    let sum = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64();
    let share = sum(&adds) / sum(&to_ready).max(f64::EPSILON) * 100.0;
    println!(
        "round {r}: {n} pods  apply->Ready p50 {:7.0} ms  p99 {:7.0} ms  (all Ready {:5.1} s; delete --wait {:5.1} s)",
        percentile_ms(&to_ready, 50.0),
        percentile_ms(&to_ready, 99.0),
        all_ready.as_secs_f64(),
        deleted.as_secs_f64()
    );
    println!(
        "         CNI ADD p50 {:6.1} ms  p99 {:6.1} ms  ({} ADDs; {share:.1}% of the summed apply->Ready)   \
         CNI DEL p50 {:6.1} ms  p99 {:6.1} ms  ({} DELs)",
        percentile_ms(&adds, 50.0),
        percentile_ms(&adds, 99.0),
        adds.len(),
        percentile_ms(&dels, 50.0),
        percentile_ms(&dels, 99.0),
        dels.len()
    );
    println!(
        "         left after the deletes: {} addresses, {} endpoint records, {} pod veths{}",
        left.0,
        left.1,
        left.2,
        if left == (0, 0, 0) { "" } else { "  <- LEAK" }
    );
    Ok(())
}

fn main() {
    let mut pods = 100;
    let mut rounds = 2;
    let mut mode = "bridge".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let checked = |n: Result<usize, String>| {
            n.unwrap_or_else(|e| {
                eprintln!("kube-bench: {e}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--pods" => pods = checked(number("--pods", args.next(), 1..=190)),
            "--rounds" => rounds = checked(number("--rounds", args.next(), 1..=100)),
            "--mode" => {
                mode = args.next().unwrap_or_default();
                if mode != "bridge" && mode != "transparent" {
                    eprintln!("kube-bench: --mode {mode:?}: expected bridge or transparent");
                    std::process::exit(2);
                }
            }
            "--help" | "-h" => {
                println!("usage: sudo kube-bench [--pods 100 (1..190)] [--rounds 2 (1..100)] [--mode bridge|transparent]");
                return;
            }
            other => {
                eprintln!("kube-bench: unknown argument {other:?} (see --help)");
                std::process::exit(2);
            }
        }
    }
    let _ = lab(&["down"]);
    let started = Instant::now();
    if let Err(e) = lab(&["up", "--kube", "--nodes", "1", "--mode", &mode]) {
        eprintln!("kube-bench: {e}");
        std::process::exit(1);
    }
    println!("kube-bench: 1-node cluster ({mode} mode) up in {:.1} s", started.elapsed().as_secs_f64());
    let dir = PathBuf::from("/run/azure-lab").join(LAB);
    let log = dir.join("node0/fs/var-log/azure-vnet.log");
    let mut skip = cni_times(&log, 0).2;
    let mut failed = false;
    for r in 1..=rounds {
        if let Err(e) = round(pods, r, &dir, &log, &mut skip) {
            eprintln!("kube-bench: round {r}: {e}");
            failed = true;
            break;
        }
    }
    let _ = lab(&["down"]);
    if failed {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_rust_prints_them() {
        assert_eq!(parse_duration("12.5ms"), Some(Duration::from_micros(12500)));
        assert_eq!(parse_duration("850µs"), Some(Duration::from_micros(850)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
    }
}
