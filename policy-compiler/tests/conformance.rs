//! The conformance suite: every case in `testdata/policy/` (a cluster, its policies and the
//! expected truth tables, built from the Kubernetes e2e NetworkPolicy scenarios and the
//! semantics list in DESIGN.md) must give exactly the expected verdicts.

use policy_compiler::model::Protocol;
use policy_compiler::reach::{reachability, Engine};
use policy_compiler::testing::conformance::cases;

#[test]
fn the_semantic_engine_passes_every_conformance_case() {
    run_cases(Engine::Semantic);
}

#[test]
fn the_compiled_engine_passes_every_conformance_case() {
    run_cases(Engine::Compiled);
}

fn run_cases(engine: Engine) {
    let mut failures = Vec::new();
    for case in cases() {
        let (name, snap, exp) = (&case.name, &case.snap, &case.exp);
        if snap.refused.len() != exp.refused {
            failures.push(format!("{name}: refused {:?}, expected {} refusals", snap.refused, exp.refused));
        }
        for check in &exp.checks {
            let protocol: Protocol = check.protocol();
            for row in reachability(&snap.cluster, &exp.externals, protocol, check.port, engine) {
                let denied = check.denies(&row);
                if row.allowed == denied {
                    failures.push(format!(
                        "{engine:?} {name} {protocol}/{}: {} -> {} is {}, expected {}",
                        check.port,
                        row.from,
                        row.to,
                        if row.allowed { "allowed" } else { "denied" },
                        if denied { "denied" } else { "allowed" }
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
