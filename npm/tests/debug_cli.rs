//! `azure-npm debug` as a user runs it, on the conformance snapshots.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const NPM: &str = env!("CARGO_BIN_EXE_azure-npm");

fn case(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/policy").join(format!("{name}.yaml"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(NPM).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn allowed(results: &Value, from: &str, to: &str) -> bool {
    let row = results.as_array().unwrap().iter().find(|r| r["from"] == from && r["to"] == to);
    row.unwrap_or_else(|| panic!("no row {from} -> {to}"))["allowed"].as_bool().unwrap()
}

#[test]
fn reachability_json_has_the_documented_shape_for_both_engines() {
    let objects = case("04-namespace-and-pod-selector-and");
    for engine in ["compiled", "semantic"] {
        let (ok, out, err) = run(&[
            "debug",
            "reachability",
            "--objects",
            objects.to_str().unwrap(),
            "--protocol",
            "TCP",
            "--port",
            "80",
            "--external",
            "203.0.113.9",
            "--engine",
            engine,
            "--output",
            "json",
        ]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["protocol"].as_str(), v["port"].as_u64(), v["engine"].as_str()),
            (Some("TCP"), Some(80), Some(engine))
        );
        let results = &v["results"];
        // 9 pods + 1 external + 1 node as sources, 9 pods + 1 external as destinations, minus self pairs.
        assert_eq!(results.as_array().unwrap().len(), 11 * 10 - 10);
        assert!(allowed(results, "y/b", "x/a"));
        assert!(!allowed(results, "y/a", "x/a"));
        assert!(!allowed(results, "203.0.113.9", "x/a"));
        assert!(allowed(results, "10.240.0.4", "x/a"), "the pod's own node");
        assert!(allowed(results, "x/a", "203.0.113.9"));
    }
}

#[test]
fn explain_names_the_isolating_policy_and_the_allowing_rule() {
    let objects = case("04-namespace-and-pod-selector-and");
    let o = objects.to_str().unwrap();
    let (ok, out, _) = run(&[
        "debug",
        "explain",
        "--objects",
        o,
        "--from",
        "y/b",
        "--to",
        "x/a",
        "--protocol",
        "TCP",
        "--port",
        "80",
        "--output",
        "json",
    ]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["semantic"]["ingress"]["selected_by"][0], "x/y-b-only");
    assert_eq!(v["semantic"]["ingress"]["allowed_by"][0], "x/y-b-only ingress[0]");
    assert_eq!(v["compiled"]["allowed"], true);
    let (ok, text, _) = run(&[
        "debug",
        "explain",
        "--objects",
        o,
        "--from",
        "y/a",
        "--to",
        "x/a",
        "--protocol",
        "TCP",
        "--port",
        "80",
    ]);
    assert!(ok);
    assert!(text.contains("DENIED") && text.contains("no rule allows it"), "{text}");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let o = case("00-no-policies");
    let (ok, _, err) = run(&[
        "debug",
        "explain",
        "--objects",
        o.to_str().unwrap(),
        "--from",
        "nope/pod",
        "--to",
        "x/a",
        "--protocol",
        "TCP",
        "--port",
        "80",
    ]);
    assert!(!ok && err.contains("no pod nope/pod"), "{err}");
    let (ok, _, err) = run(&[
        "debug",
        "reachability",
        "--objects",
        "/nonexistent.yaml",
        "--protocol",
        "TCP",
        "--port",
        "80",
    ]);
    assert!(!ok && err.contains("/nonexistent.yaml"), "{err}");
    let (ok, _, err) = run(&[
        "debug",
        "reachability",
        "--objects",
        o.to_str().unwrap(),
        "--protocol",
        "ICMP",
        "--port",
        "80",
    ]);
    assert!(!ok && err.contains("ICMP"), "{err}");
}

#[test]
fn render_prints_each_target() {
    let o = case("10-sctp-only");
    let o = o.to_str().unwrap();
    let (ok, out, _) = run(&["debug", "render", "--objects", o, "--target", "iptables"]);
    assert!(ok && out.starts_with("*filter") && out.contains("-p sctp"), "{out}");
    let (ok, out, _) = run(&["debug", "render", "--objects", o, "--target", "ipset"]);
    assert!(ok && out.contains("create azn-"), "{out}");
    let (ok, out, err) = run(&["debug", "render", "--objects", o, "--target", "hns", "--node", "node-1"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 9);
    assert!(err.contains("SCTP"), "the unsupported SCTP rule is reported: {err}");
}

/// `explain` over saved kernel state: the golden rendering of case 08 (as iptables-save prints
/// it, with the hooks) agrees with the policy; the same state with the agent's chains flushed
/// lets the packet through, and says so.
#[test]
fn explain_reads_the_kernels_state_from_saved_files() {
    let dir = tempfile::tempdir().unwrap();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/golden");
    let ipset = golden.join("08-named-port.ipset");
    let rules = std::fs::read_to_string(golden.join("08-named-port.iptables")).unwrap();
    let hooked = rules.replace("*filter\n", "*filter\n-A FORWARD -j AZURE-NPM\n-A OUTPUT -j AZURE-NPM\n");
    let flushed: String =
        hooked.lines().filter(|l| !l.starts_with("-A AZURE-NPM")).map(|l| format!("{l}\n")).collect();
    let objects = case("08-named-port");
    // explain y/a -> x/a on TCP/8080 over the saved kernel state in `iptables_save`.
    let explain = |iptables_save: &str| {
        let (objects, ipset) = (objects.to_str().unwrap(), ipset.to_str().unwrap());
        let mut args = vec!["debug", "explain", "--objects", objects, "--from", "y/a", "--to", "x/a"];
        args.extend(["--protocol", "TCP", "--port", "8080", "--ipset-save", ipset]);
        args.extend(["--iptables-save", iptables_save, "--output", "json"]);
        run(&args)
    };
    let ask = |saved: &str| {
        let file = dir.path().join("iptables.save");
        std::fs::write(&file, saved).unwrap();
        let (ok, out, err) = explain(file.to_str().unwrap());
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let intact = ask(&hooked);
    assert_eq!(intact["allowed"], false);
    assert_eq!(intact["dataplane"]["allowed"], false);
    assert_eq!(intact["dataplane"]["wired"], true);
    assert_eq!(intact["dataplane"]["trace"]["dropped_by"], "isolated ingress: drop what no rule allowed");
    let drifted = ask(&flushed);
    assert_eq!(drifted["allowed"], false);
    assert_eq!(drifted["dataplane"]["allowed"], true, "with no rules the kernel lets it through");
    assert_eq!(drifted["dataplane"]["wired"], false);

    let (ok, _, err) = explain("/nonexistent");
    assert!(!ok && err.contains("/nonexistent"), "{err}");
}
