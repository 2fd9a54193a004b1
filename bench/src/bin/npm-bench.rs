//! npm-bench: the agent against a real kernel, on both backends, side by side, on the same
//! seeded clusters. Each (cluster, backend) runs in a child process (so its peak RSS is its
//! own) inside a private network namespace it creates and removes, and measures:
//! - start → kernel fully programmed (compile, diff, render, apply), and the tool floor: the
//!   same final state loaded by the tools from files into a fresh namespace (iptables: raw
//!   `ipset restore` + `iptables-restore`; nftables: `nft -f` of the same table);
//! - pod event → kernel updated, p50/p99 over many label changes;
//! - policy added → enforced, p50/p99 over new policies one at a time;
//! - peak RSS of the child (it holds the agent and the generated cluster).
//!
//! Figures are printed, never asserted. `--small` is the CI smoke run.

use std::process::Command;
use std::time::{Duration, Instant};

use bench::args::number;
use bench::cluster::{cluster, peak_mib, pod, policy};
use bench::node::{require_root, sh};
use bench::stats::percentile_ms;
use npm::agent::Agent;
use npm::dataplane::exec::Process;
use npm::dataplane::iptables::render::{ipset_restore, iptables_restore, Notes};
use npm::dataplane::iptables::Iptables;
use npm::dataplane::nftables::{render, text, Nftables};
use npm::dataplane::Dataplane;
use npm::source::Update;
use policy_compiler::compile::compile;
use policy_compiler::incremental::Event;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A namespace removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Result<Netns, String> {
        let name = format!("npmbench-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &name])?;
        Ok(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Enters `ns` for this thread and the processes it starts (so no `ip netns exec` per call,
/// as in production where the agent runs in the host's namespace).
fn enter(ns: &Netns) -> Result<(), String> {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.0)).map_err(|e| e.to_string())?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
}

fn load(ns: &Netns, program: &str, args: &[&str], input: &std::path::Path) -> Result<Duration, String> {
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, program])
        .args(args)
        .stdin(std::fs::File::open(input).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{program} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(start.elapsed())
}

/// The same final state, loaded by the tools from files into a fresh namespace.
fn floor(backend: &str, c: &policy_compiler::model::Cluster) -> Result<Duration, String> {
    let ns = Netns::new("floor")?;
    let dir = std::env::temp_dir().join(format!("npm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ir = compile(c);
    let took = match backend {
        "nftables" => {
            let file = dir.join("table.nft");
            let rs = render::render(&ir).map_err(|e| e.to_string())?;
            std::fs::write(&file, text::script(&rs)).map_err(|e| e.to_string())?;
            load(&ns, "nft", &["-f", "-"], &file)?
        }
        _ => {
            let (sets, rules) = (dir.join("sets"), dir.join("rules"));
            std::fs::write(&sets, ipset_restore(&ir, &mut Notes::default())).map_err(|e| e.to_string())?;
            std::fs::write(&rules, iptables_restore(&ir)).map_err(|e| e.to_string())?;
            load(&ns, "ipset", &["restore"], &sets)? + load(&ns, "iptables-restore", &["--noflush"], &rules)?
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(took)
}

/// One (cluster, backend) run, in this process; prints one JSON line of figures.
fn run(backend: &str, pods: usize, policies: usize, events: usize) -> Result<(), String> {
    require_root()?;
    let mut rng = StdRng::seed_from_u64(7);
    let c = cluster(pods, policies, &mut rng);
    let floor = floor(backend, &c)?;

    let ns = Netns::new("agent")?;
    enter(&ns)?;
    let dataplane: Box<dyn Dataplane> = match backend {
        "nftables" => Box::new(Nftables::new().map_err(|e| e.to_string())?),
        _ => Box::new(Iptables::new(Box::new(Process::default())).map_err(|e| e.to_string())?),
    };
    let mut agent = Agent::new(dataplane, None);
    let start = Instant::now();
    agent.handle(Update::Snapshot(c.clone()));
    let compiled = start.elapsed();
    agent.program().map_err(|e| e.to_string())?;
    let full = start.elapsed();
    let installed = agent.dataplane.installed();

    // Pod events: a label change that moves the pod between selector sets, to the kernel.
    let (mut pod_samples, mut written) = (Vec::with_capacity(events), Vec::new());
    for i in 0..events {
        let mut p = pod(i * 7919 % pods, &mut rng);
        p.labels.insert("app".into(), format!("a{}", rng.gen_range(0..50)));
        let start = Instant::now();
        agent.handle(Update::Events(vec![Event::UpsertPod(p)]));
        let wrote = agent.program().map_err(|e| e.to_string())?;
        pod_samples.push(start.elapsed());
        if wrote {
            written.push(start.elapsed());
        }
    }
    // Policies added one at a time, each to the kernel.
    let mut policy_samples = Vec::new();
    for i in 0..(events / 20).max(5) {
        let p = policy(policies + i, &mut rng);
        let start = Instant::now();
        agent.handle(Update::Events(vec![Event::UpsertPolicy(p)]));
        agent.program().map_err(|e| e.to_string())?;
        policy_samples.push(start.elapsed());
    }
    let line = serde_json::json!({
        "backend": backend,
        "compile_ms": compiled.as_secs_f64() * 1e3,
        "start_ms": full.as_secs_f64() * 1e3,
        "floor_ms": floor.as_secs_f64() * 1e3,
        "pod_p50": percentile_ms(&pod_samples, 50.0),
        "pod_p99": percentile_ms(&pod_samples, 99.0),
        "pod_written_p99": percentile_ms(&written, 99.0),
        "pod_written": written.len(),
        "policy_p50": percentile_ms(&policy_samples, 50.0),
        "policy_p99": percentile_ms(&policy_samples, 99.0),
        "rules": installed.rules,
        "sets": installed.sets,
        "entries": installed.entries,
        "rss_mib": peak_mib(),
    });
    println!("{line}");
    drop(agent);
    drop(ns);
    Ok(())
}

fn child(backend: &str, pods: usize, policies: usize, events: usize) -> Result<serde_json::Value, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(me)
        .args(["--run", backend, &pods.to_string(), &policies.to_string(), &events.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{backend} {pods}x{policies}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).map_err(|e| format!("{e}: {text}"))
}

fn table(pods: usize, policies: usize, events: usize) -> Result<(), String> {
    let ipt = child("iptables", pods, policies, events)?;
    let nft = child("nftables", pods, policies, events)?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{pods} pods, {policies} policies (iptables: {} rules, {} sets, {} entries; nftables: {} rules, {} sets/maps, {} elements)",
        ipt["rules"], ipt["sets"], ipt["entries"], nft["rules"], nft["sets"], nft["entries"]
    );
    println!("{:<36} {:>12} {:>12} {:>10}", "", "iptables", "nftables", "nft/ipt");
    let row = |label: &str, key: &str| {
        let (a, b) = (f(&ipt, key), f(&nft, key));
        println!("{label:<36} {a:>12.2} {b:>12.2} {:>9.2}x", b / a);
    };
    row("start -> programmed (ms)", "start_ms");
    row("  of which compile (ms)", "compile_ms");
    row("tool floor, same state (ms)", "floor_ms");
    println!(
        "{:<36} {:>11.2}x {:>11.2}x",
        "start / its own tool floor",
        f(&ipt, "start_ms") / f(&ipt, "floor_ms"),
        f(&nft, "start_ms") / f(&nft, "floor_ms")
    );
    row("pod event -> kernel p50 (ms)", "pod_p50");
    row("pod event -> kernel p99 (ms)", "pod_p99");
    row("  events that wrote, p99 (ms)", "pod_written_p99");
    row("policy added -> enforced p50 (ms)", "policy_p50");
    row("policy added -> enforced p99 (ms)", "policy_p99");
    row("peak RSS (MiB)", "rss_mib");
    Ok(())
}

/// `--small` and `--scales PODSxPOLICIES,...` (anything else refused): (small, the scales).
fn options(args: &[String]) -> Result<(bool, Vec<(usize, usize)>), String> {
    let (mut small, mut scales) = (false, None);
    let mut words = args.iter().cloned();
    while let Some(a) = words.next() {
        match a.as_str() {
            "--small" => small = true,
            "--scales" => {
                let list = words.next().ok_or("--scales needs a list like 20000x1000,100000x5000")?;
                let parsed = list.split(',').map(|s| {
                    let (p, q) =
                        s.split_once('x').ok_or(format!("--scales {s:?}: expected PODSxPOLICIES"))?;
                    Ok((
                        number("--scales pods", Some(p.into()), 1..=1_000_000)?,
                        number("--scales policies", Some(q.into()), 0..=100_000)?,
                    ))
                });
                scales = Some(parsed.collect::<Result<Vec<_>, String>>()?);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let scales = match (small, scales) {
        (true, Some(_)) => return Err("--small and --scales: pick one".into()),
        (true, None) => vec![(1000, 100)],
        (false, Some(s)) => s,
        (false, None) => [5000, 20000, 100000].iter().flat_map(|&p| [(p, 1000), (p, 5000)]).collect(),
    };
    Ok((small, scales))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "npm-bench [--small] [--scales PODSxPOLICIES,...]: the agent programming a real kernel in a private\n\
             namespace, iptables and nftables side by side on the same seeded clusters (printed, never asserted).\n\
             Default scales: 5000x1000,5000x5000,20000x1000,20000x5000,100000x1000,100000x5000. Needs root."
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--run") {
        let num = |k: usize| args.get(i + k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let backend = args.get(i + 1).cloned().unwrap_or_default();
        if let Err(e) = run(&backend, num(2), num(3), num(4)) {
            eprintln!("npm-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let (small, scales) = options(&args).unwrap_or_else(|e| {
        eprintln!("npm-bench: {e} (see --help)");
        std::process::exit(2)
    });
    let events = if small { 100 } else { 1000 };
    println!(
        "npm-bench: goals at 20000 pods / 1000 policies: nftables start <= 0.25x iptables, pod event p99 <= 2 ms, \
         RSS <= 100 MiB"
    );
    for (pods, policies) in scales {
        if let Err(e) = table(pods, policies, events) {
            eprintln!("npm-bench: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::options;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn scales_are_read_strictly() {
        assert_eq!(options(&words("--small")), Ok((true, vec![(1000, 100)])));
        assert_eq!(options(&words("--scales 20000x1000,100x0")), Ok((false, vec![(20000, 1000), (100, 0)])));
        assert_eq!(options(&[]).unwrap().1.len(), 6);
        for bad in
            ["--scales 20000", "--scales 20000x", "--scales x5", "--scales", "--small --scales 1x1", "--fast"]
        {
            assert!(options(&words(bad)).is_err(), "{bad}");
        }
    }
}
