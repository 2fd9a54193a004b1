//! The agent keeps the kernel right through drift, restarts and kill -9 (dir source, in a
//! namespace this test creates), on both backends:
//! - drift (iptables: a flushed chain, a removed hook, a flushed set, a destroyed set;
//!   nftables: a deleted element, a flushed group chain, a flushed and a deleted base chain, the table deleted) is
//!   repaired and counted, and /metrics counts what the kernel holds;
//! - a restart onto changed objects adopts what the last run left: every sample of the kernel
//!   taken meanwhile allows no more than the old or the new state;
//! - killed at random moments while programming, the kernel allows no more than either state
//!   (nftables: it holds exactly the old or the new state, also during a large apply).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::kernel::{Backend, Kernel};
use common::{metric, wait_for, Netns, NPM};
use policy_compiler::compile::compile;
use policy_compiler::compiled::evaluate;
use policy_compiler::ir::Ir;
use policy_compiler::model::{Cluster, Protocol};
use policy_compiler::snapshot::Snapshot;
use rand::Rng;

const STEP_DELAY_MS: u64 = 150;

/// The objects of `base` with the policies of `policies` (the cases share their pods).
fn objects(base: &str, policies: &str) -> String {
    let read = |case: &str| {
        std::fs::read_to_string(format!("{}/../testdata/policy/{case}.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
    };
    let docs = |text: String| -> Vec<String> { text.split("\n---\n").map(str::to_string).collect() };
    let is_policy = |d: &String| d.contains("kind: NetworkPolicy");
    let mut out: Vec<String> =
        docs(read(base)).into_iter().filter(|d| !is_policy(d) && !d.contains("kind: Expectations")).collect();
    out.extend(docs(read(policies)).into_iter().filter(is_policy));
    out.join("\n---\n")
}

/// The same objects with y/b's label moved to y/c: the peer set `ns=y pod=b` trades its member,
/// which an unsafe order would briefly let both pods through.
fn label_moved(text: &str) -> String {
    text.replace("{name: b, namespace: y, labels: {pod: b}}", "{name: b, namespace: y, labels: {pod: bb}}")
        .replace("{name: c, namespace: y, labels: {pod: c}}", "{name: c, namespace: y, labels: {pod: b}}")
}

fn cluster(text: &str) -> Cluster {
    Snapshot::from_yaml(text).unwrap().cluster
}

/// Every (source, destination, protocol, port) the IR lets through.
type Allowed = BTreeSet<(IpAddr, IpAddr, Protocol, u16)>;

fn allowed_by(cluster: &Cluster, allows: impl Fn(IpAddr, IpAddr, Protocol, u16) -> bool) -> Allowed {
    let mut hosts: Vec<IpAddr> = cluster.pods.iter().filter_map(|p| p.ip).collect();
    hosts.extend(cluster.nodes.iter().filter_map(|n| n.internal_ip));
    hosts.push("203.0.113.9".parse().unwrap());
    let mut out = Allowed::new();
    for &src in &hosts {
        for &dst in &hosts {
            for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Tcp, 81), (Protocol::Udp, 80)] {
                if src != dst && allows(src, dst, protocol, port) {
                    out.insert((src, dst, protocol, port));
                }
            }
        }
    }
    out
}

/// What a compiled state lets through.
fn allowed(ir: &Ir, cluster: &Cluster) -> Allowed {
    allowed_by(cluster, |s, d, p, port| evaluate(ir, s, d, p, port).allowed)
}

/// What the kernel lets through, judged from its read-back state (unhooked: everything).
fn kernel_allows(kernel: &Kernel, cluster: &Cluster) -> Allowed {
    allowed_by(cluster, |s, d, p, port| kernel.allows(s, d, p, port))
}

