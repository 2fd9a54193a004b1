//! Kubernetes objects (k8s-openapi types) to the domain model, validating as the API server
//! would. An invalid object is refused with a reason; it never affects the others.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::model::{
    ContainerPort, Labels, Namespace, NetworkPolicy, Node, Peer, Pod, PortRef, PortSpec, Protocol, Rule,
};
use crate::selector::{Op, Requirement, Selector};

/// Why an object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {reason}")]
pub struct Invalid {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn labels_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Labels {
    meta.labels.clone().unwrap_or_default().into_iter().collect()
}

pub fn namespace(ns: &core::Namespace) -> Result<Namespace, Invalid> {
    let name = ns.metadata.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| Invalid {
        kind: "Namespace",
        name: "?".into(),
        reason: "metadata.name is missing".into(),
    })?;
    let mut labels = labels_of(&ns.metadata);
    labels.insert(NAME_LABEL.to_string(), name.clone());
    Ok(Namespace { name, labels })
}

pub fn pod(p: &core::Pod) -> Result<Pod, Invalid> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let invalid = |reason: String| Invalid { kind: "Pod", name: name.clone(), reason };
    if name.is_empty() {
        return Err(invalid("metadata.name is missing".into()));
    }
    let namespace = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    // A host-network pod's address is its node's, and a finished pod's address may already be
    // another pod's: neither stands for the pod in any set.
    let host_network = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let finished = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    let reported = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).filter(|s| !s.is_empty());
    let ip = match reported.filter(|_| !host_network && !finished) {
        Some(s) => Some(s.parse().map_err(|_| invalid(format!("status.podIP {s:?} is not an IP address")))?),
        None => None,
    };
    let mut ports = Vec::new();
    if let Some(spec) = &p.spec {
        for c in &spec.containers {
            for cp in c.ports.iter().flatten() {
                let port = u16::try_from(cp.container_port)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid(format!("containerPort {} is not 1-65535", cp.container_port)))?;
                let protocol = match cp.protocol.as_deref() {
                    None => Protocol::Tcp,
                    Some(s) => {
                        Protocol::parse(s).ok_or_else(|| invalid(format!("protocol {s:?} is unknown")))?
                    }
                };
                ports.push(ContainerPort { name: cp.name.clone(), port, protocol });
            }
        }
    }
    Ok(Pod {
        namespace,
        name: name.clone(),
        labels: labels_of(&p.metadata),
        ip,
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        ports,
    })
}

pub fn node(n: &core::Node) -> Result<Node, Invalid> {
    let name = n.metadata.name.clone().unwrap_or_default();
    let internal = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone());
    let internal_ip = match internal {
        Some(s) => Some(s.parse().map_err(|_| Invalid {
            kind: "Node",
            name: name.clone(),
            reason: format!("InternalIP {s:?} is not an IP address"),
        })?),
        None => None,
    };
    Ok(Node { name, internal_ip })
}

pub fn selector(s: &LabelSelector) -> Result<Selector, String> {
    let mut requirements: Vec<Requirement> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| Requirement { key: k.clone(), op: Op::In(vec![v.clone()]) })
        .collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let op = match (e.operator.as_str(), values.is_empty()) {
            ("In", false) => Op::In(values),
            ("NotIn", false) => Op::NotIn(values),
            ("Exists", true) => Op::Exists,
            ("DoesNotExist", true) => Op::DoesNotExist,
            ("In" | "NotIn", true) => return Err(format!("{} on {:?} needs values", e.operator, e.key)),
            ("Exists" | "DoesNotExist", false) => {
                return Err(format!("{} on {:?} must not have values", e.operator, e.key))
            }
            (other, _) => return Err(format!("operator {other:?} is unknown")),
        };
        requirements.push(Requirement { key: e.key.clone(), op });
    }
    // Canonical (sorted, repeats dropped), so equal selectors are equal values.
    Ok(Selector { requirements }.canonical())
}

fn peer(p: &net::NetworkPolicyPeer) -> Result<Peer, String> {
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(b), None, None) => {
            let cidr: IpNet =
                b.cidr.parse().map_err(|_| format!("ipBlock.cidr {:?} is not a CIDR", b.cidr))?;
            let mut except = Vec::new();
            for e in b.except.iter().flatten() {
                let ex: IpNet = e.parse().map_err(|_| format!("ipBlock.except {e:?} is not a CIDR"))?;
                if !cidr.contains(&ex) || ex.prefix_len() < cidr.prefix_len() {
                    return Err(format!("ipBlock.except {ex} is outside cidr {cidr}"));
                }
                except.push(ex.trunc());
            }
            Ok(Peer::IpBlock { cidr: cidr.trunc(), except })
        }
        (Some(_), _, _) => Err("ipBlock cannot be combined with a selector in one peer".into()),
        (None, None, None) => Err("a peer needs podSelector, namespaceSelector or ipBlock".into()),
        (None, ns, pods) => Ok(Peer::Pods {
            namespaces: ns.as_ref().map(selector).transpose()?,
            pods: pods.as_ref().map(selector).transpose()?,
        }),
    }
}

