//! Full compilation: a cluster to the IR. Rule count depends on policies (peers × ports per
//! rule), never on pod count: pods only ever appear as set members.

use std::collections::HashMap;

use ipnet::IpNet;

use crate::ir::{stable_hash, Action, IpSet, Ir, Member, Rule, SetDef, SetId, SetKind, SetRole};
use crate::limits::{NodeLimits, Refused};
use crate::model::{Cluster, NetworkPolicy, Peer, Pod, PortRef, PortSpec, Protocol};
use crate::selector::Selector;

pub const ISOLATED_INGRESS: &str = "isolated ingress";
pub const ISOLATED_EGRESS: &str = "isolated egress";

/// Port criteria of one `ports` entry: protocol, destination range, named-port set.
type PortMatch = (Option<Protocol>, Option<(u16, u16)>, Option<SetId>);

struct Builder<'a> {
    cluster: &'a Cluster,
    ir: Ir,
    /// Pods by namespace and by node: a set's candidates, so a full compile costs about
    /// (pods in the relevant namespaces) per set instead of (all pods) per set.
    by_ns: HashMap<&'a str, Vec<&'a Pod>>,
    by_node: HashMap<&'a str, Vec<&'a Pod>>,
    /// Compiling one node's view: only its pods are targets and isolated.
    node: Option<&'a str>,
}

/// Is the pod on the node a node's view is restricted to (always, without a restriction)?
fn on(node: &Option<String>, pod: &Pod) -> bool {
    node.as_ref().is_none_or(|n| pod.node.as_deref() == Some(n.as_str()))
}

/// The key of the isolated set for a direction, cluster-wide or in one node's view.
pub fn isolated_key(ingress: bool, node: Option<&str>) -> String {
    let base = if ingress { ISOLATED_INGRESS } else { ISOLATED_EGRESS };
    match node {
        None => base.to_string(),
        Some(n) => format!("{base} on node {n}"),
    }
}

impl SetDef {
    /// The member `pod` contributes to a set so defined, if any. Full and incremental
    /// compilation both decide membership here, so they cannot drift apart.
    pub fn member(&self, cluster: &Cluster, pod: &Pod) -> Option<Member> {
        let ip = pod.ip?;
        let belongs = match self {
            SetDef::PodsIn { namespace, pods, node } => {
                pod.namespace == *namespace && pods.matches(&pod.labels) && on(node, pod)
            }
            SetDef::PodsWhere { namespaces, pods } => {
                cluster.namespace_labels(&pod.namespace).is_some_and(|l| namespaces.matches(l))
                    && pods.matches(&pod.labels)
            }
            SetDef::PodsOnNode(node) => pod.node.as_deref() == Some(node.as_str()),
            SetDef::NamedPort { name, protocol } => {
                let port = pod.named_port(name, *protocol)?;
                return Some(Member::IpPort { ip, protocol: *protocol, port });
            }
            SetDef::Isolated { ingress, node } => {
                on(node, pod)
                    && cluster.policies.iter().any(|p| {
                        p.namespace == pod.namespace
                            && if *ingress { p.ingress_isolation } else { p.egress_isolation }
                            && p.pod_selector.matches(&pod.labels)
                    })
            }
            SetDef::Fixed => false,
        };
        belongs.then_some(Member::Ip(ip))
    }
}

impl<'a> Builder<'a> {
    /// The set named after `key`, created on first use with `fixed` members plus whatever
    /// the cluster's pods contribute under `def`.
    fn set(
        &mut self,
        kind: SetKind,
        key: String,
        def: SetDef,
        fixed: impl IntoIterator<Item = Member>,
    ) -> SetId {
        let role = match (&def, kind) {
            (SetDef::Isolated { .. }, _) => SetRole::Isolation,
            (_, SetKind::HashIp) => SetRole::Ip,
            (_, SetKind::HashNet) => SetRole::Net,
            (_, SetKind::HashIpPort) => SetRole::IpPort,
        };
        let id = SetId::new(role, &key);
        if !self.ir.sets.contains_key(&id) {
            let cluster = self.cluster;
            let mut members: std::collections::BTreeSet<Member> = fixed.into_iter().collect();
            members.extend(self.candidates(&def).into_iter().filter_map(|p| def.member(cluster, p)));
            self.ir.sets.insert(id, IpSet { id, key, def, members });
        }
        id
    }