/// The agent, pausing `STEP_DELAY_MS` after each step of an apply (iptables has steps) so
/// samples and kills land between steps.
fn start_agent(ns: &Netns, dir: &Path, log: &Path, backend: Backend) -> Child {
    ns.command(NPM)
        .env("AZURE_NPM_TEST_STEP_DELAY_MS", STEP_DELAY_MS.to_string())
        .args(["start", "--source", &format!("dir:{}", dir.display()), "--interval-ms", "100"])
        .args(["--verify-interval-secs", "1", "--metrics-addr", "127.0.0.1:10091"])
        .args(["--dataplane", backend.arg()])
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn holds(ns: &Netns, backend: Backend, text: &str) -> bool {
    Kernel::read(ns, backend).is_some_and(|k| k.holds(&compile(&cluster(text))))
}

/// An agent on case 07 in a new namespace, programmed: (namespace, its directory, the objects).
fn programmed(tag: &str, backend: Backend) -> (Netns, tempfile::TempDir, String) {
    let mut ns = Netns::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let text = objects("07-ipblock-except", "07-ipblock-except");
    std::fs::write(dir.path().join("cluster.yaml"), &text).unwrap();
    ns.children.push(start_agent(&ns, dir.path(), &dir.path().join("agent.log"), backend));
    wait_for("the first program", 20, || holds(&ns, backend, &text));
    (ns, dir, text)
}

#[test]
fn iptables_drift_is_repaired_counted_and_metrics_match_the_kernel() {
    let (ns, dir, text) = programmed("drift", Backend::Iptables);
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let holds = |ns: &Netns, text: &str| holds(ns, Backend::Iptables, text);

    let expected = compile(&cluster(&text));
    let allow_set = expected.sets.keys().find(|n| n.to_string().starts_with("azn-n")).unwrap().to_string();
    let isolation = expected.sets.keys().find(|n| n.is_isolation()).unwrap().to_string();
    let drifts: [(&str, Vec<Vec<&str>>); 4] = [
        ("a flushed chain", vec![vec!["iptables", "-F", "AZURE-NPM-INGRESS"]]),
        ("a removed hook", vec![vec!["iptables", "-D", "FORWARD", "-j", "AZURE-NPM"]]),
        ("a flushed set", vec![vec!["ipset", "flush", &allow_set]]),
        (
            "a destroyed set",
            vec![
                vec!["iptables", "-F", "AZURE-NPM-INGRESS"],
                vec!["iptables", "-F", "AZURE-NPM-EGRESS"],
                vec!["iptables", "-F", "AZURE-NPM-ACCEPT"],
                vec!["ipset", "destroy", &isolation],
            ],
        ),
    ];
    for (what, commands) in &drifts {
        for c in commands {
            ns.run(c);
        }
        assert!(!holds(&ns, &text), "{what} did not change the kernel");
        wait_for(&format!("the repair of {what}"), 20, || holds(&ns, &text));
    }
    let (_, metrics) = ns.http_get(10091, "/metrics").unwrap();
    let repairs = metric(&metrics, "npm_drift_repairs_total").unwrap_or(0.0);
    assert!(repairs >= drifts.len() as f64, "{repairs} repairs counted\n{metrics}\n{}", agent_log());
    let save = ns.run(&["iptables-save", "-t", "filter"]);
    let rules = save.lines().filter(|l| l.starts_with("-A AZURE-NPM")).count();
    let sets = ns.run(&["ipset", "list", "-n"]);
    let view = ns.kernel();
    assert_eq!(metric(&metrics, "npm_num_iptables_rules"), Some(rules as f64), "{metrics}");
    assert_eq!(metric(&metrics, "npm_dataplane_info"), Some(1.0), "{metrics}");
    assert!(metrics.contains("npm_dataplane_info{backend=\"iptables\"} 1"), "{metrics}");
    assert_eq!(
        metric(&metrics, "npm_num_ipsets"),
        Some(
            sets.lines()
                .filter(|l| l.starts_with("azn-") || *l == npm::dataplane::iptables::render::HOLD_SET)
                .count() as f64
        )
    );
    assert_eq!(metric(&metrics, "npm_num_ipset_entries"), Some(view.ir.member_count() as f64));
    assert_eq!(metric(&metrics, "npm_num_policies"), Some(cluster(&text).policies.len() as f64));
    assert!(metric(&metrics, "npm_apply_duration_seconds_count").unwrap_or(0.0) >= 2.0, "{metrics}");
}

/// Samples the kernel on a thread until stopped; returns the samples that allowed more than
/// both `old` and `new`.
fn sample(
    ns: &Netns,
    backend: Backend,
    old: Allowed,
    new: Allowed,
    cluster: Cluster,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<(usize, Vec<String>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let ns = ns.borrow();
    let handle = std::thread::spawn(move || {
        let (mut samples, mut wider) = (0, Vec::new());
        while !flag.load(Ordering::Relaxed) {
            // iptables: rules first, then sets: a set change between the two reads can only be
            // one that the agent makes in the safe order, which the check below covers either way.
            let Some(kernel) = Kernel::read(&ns, backend) else { continue };
            samples += 1;
            let now = kernel_allows(&kernel, &cluster);
            if !now.is_subset(&old) && !now.is_subset(&new) {
                wider.push(format!(
                    "{} pairs more than old, {} more than new",
                    now.difference(&old).count(),
                    now.difference(&new).count()
                ));
            }
        }
        (samples, wider)
    });
    (stop, handle)
}

#[test]
fn nftables_drift_is_repaired_counted_and_metrics_match_the_kernel() {
    let (ns, dir, text) = programmed("nftdrift", Backend::Nftables);
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let holds = |ns: &Netns, text: &str| holds(ns, Backend::Nftables, text);

    let Some(Kernel::Nftables(view)) = Kernel::read(&ns, Backend::Nftables) else { panic!("no table") };
    let (set, addr) = view
        .ruleset
        .sets
        .iter()
        .find_map(|(id, e)| match e {
            npm::dataplane::nftables::ruleset::Elems::Addrs(a) => {
                a.iter().next().map(|a| (id.to_string(), a.to_string()))
            }
            _ => None,
        })
        .expect("a set of addresses with a member");
    let group =
        view.ruleset.chains.keys().find(|c| c.starts_with("ingress-")).expect("a group chain").clone();
    let drifts: [(&str, String); 5] = [
        ("a deleted element", format!("delete element inet azure-npm {set} {{ {addr} }}")),
        ("a flushed group chain", format!("flush chain inet azure-npm {group}")),
        ("a flushed base chain", "flush chain inet azure-npm forward".to_string()),
        (
            "a deleted base chain",
            "flush chain inet azure-npm forward; delete chain inet azure-npm forward".to_string(),
        ),
        ("the table deleted", "delete table inet azure-npm".to_string()),
    ];
    for (what, script) in &drifts {
        ns.run(&["nft", script]);
        assert!(!holds(&ns, &text), "{what} did not change the kernel");
        wait_for(&format!("the repair of {what}"), 20, || holds(&ns, &text));
    }
    let (_, metrics) = ns.http_get(10091, "/metrics").unwrap();
    let repairs = metric(&metrics, "npm_drift_repairs_total").unwrap_or(0.0);
    assert!(repairs >= drifts.len() as f64, "{repairs} repairs counted\n{metrics}\n{}", agent_log());
    // Counted from nft's own listing: rules are the lines with a handle inside chains.
    let listed = ns.run(&["nft", "-a", "list", "table", "inet", "azure-npm"]);
    let headers = ["table ", "chain ", "set ", "map "];
    let rules = listed
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("# handle") && !headers.iter().any(|h| l.starts_with(h)))
        .count();
    let sets =
        listed.lines().map(str::trim).filter(|l| l.starts_with("set ") || l.starts_with("map ")).count();
    assert_eq!(metric(&metrics, "npm_num_nftables_rules"), Some(rules as f64), "{metrics}\n{listed}");
    assert_eq!(metric(&metrics, "npm_num_nftables_sets"), Some(sets as f64), "{metrics}\n{listed}");
    let Some(Kernel::Nftables(view)) = Kernel::read(&ns, Backend::Nftables) else { panic!("no table") };
    assert_eq!(metric(&metrics, "npm_num_nftables_elements"), Some(view.ruleset.element_count() as f64));
    assert!(metrics.contains("npm_dataplane_info{backend=\"nftables\"} 1"), "{metrics}");
    assert_eq!(
        metric(&metrics, "npm_num_iptables_rules"),
        None,
        "no iptables figures from the nftables backend"
    );

    // The kernel's verdict, explained from the table read back: the rule and its policy.
    let file = dir.path().join("cluster.yaml");
    let explain = |from: &str, to: &str| -> serde_json::Value {
        let out = ns
            .command(NPM)
            .args(["debug", "explain", "--objects", file.to_str().unwrap(), "--from", from, "--to", to])
            .args(["--protocol", "TCP", "--port", "80", "--dataplane", "nftables", "--output", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let denied = explain("y/a", "x/a");
    assert_eq!(denied["dataplane"]["backend"], "nftables");
    assert_eq!(
        (denied["allowed"].clone(), denied["dataplane"]["allowed"].clone()),
        (false.into(), false.into())
    );
    assert_eq!(denied["dataplane"]["trace"]["dropped_by"], "isolated ingress: drop what no rule allowed");
    let allowed = explain("y/b", "x/a");
    assert_eq!(
        (allowed["allowed"].clone(), allowed["dataplane"]["allowed"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(allowed["dataplane"]["trace"]["ingress_allowed_by"][0], "x/block ingress[0]");
}

fn restart_never_opens_a_window(backend: Backend) {
    let mut ns = Netns::new(&format!("restart-{}", backend.arg()));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let old_text = objects("07-ipblock-except", "07-ipblock-except");
    let new_text = label_moved(&objects("07-ipblock-except", "14-policies-or"));
    std::fs::write(dir.path().join("cluster.yaml"), &old_text).unwrap();
    let mut first = start_agent(&ns, dir.path(), &log, backend);
    wait_for("the first run's program", 20, || holds(&ns, backend, &old_text));
    kill(&mut first);

    std::fs::write(dir.path().join("cluster.yaml"), &new_text).unwrap();
    let c = cluster(&old_text);
    let old = allowed(&compile(&c), &c);
    let new = allowed(&compile(&cluster(&new_text)), &c);
    assert_ne!(old, new, "the two states must differ for this test to mean anything");
    let (stop, sampler) = sample(&ns, backend, old, new, c);
    std::thread::sleep(Duration::from_millis(300));
    ns.children.push(start_agent(&ns, dir.path(), &log, backend));
    wait_for("the second run's program", 20, || holds(&ns, backend, &new_text));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (samples, wider) = sampler.join().unwrap();
    eprintln!("restart ({}): {samples} kernel samples", backend.arg());
    assert!(samples >= 3, "too few samples ({samples}) to mean anything");
    assert!(wider.is_empty(), "the kernel allowed more than either state:\n{}", wider.join("\n"));
}

#[test]
fn a_restart_onto_changed_objects_never_opens_a_window_iptables() {
    restart_never_opens_a_window(Backend::Iptables);
}

#[test]
fn a_restart_onto_changed_objects_never_opens_a_window_nftables() {
    restart_never_opens_a_window(Backend::Nftables);
}

const ROUNDS: usize = 20;

fn kill_9_mid_apply(backend: Backend) {
    let ns = Netns::new(&format!("crash-{}", backend.arg()));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let base = objects("07-ipblock-except", "07-ipblock-except");
    let texts = [base.clone(), label_moved(&base)];
    let c = cluster(&texts[0]);
    let allowed_by: Vec<Allowed> = texts.iter().map(|t| allowed(&compile(&cluster(t)), &c)).collect();
    std::fs::write(dir.path().join("cluster.yaml"), &texts[0]).unwrap();
    let mut agent = start_agent(&ns, dir.path(), &log, backend);
    wait_for("the first program", 20, || holds(&ns, backend, &texts[0]));
    kill(&mut agent);

    let mut rng = rand::thread_rng();
    let mut landed = [0, 0];
    for round in 1..=ROUNDS {
        std::fs::write(dir.path().join("cluster.yaml"), &texts[round % 2]).unwrap();
        let mut agent = start_agent(&ns, dir.path(), &log, backend);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..4 * STEP_DELAY_MS)));
        kill(&mut agent);
        let kernel = Kernel::read(&ns, backend).expect("the kernel reads back");
        let now = kernel_allows(&kernel, &c);
        assert!(
            now.is_subset(&allowed_by[0]) || now.is_subset(&allowed_by[1]),
            "round {round}: the kernel allows more than either state"
        );
        let exact: Vec<bool> = texts.iter().map(|t| kernel.holds(&compile(&cluster(t)))).collect();
        if backend == Backend::Nftables {
            assert!(exact[0] || exact[1], "round {round}: one transaction, so the old state or the new one");
        }
        for (i, e) in exact.iter().enumerate() {
            landed[i] += usize::from(*e);
        }
    }
    eprintln!("kill -9 rounds ({}) ending in state 0 / 1 exactly: {landed:?} of {ROUNDS}", backend.arg());
}

#[test]
fn kill_9_mid_apply_leaves_no_state_wider_than_either_iptables() {
    kill_9_mid_apply(Backend::Iptables);
}

#[test]
fn kill_9_mid_apply_leaves_the_old_or_the_new_state_nftables() {
    kill_9_mid_apply(Backend::Nftables);
}