fn port_spec(p: &net::NetworkPolicyPort) -> Result<PortSpec, String> {
    let protocol = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => Protocol::parse(s).ok_or_else(|| format!("protocol {s:?} is unknown"))?,
    };
    let port = match &p.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(PortRef::Number(
            u16::try_from(*n).ok().filter(|n| *n > 0).ok_or_else(|| format!("port {n} is not 1-65535"))?,
        )),
        Some(IntOrString::String(s)) if s.is_empty() => return Err("port name is empty".into()),
        Some(IntOrString::String(s)) => Some(PortRef::Name(s.clone())),
    };
    let end_port = match (p.end_port, &port) {
        (None, _) => None,
        (Some(e), Some(PortRef::Number(start))) => {
            let e = u16::try_from(e)
                .ok()
                .filter(|e| *e > 0)
                .ok_or_else(|| format!("endPort {e} is not 1-65535"))?;
            if e < *start {
                return Err(format!("endPort {e} is below port {start}"));
            }
            Some(e)
        }
        (Some(_), _) => return Err("endPort needs a numeric port".into()),
    };
    Ok(PortSpec { protocol, port, end_port })
}

fn rule(
    peers: Option<&Vec<net::NetworkPolicyPeer>>,
    ports: Option<&Vec<net::NetworkPolicyPort>>,
) -> Result<Rule, String> {
    let peers = match peers.filter(|p| !p.is_empty()) {
        None => None,
        Some(list) => Some(list.iter().map(peer).collect::<Result<Vec<_>, _>>()?),
    };
    let ports = match ports.filter(|p| !p.is_empty()) {
        None => None,
        Some(list) => Some(list.iter().map(port_spec).collect::<Result<Vec<_>, _>>()?),
    };
    Ok(Rule { peers, ports })
}

