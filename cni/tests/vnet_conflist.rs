//! azure-vnet inside a conflist, driven like a runtime drives it: plugins in order on ADD with
//! prevResult chaining (here followed by Debian's `tuning`), in reverse on DEL, capabilities
//! (`portMappings`, `dns`) delivered through runtimeConfig.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cni::runtime::{self, Attachment, ConfList};
use common::lab::Lab;
use common::Netns;
use serde_json::json;

#[test]
fn a_conflist_chains_results_and_delivers_capabilities() {
    assert!(Path::new("/usr/lib/cni/tuning").exists(), "install containernetworking-plugins");
    let lab = Lab::new(1, 4);
    let node = &lab.nodes[0];
    let mut vnet = node.config("1.0.0");
    vnet["capabilities"] = json!({"portMappings": true, "dns": true});
    let list = json!({"cniVersion": "1.0.0", "name": "azure", "plugins": [
        vnet,
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0"}},
    ]});
    let list = ConfList::parse(list.to_string().as_bytes()).unwrap();
    let pod = Netns::new("pod");
    let at = Attachment {
        container_id: pod.name.clone(),
        netns: pod.path(),
        ifname: "eth0".into(),
        args: vec![("K8S_POD_NAMESPACE".into(), "default".into()), ("K8S_POD_NAME".into(), "web".into())],
        path: vec![PathBuf::from(common::IPAM).parent().unwrap().to_path_buf(), "/usr/lib/cni".into()],
        capabilities: HashMap::from([
            ("portMappings".to_string(), json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])),
            ("dns".to_string(), json!({"servers": ["10.0.0.10"], "searches": ["default.svc.cluster.local"]})),
        ]),
        wrapper: vec!["ip".into(), "netns".into(), "exec".into(), node.ns.name.clone()],
    };

    let result = runtime::add(&list, &at).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.240.1.1/16", "azure-vnet's result flows through tuning");
    assert_eq!(result["dns"]["nameservers"], json!(["10.0.0.10"]), "dns capability merged");
    assert_eq!(result["dns"]["search"], json!(["default.svc.cluster.local"]));
    let sysctl = common::run(pod.command("sysctl").args(["-n", "net.ipv4.conf.eth0.accept_redirects"]));
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "0", "tuning ran after azure-vnet");
    assert!(node.nat_rules().contains("--dport 8080"), "portMappings capability reached azure-vnet");

    runtime::check(&list, &at, &result).unwrap();
    runtime::del(&list, &at, Some(&result)).unwrap();
    assert!(node.veths().is_empty() && node.endpoints() == 0 && node.allocations() == 0);
    assert!(!node.nat_rules().contains("--dport 8080"));
}
