//! The backends as the agent runs them, in namespaces these tests create:
//! - `--dataplane auto` chooses by evidence and says which and why;
//! - a switch of backend removes what the other one left, only once the new one has programmed;
//!   `azure-npm cleanup` removes what either left;
//! - killed at random moments during a large nftables apply (thousands of pods), the kernel
//!   holds exactly the old state or the new one, and the next run converges.

mod common;

use std::fmt::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::kernel::{Backend, Kernel};
use common::{wait_for, Netns, NPM};
use npm::dataplane::nftables::render::render;
use policy_compiler::compile::compile;
use policy_compiler::snapshot::Snapshot;
use rand::Rng;

fn start(ns: &Netns, dir: &std::path::Path, dataplane: &str) -> Child {
    ns.command(NPM)
        .args(["start", "--source", &format!("dir:{}", dir.display()), "--interval-ms", "100"])
        .args(["--verify-interval-secs", "1", "--metrics-addr", "off", "--dataplane", dataplane])
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn case(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../testdata/policy/{name}.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn holds(ns: &Netns, backend: Backend, text: &str) -> bool {
    let ir = compile(&Snapshot::from_yaml(text).unwrap().cluster);
    Kernel::read(ns, backend).is_some_and(|k| k.holds(&ir))
}

fn iptables_state_left(ns: &Netns) -> bool {
    ns.run(&["iptables-save", "-t", "filter"]).contains("AZURE-NPM")
        || ns.run(&["ipset", "list", "-n"]).lines().any(|l| l.starts_with("azn-") || l == "azure-npm-new")
}

#[test]
fn auto_chooses_by_evidence_and_a_switch_cleans_up_after_the_new_backend_programmed() {
    let ns = Netns::new("switch");
    let dir = tempfile::tempdir().unwrap();
    let text = case("07-ipblock-except");
    std::fs::write(dir.path().join("cluster.yaml"), &text).unwrap();

    let agent = start(&ns, dir.path(), "iptables");
    wait_for("the iptables program", 20, || holds(&ns, Backend::Iptables, &text));
    stop(agent);

    let agent = start(&ns, dir.path(), "auto");
    wait_for("the nftables program", 20, || holds(&ns, Backend::Nftables, &text));
    wait_for("the iptables state to go", 20, || !iptables_state_left(&ns));
    stop(agent);
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("dataplane: nftables (evidence: the kernel answers nf_tables requests"), "{log}");
    assert!(log.contains("the iptables backend left state behind"), "{log}");
    // Enforcement never lapsed: the old state went only after the new one was in place.
    let programmed = log.find("kernel programmed").expect("programmed");
    let removed = log.find("removed what the iptables backend left").expect("removed");
    assert!(programmed < removed, "{log}");

    // Back to iptables: the nftables table goes the same way; cleanup removes what is left.
    let agent = start(&ns, dir.path(), "iptables");
    wait_for("the iptables program again", 20, || holds(&ns, Backend::Iptables, &text));
    wait_for("the nftables table to go", 20, || !ns.run(&["nft", "list", "tables"]).contains("azure-npm"));
    stop(agent);
    ns.run(&[NPM, "cleanup"]);
    assert!(!iptables_state_left(&ns));
    assert!(!ns.run(&["nft", "list", "tables"]).contains("azure-npm"));
}

/// A cluster of `pods` pods in 10 namespaces and `policies` policies; `shift` moves every pod's
/// app label and the policies' peers, so two shifts differ in almost every map entry and set.
fn big_cluster(pods: usize, policies: usize, shift: usize) -> String {
    let mut y = String::from("kind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 10.240.0.4}]}\n");
    for n in 0..10 {
        let _ = write!(y, "---\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{team: t{}}}}}\n", n % 3);
    }
    for k in 0..pods {
        let _ = write!(
            y,
            "---\nkind: Pod\nmetadata: {{name: p{k}, namespace: ns-{}, labels: {{app: a{}, tier: {}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\n\
             status: {{podIP: 10.1.{}.{}}}\n",
            k % 10,
            (k + shift) % 20,
            ["web", "api", "db"][k % 3],
            k / 250,
            k % 250 + 1
        );
    }
    for i in 0..policies {
        let _ = write!(
            y,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: ns-{}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: a{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n\
             \x20     podSelector: {{matchLabels: {{tier: web}}}}\n    - ipBlock: {{cidr: 172.16.0.0/12, except: [172.16.{}.0/24]}}\n\
             \x20   ports: [{{port: http}}, {{port: {}}}]\n",
            i % 10,
            (i + shift) % 20,
            (i + shift) % 3,
            i % 200,
            8000 + i % 50
        );
    }
    y
}

const ROUNDS: usize = 12;

#[test]
fn kill_9_during_a_large_nftables_apply_leaves_the_old_or_the_new_state_then_converges() {
    let ns = Netns::new("bigcrash");
    let dir = tempfile::tempdir().unwrap();
    let texts = [big_cluster(3000, 300, 0), big_cluster(3000, 300, 7)];
    let rendered: Vec<_> =
        texts.iter().map(|t| render(&compile(&Snapshot::from_yaml(t).unwrap().cluster)).unwrap()).collect();
    assert_ne!(rendered[0], rendered[1]);
    let state = |ns: &Netns| -> Option<usize> {
        match Kernel::read(ns, Backend::Nftables)? {
            Kernel::Nftables(v) if v.fixed_ok && v.problems.is_empty() => {
                rendered.iter().position(|r| *r == v.ruleset)
            }
            _ => None,
        }
    };
    std::fs::write(dir.path().join("cluster.yaml"), &texts[0]).unwrap();
    let started = Instant::now();
    let agent = start(&ns, dir.path(), "nftables");
    wait_for("the first program", 60, || state(&ns) == Some(0));
    let took = started.elapsed();
    stop(agent);

    let mut rng = rand::thread_rng();
    let mut landed = [0, 0];
    for round in 1..=ROUNDS {
        let want = round % 2;
        std::fs::write(dir.path().join("cluster.yaml"), &texts[want]).unwrap();
        let agent = start(&ns, dir.path(), "nftables");
        std::thread::sleep(Duration::from_millis(
            rng.gen_range(0..(took.as_millis() as u64 * 3 / 2).max(50)),
        ));
        stop(agent);
        let now = state(&ns);
        assert!(now.is_some(), "round {round}: the kernel holds neither the old state nor the new one");
        landed[now.unwrap_or(0)] += 1;
    }
    eprintln!("large apply ({took:?}) killed {ROUNDS} times: ended in state 0 / 1: {landed:?}");
    // A run left alone converges.
    std::fs::write(dir.path().join("cluster.yaml"), &texts[1]).unwrap();
    let agent = start(&ns, dir.path(), "nftables");
    wait_for("convergence", 60, || state(&ns) == Some(1));
    stop(agent);
}
