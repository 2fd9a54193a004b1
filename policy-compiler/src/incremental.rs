//! Incremental compilation: each event yields a `Delta` (sets created/destroyed, members
//! added/removed, chains rewritten) that turns the previous IR into the full compile of the
//! new cluster. Pod events — the frequent ones — touch set members only (rules never depend
//! on pods); namespace, policy and node events recompile and diff.
//!
//! A delta is applied in kernel-safe order: create sets, add members, rewrite chains, remove
//! members, destroy sets (never a set a rule still references).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::compile::compile_within;
use crate::ir::{IpSet, Ir, Member, Rule, SetDef, SetId};
use crate::limits::{NodeLimits, Refused};
use crate::model::{Cluster, Namespace, NetworkPolicy, Node, Pod};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// New sets, empty; their members are in `added`.
    pub created: Vec<IpSet>,
    pub added: BTreeMap<SetId, BTreeSet<Member>>,
    /// New content of the three chains, when any rule changed.
    pub chains: Option<[Vec<Rule>; 3]>,
    pub removed: BTreeMap<SetId, BTreeSet<Member>>,
    pub destroyed: Vec<SetId>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.added.is_empty()
            && self.chains.is_none()
            && self.removed.is_empty()
            && self.destroyed.is_empty()
    }

    pub fn apply(&self, ir: &mut Ir) {
        for set in &self.created {
            ir.sets.insert(set.id, set.clone());
        }
        for (name, members) in &self.added {
            if let Some(set) = ir.sets.get_mut(name) {
                set.members.extend(members.iter().cloned());
            }
        }
        if let Some([accept, egress, ingress]) = &self.chains {
            (ir.accept, ir.egress, ir.ingress) = (accept.clone(), egress.clone(), ingress.clone());
        }
        for (name, members) in &self.removed {
            if let Some(set) = ir.sets.get_mut(name) {
                set.members.retain(|m| !members.contains(m));
            }
        }
        for name in &self.destroyed {
            ir.sets.remove(name);
        }
    }
}

/// The delta from `old` to `new`.
pub fn diff(old: &Ir, new: &Ir) -> Delta {
    let mut d = Delta::default();
    for (id, set) in &new.sets {
        let before = old.sets.get(id);
        if before.is_none() {
            d.created.push(IpSet { members: BTreeSet::new(), ..set.clone() });
        }
        let empty = BTreeSet::new();
        let before_members = before.map_or(&empty, |s| &s.members);
        let added: BTreeSet<Member> = set.members.difference(before_members).cloned().collect();
        let removed: BTreeSet<Member> = before_members.difference(&set.members).cloned().collect();
        if !added.is_empty() {
            d.added.insert(*id, added);
        }
        if !removed.is_empty() {
            d.removed.insert(*id, removed);
        }
    }
    d.destroyed = old.sets.keys().filter(|n| !new.sets.contains_key(*n)).copied().collect();
    if (&old.accept, &old.egress, &old.ingress) != (&new.accept, &new.egress, &new.ingress) {
        d.chains = Some([new.accept.clone(), new.egress.clone(), new.ingress.clone()]);
    }
    d
}

#[derive(Debug, Clone)]
pub enum Event {
    UpsertPod(Pod),
    DeletePod { namespace: String, name: String },
    UpsertNamespace(Namespace),
    DeleteNamespace(String),
    UpsertPolicy(NetworkPolicy),
    DeletePolicy { namespace: String, name: String },
    UpsertNode(Node),
    DeleteNode(String),
}

/// Holds the cluster and its compiled IR, and keeps them in step event by event.
pub struct Compiler {
    cluster: Cluster,
    /// Compiling one node's view (see `compile_for`), or every pod's rules.
    node: Option<String>,
    ir: Ir,
    /// Pod key → index in `cluster.pods`.
    index: HashMap<String, usize>,
    /// The pods (keys) holding each address (addresses can be reused; a member stays while
    /// any holder still contributes it).
    holders: HashMap<IpAddr, Vec<String>>,
    /// Sets a pod of a namespace can belong to: that namespace's `PodsIn` sets, plus every
    /// set of another kind. Rebuilt on each recompile.
    sets_of_ns: HashMap<String, Vec<SetId>>,
    sets_any_ns: Vec<SetId>,
    limits: NodeLimits,
    /// Policies left out because the node is full (see `compile_within`).
    refused: Vec<Refused>,
}

impl Compiler {
    pub fn new(cluster: Cluster) -> Compiler {
        Compiler::for_node(cluster, None)
    }

    pub fn for_node(cluster: Cluster, node: Option<String>) -> Compiler {
        Compiler::within(cluster, node, NodeLimits::DEFAULT)
    }

    /// A compiler that keeps the node within `limits`.
    pub fn within(cluster: Cluster, node: Option<String>, limits: NodeLimits) -> Compiler {
        let (ir, refused) = compile_within(&cluster, node.as_deref(), &limits);
        let mut c = Compiler {
            cluster,
            node,
            ir,
            limits,
            refused,
            index: HashMap::new(),
            holders: HashMap::new(),
            sets_of_ns: HashMap::new(),
            sets_any_ns: Vec::new(),
        };
        c.reindex();
        c.index_sets();
        c
    }

    pub fn ir(&self) -> &Ir {
        &self.ir
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Policies the node has no room for (empty when everything fits).
    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }

    /// Whether the object an event names is already known (an upsert of it is an update).
    pub fn knows(&self, event: &Event) -> bool {
        let c = &self.cluster;
        match event {
            Event::UpsertPod(p) => self.index.contains_key(&p.key()),
            Event::DeletePod { namespace, name } => self.index.contains_key(&format!("{namespace}/{name}")),
            Event::UpsertNamespace(ns) => c.namespaces.contains_key(&ns.name),
            Event::DeleteNamespace(name) => c.namespaces.contains_key(name),
            Event::UpsertPolicy(p) => {
                c.policies.iter().any(|q| q.namespace == p.namespace && q.name == p.name)
            }
            Event::DeletePolicy { namespace, name } => {
                c.policies.iter().any(|q| &q.namespace == namespace && &q.name == name)
            }
            Event::UpsertNode(n) => c.nodes.iter().any(|m| m.name == n.name),
            Event::DeleteNode(name) => c.nodes.iter().any(|m| &m.name == name),
        }
    }

    fn reindex(&mut self) {
        self.index = self.cluster.pods.iter().enumerate().map(|(i, p)| (p.key(), i)).collect();
        self.holders.clear();
        for p in &self.cluster.pods {
            if let Some(ip) = p.ip {
                self.holders.entry(ip).or_default().push(p.key());
            }
        }
    }

    /// The pods that hold an address now.
    pub fn pods_with_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Pod> {
        let keys = self.holders.get(&ip).map(Vec::as_slice).unwrap_or_default();
        keys.iter().filter_map(|k| self.index.get(k)).map(|i| &self.cluster.pods[*i])
    }

    fn index_sets(&mut self) {
        self.sets_of_ns.clear();
        self.sets_any_ns.clear();
        for (id, set) in &self.ir.sets {
            match &set.def {
                SetDef::PodsIn { namespace, .. } => {
                    self.sets_of_ns.entry(namespace.clone()).or_default().push(*id)
                }
                SetDef::Fixed => {}
                _ => self.sets_any_ns.push(*id),
            }
        }
    }

    fn take_pod(&mut self, key: &str) -> Option<Pod> {
        let i = self.index.remove(key)?;
        let pod = self.cluster.pods.swap_remove(i);
        if let Some(moved) = self.cluster.pods.get(i) {
            self.index.insert(moved.key(), i);
        }
        if let Some(ip) = pod.ip {
            let keys = self.holders.entry(ip).or_default();
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.holders.remove(&ip);
            }
        }
        Some(pod)
    }

    pub fn apply(&mut self, event: Event) -> Delta {
        match event {
            Event::UpsertPod(pod) => {
                let old = self.take_pod(&pod.key());
                if let Some(ip) = pod.ip {
                    self.holders.entry(ip).or_default().push(pod.key());
                }
                self.index.insert(pod.key(), self.cluster.pods.len());
                self.cluster.pods.push(pod.clone());
                self.pod_delta(old.as_ref(), Some(&pod))
            }
            Event::DeletePod { namespace, name } => {
                let old = self.take_pod(&format!("{namespace}/{name}"));
                self.pod_delta(old.as_ref(), None)
            }
            other => {
                self.mutate(other);
                let (new, refused) = compile_within(&self.cluster, self.node.as_deref(), &self.limits);
                self.refused = refused;
                let delta = diff(&self.ir, &new);
                self.ir = new;
                self.index_sets();
                delta
            }
        }
    }

    fn mutate(&mut self, event: Event) {
        let c = &mut self.cluster;
        match event {
            Event::UpsertNamespace(ns) => {
                c.namespaces.insert(ns.name.clone(), ns);
            }
            Event::DeleteNamespace(name) => {
                c.namespaces.remove(&name);
            }
            Event::UpsertPolicy(p) => {
                c.policies.retain(|q| q.key() != p.key());
                c.policies.push(p);
            }
            Event::DeletePolicy { namespace, name } => {
                c.policies.retain(|p| p.namespace != namespace || p.name != name)
            }
            Event::UpsertNode(n) => {
                c.nodes.retain(|m| m.name != n.name);
                c.nodes.push(n);
            }
            Event::DeleteNode(name) => c.nodes.retain(|n| n.name != name),
            Event::UpsertPod(_) | Event::DeletePod { .. } => unreachable!("pod events are incremental"),
        }
    }

    /// Set members a pod's change adds and removes; the IR is updated in place.
    fn pod_delta(&mut self, old: Option<&Pod>, new: Option<&Pod>) -> Delta {
        let mut d = Delta::default();
        let cluster = &self.cluster;
        let mut names: Vec<&SetId> = self.sets_any_ns.iter().collect();
        for p in old.iter().chain(new.iter()) {
            names.extend(self.sets_of_ns.get(&p.namespace).into_iter().flatten());
        }
        names.sort();
        names.dedup();
        for name in names {
            let Some(set) = self.ir.sets.get_mut(name) else { continue };
            let before = old.and_then(|p| set.def.member(cluster, p));
            let after = new.and_then(|p| set.def.member(cluster, p));
            if before == after {
                continue;
            }
            if let Some(m) = after {
                if set.members.insert(m.clone()) {
                    d.added.entry(*name).or_default().insert(m);
                }
            }
            if let Some(m) = before {
                // Another pod with the same address may still put the same member here.
                let ip = match &m {
                    Member::Ip(ip) | Member::IpPort { ip, .. } => *ip,
                    Member::Net { .. } => continue,
                };
                // Only the pods holding the address can (not a walk over every pod).
                let holders = self.holders.get(&ip).map(Vec::as_slice).unwrap_or_default();
                let shared = holders
                    .iter()
                    .filter_map(|k| self.index.get(k))
                    .map(|i| &cluster.pods[*i])
                    .any(|p| p.ip == Some(ip) && set.def.member(cluster, p).as_ref() == Some(&m));
                if !shared && set.members.remove(&m) {
                    d.removed.entry(*name).or_default().insert(m);
                }
            }
        }
        d
    }
}
