//! The nftables backend's model of its table, and the IR rendered into it (pure).
//!
//! ```text
//! table inet azure-npm                              (userdata: the layout version)
//!   set hold       { ipv4_addr }                    new pods the CNI holds (its elements)
//!   set azn-…      { ipv4_addr | interval | ipv4_addr . inet_proto . inet_service }
//!   map isolated-egress  { ipv4_addr : verdict }    isolated pod → jump egress-<group>
//!   map isolated-ingress { ipv4_addr : verdict }
//!   chain forward  { hook forward priority 0; meta nfproto ipv4 jump entry }
//!   chain output   { hook output priority 0;  meta nfproto ipv4 jump entry }
//!   chain entry    { ct state established,related accept; jump always;
//!                    ip saddr @hold drop; ip daddr @hold fib saddr type != local drop;
//!                    ip saddr vmap @isolated-egress; ip daddr vmap @isolated-ingress }
//!   chain always   { ip saddr @node ip daddr @pods-on-node accept … }
//!   chain egress-… { ip daddr @peer tcp dport 80 return … ; counter drop }
//! ```
//!
//! A pod's rules are the IR's allow rules whose target set holds it; pods with the same rules
//! share one group chain (named after a hash of its rules), and a pod isolated in a direction
//! is dispatched to its group with one map lookup. A rule that matches returns (allowed: on to
//! the other direction); a pod no rule allows reaches its group's drop. No packet marks.
//! `except` is rendered as the address ranges that remain (nftables sets have no `nomatch`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use policy_compiler::ir::{stable_hash, Action, IpSet, Ir, Member, Rule, SetId, SetKind};
use policy_compiler::model::Protocol;

use crate::error::{Error, Result};

/// The elements of one of the agent's sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elems {
    Addrs(BTreeSet<Ipv4Addr>),
    /// Disjoint, non-adjacent, sorted inclusive ranges.
    Ranges(Vec<(u32, u32)>),
    /// (address, IP protocol number, port).
    Ports(BTreeSet<(Ipv4Addr, u8, u16)>),
}

impl Elems {
    pub fn empty(kind: SetKind) -> Elems {
        match kind {
            SetKind::HashIp => Elems::Addrs(BTreeSet::new()),
            SetKind::HashNet => Elems::Ranges(Vec::new()),
            SetKind::HashIpPort => Elems::Ports(BTreeSet::new()),
        }
    }

    pub fn kind(&self) -> SetKind {
        match self {
            Elems::Addrs(_) => SetKind::HashIp,
            Elems::Ranges(_) => SetKind::HashNet,
            Elems::Ports(_) => SetKind::HashIpPort,
        }
    }

    /// Elements as the kernel counts them (a range is a start and, unless it runs to the
    /// last address, an end).
    pub fn count(&self) -> usize {
        match self {
            Elems::Addrs(a) => a.len(),
            Elems::Ranges(r) => r.iter().map(|(_, hi)| if *hi == u32::MAX { 1 } else { 2 }).sum(),
            Elems::Ports(p) => p.len(),
        }
    }

    /// The IR set's IPv4 members as elements.
    pub fn of(set: &IpSet) -> Elems {
        match set.kind() {
            SetKind::HashIp => Elems::Addrs(set.members.iter().filter_map(member_addr).collect()),
            SetKind::HashNet => Elems::Ranges(ranges(&set.members)),
            SetKind::HashIpPort => Elems::Ports(set.members.iter().filter_map(member_port).collect()),
        }
    }

    pub fn contains(&self, ip: Ipv4Addr, protocol: u8, port: u16) -> bool {
        match self {
            Elems::Addrs(a) => a.contains(&ip),
            Elems::Ranges(r) => {
                let x = u32::from(ip);
                let i = r.partition_point(|(lo, _)| *lo <= x);
                i > 0 && r[i - 1].1 >= x
            }
            Elems::Ports(p) => p.contains(&(ip, protocol, port)),
        }
    }
}

pub fn member_addr(m: &Member) -> Option<Ipv4Addr> {
    match m {
        Member::Ip(IpAddr::V4(a)) => Some(*a),
        _ => None,
    }
}

pub fn member_port(m: &Member) -> Option<(Ipv4Addr, u8, u16)> {
    match m {
        Member::IpPort { ip: IpAddr::V4(a), protocol, port } => Some((*a, proto_number(*protocol), *port)),
        _ => None,
    }
}

pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// The addresses a `hash:net` set matches, as ranges: the most specific entry covering an
/// address decides (a `nomatch` entry excludes; at equal length `nomatch` wins), as the kernel
/// decides for ipset. CIDRs nest or are disjoint, so one sweep in (start, length) order walks
/// the containment tree.
pub fn ranges(members: &BTreeSet<Member>) -> Vec<(u32, u32)> {
    let mut nets: BTreeMap<(u32, u8), bool> = BTreeMap::new();
    for m in members {
        if let Member::Net { net: ipnet::IpNet::V4(n), nomatch } = m {
            let n = n.trunc();
            let e = nets.entry((u32::from(n.network()), n.prefix_len())).or_insert(*nomatch);
            *e |= *nomatch;
        }
    }
    let end = |start: u32, len: u8| -> u64 { u64::from(start) + (1u64 << (32 - u32::from(len))) - 1 };
    // (end, allows, next address of this net not yet painted)
    let mut stack: Vec<(u64, bool, u64)> = Vec::new();
    let mut painted: Vec<(u64, u64, bool)> = Vec::new();
    let mut paint = |from: u64, to: u64, allow: bool| {
        if from <= to {
            painted.push((from, to, allow));
        }
    };
    for ((start, len), nomatch) in nets {
        let (s, e) = (u64::from(start), end(start, len));
        while let Some(&(top_end, allow, cursor)) = stack.last() {
            if top_end >= e {
                break;
            }
            paint(cursor, top_end, allow);
            stack.pop();
        }
        if let Some(top) = stack.last_mut() {
            if s > top.2 {
                paint(top.2, s - 1, top.1);
            }
            top.2 = e + 1;
        }
        stack.push((e, !nomatch, s));
    }
    while let Some((top_end, allow, cursor)) = stack.pop() {
        paint(cursor, top_end, allow);
    }
    painted.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi, _) in painted.into_iter().filter(|p| p.2) {
        match out.last_mut() {
            Some(last) if u64::from(last.1) + 1 >= lo => last.1 = last.1.max(hi as u32),
            _ => out.push((lo as u32, hi as u32)),
        }
    }
    out
}

/// What one rule of the agent's chains looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Match {
    /// The source address is in the set.
    Src(SetId),
    Dst(SetId),
    /// The IP protocol number.
    Proto(u8),
    /// The destination port is in the inclusive range.
    Ports(u16, u16),
    /// (destination address, protocol, destination port) is in the set.
    NamedPort(SetId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    /// Allowed: back to the entry chain (and on to the other direction).
    Return,
    /// Counted and dropped.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NRule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
    /// The IR rule's comment, cut to what nftables keeps.
    pub comment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    pub fn map(self) -> &'static str {
        match self {
            Direction::Egress => EGRESS_MAP,
            Direction::Ingress => INGRESS_MAP,
        }
    }

    /// The IR rule's set that selects the pods it applies to.
    fn target(self, r: &Rule) -> Option<SetId> {
        match self {
            Direction::Egress => r.src_set,
            Direction::Ingress => r.dst_set,
        }
    }

    fn rules(self, ir: &Ir) -> &[Rule] {
        match self {
            Direction::Egress => &ir.egress,
            Direction::Ingress => &ir.ingress,
        }
    }
}

/// Names that are not nft keywords (`accept`, `egress`, `ingress` are), so `nft` scripts and
/// listings read plainly.
pub const EGRESS_MAP: &str = "isolated-egress";
pub const INGRESS_MAP: &str = "isolated-ingress";
/// What is always allowed: a node reaching its own pods.
pub const ACCEPT_CHAIN: &str = "always";
pub const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

/// The agent's part of the table that follows the IR (the fixed chains and sets aside).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The IR sets the rules use, by identity.
    pub sets: BTreeMap<SetId, Elems>,
    /// Isolated pods → their group chain, per direction.
    pub egress: BTreeMap<Ipv4Addr, String>,
    pub ingress: BTreeMap<Ipv4Addr, String>,
    /// The accept chain and the group chains, with their rules.
    pub chains: BTreeMap<String, Vec<NRule>>,
}

impl Ruleset {
    pub fn map(&self, d: Direction) -> &BTreeMap<Ipv4Addr, String> {
        match d {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        }
    }

    pub fn map_mut(&mut self, d: Direction) -> &mut BTreeMap<Ipv4Addr, String> {
        match d {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }

    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }

