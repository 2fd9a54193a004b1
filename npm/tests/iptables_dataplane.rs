//! The iptables backend against a real kernel, inside a network namespace this test creates:
//! a full program, an incremental pod change, a policy removal (its sets destroyed after the
//! rules that used them), and cleanup leaving nothing behind.

mod common;

use common::Netns;
use npm::dataplane::exec::Exec;
use npm::dataplane::iptables::Iptables;
use npm::dataplane::Dataplane;
use policy_compiler::incremental::{diff, Compiler, Event};
use policy_compiler::snapshot::Snapshot;

fn members(ns: &Netns, set: &str) -> String {
    ns.process().run("ipset", &["list", set], "").unwrap_or_default()
}

#[test]
fn programs_updates_and_cleans_up_a_real_kernel() {
    let ns = Netns::new("dataplane");
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/policy/07-ipblock-except.yaml"
    ))
    .unwrap();
    let mut compiler = Compiler::new(Snapshot::from_yaml(&yaml).unwrap().cluster);
    let mut dp = Iptables::new(Box::new(ns.process())).unwrap();
    dp.apply(&diff(&Default::default(), compiler.ir())).unwrap();

    let save = ns.process().run("iptables-save", &["-t", "filter"], "").unwrap();
    assert!(save.contains("-A FORWARD -j AZURE-NPM") && save.contains("-A OUTPUT -j AZURE-NPM"), "{save}");
    assert_eq!(save.matches("-A AZURE-NPM-INGRESS").count(), compiler.ir().ingress.len());
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    for name in compiler.ir().sets.keys() {
        assert!(sets.lines().any(|l| l == name.to_string()), "{name} missing from the kernel");
    }
    let again = diff(&Default::default(), compiler.ir());
    dp.apply(&again).unwrap(); // programming the same state twice is harmless
    assert_eq!(
        ns.process().run("iptables-save", &["-t", "filter"], "").unwrap().matches("-j AZURE-NPM\n").count(),
        2
    );

    // y/b loses the label that let it reach x/a: it leaves that peer's set.
    let mut pod = compiler.cluster().pod("y/b").unwrap().clone();
    let peer = compiler.ir().sets.values().find(|s| s.key.contains("pod{pod=b}")).unwrap().id.to_string();
    assert!(members(&ns, &peer).contains("10.0.2.2"));
    pod.labels.insert("pod".into(), "bee".into());
    let delta = compiler.apply(Event::UpsertPod(pod));
    dp.apply(&delta).unwrap();
    assert!(!members(&ns, &peer).contains("10.0.2.2"), "{}", members(&ns, &peer));

    // The policy goes: its rules first, then its sets.
    let delta = compiler.apply(Event::DeletePolicy { namespace: "x".into(), name: "block".into() });
    assert!(!delta.destroyed.is_empty());
    dp.apply(&delta).unwrap();
    assert!(dp.pending_destroy.is_empty(), "{:?}", dp.pending_destroy);
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    for gone in &delta.destroyed {
        assert!(!sets.lines().any(|l| l == gone.to_string()), "{gone} should be destroyed");
    }

    dp.cleanup().unwrap();
    let save = ns.process().run("iptables-save", &["-t", "filter"], "").unwrap();
    assert!(!save.contains("AZURE-NPM"), "{save}");
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    assert!(!sets.lines().any(|l| l.starts_with("azn-")), "{sets}");
}
