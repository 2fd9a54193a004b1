//! A packet walked through the agent's table the way the kernel walks it (new connections:
//! established flows are accepted before any of this). Judging the conformance cases and
//! random clusters by it proves the rendering; judging a packet by what was read back from the
//! kernel explains a live verdict.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use policy_compiler::compiled::Trace;
use policy_compiler::model::Protocol;

use super::ruleset::{proto_number, Direction, Match, NRule, Ruleset, Verdict, ACCEPT_CHAIN};

pub const HOLD_COMMENT: &str = "new pod, not programmed yet";

struct Packet {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
}

fn matches(rs: &Ruleset, r: &NRule, p: &Packet) -> bool {
    let has = |set, ip| rs.sets.get(set).is_some_and(|e| e.contains(ip, p.proto, p.port));
    r.matches.iter().all(|m| match m {
        Match::Src(s) => has(s, p.src),
        Match::Dst(s) => has(s, p.dst),
        Match::Proto(n) => *n == p.proto,
        Match::Ports(lo, hi) => (*lo..=*hi).contains(&p.port),
        Match::NamedPort(s) => has(s, p.dst),
    })
}

/// The first rule of a chain that matches.
fn first<'a>(rs: &'a Ruleset, chain: &str, p: &Packet) -> Option<&'a NRule> {
    rs.chains.get(chain)?.iter().find(|r| matches(rs, r, p))
}

/// The verdict on a new connection. `hold`: the held addresses; `local(ip)`: whether an
/// address is the node's own (the node reaches held pods). IPv6 is not the agent's business.
pub fn evaluate(
    rs: &Ruleset,
    hold: &BTreeSet<Ipv4Addr>,
    local: &dyn Fn(Ipv4Addr) -> bool,
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Trace {
    let mut t = Trace { allowed: true, ..Trace::default() };
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else { return t };
    let p = Packet { src, dst, proto: proto_number(protocol), port };
    if let Some(r) = first(rs, ACCEPT_CHAIN, &p).filter(|r| r.verdict == Verdict::Accept) {
        t.accepted_by = Some(r.comment.clone());
        return t;
    }
    if hold.contains(&src) || (hold.contains(&dst) && !local(src)) {
        t.allowed = false;
        t.dropped_by = Some(HOLD_COMMENT.into());
        return t;
    }
    for (d, ip) in [(Direction::Egress, src), (Direction::Ingress, dst)] {
        let Some(group) = rs.map(d).get(&ip) else { continue };
        match first(rs, group, &p) {
            Some(r) if r.verdict == Verdict::Return => match d {
                Direction::Egress => t.egress_allowed_by.push(r.comment.clone()),
                Direction::Ingress => t.ingress_allowed_by.push(r.comment.clone()),
            },
            Some(r) if r.verdict == Verdict::Accept => {
                t.accepted_by = Some(r.comment.clone());
                return t;
            }
            found => {
                // A drop, or a group chain that is missing or ends without a verdict (the
                // kernel would go on: allowed).
                if let Some(r) = found {
                    t.allowed = false;
                    t.dropped_by = Some(r.comment.clone());
                    return t;
                }
            }
        }
    }
    t
}
