//! `azure-npm start --source kube` against a real kube-apiserver + etcd in a namespace this test
//! creates. The agent runs as its service account with exactly the manifest's RBAC; creates,
//! label changes, deletes and policy edits reach the kernel (compared with the compiler's
//! output for the same objects); stopping the API server changes nothing in the kernel and the
//! agent resumes when it is back.

mod common;

use common::kube::ApiServer;
use common::{metric, wait_for, Netns};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

const NAMESPACES: &str = "
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
kind: Namespace
metadata: {name: y, labels: {ns: y}}
";

fn pod(ns: &str, name: &str, label: &str, ip: &str) -> String {
    format!(
        "kind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{pod: {label}}}}}\n\
         spec: {{containers: [{{name: c, image: none, ports: [{{name: web, containerPort: 80}}]}}]}}\n\
         status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
    )
}

const NODE: &str =
    "kind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 10.240.0.4}]}\n";

fn policy(from_ns: &str) -> String {
    format!(
        "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: allow, namespace: x}}\n\
         spec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: {from_ns}}}}}}}]\n    ports: [{{port: web}}]\n"
    )
}

const DENY_EGRESS: &str =
    "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: quiet, namespace: y}\n\
spec: {podSelector: {}, policyTypes: [Egress]}\n";

fn parse<T: DeserializeOwned>(doc: &str) -> T {
    serde_yaml::from_str(doc).unwrap()
}

fn kind_of(doc: &str) -> String {
    parse::<serde_yaml::Value>(doc)["kind"].as_str().unwrap().to_string()
}

/// Creates (or replaces the status of) one object from its YAML.
async fn create(client: Client, doc: String) {
    let pp = PostParams::default();
    match kind_of(&doc).as_str() {
        "Namespace" => drop(Api::<Namespace>::all(client).create(&pp, &parse(&doc)).await.unwrap()),
        "Node" => drop(Api::<Node>::all(client).create(&pp, &parse(&doc)).await.unwrap()),
        "Pod" => {
            let p: Pod = parse(&doc);
            let api = Api::<Pod>::namespaced(client, p.metadata.namespace.as_deref().unwrap());
            api.create(&pp, &p).await.unwrap();
            // The server drops status on create; there is no kubelet, so set it as one would.
            let status = serde_json::json!({"status": p.status});
            api.patch_status(
                p.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .unwrap();
        }
        "NetworkPolicy" => {
            let p: NetworkPolicy = parse(&doc);
            let api = Api::<NetworkPolicy>::namespaced(client, p.metadata.namespace.as_deref().unwrap());
            api.create(&pp, &p).await.unwrap();
        }
        other => panic!("no create for {other}"),
    }
}

/// The manifest's ServiceAccount, ClusterRole and ClusterRoleBinding.
async fn apply_rbac(client: Client) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/azure-npm-rbac.yaml"))
            .unwrap();
    let pp = PostParams::default();
    for doc in text.split("\n---\n") {
        match kind_of(doc).as_str() {
            "ServiceAccount" => drop(
                Api::<ServiceAccount>::namespaced(client.clone(), "kube-system")
                    .create(&pp, &parse(doc))
                    .await
                    .unwrap(),
            ),
            "ClusterRole" => {
                drop(Api::<ClusterRole>::all(client.clone()).create(&pp, &parse(doc)).await.unwrap())
            }
            "ClusterRoleBinding" => {
                drop(Api::<ClusterRoleBinding>::all(client.clone()).create(&pp, &parse(doc)).await.unwrap())
            }
            other => panic!("unexpected {other} in the RBAC manifest"),
        }
    }
}