    /// The pods that could belong to a set so defined (`SetDef::member` decides).
    fn candidates(&self, def: &SetDef) -> Vec<&'a Pod> {
        let in_ns = |ns: &str| self.by_ns.get(ns).map(|v| v.as_slice()).unwrap_or_default().to_vec();
        match def {
            SetDef::PodsIn { namespace, .. } => in_ns(namespace),
            SetDef::PodsWhere { namespaces, .. } => self
                .cluster
                .namespaces
                .values()
                .filter(|n| namespaces.matches(&n.labels))
                .flat_map(|n| in_ns(&n.name))
                .collect(),
            SetDef::PodsOnNode(node) => self.by_node.get(node.as_str()).cloned().unwrap_or_default(),
            // Filled from the targets sets as policies are compiled.
            SetDef::Isolated { .. } => Vec::new(),
            SetDef::NamedPort { .. } => self.cluster.pods.iter().collect(),
            SetDef::Fixed => Vec::new(),
        }
    }

    fn pods_in(&mut self, namespace: &str, pods: Selector) -> SetId {
        let pods = pods.canonical();
        let key = format!("pods ns={namespace} pod{pods}");
        self.set(
            SetKind::HashIp,
            key,
            SetDef::PodsIn { namespace: namespace.to_string(), pods, node: None },
            [],
        )
    }

    /// The pods a policy applies to (in a node's view: those on the node).
    fn targets(&mut self, p: &NetworkPolicy) -> SetId {
        let Some(node) = self.node else { return self.pods_in(&p.namespace, p.pod_selector.clone()) };
        let pods = p.pod_selector.canonical();
        let key = format!("pods ns={} pod{pods} on node {node}", p.namespace);
        let def = SetDef::PodsIn { namespace: p.namespace.clone(), pods, node: Some(node.to_string()) };
        self.set(SetKind::HashIp, key, def, [])
    }

    /// The set a peer stands for; `None` when the peer can match nothing.
    fn peer_set(&mut self, peer: &Peer, policy_ns: &str) -> Option<SetId> {
        match peer {
            Peer::Pods { namespaces: None, pods } => {
                Some(self.pods_in(policy_ns, pods.clone().unwrap_or_default()))
            }
            Peer::Pods { namespaces: Some(ns_sel), pods } => {
                let sel = pods.as_ref().map(Selector::canonical).unwrap_or_default();
                let namespaces = ns_sel.canonical();
                let key = format!("pods ns{namespaces} pod{sel}");
                Some(self.set(SetKind::HashIp, key, SetDef::PodsWhere { namespaces, pods: sel }, []))
            }
            Peer::IpBlock { cidr, except } => {
                if except.iter().any(|e| e == cidr) {
                    return None; // the whole block is excepted
                }
                let mut excepts: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                excepts.sort();
                let members = std::iter::once(Member::Net { net: *cidr, nomatch: false })
                    .chain(except.iter().map(|e| Member::Net { net: *e, nomatch: true }));
                let key = format!("cidr {cidr} except [{}]", excepts.join(","));
                Some(self.set(SetKind::HashNet, key, SetDef::Fixed, members))
            }
        }
    }

    /// The sets a rule's peers stand for. Two or more ipBlocks without `except` become one
    /// `hash:net` set (peers OR, so their union is exact): a rule with 100k CIDRs costs one set
    /// and one kernel rule per port, not 100k of each (the kernel holds at most 65535 sets).
    fn peer_sets(&mut self, peers: &[Peer], policy_ns: &str) -> Vec<SetId> {
        let plain: Vec<IpNet> = peers
            .iter()
            .filter_map(|peer| match peer {
                Peer::IpBlock { cidr, .. } if peer.is_plain_block() => Some(*cidr),
                _ => None,
            })
            .collect();
        let merge = plain.len() >= 2;
        let mut out: Vec<SetId> = peers
            .iter()
            .filter(|peer| !(merge && peer.is_plain_block()))
            .filter_map(|peer| self.peer_set(peer, policy_ns))
            .collect();
        if merge {
            let mut cidrs: Vec<String> = plain.iter().map(|c| c.to_string()).collect();
            cidrs.sort();
            cidrs.dedup();
            let key = format!(
                "cidrs {} and {} more #{:012x}",
                cidrs[0],
                cidrs.len() - 1,
                stable_hash(&cidrs.join(",")) & 0xffff_ffff_ffff
            );
            let members = plain.into_iter().map(|net| Member::Net { net, nomatch: false });
            out.push(self.set(SetKind::HashNet, key, SetDef::Fixed, members));
        }
        out
    }

    /// Every pod's (address, protocol, port) for a port name.
    fn named_port_set(&mut self, name: &str, protocol: Protocol) -> SetId {
        let def = SetDef::NamedPort { name: name.to_string(), protocol };
        self.set(SetKind::HashIpPort, format!("named port {name}/{protocol}"), def, [])
    }

    fn port_criteria(&mut self, spec: &PortSpec) -> PortMatch {
        match &spec.port {
            None => (Some(spec.protocol), None, None),
            Some(PortRef::Number(p)) => (Some(spec.protocol), Some((*p, spec.end_port.unwrap_or(*p))), None),
            Some(PortRef::Name(n)) => {
                (Some(spec.protocol), None, Some(self.named_port_set(n, spec.protocol)))
            }
        }
    }

    fn policy(&mut self, p: &NetworkPolicy) {
        let targets = self.targets(p);
        for (ingress, isolates, rules) in
            [(true, p.ingress_isolation, &p.ingress), (false, p.egress_isolation, &p.egress)]
        {
            if !isolates {
                continue;
            }
            // The union of the isolating policies' targets (what `SetDef::Isolated` means; pod
            // events ask the definition, this avoids asking it for every pod of a big cluster).
            let members = self.ir.sets[&targets].members.clone();
            let def = SetDef::Isolated { ingress, node: self.node.map(str::to_string) };
            let name = self.set(SetKind::HashIp, isolated_key(ingress, self.node), def, []);
            if let Some(set) = self.ir.sets.get_mut(&name) {
                set.members.extend(members);
            }
            let direction = if ingress { "ingress" } else { "egress" };
            for (i, rule) in rules.iter().enumerate() {
                let comment = format!("{} {direction}[{i}]", p.key());
                // Peers OR, ports OR: one kernel rule per (peer, port) pair.
                let peers: Vec<Option<SetId>> = match &rule.peers {
                    None => vec![None],
                    Some(list) => self.peer_sets(list, &p.namespace).into_iter().map(Some).collect(),
                };
                let ports: Vec<PortMatch> = match &rule.ports {
                    None => vec![(None, None, None)],
                    Some(list) => list.iter().map(|s| self.port_criteria(s)).collect(),
                };
                for peer in &peers {
                    for (protocol, dports, named) in &ports {
                        let (src_set, dst_set) =
                            if ingress { (*peer, Some(targets)) } else { (Some(targets), *peer) };
                        let out = if ingress { &mut self.ir.ingress } else { &mut self.ir.egress };
                        out.push(Rule {
                            comment: comment.clone(),
                            src_set,
                            dst_set,
                            protocol: *protocol,
                            dports: *dports,
                            dst_named_port: *named,
                            action: Action::MarkAllowed,
                        });
                    }
                }
            }
        }
    }
}

