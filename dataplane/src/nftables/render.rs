//! The IR rendered into the table's model, kept in step with the IR delta by delta.
//!
//! A pod event changes set members only; here it changes at most those sets' elements, the
//! map entries of the addresses involved, and the group chains that come or go with them:
//! work in proportion to the change, not to the cluster. Anything else (rules, sets made or
//! destroyed) is rendered in full and diffed. Property-tested: after any event sequence the
//! kept model equals a full render, and the changes turn the old model into the new one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use policy_compiler::incremental::Delta;
use policy_compiler::ir::{Ir, SetId, SetKind};

use super::ops::{self, Op};
use super::ruleset::{
    accept_rules, member_addr, member_port, plan, used_sets, Direction, Elems, NRule, Plan, Ruleset,
    ACCEPT_CHAIN, DIRECTIONS,
};
use crate::error::Result;

pub struct Renderer {
    ir: Ir,
    rs: Ruleset,
    /// Per direction: the allow rules and isolation sets.
    plans: [Plan; 2],
    /// Per direction: the target and isolation sets each address is in.
    holding: [HashMap<Ipv4Addr, BTreeSet<SetId>>; 2],
    /// Per direction: those target and isolation sets.
    watched: [BTreeSet<SetId>; 2],
    /// Group chain → addresses dispatched to it.
    users: HashMap<String, usize>,
    /// Set → chains whose rules look it up.
    set_users: HashMap<SetId, usize>,
}

/// The sets one chain's rules look up, each once.
fn chain_sets(rules: &[NRule]) -> BTreeSet<SetId> {
    used_sets(&[(String::new(), rules.to_vec())].into())
}

fn index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

/// The whole ruleset for an IR.
pub fn render(ir: &Ir) -> Result<Ruleset> {
    Ok(Renderer::new(ir.clone())?.rs)
}

impl Renderer {
    pub fn new(ir: Ir) -> Result<Renderer> {
        let plans = [plan(&ir, Direction::Egress)?, plan(&ir, Direction::Ingress)?];
        let mut rs = Ruleset::default();
        rs.chains.insert(ACCEPT_CHAIN.to_string(), accept_rules(&ir)?);
        let mut holding: [HashMap<Ipv4Addr, BTreeSet<SetId>>; 2] = Default::default();
        let mut watched: [BTreeSet<SetId>; 2] = Default::default();
        let mut users: HashMap<String, usize> = HashMap::new();
        for d in DIRECTIONS {
            let (p, i) = (&plans[index(d)], index(d));
            watched[i] =
                p.allows.iter().filter_map(|(t, _)| *t).chain(p.isolation.iter().map(|(s, _)| *s)).collect();
            for id in &watched[i] {
                for a in ir.sets.get(id).into_iter().flat_map(|s| s.members.iter()).filter_map(member_addr) {
                    holding[i].entry(a).or_default().insert(*id);
                }
            }
            let mut ips: Vec<&Ipv4Addr> = holding[i].keys().collect();
            ips.sort();
            for ip in ips {
                let sets = &holding[i][ip];
                if let Some(g) = p.group(sets) {
                    *users.entry(g.name.clone()).or_default() += 1;
                    if !rs.chains.contains_key(&g.name) {
                        rs.chains.insert(g.name.clone(), p.rules(&g));
                    }
                    rs.map_mut(d).insert(*ip, g.name);
                }
            }
        }
        let mut set_users: HashMap<SetId, usize> = HashMap::new();
        for rules in rs.chains.values() {
            for id in chain_sets(rules) {
                *set_users.entry(id).or_default() += 1;
            }
        }
        for id in set_users.keys() {
            let elems = ir.sets.get(id).map_or_else(|| Elems::empty(id.kind()), Elems::of);
            rs.sets.insert(*id, elems);
        }
        Ok(Renderer { ir, rs, plans, holding, watched, users, set_users })
    }

    pub fn ir(&self) -> &Ir {
        &self.ir
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.rs
    }

    /// Moves to the IR with `delta` applied; returns the changes to the table.
    pub fn apply(&mut self, delta: &Delta) -> Result<Vec<Op>> {
        if delta.chains.is_some() || !delta.created.is_empty() || !delta.destroyed.is_empty() {
            let mut ir = self.ir.clone();
            delta.apply(&mut ir);
            let next = Renderer::new(ir)?;
            let changes = ops::diff(&self.rs, &next.rs);
            *self = next;
            return Ok(changes);
        }
        delta.apply(&mut self.ir);
        let mut changes = Vec::new();
        self.elements(delta, &mut changes);
        self.dispatch(delta, &mut changes);
        ops::apply(&mut self.rs, &changes);
        Ok(changes)
    }

