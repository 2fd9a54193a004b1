//! The Linux dataplane against a real kernel, inside a network namespace this test creates:
//! a full program, an incremental pod change, a policy removal (its sets destroyed after the
//! rules that used them), and cleanup leaving nothing behind.

use std::process::Command;

use npm::dataplane::exec::{Exec, Process};
use npm::dataplane::linux::Linux;
use npm::dataplane::Dataplane;
use policy_compiler::incremental::{diff, Compiler, Event};
use policy_compiler::snapshot::Snapshot;

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        assert!(
            root,
            "this test programs iptables in a network namespace and needs root: sudo scripts/test.sh"
        );
        let name = format!("aznpm-{}", std::process::id());
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Netns(name)
    }

    fn exec(&self) -> Process {
        Process { wrapper: vec!["ip".into(), "netns".into(), "exec".into(), self.0.clone()] }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn members(ns: &Netns, set: &str) -> String {
    ns.exec().run("ipset", &["list", set], "").unwrap_or_default()
}

#[test]
fn programs_updates_and_cleans_up_a_real_kernel() {
    let ns = Netns::new();
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/policy/07-ipblock-except.yaml"
    ))
    .unwrap();
    let mut compiler = Compiler::new(Snapshot::from_yaml(&yaml).unwrap().cluster);
    let mut dp = Linux::new(Box::new(ns.exec())).unwrap();
    dp.apply(&diff(&Default::default(), compiler.ir())).unwrap();

    let save = ns.exec().run("iptables-save", &["-t", "filter"], "").unwrap();
    assert!(save.contains("-A FORWARD -j AZURE-NPM") && save.contains("-A OUTPUT -j AZURE-NPM"), "{save}");
    assert_eq!(save.matches("-A AZURE-NPM-INGRESS").count(), compiler.ir().ingress.len());
    let sets = ns.exec().run("ipset", &["list", "-n"], "").unwrap();
    for name in compiler.ir().sets.keys() {
        assert!(sets.lines().any(|l| l == name), "{name} missing from the kernel");
    }
    let again = diff(&Default::default(), compiler.ir());
    dp.apply(&again).unwrap(); // programming the same state twice is harmless
    assert_eq!(
        ns.exec().run("iptables-save", &["-t", "filter"], "").unwrap().matches("-j AZURE-NPM\n").count(),
        2
    );

    // y/b loses the label that let it reach x/a: it leaves that peer's set.
    let mut pod = compiler.cluster().pod("y/b").unwrap().clone();
    let peer = compiler.ir().sets.values().find(|s| s.key.contains("pod{pod=b}")).unwrap().name.clone();
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
    let sets = ns.exec().run("ipset", &["list", "-n"], "").unwrap();
    for gone in &delta.destroyed {
        assert!(!sets.lines().any(|l| l == gone), "{gone} should be destroyed");
    }

    dp.cleanup().unwrap();
    let save = ns.exec().run("iptables-save", &["-t", "filter"], "").unwrap();
    assert!(!save.contains("AZURE-NPM"), "{save}");
    let sets = ns.exec().run("ipset", &["list", "-n"], "").unwrap();
    assert!(!sets.lines().any(|l| l.starts_with("azn-")), "{sets}");
}
