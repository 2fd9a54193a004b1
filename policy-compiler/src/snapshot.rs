//! A cluster snapshot from multi-document Kubernetes YAML (Namespaces, Pods, Nodes,
//! NetworkPolicies; `kind: List` is unpacked). Objects that do not convert are reported one by
//! one and left out; other kinds are ignored.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::convert::{self, Invalid};
use crate::error::Error;
use crate::model::{Cluster, Namespace};

#[derive(Debug, Default)]
pub struct Snapshot {
    pub cluster: Cluster,
    pub refused: Vec<Invalid>,
}

fn typed<T: DeserializeOwned>(v: &Value, kind: &'static str) -> Result<T, Invalid> {
    serde_yaml::from_value(v.clone()).map_err(|e| Invalid {
        kind,
        name: v["metadata"]["name"].as_str().unwrap_or("?").to_string(),
        reason: e.to_string(),
    })
}

impl Snapshot {
    pub fn from_yaml(text: &str) -> Result<Snapshot, Error> {
        let mut snap = Snapshot::default();
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(doc).map_err(|e| Error::Yaml { index, reason: e.to_string() })?;
            snap.add(value);
        }
        // Namespaces that pods or policies live in exist even when not listed.
        let used: Vec<String> = snap
            .cluster
            .pods
            .iter()
            .map(|p| p.namespace.clone())
            .chain(snap.cluster.policies.iter().map(|p| p.namespace.clone()))
            .collect();
        for name in used {
            snap.cluster.namespaces.entry(name.clone()).or_insert_with(|| Namespace {
                labels: convert::labels(&[(convert::NAME_LABEL, &name)]),
                name,
            });
        }
        Ok(snap)
    }

    fn add(&mut self, v: Value) {
        let result = match v["kind"].as_str().unwrap_or_default() {
            "List" => {
                for item in v["items"].as_sequence().cloned().unwrap_or_default() {
                    self.add(item);
                }
                Ok(())
            }
            "Namespace" => typed(&v, "Namespace").and_then(|n| convert::namespace(&n)).map(|n| {
                self.cluster.namespaces.insert(n.name.clone(), n);
            }),
            "Pod" => typed(&v, "Pod").and_then(|p| convert::pod(&p)).map(|p| self.cluster.pods.push(p)),
            "Node" => typed(&v, "Node").and_then(|n| convert::node(&n)).map(|n| self.cluster.nodes.push(n)),
            "NetworkPolicy" => typed(&v, "NetworkPolicy")
                .and_then(|p| convert::policy(&p))
                .map(|p| self.cluster.policies.push(p)),
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.refused.push(e);
        }
    }
}