    pub fn element_count(&self) -> usize {
        self.sets.values().map(Elems::count).sum::<usize>() + self.egress.len() + self.ingress.len()
    }
}

/// The rules of one direction, split as the groups need them.
pub struct Plan {
    pub direction: Direction,
    /// Allow rules: (target set, the rule without its target criterion).
    pub allows: Vec<(Option<SetId>, NRule)>,
    /// Isolation sets, with the comment of their drop rule.
    pub isolation: Vec<(SetId, String)>,
    /// Allow rules by target set, and those without one (they apply to every pod).
    by_target: HashMap<SetId, Vec<usize>>,
    untargeted: Vec<usize>,
    /// A stable hash of each allow rule, and of each drop: a group's name is made of them.
    hashes: Vec<u64>,
    drop_hashes: Vec<u64>,
}

/// A pod's group in one direction: its allow rules (indexes into the plan, in order) and its
/// drop, named by a hash of their content (pods with the same rules share the chain, and a
/// group keeps its name across renders while its rules do not change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    allows: Vec<usize>,
    drop: usize,
}

impl Plan {
    /// The group of a pod in the given target and isolation sets (`None`: not isolated here).
    pub fn group(&self, sets: &BTreeSet<SetId>) -> Option<Group> {
        let drop = self.isolation.iter().position(|(set, _)| sets.contains(set))?;
        let mut allows = self.untargeted.clone();
        for s in sets {
            allows.extend(self.by_target.get(s).into_iter().flatten());
        }
        allows.sort_unstable();
        allows.dedup();
        let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(0x0100_0000_01b3);
        let hash = allows
            .iter()
            .fold(mix(0xcbf2_9ce4_8422_2325, self.drop_hashes[drop]), |h, i| mix(h, self.hashes[*i]));
        let prefix = match self.direction {
            Direction::Egress => "egress-",
            Direction::Ingress => "ingress-",
        };
        Some(Group { name: format!("{prefix}{hash:016x}"), allows, drop })
    }

    /// A group's chain: its allow rules, then the counted drop.
    pub fn rules(&self, g: &Group) -> Vec<NRule> {
        let mut rules: Vec<NRule> = g.allows.iter().map(|i| self.allows[*i].1.clone()).collect();
        let comment = self.isolation[g.drop].1.clone();
        rules.push(NRule { matches: Vec::new(), verdict: Verdict::Drop, comment });
        rules
    }
}

fn unsupported(what: String) -> Error {
    Error::Unsupported(format!("the nftables backend cannot express {what}"))
}

fn peer_matches(d: Direction, r: &Rule) -> Vec<Match> {
    let mut m = Vec::new();
    match d {
        Direction::Egress => m.extend(r.dst_set.map(Match::Dst)),
        Direction::Ingress => m.extend(r.src_set.map(Match::Src)),
    }
    m.extend(r.protocol.map(|p| Match::Proto(proto_number(p))));
    m.extend(r.dports.map(|(lo, hi)| Match::Ports(lo, hi)));
    m.extend(r.dst_named_port.map(Match::NamedPort));
    m
}

pub fn comment(text: &str) -> String {
    nfnl::object::comment_text(text)
}

/// Splits a direction's IR rules into allows and isolation. The IR keeps every allow (mark)
/// rule before the drops, and a drop names only its isolation set; anything else is refused.
pub fn plan(ir: &Ir, d: Direction) -> Result<Plan> {
    let mut plan = Plan {
        direction: d,
        allows: Vec::new(),
        isolation: Vec::new(),
        by_target: HashMap::new(),
        untargeted: Vec::new(),
        hashes: Vec::new(),
        drop_hashes: Vec::new(),
    };
    for r in d.rules(ir) {
        match r.action {
            Action::MarkAllowed if plan.isolation.is_empty() => {
                let rule = NRule {
                    matches: peer_matches(d, r),
                    verdict: Verdict::Return,
                    comment: comment(&r.comment),
                };
                plan.allows.push((d.target(r), rule))
            }
            Action::DropUnlessAllowed if peer_matches(d, r).is_empty() => match d.target(r) {
                Some(set) => plan.isolation.push((set, comment(&r.comment))),
                None => return Err(unsupported(format!("a drop for every pod ({})", r.comment))),
            },
            _ => return Err(unsupported(format!("{:?} rule {:?} where it is", r.action, r.comment))),
        }
    }
    for (i, (target, rule)) in plan.allows.iter().enumerate() {
        match target {
            Some(t) => plan.by_target.entry(*t).or_default().push(i),
            None => plan.untargeted.push(i),
        }
        plan.hashes.push(stable_hash(&format!("{rule:?}")));
    }
    plan.drop_hashes = plan.isolation.iter().map(|(_, c)| stable_hash(&format!("drop {c}"))).collect();
    Ok(plan)
}

