//! npm-bench: the agent against a real kernel, inside a private network namespace it creates
//! (and removes). On the seeded synthetic cluster it prints:
//! - start → kernel fully programmed (compile, diff, render, ipset + iptables restore), and the
//!   kernel's floor: the same final state loaded by raw `ipset restore` + `iptables-restore`
//!   from files into a second fresh namespace, as a ratio;
//! - pod event → kernel updated, p50/p99 over many label changes;
//! - peak RSS of this process (it holds the agent and the generated cluster).
//!
//! Figures are printed, never asserted. `--small` is the CI smoke run.

use std::process::Command;
use std::time::{Duration, Instant};

use bench::cluster::{cluster, peak_mib, pod};
use bench::node::{require_root, sh};
use bench::stats::percentile_ms;
use npm::agent::Agent;
use npm::dataplane::exec::Process;
use npm::dataplane::linux::Linux;
use npm::source::Update;
use policy_compiler::compile::compile;
use policy_compiler::incremental::Event;
use policy_compiler::render::{ipset_restore, iptables_restore, Notes};
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

fn restore(ns: &Netns, program: &str, args: &[&str], input: &std::path::Path) -> Result<Duration, String> {
    let start = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.0, program])
        .args(args)
        .stdin(std::fs::File::open(input).map_err(|e| e.to_string())?)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{program} failed"));
    }
    Ok(start.elapsed())
}

fn run(pods: usize, policies: usize, events: usize) -> Result<(), String> {
    require_root()?;
    let mut rng = StdRng::seed_from_u64(7);
    let c = cluster(pods, policies, &mut rng);
    let ir = compile(&c);
    println!(
        "cluster: {pods} pods, {policies} policies → {} rules, {} sets, {} entries",
        ir.rule_count(),
        ir.sets.len(),
        ir.member_count()
    );

    // The kernel's floor: the final state from files, into a fresh namespace.
    let floor_ns = Netns::new("floor")?;
    let dir = std::env::temp_dir().join(format!("npm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (sets_file, rules_file) = (dir.join("sets"), dir.join("rules"));
    std::fs::write(&sets_file, ipset_restore(&ir, &mut Notes::default())).map_err(|e| e.to_string())?;
    std::fs::write(&rules_file, iptables_restore(&ir)).map_err(|e| e.to_string())?;
    let floor = restore(&floor_ns, "ipset", &["restore"], &sets_file)?
        + restore(&floor_ns, "iptables-restore", &["--noflush"], &rules_file)?;
    let _ = std::fs::remove_dir_all(&dir);
    drop(floor_ns);
    drop(ir);

    // The agent: from the snapshot to the kernel programmed.
    let ns = Netns::new("agent")?;
    enter(&ns)?;
    let dataplane = Linux::new(Box::new(Process::default())).map_err(|e| e.to_string())?;
    let mut agent = Agent::new(dataplane, None);
    let start = Instant::now();
    agent.handle(Update::Snapshot(c.clone()));
    let compiled = start.elapsed();
    agent.program().map_err(|e| e.to_string())?;
    let full = start.elapsed();
    println!("  of which compile: {:.0} ms", compiled.as_secs_f64() * 1e3);
    println!(
        "start → programmed: {:.0} ms; kernel floor (raw restore of the same state): {:.0} ms; ratio {:.2}× (goal ≤ 1.5×)",
        full.as_secs_f64() * 1e3,
        floor.as_secs_f64() * 1e3,
        full.as_secs_f64() / floor.as_secs_f64()
    );

    // Pod events: a label change that moves the pod between selector sets, to the kernel.
    let (mut samples, mut written) = (Vec::with_capacity(events), Vec::new());
    for i in 0..events {
        let mut p = pod(i * 7919 % pods, &mut rng);
        p.labels.insert("app".into(), format!("a{}", rng.gen_range(0..50)));
        let start = Instant::now();
        agent.handle(Update::Events(vec![Event::UpsertPod(p)]));
        let wrote = agent.program().map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
        if wrote {
            written.push(start.elapsed());
        }
    }
    println!(
        "pod event → kernel: p50 {:.2} ms, p99 {:.2} ms over {events} label changes (goal p99 ≤ 10 ms); \
         the {} that changed the kernel: p50 {:.2} ms, p99 {:.2} ms",
        percentile_ms(&samples, 50.0),
        percentile_ms(&samples, 99.0),
        written.len(),
        percentile_ms(&written, 50.0),
        percentile_ms(&written, 99.0)
    );
    println!("peak RSS of the agent (with the generated cluster): {:.0} MiB (goal ≤ 100 MB)", peak_mib());
    drop(agent);
    drop(ns);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("npm-bench [--small]: the agent programming a real kernel in a private namespace (printed, never asserted)");
        return;
    }
    let small = args.iter().any(|a| a == "--small");
    let (pods, policies, events) = if small { (1000, 100, 100) } else { (20000, 1000, 1000) };
    if let Err(e) = run(pods, policies, events) {
        eprintln!("npm-bench: {e}");
        std::process::exit(1);
    }
}
