//! The compiled evaluator: walks the IR the way the kernel walks ipset + iptables, on
//! addresses only. Agreeing with `semantic` on every query is the compiler's proof.

use std::net::IpAddr;

use serde::Serialize;

use crate::ir::{Action, IpSet, Ir, Member, Rule, SetId, SetKind};
use crate::model::Protocol;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub allowed: bool,
    /// The accept rule that let it through early (a node reaching its own pod).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<String>,
    pub egress_allowed_by: Vec<String>,
    pub ingress_allowed_by: Vec<String>,
    /// The drop rule that stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_by: Option<String>,
}

/// ipset membership. hash:net picks the most specific matching entry, and a `nomatch` entry
/// there means "not in the set" (that is how `except` is carved out).
pub fn contains(set: &IpSet, ip: IpAddr, protocol: Protocol, port: u16) -> bool {
    match set.kind() {
        SetKind::HashIp => set.members.contains(&Member::Ip(ip)),
        SetKind::HashNet => set
            .members
            .iter()
            .filter_map(|m| match m {
                Member::Net { net, nomatch } if net.contains(&ip) => Some((net.prefix_len(), *nomatch)),
                _ => None,
            })
            .max_by_key(|(len, nomatch)| (*len, *nomatch))
            .is_some_and(|(_, nomatch)| !nomatch),
        SetKind::HashIpPort => set.members.contains(&Member::IpPort { ip, protocol, port }),
    }
}

/// The packet being judged.
#[derive(Debug, Clone, Copy)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
}

fn in_set(ir: &Ir, id: &Option<SetId>, ip: IpAddr, pkt: Packet) -> bool {
    id.as_ref().is_none_or(|n| ir.sets.get(n).is_some_and(|s| contains(s, ip, pkt.protocol, pkt.port)))
}

fn matches(ir: &Ir, r: &Rule, pkt: Packet) -> bool {
    in_set(ir, &r.src_set, pkt.src, pkt)
        && in_set(ir, &r.dst_set, pkt.dst, pkt)
        && r.protocol.is_none_or(|p| p == pkt.protocol)
        && r.dports.is_none_or(|(lo, hi)| (lo..=hi).contains(&pkt.port))
        && in_set(ir, &r.dst_named_port, pkt.dst, pkt)
}

/// One chain with an allow mark: true when the packet survives it.
fn chain(
    ir: &Ir,
    rules: &[Rule],
    pkt: Packet,
    allowed_by: &mut Vec<String>,
    dropped_by: &mut Option<String>,
) -> bool {
    let mut mark = false;
    for r in rules.iter().filter(|r| matches(ir, r, pkt)) {
        match r.action {
            Action::MarkAllowed => {
                mark = true;
                allowed_by.push(r.comment.clone());
            }
            Action::DropUnlessAllowed if !mark => {
                *dropped_by = Some(r.comment.clone());
                return false;
            }
            Action::DropUnlessAllowed => {}
            Action::Accept => return true,
        }
    }
    true
}

pub fn evaluate(ir: &Ir, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Trace {
    let pkt = Packet { src, dst, protocol, port };
    let mut t = Trace::default();
    if let Some(r) = ir.accept.iter().find(|r| matches(ir, r, pkt)) {
        t.accepted_by = Some(r.comment.clone());
        t.allowed = true;
        return t;
    }
    t.allowed = chain(ir, &ir.egress, pkt, &mut t.egress_allowed_by, &mut t.dropped_by)
        && chain(ir, &ir.ingress, pkt, &mut t.ingress_allowed_by, &mut t.dropped_by);
    t
}