pub fn policy(p: &net::NetworkPolicy) -> Result<NetworkPolicy, Invalid> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let namespace = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let invalid =
        |reason: String| Invalid { kind: "NetworkPolicy", name: format!("{namespace}/{name}"), reason };
    let spec = p.spec.as_ref().ok_or_else(|| invalid("spec is missing".into()))?;
    // An absent podSelector selects every pod of the namespace, like an empty one.
    let pod_selector = match &spec.pod_selector {
        Some(s) => selector(s).map_err(|r| invalid(format!("podSelector: {r}")))?,
        None => Selector::default(),
    };
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            rule(r.from.as_ref(), r.ports.as_ref()).map_err(|e| invalid(format!("ingress[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let egress = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| rule(r.to.as_ref(), r.ports.as_ref()).map_err(|e| invalid(format!("egress[{i}]: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let (ingress_isolation, egress_isolation) = match spec.policy_types.as_deref() {
        None | Some([]) => (true, !egress.is_empty()),
        Some(types) => {
            let mut t = (false, false);
            for ty in types {
                match ty.as_str() {
                    "Ingress" => t.0 = true,
                    "Egress" => t.1 = true,
                    other => return Err(invalid(format!("policyTypes: {other:?} is unknown"))),
                }
            }
            t
        }
    };
    let policy =
        NetworkPolicy { namespace, name, pod_selector, ingress_isolation, egress_isolation, ingress, egress };
    crate::limits::check_policy(&policy).map_err(|limit| Invalid {
        kind: "NetworkPolicy",
        name: policy.key(),
        reason: limit.to_string(),
    })?;
    Ok(policy)
}

/// Labels as a sorted map (handy for builders and tests).
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<NetworkPolicy, Invalid> {
        let yaml = format!("metadata: {{name: p, namespace: n}}\nspec:\n{spec}");
        policy(&serde_yaml::from_str::<net::NetworkPolicy>(&yaml).unwrap())
    }

    #[test]
    fn policy_types_default_from_the_rules() {
        let p = parse("  podSelector: {}").unwrap();
        assert!(p.ingress_isolation && !p.egress_isolation);
        let p = parse("  podSelector: {}\n  egress: [{}]").unwrap();
        assert!(p.ingress_isolation && p.egress_isolation);
        let p = parse("  podSelector: {}\n  egress: []").unwrap();
        assert!(!p.egress_isolation, "an empty egress list is no egress rule");
        let p = parse("  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]").unwrap();
        assert!(!p.ingress_isolation && p.egress_isolation, "explicit types win");
    }

    #[test]
    fn host_network_and_finished_pods_have_no_address_of_their_own() {
        let pod_of = |extra: &str| {
            let yaml = format!("metadata: {{name: p, namespace: n}}\nspec: {{containers: []{extra}}}\nstatus: {{podIP: 10.0.0.5, phase: Running}}");
            pod(&serde_yaml::from_str::<core::Pod>(&yaml).unwrap()).unwrap()
        };
        assert!(pod_of("").ip.is_some());
        assert_eq!(pod_of(", hostNetwork: true").ip, None);
        let yaml = "metadata: {name: p}\nspec: {containers: []}\nstatus: {podIP: 10.0.0.5, phase: Succeeded}";
        assert_eq!(pod(&serde_yaml::from_str::<core::Pod>(yaml).unwrap()).unwrap().ip, None);
    }

    #[test]
    fn equal_selectors_convert_to_equal_values() {
        let a = parse(
            "  podSelector:\n    matchLabels: {b: '2', a: '1'}\n    matchExpressions:\n    - {key: tier, operator: DoesNotExist}\n    - {key: tier, operator: DoesNotExist}\n    - {key: env, operator: In, values: [y, x, y]}",
        )
        .unwrap();
        let b = parse(
            "  podSelector:\n    matchExpressions:\n    - {key: env, operator: In, values: [x, y]}\n    - {key: tier, operator: DoesNotExist}\n    matchLabels: {a: '1', b: '2'}",
        )
        .unwrap();
        assert_eq!(a.pod_selector, b.pod_selector);
        assert_eq!(a.pod_selector.requirements.len(), 4, "{:?}", a.pod_selector);
    }

    #[test]
    fn empty_from_and_ports_mean_all() {
        let p = parse("  podSelector: {}\n  ingress: [{from: [], ports: []}]").unwrap();
        assert_eq!(p.ingress[0], Rule { peers: None, ports: None });
    }

    #[test]
    fn invalid_policies_are_refused_with_a_reason() {
        let cases = [
            ("  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 80}]}]", "below port"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 80}]}]", "numeric port"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]", "1-65535"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: ICMP}]}]", "protocol"),
            ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]", "outside"),
            ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]", "not a CIDR"),
            ("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]", "combined"),
            ("  podSelector: {}\n  ingress: [{from: [{}]}]", "needs podSelector"),
            ("  podSelector: {matchExpressions: [{key: a, operator: In}]}", "needs values"),
            ("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}", "must not have values"),
            ("  podSelector: {matchExpressions: [{key: a, operator: Near, values: [x]}]}", "unknown"),
            ("  podSelector: {}\n  policyTypes: [Sideways]", "Sideways"),
        ];
        let blocks: String = (0..=crate::limits::MAX_IP_BLOCKS)
            .map(|i| format!("{{ipBlock: {{cidr: 10.{}.{}.{}/32}}}},", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let huge = format!("  podSelector: {{}}\n  ingress: [{{from: [{blocks}]}}]");
        let selectors: String = (0..=crate::limits::MAX_SET_PEERS)
            .map(|i| format!("{{podSelector: {{matchLabels: {{a: x{i}}}}}}},"))
            .collect();
        let wide = format!("  podSelector: {{}}\n  egress: [{{to: [{selectors}]}}]");
        let ports: String = (1..=crate::limits::MAX_PORTS + 1).map(|p| format!("{{port: {p}}},")).collect();
        let many_ports = format!("  podSelector: {{}}\n  ingress: [{{ports: [{ports}]}}]");
        let product: String = (1..=101).map(|p| format!("{{port: {p}}},")).collect();
        let peers: String =
            (0..100).map(|i| format!("{{podSelector: {{matchLabels: {{a: x{i}}}}}}},")).collect();
        let rules = format!("  podSelector: {{}}\n  ingress: [{{from: [{peers}], ports: [{product}]}}]");
        let limited = [
            (huge.as_str(), "200001 ipBlocks is over the limit of 200000"),
            (wide.as_str(), "1001 selector or except peers"),
            (many_ports.as_str(), "1001 ports"),
            (rules.as_str(), "10100 kernel rules"),
        ];
        for (spec, needle) in cases.into_iter().chain(limited) {
            let err = parse(spec).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} should mention {needle:?}");
            assert!(err.to_string().starts_with("NetworkPolicy n/p"), "{err}");
        }
    }
}