    /// Element changes of the sets the rules use.
    fn elements(&self, delta: &Delta, changes: &mut Vec<Op>) {
        let ids: BTreeSet<&SetId> = delta.added.keys().chain(delta.removed.keys()).collect();
        let none = BTreeSet::new();
        for id in ids {
            let Some(old) = self.rs.sets.get(id) else { continue };
            let (added, removed) =
                (delta.added.get(id).unwrap_or(&none), delta.removed.get(id).unwrap_or(&none));
            let (gained, lost) = match old {
                Elems::Ranges(_) => {
                    let new = self.ir.sets.get(id).map_or_else(|| Elems::empty(SetKind::HashNet), Elems::of);
                    ops::elems_ops(*id, old, &new, changes);
                    continue;
                }
                Elems::Addrs(cur) => (
                    Elems::Addrs(added.iter().filter_map(member_addr).filter(|a| !cur.contains(a)).collect()),
                    Elems::Addrs(
                        removed.iter().filter_map(member_addr).filter(|a| cur.contains(a)).collect(),
                    ),
                ),
                Elems::Ports(cur) => (
                    Elems::Ports(added.iter().filter_map(member_port).filter(|p| !cur.contains(p)).collect()),
                    Elems::Ports(
                        removed.iter().filter_map(member_port).filter(|p| cur.contains(p)).collect(),
                    ),
                ),
            };
            if gained.count() > 0 {
                changes.push(Op::AddElems(*id, gained));
            }
            if lost.count() > 0 {
                changes.push(Op::DelElems(*id, lost));
            }
        }
    }

    /// Map entries and group chains for the addresses whose target or isolation sets changed.
    fn dispatch(&mut self, delta: &Delta, changes: &mut Vec<Op>) {
        let mut touched: BTreeMap<String, usize> = BTreeMap::new();
        let mut new_chains: BTreeMap<String, Vec<NRule>> = BTreeMap::new();
        for d in DIRECTIONS {
            let i = index(d);
            let mut affected = BTreeSet::new();
            for (id, members, add) in delta
                .added
                .iter()
                .map(|(id, m)| (id, m, true))
                .chain(delta.removed.iter().map(|(id, m)| (id, m, false)))
            {
                if !self.watched[i].contains(id) {
                    continue;
                }
                for a in members.iter().filter_map(member_addr) {
                    affected.insert(a);
                    let entry = self.holding[i].entry(a).or_default();
                    if add {
                        entry.insert(*id);
                    } else {
                        entry.remove(id);
                    }
                    if entry.is_empty() {
                        self.holding[i].remove(&a);
                    }
                }
            }
            let (mut put, mut gone) = (BTreeMap::new(), BTreeSet::new());
            let none = BTreeSet::new();
            for ip in affected {
                let group = self.plans[i].group(self.holding[i].get(&ip).unwrap_or(&none));
                let new = group.as_ref().map(|g| g.name.clone());
                let old = self.rs.map(d).get(&ip).cloned();
                if new == old {
                    continue;
                }
                if let Some(o) = &old {
                    let n = self.users.entry(o.clone()).or_default();
                    touched.entry(o.clone()).or_insert(*n);
                    *n = n.saturating_sub(1);
                    gone.insert(ip);
                }
                if let Some(g) = group {
                    let n = self.users.entry(g.name.clone()).or_default();
                    touched.entry(g.name.clone()).or_insert(*n);
                    *n += 1;
                    if !new_chains.contains_key(&g.name) && !self.rs.chains.contains_key(&g.name) {
                        new_chains.insert(g.name.clone(), self.plans[i].rules(&g));
                    }
                    put.insert(ip, g.name);
                }
            }
            if !gone.is_empty() {
                changes.push(Op::MapDel(d, gone));
            }
            if !put.is_empty() {
                changes.push(Op::MapAdd(d, put));
            }
        }
        // Sets come and go with the chains that look them up (counted over the whole step, so
        // a set one chain drops and another takes stays).
        let mut sets_before: BTreeMap<SetId, usize> = BTreeMap::new();
        for (name, before) in touched {
            let after = self.users.get(&name).copied().unwrap_or(0);
            let (rules, delta) = if before == 0 && after > 0 && !self.rs.chains.contains_key(&name) {
                let rules = new_chains.remove(&name).unwrap_or_default();
                changes.push(Op::NewChain(name.clone(), rules.clone()));
                (rules, 1isize)
            } else if before > 0 && after == 0 {
                self.users.remove(&name);
                changes.push(Op::DelChain(name.clone()));
                (self.rs.chains.get(&name).cloned().unwrap_or_default(), -1)
            } else {
                continue;
            };
            for id in chain_sets(&rules) {
                let n = self.set_users.entry(id).or_default();
                sets_before.entry(id).or_insert(*n);
                *n = n.saturating_add_signed(delta);
            }
        }
        for (id, before) in sets_before {
            let after = self.set_users.get(&id).copied().unwrap_or(0);
            if before == 0 && after > 0 {
                changes.push(Op::NewSet(id));
                let elems = self.ir.sets.get(&id).map_or_else(|| Elems::empty(id.kind()), Elems::of);
                ops::elems_ops(id, &Elems::empty(id.kind()), &elems, changes);
            } else if before > 0 && after == 0 {
                self.set_users.remove(&id);
                changes.push(Op::DelSet(id));
            }
        }
    }
}