/// Compiles the whole cluster.
pub fn compile(cluster: &Cluster) -> Ir {
    compile_for(cluster, None)
}

/// Compiles one node's view (`Some(node)`): rules apply to that node's pods only (their
/// egress and ingress), while the sets they match the far end against stay cluster-wide.
/// `None` compiles every pod's rules.
pub fn compile_for(cluster: &Cluster, node: Option<&str>) -> Ir {
    compile_within(cluster, node, &NodeLimits::DEFAULT).0
}

/// `compile_for`, keeping the node within `limits`: when the whole cluster does not fit, the
/// longest run of policies (in name order, the order they compile in) that fits is compiled and
/// the rest are refused, each with the limit it would break. The same cluster always refuses the
/// same policies, whichever order its objects arrived in.
pub fn compile_within(cluster: &Cluster, node: Option<&str>, limits: &NodeLimits) -> (Ir, Vec<Refused>) {
    let all = build(cluster, node, usize::MAX);
    let Err(broken) = limits.check(&all) else { return (all, Vec::new()) };
    // Fitting is monotone in the number of policies compiled (sets, rules and members only grow).
    let (mut fits, mut breaks) = (0, cluster.policies.len());
    let mut best = None;
    while breaks - fits > 1 {
        let mid = (fits + breaks) / 2;
        let ir = build(cluster, node, mid);
        if limits.check(&ir).is_ok() {
            (fits, best) = (mid, Some(ir));
        } else {
            breaks = mid;
        }
    }
    let mut keys: Vec<String> = cluster.policies.iter().map(NetworkPolicy::key).collect();
    keys.sort();
    let refused =
        keys.split_off(fits).into_iter().map(|policy| Refused { policy, limit: broken.clone() }).collect();
    (best.unwrap_or_else(|| build(cluster, node, 0)), refused)
}

