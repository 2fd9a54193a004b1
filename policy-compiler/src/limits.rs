//! Bounds on what one policy and one node may ask of the kernel, so a huge or hostile object is
//! refused with a reason instead of exhausting the kernel (at most 65535 ipsets), the rule
//! engine or the agent's memory. A refused object keeps its last good version where there is one
//! (the sources keep it, as for any invalid object). Documented in docs/policy.md.

use crate::ir::Ir;
use crate::model::{NetworkPolicy, Peer};

/// Per policy: ipBlock CIDRs (a rule's plain CIDRs share one set, so they cost set members).
pub const MAX_IP_BLOCKS: usize = 200_000;
/// Per policy: peers that need a set of their own (selectors, ipBlocks with `except`).
pub const MAX_SET_PEERS: usize = 1_000;
/// Per policy: `ports` entries over all its rules.
pub const MAX_PORTS: usize = 1_000;
/// Per policy: kernel rules (peers × ports of each rule, summed).
pub const MAX_POLICY_RULES: usize = 10_000;

/// A bound broken, with what broke it: named in logs, `/readyz` and refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// `count` of `what` in one policy, over `max`.
    Policy { what: &'static str, count: usize, max: usize },
    /// The node would need `count` of `what`, over `max`.
    Node { what: &'static str, count: usize, max: usize },
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Policy { what, count, max } => {
                write!(f, "{count} {what} is over the limit of {max} per policy (split the policy)")
            }
            Limit::Node { what, count, max } => {
                write!(f, "the node would need {count} {what}, over the limit of {max}")
            }
        }
    }
}

/// Checks one converted policy against the per-policy bounds; the error names the bound.
pub fn check_policy(p: &NetworkPolicy) -> Result<(), Limit> {
    let (mut blocks, mut set_peers, mut ports, mut rules) = (0, 0, 0, 0);
    for rule in p.ingress.iter().chain(&p.egress) {
        let peers = rule.peers.as_deref().unwrap_or_default();
        let plain = peers.iter().filter(|x| x.is_plain_block()).count();
        blocks += peers.iter().filter(|x| matches!(x, Peer::IpBlock { .. })).count();
        set_peers += peers.len() - plain;
        let n_ports = rule.ports.as_ref().map_or(0, Vec::len);
        ports += n_ports;
        let kernel_peers =
            if rule.peers.is_none() { 1 } else { peers.len() - plain + usize::from(plain > 0) };
        rules += kernel_peers * n_ports.max(1);
    }
    let over = |what: &'static str, count: usize, max: usize| Err(Limit::Policy { what, count, max });
    if blocks > MAX_IP_BLOCKS {
        return over("ipBlocks", blocks, MAX_IP_BLOCKS);
    }
    if set_peers > MAX_SET_PEERS {
        return over("selector or except peers", set_peers, MAX_SET_PEERS);
    }
    if ports > MAX_PORTS {
        return over("ports", ports, MAX_PORTS);
    }
    if rules > MAX_POLICY_RULES {
        return over("kernel rules (peers x ports)", rules, MAX_POLICY_RULES);
    }
    Ok(())
}

/// Per node: what the compiled state may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLimits {
    pub sets: usize,
    pub rules: usize,
    pub members: usize,
}

impl NodeLimits {
    /// Sets well under the kernel's 65535 (room for the hold set and a restart's leftovers);
    /// rules and members where an apply still takes seconds, not minutes.
    pub const DEFAULT: NodeLimits = NodeLimits { sets: 50_000, rules: 100_000, members: 4_000_000 };

    /// Which bound a compiled state breaks, if any.
    pub fn check(&self, ir: &Ir) -> Result<(), Limit> {
        let (sets, rules, members) = (ir.sets.len(), ir.rule_count(), ir.member_count());
        let over = |what: &'static str, count: usize, max: usize| Err(Limit::Node { what, count, max });
        if sets > self.sets {
            return over("sets", sets, self.sets);
        }
        if rules > self.rules {
            return over("rules", rules, self.rules);
        }
        if members > self.members {
            return over("set members", members, self.members);
        }
        Ok(())
    }
}

/// A policy left out of the compiled state because the node is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `namespace/name`.
    pub policy: String,
    pub limit: Limit,
}
