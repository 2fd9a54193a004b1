//! policy-bench: the policy compiler at scale, on seeded synthetic clusters (1,000 namespaces;
//! 1k/5k/20k pods; 100/1,000 policies mixing selectors, named ports, port ranges and ipBlocks).
//! Prints full compile time, time per pod event (label change, add, delete), peak memory, and
//! rule and set-entry counts. Each configuration runs in its own process so peak memory is its own.

use std::time::Instant;

use bench::cluster::{cluster, peak_mib, pod, NAMESPACES};
use policy_compiler::compile::compile;
use policy_compiler::incremental::{Compiler, Event};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn one(pods: usize, policies: usize, events: usize) {
    let mut rng = StdRng::seed_from_u64(7);
    let c = cluster(pods, policies, &mut rng);
    let start = Instant::now();
    let ir = compile(&c);
    let full_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (rules, entries, sets) = (ir.rule_count(), ir.member_count(), ir.sets.len());
    drop(ir);
    let mut compiler = Compiler::new(c);
    let mut time = |make: &mut dyn FnMut(usize, &mut StdRng) -> Event| {
        let evs: Vec<Event> = (0..events).map(|i| make(i, &mut rng)).collect();
        let start = Instant::now();
        for e in evs {
            std::hint::black_box(compiler.apply(e));
        }
        start.elapsed().as_secs_f64() * 1e6 / events as f64
    };
    let relabel = time(&mut |i, rng| {
        let mut p = pod(i * 7 % pods, rng);
        p.labels.insert("version".into(), format!("v{}", rng.gen_range(5..9)));
        Event::UpsertPod(p)
    });
    let add = time(&mut |i, rng| Event::UpsertPod(pod(pods + i, rng)));
    let delete = time(&mut |i, _| Event::DeletePod {
        namespace: format!("ns-{}", (pods + i) % NAMESPACES),
        name: format!("pod-{}", pods + i),
    });
    println!(
        "{pods:>6} {policies:>6} {full_ms:>11.1} {relabel:>12.1} {add:>10.1} {delete:>11.1} {:>9.0} {rules:>7} {sets:>6} {entries:>9}",
        peak_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        let n = |i: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(1000);
        one(n(1), n(2), n(3));
        return;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("policy-bench [--small]: compile and pod-event timings on synthetic clusters (printed, never asserted)");
        return;
    }
    let small = args.iter().any(|a| a == "--small");
    let (pod_counts, policy_counts, events) =
        if small { (vec![200], vec![20], 100) } else { (vec![1000, 5000, 20000], vec![100, 1000], 1000) };
    println!(
        "policy-bench: {NAMESPACES} namespaces, 100 nodes, seeded; times are wall clock on this machine"
    );
    println!(
        "{:>6} {:>6} {:>11} {:>12} {:>10} {:>11} {:>9} {:>7} {:>6} {:>9}",
        "pods",
        "pols",
        "full ms",
        "relabel µs",
        "add µs",
        "delete µs",
        "peak MiB",
        "rules",
        "sets",
        "entries"
    );
    let exe = std::env::current_exe().expect("own path");
    for &policies in &policy_counts {
        for &pods in &pod_counts {
            let status = std::process::Command::new(&exe)
                .args(["--one", &pods.to_string(), &policies.to_string(), &events.to_string()])
                .status()
                .expect("run a configuration");
            if !status.success() {
                eprintln!("policy-bench: configuration {pods}/{policies} failed");
                std::process::exit(1);
            }
        }
    }
}