/// The accept chain: the IR's accept rules (traffic a node sends to its own pods).
pub fn accept_rules(ir: &Ir) -> Result<Vec<NRule>> {
    ir.accept
        .iter()
        .map(|r| match r.action {
            Action::Accept => {
                let mut m: Vec<Match> = r.src_set.map(Match::Src).into_iter().collect();
                m.extend(peer_matches(Direction::Egress, r));
                Ok(NRule { matches: m, verdict: Verdict::Accept, comment: comment(&r.comment) })
            }
            _ => Err(unsupported(format!("{:?} rule {:?} in the accept chain", r.action, r.comment))),
        })
        .collect()
}

/// The sets a ruleset's rules look up.
pub fn used_sets(chains: &BTreeMap<String, Vec<NRule>>) -> BTreeSet<SetId> {
    let mut out = BTreeSet::new();
    for r in chains.values().flatten() {
        for m in &r.matches {
            match m {
                Match::Src(s) | Match::Dst(s) | Match::NamedPort(s) => {
                    out.insert(*s);
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str, nomatch: bool) -> Member {
        Member::Net { net: s.parse().unwrap(), nomatch }
    }

    fn r(a: &str, b: &str) -> (u32, u32) {
        (u32::from(a.parse::<Ipv4Addr>().unwrap()), u32::from(b.parse::<Ipv4Addr>().unwrap()))
    }

    #[test]
    fn excepts_become_the_ranges_that_remain() {
        let m = [net("10.0.0.0/8", false), net("10.1.0.0/16", true), net("10.1.2.0/24", false)].into();
        assert_eq!(
            ranges(&m),
            [r("10.0.0.0", "10.0.255.255"), r("10.1.2.0", "10.1.2.255"), r("10.2.0.0", "10.255.255.255")]
        );
        // Adjacent blocks merge; the whole space has no end element.
        let m = [net("10.0.0.0/25", false), net("10.0.0.128/25", false), net("0.0.0.0/0", false)].into();
        assert_eq!(ranges(&m), [r("0.0.0.0", "255.255.255.255")]);
        // At equal length nomatch wins; a lone nomatch matches nothing.
        let m = [net("10.0.0.0/24", false), net("10.0.0.0/24", true), net("192.168.0.0/16", true)].into();
        assert!(ranges(&m).is_empty());
        let m = [net("0.0.0.0/0", false), net("255.255.255.255/32", true), net("0.0.0.0/32", true)].into();
        assert_eq!(ranges(&m), [r("0.0.0.1", "255.255.255.254")]);
    }

    #[test]
    fn ranges_agree_with_the_kernels_most_specific_rule() {
        // Every address near a boundary, against the IR's own membership test.
        let m: BTreeSet<Member> = [
            net("10.0.0.0/8", false),
            net("10.0.0.0/16", true),
            net("10.0.1.0/24", false),
            net("10.0.1.128/25", true),
            net("10.0.1.130/32", false),
            net("11.0.0.0/8", false),
        ]
        .into();
        let set = IpSet {
            id: SetId { role: policy_compiler::ir::SetRole::Net, hash: 1 },
            key: String::new(),
            def: policy_compiler::ir::SetDef::Fixed,
            members: m.clone(),
        };
        let elems = Elems::Ranges(ranges(&m));
        for base in [
            "9.255.255.255",
            "10.0.0.0",
            "10.0.1.0",
            "10.0.1.128",
            "10.0.1.130",
            "10.1.0.0",
            "11.255.255.255",
        ] {
            let b = u32::from(base.parse::<Ipv4Addr>().unwrap());
            for x in b.saturating_sub(2)..=b.saturating_add(2) {
                let ip = Ipv4Addr::from(x);
                let want = policy_compiler::compiled::contains(&set, IpAddr::V4(ip), Protocol::Tcp, 0);
                assert_eq!(elems.contains(ip, 6, 0), want, "{ip}");
            }
        }
    }
}
