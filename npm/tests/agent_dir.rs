//! `azure-npm start --source dir:PATH` in a network namespace this test creates: it programs the
//! kernel from the files, follows a change of the files, keeps a file's last good version (named
//! on /readyz) when it stops parsing, leaves enforcement in place when killed,
//! and `azure-npm cleanup` removes everything it owned.

mod common;

use std::process::Stdio;

use common::{wait_for, Netns, NPM};

#[test]
fn the_agent_follows_a_directory_and_cleanup_removes_its_state() {
    let mut ns = Netns::new("agent");
    let dir = tempfile::tempdir().unwrap();
    let case = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/policy/05-separate-peers-or.yaml");
    std::fs::copy(case, dir.path().join("cluster.yaml")).unwrap();

    let source = format!("dir:{}", dir.path().display());
    let agent = ns
        .command(NPM)
        .args(["start", "--source", &source, "--interval-ms", "100", "--dataplane", "iptables"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ns.children.push(agent); // stopped with the namespace, whatever happens
    let ingress_rules =
        |ns: &Netns| ns.run(&["iptables-save", "-t", "filter"]).matches("-A AZURE-NPM-INGRESS").count();
    // The policy has two peers (one rule each) plus the isolation drop.
    wait_for("the first program", 20, || ingress_rules(&ns) == 3);

    // The policy file changes: a deny-all replaces the two-peer policy.
    let text = std::fs::read_to_string(case).unwrap();
    let cut = text.find("apiVersion: networking.k8s.io/v1").unwrap();
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n";
    std::fs::write(dir.path().join("cluster.yaml"), format!("{}{deny}", &text[..cut])).unwrap();
    wait_for("the change", 20, || ingress_rules(&ns) == 1);

    // A truncated write: the file's last good version stays, and /readyz says so.
    std::fs::write(dir.path().join("cluster.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name")
        .unwrap();
    let ready = || ns.http_get(10091, "/readyz").map(|r| r.1).unwrap_or_default();
    wait_for("/readyz to name the file", 20, || ready().contains("cluster.yaml does not parse"));
    assert!(ready().contains("keeping its last good version"), "{}", ready());
    assert_eq!(ingress_rules(&ns), 1, "the deny-all stays");
    std::fs::write(dir.path().join("cluster.yaml"), format!("{}{deny}", &text[..cut])).unwrap();
    wait_for("/readyz to clear", 20, || ready() == "ok\n");

    // Killed, the agent leaves enforcement in place.
    let mut agent = ns.children.pop().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(ingress_rules(&ns), 1);
    assert!(ns.run(&["ipset", "list", "-n"]).contains("azn-"));

    ns.run(&[NPM, "cleanup"]);
    assert!(!ns.run(&["iptables-save", "-t", "filter"]).contains("AZURE-NPM"));
    assert!(!ns.run(&["ipset", "list", "-n"]).contains("azn-"));
}
