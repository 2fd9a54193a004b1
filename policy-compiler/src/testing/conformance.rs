//! The conformance cases of `testdata/policy/`: a cluster, its policies and an `Expectations`
//! document listing the pairs that must be denied per protocol and port (all others allowed).
//! Every engine and every dataplane's renderer is judged against them.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::model::Protocol;
use crate::reach::{endpoints, Reach};
use crate::snapshot::Snapshot;

#[derive(Deserialize)]
pub struct Expectations {
    #[serde(default)]
    pub externals: Vec<IpAddr>,
    #[serde(default)]
    pub refused: usize,
    pub checks: Vec<Check>,
}

/// `denied` lists the pairs that must be denied (all others allowed), minus `except`.
#[derive(Deserialize)]
pub struct Check {
    pub protocol: String,
    pub port: u16,
    pub denied: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
}

impl Check {
    pub fn protocol(&self) -> Protocol {
        Protocol::parse(&self.protocol).expect("an Expectations protocol")
    }

    /// Whether the expectations deny this row's pair.
    pub fn denies(&self, row: &Reach) -> bool {
        self.denied.iter().any(|p| pair_matches(p, row)) && !self.except.iter().any(|p| pair_matches(p, row))
    }
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

pub struct Case {
    pub name: String,
    pub text: String,
    pub snap: Snapshot,
    pub exp: Expectations,
}

pub fn load(file: &std::path::Path) -> Case {
    let text = std::fs::read_to_string(file).unwrap();
    let snap = Snapshot::from_yaml(&text).unwrap();
    let exp = expectations(&text);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    Case { name, text, snap, exp }
}

/// The case files, in name order.
pub fn files() -> Vec<PathBuf> {
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

pub fn cases() -> Vec<Case> {
    files().iter().map(|f| load(f)).collect()
}

/// Judges every pair of the case's endpoints (addresses) for every check whose protocol
/// `skip` does not exclude, and returns what `allowed` gets wrong.
pub fn mismatches(
    case: &Case,
    what: &str,
    skip: Option<Protocol>,
    mut allowed: impl FnMut(IpAddr, IpAddr, Protocol, u16) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let (sources, destinations) = endpoints(&case.snap.cluster, &case.exp.externals);
    for check in case.exp.checks.iter().filter(|c| Some(c.protocol()) != skip) {
        let protocol = check.protocol();
        for from in &sources {
            for to in &destinations {
                if from.name() == to.name() {
                    continue;
                }
                let (Some(src), Some(dst)) = (from.ip(), to.ip()) else { continue };
                let row = Reach {
                    from: from.name(),
                    to: to.name(),
                    allowed: allowed(src, dst, protocol, check.port),
                };
                if row.allowed == check.denies(&row) {
                    out.push(format!(
                        "{what} {} {protocol}/{}: {} -> {} is {}",
                        case.name,
                        check.port,
                        row.from,
                        row.to,
                        if row.allowed { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    out
}