/// The kernel holds exactly what the compiler makes of `docs`, hooks included.
fn kernel_matches(ns: &Netns, docs: &[String]) -> bool {
    ns.holds(&docs.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn the_agent_follows_a_live_api_server_and_survives_its_outage() {
    let mut ns = Netns::new("kube");
    let mut api = ApiServer::start(&ns);
    api.admin(&ns, apply_rbac);
    let mut docs: Vec<String> = NAMESPACES.split("\n---\n").map(str::to_string).collect();
    docs.push(NODE.to_string());
    docs.push(pod("x", "a", "a", "10.0.1.1"));
    docs.push(pod("x", "b", "b", "10.0.1.2"));
    docs.push(pod("y", "c", "c", "10.0.2.1"));
    docs.push(policy("y"));
    for doc in docs.clone() {
        api.admin(&ns, move |c| create(c, doc));
    }

    let log = api.dir.path().join("agent.log");
    ns.start_kube_agent(&api.agent, &log);
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the first program from the live API", 30, || kernel_matches(&ns, &docs));
    assert!(!agent_log().contains("forbidden"), "the manifest's RBAC is not enough:\n{}", agent_log());
    let ready = ns.http_get(10091, "/readyz").unwrap();
    assert!(ready.0.contains("200"), "{ready:?}");

    // A label change: x/b now matches the policy's target.
    api.admin(&ns, |c| async move {
        let patch = serde_json::json!({"metadata": {"labels": {"pod": "a"}}});
        Api::<Pod>::namespaced(c, "x")
            .patch("b", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    });
    docs[4] = pod("x", "b", "a", "10.0.1.2");
    wait_for("a label change to reach the kernel", 20, || kernel_matches(&ns, &docs));

    // A policy edit and a new policy.
    api.admin(&ns, |c| async move {
        let api = Api::<NetworkPolicy>::namespaced(c.clone(), "x");
        let mut p = api.get("allow").await.unwrap();
        p.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0] =
            parse::<NetworkPolicy>(&policy("x")).spec.unwrap().ingress.unwrap().remove(0);
        api.replace("allow", &PostParams::default(), &p).await.unwrap();
        create(c, DENY_EGRESS.to_string()).await;
    });
    docs[6] = policy("x");
    docs.push(DENY_EGRESS.to_string());
    wait_for("a policy edit and a new policy", 20, || kernel_matches(&ns, &docs));

    // A deleted pod leaves its sets.
    api.admin(&ns, |c| async move {
        let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        Api::<Pod>::namespaced(c, "y").delete("c", &dp).await.unwrap();
    });
    docs.remove(5);
    wait_for("a pod delete", 20, || kernel_matches(&ns, &docs));

    // The API server goes away: the kernel keeps its state through several verifications.
    let before = ns.kernel();
    api.stop_apiserver();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(ns.kernel(), before, "the kernel changed while the API server was down");
    assert!(ns.http_get(10091, "/healthz").unwrap().0.contains("200"));

    // It comes back: the agent resumes (a relist) and follows the next change.
    api.restart_apiserver(&ns);
    api.admin(&ns, |c| async move {
        Api::<NetworkPolicy>::namespaced(c, "y").delete("quiet", &DeleteParams::default()).await.unwrap();
    });
    docs.pop();
    wait_for("a change after the outage", 60, || kernel_matches(&ns, &docs));

    // The metrics count what the kernel holds.
    let (_, text) = ns.http_get(10091, "/metrics").unwrap();
    let save = ns.run(&["iptables-save", "-t", "filter"]);
    let rules = save.lines().filter(|l| l.starts_with("-A AZURE-NPM")).count();
    let view = ns.kernel();
    assert_eq!(metric(&text, "npm_num_iptables_rules"), Some(rules as f64), "{text}");
    assert_eq!(metric(&text, "npm_num_ipsets"), Some(view.ir.sets.len() as f64 + 1.0), "and the hold set");
    // Azure's controller timings, per event: a pod deleted, policies created and updated.
    for family in [
        "npm_controller_pod_exec_time_count{operation=\"delete\",had_error=\"false\"}",
        "npm_controller_policy_exec_time_count{operation=\"update\",had_error=\"false\"}",
        "npm_add_policy_exec_time_count{had_error=\"false\"}",
    ] {
        assert!(metric(&text, family).is_some_and(|n| n >= 1.0), "{family} in {text}");
    }
    assert!(metric(&text, "npm_pods_watched").is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(metric(&text, "npm_num_ipset_entries"), Some(view.ir.member_count() as f64));
    assert_eq!(metric(&text, "npm_num_policies"), Some(1.0));
}
