//! The agent keeps the kernel right through drift, restarts and kill -9 (dir source, in a
//! namespace this test creates):
//! - drift (a flushed chain, a removed hook, a flushed set, a destroyed set) is repaired and
//!   counted, and /metrics counts what the kernel holds;
//! - a restart onto changed objects adopts what the last run left: every sample of the kernel
//!   taken meanwhile allows no more than the old or the new state;
//! - killed at random moments while programming, the kernel allows no more than either state.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{metric, wait_for, Netns, NPM};
use policy_compiler::compile::compile;
use policy_compiler::compiled::evaluate;
use policy_compiler::ir::Ir;
use policy_compiler::model::{Cluster, Protocol};
use policy_compiler::readback::{kernel_shape, KernelView};
use policy_compiler::snapshot::Snapshot;
use rand::Rng;

const HOOKS: [&str; 2] = ["FORWARD", "OUTPUT"];
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

fn allowed(ir: &Ir, cluster: &Cluster, hooked: bool) -> Allowed {
    let mut hosts: Vec<IpAddr> = cluster.pods.iter().filter_map(|p| p.ip).collect();
    hosts.extend(cluster.nodes.iter().filter_map(|n| n.internal_ip));
    hosts.push("203.0.113.9".parse().unwrap());
    let mut out = Allowed::new();
    for &src in &hosts {
        for &dst in &hosts {
            for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Tcp, 81), (Protocol::Udp, 80)] {
                if src != dst && (!hooked || evaluate(ir, src, dst, protocol, port).allowed) {
                    out.insert((src, dst, protocol, port));
                }
            }
        }
    }
    out
}

/// What the kernel lets through, judged from its read-back state (unhooked: everything).
fn kernel_allows(view: &KernelView, cluster: &Cluster) -> Allowed {
    let hooked = view.entry_ok && view.jumps.iter().any(|j| j == "FORWARD");
    allowed(&view.ir, cluster, hooked)
}

/// The agent, pausing `STEP_DELAY_MS` after each step of an apply so samples and kills land
/// between steps.
fn start_agent(ns: &Netns, dir: &Path, log: &Path) -> Child {
    ns.command(NPM)
        .env("AZURE_NPM_TEST_STEP_DELAY_MS", STEP_DELAY_MS.to_string())
        .args(["start", "--source", &format!("dir:{}", dir.display()), "--interval-ms", "100"])
        .args(["--verify-interval-secs", "1", "--metrics-addr", "127.0.0.1:10091"])
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn holds(ns: &Netns, text: &str) -> bool {
    let view = ns.kernel();
    view.ir == kernel_shape(&compile(&cluster(text))) && view.wired(&HOOKS)
}

#[test]
fn drift_is_repaired_counted_and_metrics_match_the_kernel() {
    let mut ns = Netns::new("drift");
    let dir = tempfile::tempdir().unwrap();
    let text = objects("07-ipblock-except", "07-ipblock-except");
    std::fs::write(dir.path().join("cluster.yaml"), &text).unwrap();
    let log = dir.path().join("agent.log");
    ns.children.push(start_agent(&ns, dir.path(), &log));
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the first program", 20, || holds(&ns, &text));

    let expected = kernel_shape(&compile(&cluster(&text)));
    let allow_set = expected.sets.keys().find(|n| n.starts_with("azn-n")).unwrap().clone();
    let isolation = expected.sets.keys().find(|n| n.starts_with("azn-x")).unwrap().clone();
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
    assert_eq!(
        metric(&metrics, "npm_num_ipsets"),
        Some(
            sets.lines().filter(|l| l.starts_with("azn-") || *l == policy_compiler::render::HOLD_SET).count()
                as f64
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
    old: Allowed,
    new: Allowed,
    cluster: Cluster,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<(usize, Vec<String>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let name = ns.name.clone();
    let handle = std::thread::spawn(move || {
        let run = |args: &[&str]| {
            let out =
                std::process::Command::new("ip").args(["netns", "exec", &name]).args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let (mut samples, mut wider) = (0, Vec::new());
        while !flag.load(Ordering::Relaxed) {
            // Rules first, then sets: a set change between the two reads can only be one that
            // the agent makes in the safe order, which the check below covers either way.
            let rules = run(&["iptables-save", "-t", "filter"]);
            let sets = run(&["ipset", "save"]);
            let Ok(view) = KernelView::read(&sets, &rules) else { continue };
            samples += 1;
            let now = kernel_allows(&view, &cluster);
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
fn a_restart_onto_changed_objects_never_opens_a_window() {
    let mut ns = Netns::new("restart");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let old_text = objects("07-ipblock-except", "07-ipblock-except");
    let new_text = label_moved(&objects("07-ipblock-except", "14-policies-or"));
    std::fs::write(dir.path().join("cluster.yaml"), &old_text).unwrap();
    let mut first = start_agent(&ns, dir.path(), &log);
    wait_for("the first run's program", 20, || holds(&ns, &old_text));
    kill(&mut first);

    std::fs::write(dir.path().join("cluster.yaml"), &new_text).unwrap();
    let c = cluster(&old_text);
    let old = allowed(&compile(&c), &c, true);
    let new = allowed(&compile(&cluster(&new_text)), &c, true);
    assert_ne!(old, new, "the two states must differ for this test to mean anything");
    let (stop, sampler) = sample(&ns, old, new, c);
    std::thread::sleep(Duration::from_millis(300));
    ns.children.push(start_agent(&ns, dir.path(), &log));
    wait_for("the second run's program", 20, || holds(&ns, &new_text));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (samples, wider) = sampler.join().unwrap();
    eprintln!("restart: {samples} kernel samples");
    assert!(samples >= 3, "too few samples ({samples}) to mean anything");
    assert!(wider.is_empty(), "the kernel allowed more than either state:\n{}", wider.join("\n"));
}

const ROUNDS: usize = 20;

#[test]
fn kill_9_mid_apply_leaves_no_state_wider_than_either() {
    let ns = Netns::new("crash");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let base = objects("07-ipblock-except", "07-ipblock-except");
    let texts = [base.clone(), label_moved(&base)];
    let c = cluster(&texts[0]);
    let allowed_by: Vec<Allowed> = texts.iter().map(|t| allowed(&compile(&cluster(t)), &c, true)).collect();
    std::fs::write(dir.path().join("cluster.yaml"), &texts[0]).unwrap();
    let mut agent = start_agent(&ns, dir.path(), &log);
    wait_for("the first program", 20, || holds(&ns, &texts[0]));
    kill(&mut agent);

    let mut rng = rand::thread_rng();
    let mut landed = [0, 0];
    for round in 1..=ROUNDS {
        std::fs::write(dir.path().join("cluster.yaml"), &texts[round % 2]).unwrap();
        let mut agent = start_agent(&ns, dir.path(), &log);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..4 * STEP_DELAY_MS)));
        kill(&mut agent);
        let view = ns.kernel();
        let now = kernel_allows(&view, &c);
        assert!(
            now.is_subset(&allowed_by[0]) || now.is_subset(&allowed_by[1]),
            "round {round}: the kernel allows more than either state"
        );
        for (i, t) in texts.iter().enumerate() {
            if holds(&ns, t) {
                landed[i] += 1;
            }
        }
    }
    eprintln!("kill -9 rounds ending in state 0 / 1 exactly: {landed:?} of {ROUNDS}");
}
