//! `azure-npm start --source dir:PATH` in a network namespace this test creates: it programs the
//! kernel from the files, follows a change of the files, leaves enforcement in place when killed,
//! and `azure-npm cleanup` removes everything it owned.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NPM: &str = env!("CARGO_BIN_EXE_azure-npm");

struct Lab {
    netns: String,
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn in_ns(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &lab.netns]).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_follows_a_directory_and_cleanup_removes_its_state() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "this test programs iptables in a network namespace and needs root: sudo scripts/test.sh"
    );
    let mut lab = Lab { netns: format!("aznpm-agent-{}", std::process::id()), agent: None };
    assert!(Command::new("ip").args(["netns", "add", &lab.netns]).status().unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    let case = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/policy/05-separate-peers-or.yaml");
    std::fs::copy(case, dir.path().join("cluster.yaml")).unwrap();

    let source = format!("dir:{}", dir.path().display());
    lab.agent = Some(
        Command::new("ip")
            .args(["netns", "exec", &lab.netns, NPM, "start", "--source", &source, "--interval-ms", "100"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ingress_rules =
        |lab: &Lab| in_ns(lab, &["iptables-save", "-t", "filter"]).matches("-A AZURE-NPM-INGRESS").count();
    // The policy has two peers (one rule each) plus the isolation drop.
    wait_for("the first program", || ingress_rules(&lab) == 3);

    // The policy file changes: a deny-all replaces the two-peer policy.
    let text = std::fs::read_to_string(case).unwrap();
    let cut = text.find("apiVersion: networking.k8s.io/v1").unwrap();
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n";
    std::fs::write(dir.path().join("cluster.yaml"), format!("{}{deny}", &text[..cut])).unwrap();
    wait_for("the change", || ingress_rules(&lab) == 1);

    // Killed, the agent leaves enforcement in place.
    let mut agent = lab.agent.take().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(ingress_rules(&lab), 1);
    assert!(in_ns(&lab, &["ipset", "list", "-n"]).contains("azn-"));

    in_ns(&lab, &[NPM, "cleanup"]);
    assert!(!in_ns(&lab, &["iptables-save", "-t", "filter"]).contains("AZURE-NPM"));
    assert!(!in_ns(&lab, &["ipset", "list", "-n"]).contains("azn-"));
}
