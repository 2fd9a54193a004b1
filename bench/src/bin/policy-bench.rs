//! policy-bench: the policy compiler at scale, on seeded synthetic clusters (1,000 namespaces;
//! 1k/5k/20k pods; 100/1,000 policies mixing selectors, named ports, port ranges and ipBlocks).
//! Prints full compile time, time per pod event (label change, add, delete), peak memory, and
//! rule and set-entry counts. Each configuration runs in its own process so peak memory is its own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use policy_compiler::compile::compile;
use policy_compiler::incremental::{Compiler, Event};
use policy_compiler::model::{
    Cluster, ContainerPort, Namespace, NetworkPolicy, Node, Peer, Pod, PortRef, PortSpec, Protocol, Rule,
};
use policy_compiler::selector::{Op, Requirement, Selector};
use rand::{rngs::StdRng, Rng, SeedableRng};

const NAMESPACES: usize = 1000;

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn pod(k: usize, rng: &mut StdRng) -> Pod {
    let ns = k % NAMESPACES;
    Pod {
        namespace: format!("ns-{ns}"),
        name: format!("pod-{k}"),
        labels: labels(&[
            ("app", format!("a{}", rng.gen_range(0..50))),
            ("tier", ["web", "api", "db"][rng.gen_range(0..3)].to_string()),
            ("version", format!("v{}", rng.gen_range(0..5))),
        ]),
        ip: Some(IpAddr::from((0x0a00_0001u32 + k as u32).to_be_bytes())),
        node: Some(format!("node-{}", k % 100)),
        ports: vec![
            ContainerPort { name: Some("http".into()), port: 8080, protocol: Protocol::Tcp },
            ContainerPort { name: Some("metrics".into()), port: 9090, protocol: Protocol::Tcp },
        ],
    }
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector::from_labels(pairs.iter().copied())
}

fn policy(i: usize, rng: &mut StdRng) -> NetworkPolicy {
    let app = format!("a{}", rng.gen_range(0..50));
    let team = format!("t{}", rng.gen_range(0..20));
    let mut pod_selector = sel(&[("app", &app)]);
    if i.is_multiple_of(3) {
        pod_selector
            .requirements
            .push(Requirement { key: "tier".into(), op: Op::In(vec!["web".into(), "api".into()]) });
    }
    let peers = match i % 4 {
        0 => vec![Peer::Pods {
            namespaces: Some(sel(&[("team", &team)])),
            pods: Some(sel(&[("tier", "web")])),
        }],
        1 => vec![Peer::IpBlock {
            cidr: "172.16.0.0/12".parse().unwrap(),
            except: vec!["172.16.1.0/24".parse().unwrap()],
        }],
        2 => vec![Peer::Pods {
            namespaces: None,
            pods: Some(Selector {
                requirements: vec![Requirement { key: "app".into(), op: Op::NotIn(vec![app.clone()]) }],
            }),
        }],
        _ => vec![
            Peer::Pods { namespaces: Some(sel(&[("env", "prod")])), pods: None },
            Peer::Pods { namespaces: None, pods: Some(sel(&[("tier", "api")])) },
        ],
    };
    let ports = match i % 3 {
        0 => vec![PortSpec {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Name("http".into())),
            end_port: None,
        }],
        1 => vec![PortSpec {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(8000)),
            end_port: Some(8100),
        }],
        _ => vec![PortSpec { protocol: Protocol::Udp, port: Some(PortRef::Number(53)), end_port: None }],
    };
    let egress = if i.is_multiple_of(5) {
        vec![Rule {
            peers: Some(vec![Peer::Pods { namespaces: Some(Selector::default()), pods: None }]),
            ports: None,
        }]
    } else {
        Vec::new()
    };
    NetworkPolicy {
        namespace: format!("ns-{}", rng.gen_range(0..NAMESPACES)),
        name: format!("np-{i}"),
        pod_selector,
        ingress_isolation: true,
        egress_isolation: !egress.is_empty(),
        ingress: vec![Rule { peers: Some(peers), ports: Some(ports) }],
        egress,
    }
}

fn cluster(pods: usize, policies: usize, rng: &mut StdRng) -> Cluster {
    let namespaces = (0..NAMESPACES)
        .map(|i| {
            let name = format!("ns-{i}");
            let l = labels(&[
                ("team", format!("t{}", i % 20)),
                ("env", ["prod", "dev", "test"][i % 3].to_string()),
                ("kubernetes.io/metadata.name", name.clone()),
            ]);
            (name.clone(), Namespace { name, labels: l })
        })
        .collect();
    let nodes = (0..100)
        .map(|n| Node {
            name: format!("node-{n}"),
            internal_ip: Some(IpAddr::from([192, 168, 0, n as u8 + 1])),
        })
        .collect();
    Cluster {
        namespaces,
        pods: (0..pods).map(|k| pod(k, rng)).collect(),
        nodes,
        policies: (0..policies).map(|i| policy(i, rng)).collect(),
    }
}

fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

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
