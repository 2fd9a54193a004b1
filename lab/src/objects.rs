//! The objects the lab's agents read: the user's YAML with each pod's `status.podIP` set to the
//! address its CNI ADD returned (what kubelet reports), written atomically into the agents'
//! `dir:` source.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_yaml::Value;

/// `text` with `status.podIP`/`podIPs` of each listed pod (`namespace/name`) replaced.
pub fn with_pod_ips(text: &str, ips: &BTreeMap<String, Ipv4Addr>) -> Result<String, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let mut value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| format!("YAML: {e}"))?;
        if value.get("kind").and_then(Value::as_str) == Some("Pod") {
            let meta = &value["metadata"];
            let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("default");
            let key = format!("{ns}/{}", meta.get("name").and_then(Value::as_str).unwrap_or_default());
            if let Some(ip) = ips.get(&key) {
                let status = value
                    .as_mapping_mut()
                    .ok_or("a Pod that is not a mapping")?
                    .entry("status".into())
                    .or_insert_with(|| Value::Mapping(Default::default()));
                if !status.is_mapping() {
                    *status = Value::Mapping(Default::default());
                }
                status["podIP"] = Value::String(ip.to_string());
                let mut entry = serde_yaml::Mapping::new();
                entry.insert("ip".into(), Value::String(ip.to_string()));
                status["podIPs"] = Value::Sequence(vec![Value::Mapping(entry)]);
            }
        }
        if !value.is_null() {
            docs.push(serde_yaml::to_string(&value).map_err(|e| e.to_string())?);
        }
    }
    Ok(docs.join("---\n"))
}

/// Replaces `dir/cluster.yaml` in one rename (the agent never reads half a file).
pub fn publish(dir: &Path, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let staged = dir.join(".cluster.yaml.new");
    std::fs::write(&staged, text).map_err(|e| format!("{}: {e}", staged.display()))?;
    std::fs::rename(&staged, dir.join("cluster.yaml")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_are_written_back_and_nothing_else_changes() {
        let text = "kind: Namespace\nmetadata: {name: x}\n---\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: web}}\n\
                    spec: {nodeName: n1}\n---\nkind: Pod\nmetadata: {name: b, namespace: x}\nstatus: {podIP: 10.0.0.9, phase: Running}\n";
        let ips = [
            ("x/a".to_string(), "10.0.0.5".parse().unwrap()),
            ("x/b".to_string(), "10.0.0.6".parse().unwrap()),
        ]
        .into();
        let out = with_pod_ips(text, &ips).unwrap();
        let cluster = policy_compiler::snapshot::Snapshot::from_yaml(&out).unwrap().cluster;
        assert_eq!(cluster.pod("x/a").unwrap().ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(cluster.pod("x/b").unwrap().ip, Some("10.0.0.6".parse().unwrap()));
        assert_eq!(cluster.pod("x/a").unwrap().labels["app"], "web");
        assert!(cluster.namespaces.contains_key("x"));
        assert!(out.contains("phase: Running"));
    }
}
