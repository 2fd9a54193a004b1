//! Golden files: the ipset and iptables-restore text, and the Windows HNS ACLs, of some
//! conformance cases. Refresh with
//! `UPDATE_GOLDEN=1 cargo test -p npm --test golden` after an intended change,
//! then review the diff; never edit them by hand.

use std::path::PathBuf;

use npm::dataplane::hns;
use npm::dataplane::iptables::render::{ipset_restore, iptables_restore, Notes};
use policy_compiler::compile::compile;
use policy_compiler::snapshot::Snapshot;

const CASES: [&str; 5] = [
    "01-deny-all-ingress",
    "07-ipblock-except",
    "08-named-port",
    "11-egress-defaulting",
    "13-deny-all-egress",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn check(path: PathBuf, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures
            .push(format!("{} differs:\n--- expected\n{expected}\n--- actual\n{actual}", path.display())),
        Err(e) => failures.push(format!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display())),
    }
}

#[test]
fn rendered_rules_and_sets_match_the_golden_files() {
    let mut failures = Vec::new();
    for case in CASES {
        let text = std::fs::read_to_string(root().join("policy").join(format!("{case}.yaml"))).unwrap();
        let cluster = Snapshot::from_yaml(&text).unwrap().cluster;
        let ir = compile(&cluster);
        let windows = serde_json::to_string_pretty(&hns::render(&ir, &cluster, None)).unwrap() + "\n";
        check(root().join("golden").join(format!("{case}.hns.json")), &windows, &mut failures);
        let mut notes = Notes::default();
        check(
            root().join("golden").join(format!("{case}.ipset")),
            &ipset_restore(&ir, &mut notes),
            &mut failures,
        );
        check(root().join("golden").join(format!("{case}.iptables")), &iptables_restore(&ir), &mut failures);
        assert!(notes.0.is_empty(), "{case}: {:?}", notes.0);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
