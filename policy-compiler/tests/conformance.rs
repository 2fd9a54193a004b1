//! The conformance suite: every case in `testdata/policy/` (a cluster, its policies and the
//! expected truth tables, built from the Kubernetes e2e NetworkPolicy scenarios and the
//! semantics list in DESIGN.md) must give exactly the expected verdicts.

use std::net::IpAddr;
use std::path::PathBuf;

use policy_compiler::compile::compile;
use policy_compiler::hns;
use policy_compiler::model::Protocol;
use policy_compiler::reach::{endpoints, reachability, Engine, Reach};
use policy_compiler::snapshot::Snapshot;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expectations {
    #[serde(default)]
    externals: Vec<IpAddr>,
    #[serde(default)]
    refused: usize,
    checks: Vec<Check>,
}

/// `denied` lists the pairs that must be denied (all others allowed), minus `except`.
#[derive(Deserialize)]
struct Check {
    protocol: String,
    port: u16,
    denied: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
}

fn side_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn pair_matches(pattern: &str, row: &Reach) -> bool {
    let (from, to) =
        pattern.split_once(" -> ").unwrap_or_else(|| panic!("pattern {pattern:?} is not 'FROM -> TO'"));
    side_matches(from.trim(), &row.from) && side_matches(to.trim(), &row.to)
}

fn expectations(text: &str) -> Expectations {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        if v["kind"].as_str() == Some("Expectations") {
            return serde_yaml::from_value(v).expect("Expectations document");
        }
    }
    panic!("no Expectations document");
}

struct Case {
    name: String,
    text: String,
    snap: Snapshot,
    exp: Expectations,
}

fn load(file: &std::path::Path) -> Case {
    let text = std::fs::read_to_string(file).unwrap();
    let snap = Snapshot::from_yaml(&text).unwrap();
    let exp = expectations(&text);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    Case { name, text, snap, exp }
}

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/policy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the conformance cases are missing from {}", dir.display());
    files
}

#[test]
fn the_semantic_engine_passes_every_conformance_case() {
    run_cases(Engine::Semantic);
}

#[test]
fn the_compiled_engine_passes_every_conformance_case() {
    run_cases(Engine::Compiled);
}

/// The Windows rendering, simulated: every case except SCTP queries (HNS ACLs cannot express
/// SCTP; those allows are omitted and reported).
#[test]
fn the_hns_rendering_passes_every_conformance_case_but_sctp() {
    let mut failures = Vec::new();
    for file in cases() {
        let Case { name, text, snap, exp } = load(&file);
        let rendered = hns::render(&compile(&snap.cluster), &snap.cluster, None);
        let (sources, destinations) = endpoints(&snap.cluster, &exp.externals);
        for check in exp.checks.iter().filter(|c| c.protocol != "SCTP") {
            let protocol = Protocol::parse(&check.protocol).expect("protocol");
            for from in &sources {
                for to in &destinations {
                    if from.name() == to.name() {
                        continue;
                    }
                    let row = Reach {
                        from: from.name(),
                        to: to.name(),
                        allowed: hns::evaluate(
                            &rendered,
                            from.ip().unwrap(),
                            to.ip().unwrap(),
                            protocol,
                            check.port,
                        ),
                    };
                    let denied = check.denied.iter().any(|p| pair_matches(p, &row))
                        && !check.except.iter().any(|p| pair_matches(p, &row));
                    if row.allowed == denied {
                        failures.push(format!(
                            "HNS {name} {protocol}/{}: {} -> {} wrong",
                            check.port, row.from, row.to
                        ));
                    }
                }
            }
        }
        if text.contains("protocol: SCTP}]") {
            assert!(!rendered.unsupported.is_empty(), "{name}: SCTP must be reported as unsupported");
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

fn run_cases(engine: Engine) {
    let mut failures = Vec::new();
    for file in cases() {
        let Case { name, snap, exp, .. } = load(&file);
        if snap.refused.len() != exp.refused {
            failures.push(format!("{name}: refused {:?}, expected {} refusals", snap.refused, exp.refused));
        }
        for check in &exp.checks {
            let protocol = Protocol::parse(&check.protocol).expect("protocol");
            for row in reachability(&snap.cluster, &exp.externals, protocol, check.port, engine) {
                let denied = check.denied.iter().any(|p| pair_matches(p, &row))
                    && !check.except.iter().any(|p| pair_matches(p, &row));
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