/// Compiles the first `take` policies in name order.
fn build(cluster: &Cluster, node: Option<&str>, take: usize) -> Ir {
    let mut by_ns: HashMap<&str, Vec<&Pod>> = HashMap::new();
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in &cluster.pods {
        by_ns.entry(p.namespace.as_str()).or_default().push(p);
        if let Some(n) = &p.node {
            by_node.entry(n.as_str()).or_default().push(p);
        }
    }
    let mut b = Builder { cluster, ir: Ir::default(), by_ns, by_node, node };
    for n in cluster.nodes.iter().filter(|n| node.is_none_or(|only| n.name == only)) {
        let node = n;
        let Some(ip) = node.internal_ip else { continue };
        let node_set = b.set(SetKind::HashIp, format!("node {}", node.name), SetDef::Fixed, [Member::Ip(ip)]);
        let name = node.name.clone();
        let pods =
            b.set(SetKind::HashIp, format!("pods on node {name}"), SetDef::PodsOnNode(name.clone()), []);
        b.ir.accept.push(Rule {
            comment: format!("node {name} reaches its own pods"),
            src_set: Some(node_set),
            dst_set: Some(pods),
            protocol: None,
            dports: None,
            dst_named_port: None,
            action: Action::Accept,
        });
    }
    let mut policies: Vec<&NetworkPolicy> = cluster.policies.iter().collect();
    policies.sort_by_key(|p| p.key());
    for p in policies.into_iter().take(take) {
        b.policy(p);
    }
    for ingress in [true, false] {
        let isolated = isolated_key(ingress, node);
        let id = SetId::new(SetRole::Isolation, &isolated);
        if !b.ir.sets.contains_key(&id) {
            continue;
        }
        let rule = Rule {
            comment: format!("{isolated}: drop what no rule allowed"),
            src_set: (!ingress).then_some(id),
            dst_set: ingress.then_some(id),
            protocol: None,
            dports: None,
            dst_named_port: None,
            action: Action::DropUnlessAllowed,
        };
        if ingress {
            b.ir.ingress.push(rule)
        } else {
            b.ir.egress.push(rule)
        }
    }
    b.ir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    fn cluster(pods: usize) -> Cluster {
        let mut yaml = String::from(
            "kind: Namespace\nmetadata: {name: x, labels: {team: a}}\n---\n\
             kind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: web}}\n\
             \x20 ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: a}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n\
             \x20   ports: [{port: http}, {port: 8000, endPort: 8080}]\n",
        );
        for i in 0..pods {
            yaml += &format!(
                "---\nkind: Pod\nmetadata: {{name: p{i}, namespace: x, labels: {{app: web}}}}\n\
                 spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 80}}]}}]}}\n\
                 status: {{podIP: 10.2.{}.{}}}\n",
                i / 250,
                i % 250 + 1
            );
        }
        Snapshot::from_yaml(&yaml).unwrap().cluster
    }

    #[test]
    fn rule_count_does_not_grow_with_pods_but_set_members_do() {
        let (small, large) = (compile(&cluster(3)), compile(&cluster(300)));
        assert_eq!(small.rule_count(), large.rule_count());
        assert_eq!(small.rule_count(), 2 * 2 + 1, "2 peers x 2 ports, plus the isolation drop");
        assert!(large.member_count() > small.member_count() + 3 * 290);
    }

    #[test]
    fn compilation_is_deterministic_and_names_fit_the_kernel() {
        let (a, b) = (compile(&cluster(20)), compile(&cluster(20)));
        assert_eq!(a, b);
        for set in a.sets.values() {
            assert!(set.id.to_string().len() <= 31, "{}", set.id);
        }
        for rule in a.ingress.iter().filter(|r| r.action == Action::MarkAllowed) {
            assert_eq!(rule.comment, "x/web ingress[0]");
        }
    }

    #[test]
    fn a_rules_plain_ip_blocks_share_one_set_and_excepts_keep_their_own() {
        let mut yaml = String::from(
            "kind: Namespace\nmetadata: {name: x}\n---\n\
             kind: NetworkPolicy\nmetadata: {name: blocks, namespace: x}\nspec:\n  podSelector: {}\n\
             \x20 ingress:\n  - ports: [{port: 80}, {port: 443}]\n    from:\n\
             \x20   - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n",
        );
        for i in 0..1000 {
            yaml += &format!("    - ipBlock: {{cidr: 172.16.{}.{}/32}}\n", i / 256, i % 256);
        }
        let ir = compile(&Snapshot::from_yaml(&yaml).unwrap().cluster);
        let nets: Vec<&IpSet> = ir.sets.values().filter(|s| s.kind() == SetKind::HashNet).collect();
        assert_eq!(nets.len(), 2, "one merged set, one with the except");
        assert!(nets.iter().any(|s| s.members.len() == 1000));
        assert_eq!(ir.rule_count(), 2 * 2 + 1, "2 sets x 2 ports, plus the isolation drop");
    }
}
