//! The kube source against a scripted list/watch server: nothing is programmed while one list
//! is still refused; a 410 Gone makes the watcher relist and objects deleted meanwhile leave
//! the kernel; a connection torn mid-event is retried and the next change still arrives.

mod common;

use common::fake_api::{FakeApi, Step, NAMESPACES, NODES, PODS, POLICIES};
use common::{metric, wait_for, Netns};
use serde_json::Value;

fn json(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).unwrap()
}

const NS_X: &str = "kind: Namespace\nmetadata: {name: x, labels: {ns: x}, resourceVersion: '1'}";
const DENY: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\n\
metadata: {name: deny, namespace: x, resourceVersion: '1'}\nspec: {podSelector: {}}";
const ALLOW: &str = "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\n\
metadata: {name: allow, namespace: x, resourceVersion: '5'}\nspec: {podSelector: {matchLabels: {pod: b}}, ingress: [{}]}";

fn pod(name: &str, ip: &str, version: u64) -> String {
    format!(
        "kind: Pod\nmetadata: {{name: {name}, namespace: x, labels: {{pod: {name}}}, resourceVersion: '{version}'}}\n\
         spec: {{containers: [{{name: c, image: none}}]}}\nstatus: {{podIP: {ip}}}"
    )
}

#[test]
fn refused_lists_gone_watches_and_torn_connections() {
    let mut ns = Netns::new("kfault");
    let api = FakeApi::start(&ns);
    let a = pod("a", "10.0.1.1", 1);
    api.with(|s| {
        s.resources.get_mut(NAMESPACES).unwrap().items = vec![json(NS_X)];
        s.resources.get_mut(PODS).unwrap().items = vec![json(&a)];
        s.resources.get_mut(POLICIES).unwrap().items = vec![json(DENY)];
        s.resources.get_mut(NODES).unwrap().refuse_lists = true;
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    ns.start_kube_agent(&api.kubeconfig(dir.path()), &log);
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Nodes cannot be listed yet: the other lists are done, and still nothing is programmed.
    wait_for("the node list to be tried twice", 30, || api.with(|s| s.resources[NODES].lists >= 2));
    wait_for("the other lists", 10, || api.with(|s| s.resources[PODS].watches >= 1));
    assert!(!ns.run(&["iptables-save", "-t", "filter"]).contains("AZURE-NPM"), "{}", agent_log());
    assert!(!ns.http_get(10091, "/readyz").unwrap().0.contains("200"), "ready before programming");
    api.with(|s| s.resources.get_mut(NODES).unwrap().refuse_lists = false);
    wait_for("the first program", 30, || ns.holds(&[NS_X, DENY, &a]));
    assert!(ns.http_get(10091, "/readyz").unwrap().0.contains("200"));

    // 410 Gone on the pod watch: the relist shows a/ gone and b/ new.
    let b = pod("b", "10.0.1.2", 20);
    api.with(|s| {
        let pods = s.resources.get_mut(PODS).unwrap();
        pods.items = vec![json(&b)];
        pods.version = 20;
        pods.steps.push_back(Step::Gone);
    });
    wait_for("the relist after 410 Gone", 30, || ns.holds(&[NS_X, DENY, &b]));
    let (_, text) = ns.http_get(10091, "/metrics").unwrap();
    assert!(metric(&text, "npm_source_relists_total").unwrap_or(0.0) >= 1.0, "{text}");

    // A policy watch torn mid-event; the change after it still arrives (by rewatch or relist).
    api.with(|s| {
        let policies = s.resources.get_mut(POLICIES).unwrap();
        policies.steps.push_back(Step::Tear);
        policies.items.push(json(ALLOW));
        policies.version = 5;
        policies.steps.push_back(Step::Event("ADDED", json(ALLOW)));
    });
    wait_for("a change after a torn watch", 30, || ns.holds(&[NS_X, DENY, ALLOW, &b]));
    let watches = api.with(|s| s.resources[POLICIES].watches);
    assert!(watches >= 2, "the policy watch was not reopened ({watches})\n{}", agent_log());
}
