//! The agent's table read back from the kernel by netlink dumps, into the model the renderer
//! writes. What does not read as something the backend writes (a rule edited by hand, a set
//! of another type, a chain of unknown name) is reported as a problem, never guessed at; the
//! fixed parts (hold set, maps, base and entry chains) are checked expression by expression.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use nfnl::expr::{cmp, ct, fib, meta, payload, Expr, Verdict as NVerdict, REG_1, REG_VERDICT};
use nfnl::object::{hook, msg, Chain, Data, Elem, Rule, Set, Table, ELEM_INTERVAL_END};
use nfnl::{Error as NlError, Socket};
use policy_compiler::ir::{SetId, SetKind};

use super::ops::{map_object, nfproto_ipv4, set_object};
use super::ruleset::{Direction, Elems, Match, NRule, Ruleset, Verdict, ACCEPT_CHAIN, DIRECTIONS};
use super::{FAMILY, HOLD, LAYOUT, LAYOUT_PREFIX, TABLE};
use crate::error::{Error, Result};

/// Whose table `inet azure-npm` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    Missing,
    /// Made by this version.
    Ours,
    /// Made by another version of the agent (its layout tag).
    Older(String),
    /// Not made by the agent (its comment).
    Foreign(String),
}

/// What the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub table: TableState,
    pub ruleset: Ruleset,
    /// The fixed parts are all there, exactly as written.
    pub fixed_ok: bool,
    /// The held addresses (the CNI's).
    pub hold: BTreeSet<Ipv4Addr>,
    pub problems: Vec<String>,
}

impl View {
    pub fn missing() -> View {
        View {
            table: TableState::Missing,
            ruleset: Ruleset::default(),
            fixed_ok: false,
            hold: BTreeSet::new(),
            problems: Vec::new(),
        }
    }
}

/// A fixed chain: name, hook (base chains), rules as (expressions, comment).
pub type FixedChain = (&'static str, Option<u32>, Vec<(Vec<Expr>, &'static str)>);

/// The fixed chains.
pub fn fixed_chains() -> Vec<FixedChain> {
    let jump = |c: &str| Expr::verdict(NVerdict::Jump(c.into()));
    let to_entry = || {
        let mut e = nfproto_ipv4();
        e.push(jump(ENTRY));
        vec![(e, "IPv4 to the agent's rules")]
    };
    let addr = |offset| Expr::Payload { dreg: REG_1, base: payload::NETWORK, offset, len: 4 };
    let hold = || Expr::Lookup { set: HOLD.into(), sreg: REG_1, dreg: None, inverted: false };
    let ipv4 = |rest: Vec<Expr>| -> Vec<Expr> { nfproto_ipv4().into_iter().chain(rest).collect() };
    let counted_drop = || [Expr::Counter { packets: 0, bytes: 0 }, Expr::verdict(NVerdict::Drop)];
    let dispatch = |offset, d: Direction| {
        ipv4(vec![
            addr(offset),
            Expr::Lookup { set: d.map().into(), sreg: REG_1, dreg: Some(REG_VERDICT), inverted: false },
        ])
    };
    let mut held_src = ipv4(vec![addr(12), hold()]);
    held_src.extend(counted_drop());
    let mut held_dst = ipv4(vec![
        addr(16),
        hold(),
        Expr::Fib { dreg: REG_1, result: fib::RESULT_ADDRTYPE, flags: fib::F_SADDR },
        Expr::Cmp { sreg: REG_1, op: cmp::NEQ, data: fib::RTN_LOCAL.to_ne_bytes().to_vec() },
    ]);
    held_dst.extend(counted_drop());
    let entry = vec![
        (
            vec![
                Expr::Ct { dreg: REG_1, key: ct::STATE },
                Expr::Bitwise {
                    sreg: REG_1,
                    dreg: REG_1,
                    mask: (ct::ESTABLISHED | ct::RELATED).to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                Expr::Cmp { sreg: REG_1, op: cmp::NEQ, data: vec![0; 4] },
                Expr::verdict(NVerdict::Accept),
            ],
            "replies and established flows",
        ),
        (vec![jump(ACCEPT_CHAIN)], "what is always allowed (a node to its own pods)"),
        (held_src, HELD),
        (held_dst, HELD),
        (dispatch(12, Direction::Egress), "isolated pods' egress: their group's rules"),
        (dispatch(16, Direction::Ingress), "isolated pods' ingress: their group's rules"),
    ];
    vec![
        ("forward", Some(hook::FORWARD), to_entry()),
        ("output", Some(hook::OUTPUT), to_entry()),
        (ENTRY, None, entry),
    ]
}

pub const ENTRY: &str = "entry";
pub const HELD: &str = "new pod, not programmed yet";
/// The base chains' priority: `filter` (0), after kube-proxy's DNAT (prerouting/output at
/// -100), so the agent judges the pod a connection really goes to.
pub const PRIORITY: i32 = 0;

fn without_counters(exprs: &[Expr]) -> Vec<Expr> {
    exprs.iter().filter(|e| !matches!(e, Expr::Counter { .. })).cloned().collect()
}

fn set_id(name: &str) -> Option<SetId> {
    name.parse().ok()
}

/// Reads a rule the renderer writes back into its matches and verdict.
pub fn parse_rule(exprs: &[Expr]) -> Option<(Vec<Match>, Verdict)> {
    let e = without_counters(exprs);
    let mut out = Vec::new();
    let ipv4 = nfproto_ipv4();
    let mut rest: &[Expr] = &e;
    let net = |off: u32, x: &Expr| matches!(x, Expr::Payload { base: payload::NETWORK, offset, len: 4, dreg } if *offset == off && *dreg == REG_1);
    let dport = |r: u32, x: &Expr| matches!(x, Expr::Payload { base: payload::TRANSPORT, offset: 2, len: 2, dreg } if *dreg == r);
    let plain = |x: &Expr| match x {
        Expr::Lookup { set, sreg: REG_1, dreg: None, inverted: false } => set_id(set),
        _ => None,
    };
    loop {
        // The IPv4 dependency may come before any match (nft puts it before the first address).
        if let Some(tail) = rest.strip_prefix(ipv4.as_slice()) {
            rest = tail;
            continue;
        }
        match rest {
            [Expr::Immediate { dreg: REG_VERDICT, data: Data::Verdict(v) }] => {
                let verdict = match v {
                    NVerdict::Accept => Verdict::Accept,
                    NVerdict::Return => Verdict::Return,
                    NVerdict::Drop => Verdict::Drop,
                    _ => return None,
                };
                return Some((out, verdict));
            }
            [a, Expr::Meta { dreg: 9, key: meta::L4PROTO }, c, d, tail @ ..]
                if net(16, a) && dport(10, c) =>
            {
                match d {
                    Expr::Lookup { set, sreg: REG_1, dreg: None, inverted: false } => {
                        out.push(Match::NamedPort(set_id(set)?))
                    }
                    _ => return None,
                }
                rest = tail;
            }
            [a, b, tail @ ..] if net(12, a) => {
                out.push(Match::Src(plain(b)?));
                rest = tail;
            }
            [a, b, tail @ ..] if net(16, a) => {
                out.push(Match::Dst(plain(b)?));
                rest = tail;
            }
            [Expr::Meta { dreg: REG_1, key: meta::L4PROTO }, Expr::Cmp { sreg: REG_1, op: cmp::EQ, data }, tail @ ..]
                if data.len() == 1 =>
            {
                out.push(Match::Proto(data[0]));
                rest = tail;
            }
            [a, Expr::Cmp { sreg: REG_1, op: cmp::EQ, data }, tail @ ..]
                if dport(REG_1, a) && data.len() == 2 =>
            {
                let p = u16::from_be_bytes([data[0], data[1]]);
                out.push(Match::Ports(p, p));
                rest = tail;
            }
            [a, Expr::Cmp { sreg: REG_1, op: cmp::GTE, data: from }, Expr::Cmp { sreg: REG_1, op: cmp::LTE, data: to }, tail @ ..]
            | [a, Expr::Range { sreg: REG_1, op: 0, from, to }, tail @ ..]
                if dport(REG_1, a) && from.len() == 2 && to.len() == 2 =>
            {
                out.push(Match::Ports(
                    u16::from_be_bytes([from[0], from[1]]),
                    u16::from_be_bytes([to[0], to[1]]),
                ));
                rest = tail;
            }
            _ => return None,
        }
    }
}

/// Elements of one of the agent's sets, read back.
pub fn elems_of(kind: SetKind, elems: &[Elem]) -> Option<Elems> {
    let addr = |k: &[u8]| -> Option<Ipv4Addr> { Some(Ipv4Addr::from(<[u8; 4]>::try_from(k).ok()?)) };
    Some(match kind {
        SetKind::HashIp => Elems::Addrs(elems.iter().map(|e| addr(&e.key)).collect::<Option<_>>()?),
        SetKind::HashIpPort => Elems::Ports(
            elems
                .iter()
                .map(|e| {
                    let k = &e.key;
                    (k.len() == 12).then(|| {
                        (
                            addr(&k[0..4]).unwrap_or(Ipv4Addr::UNSPECIFIED),
                            k[4],
                            u16::from_be_bytes([k[8], k[9]]),
                        )
                    })
                })
                .collect::<Option<_>>()?,
        ),
        SetKind::HashNet => {
            // Starts and (exclusive) ends, in key order; an end sorts before a start at the
            // same key. A start with no end runs to the last address.
            let mut keys: Vec<(u32, bool)> = elems
                .iter()
                .map(|e| Some((u32::from(addr(&e.key)?), e.flags & ELEM_INTERVAL_END == 0)))
                .collect::<Option<_>>()?;
            keys.sort();
            let mut out = Vec::new();
            let mut open: Option<u32> = None;
            for (k, start) in keys {
                match (start, open) {
                    (true, None) => open = Some(k),
                    (false, Some(lo)) if k > lo => {
                        out.push((lo, k - 1));
                        open = None;
                    }
                    // An end with nothing open (nft's leading `0.0.0.0` end) is no range.
                    (false, None) => {}
                    _ => return None,
                }
            }
            if let Some(lo) = open {
                out.push((lo, u32::MAX));
            }
            Elems::Ranges(out)
        }
    })
}

/// A set of the type the agent makes (nft, loading a script, marks concatenations; the agent
/// leaves the flag out for older kernels: either is the same set).
fn same_set(found: &Set, want: &Set) -> bool {
    let flags = |s: &Set| s.flags & !nfnl::object::set_flags::CONCAT;
    flags(found) == flags(want)
        && found.key_len == want.key_len
        && found.data.map(|d| d.0) == want.data.map(|d| d.0)
}

fn dump<T>(
    sock: &mut Socket,
    kind: u16,
    attrs: &nfnl::wire::Attrs,
    mut f: impl FnMut(&nfnl::wire::AttrSet<'_>) -> nfnl::Result<T>,
) -> nfnl::Result<Vec<T>> {
    let mut out = Vec::new();
    sock.dump(kind, FAMILY, attrs, |m| {
        out.push(f(&m.nf()?.1)?);
        Ok(())
    })?;
    Ok(out)
}

/// Reads the table once (may be inconsistent if the ruleset changes meanwhile; see `read`).
fn read_once(sock: &mut Socket) -> nfnl::Result<View> {
    let mut view = View::missing();
    let tables = dump(sock, msg::GETTABLE, &nfnl::wire::Attrs::new(), Table::decode)?;
    let Some(table) = tables.into_iter().find(|t| t.name == TABLE) else { return Ok(view) };
    let tag = table.comment.clone().unwrap_or_default();
    view.table = if tag == LAYOUT {
        TableState::Ours
    } else if tag.starts_with(LAYOUT_PREFIX) {
        TableState::Older(tag)
    } else {
        TableState::Foreign(tag)
    };
    let named = Table::named(TABLE);
    let sets = dump(sock, msg::GETSET, &named, Set::decode)?;
    let mut hold_ok = false;
    let mut maps_ok = 0;
    for set in &sets {
        let attrs = nfnl::object::elems_header(TABLE, &set.name);
        let mut elems = Vec::new();
        for (_, _, e) in dump(sock, msg::GETSETELEM, &attrs, nfnl::object::decode_elems)? {
            elems.extend(e);
        }
        if set.name == HOLD {
            hold_ok = same_set(set, &set_object(HOLD, SetKind::HashIp, 0));
            if let Some(Elems::Addrs(a)) = elems_of(SetKind::HashIp, &elems) {
                view.hold = a;
            }
            continue;
        }
        if let Some(d) = DIRECTIONS.into_iter().find(|d| d.map() == set.name) {
            if !same_set(set, &map_object(d, 0)) {
                view.problems.push(format!("map {} is not a verdict map", set.name));
                continue;
            }
            for e in &elems {
                match (<[u8; 4]>::try_from(e.key.as_slice()), &e.data) {
                    (Ok(k), Some(Data::Verdict(NVerdict::Jump(c)))) => {
                        view.ruleset.map_mut(d).insert(Ipv4Addr::from(k), c.clone());
                    }
                    _ => view.problems.push(format!("map {}: an element the agent does not write", set.name)),
                }
            }
            maps_ok += 1;
            continue;
        }
        let Some(id) = set_id(&set.name).filter(|id| same_set(set, &set_object(&set.name, id.kind(), 0)))
        else {
            view.problems.push(format!("set {} is not one the agent makes", set.name));
            continue;
        };
        match elems_of(id.kind(), &elems) {
            Some(e) => {
                view.ruleset.sets.insert(id, e);
            }
            None => view.problems.push(format!("set {}: elements the agent does not write", set.name)),
        }
    }
    let chains = dump(sock, msg::GETCHAIN, &named, Chain::decode)?;
    let rules = dump(sock, msg::GETRULE, &named, Rule::decode)?;
    let fixed = fixed_chains();
    let mut fixed_ok = hold_ok && maps_ok == 2;
    for (name, hook_num, want) in &fixed {
        let chain = chains.iter().find(|c| c.name == *name);
        let hook_ok = match (chain.map(|c| &c.hook), hook_num) {
            (Some(None), None) => true,
            (Some(Some(h)), Some(n)) => {
                h.num == *n && h.priority == PRIORITY && h.kind == "filter" && h.policy == 1
            }
            _ => false,
        };
        let got: Vec<(Vec<Expr>, Option<&str>)> = rules
            .iter()
            .filter(|r| r.chain == *name)
            .map(|r| (without_counters(&r.exprs), r.comment.as_deref()))
            .collect();
        let want: Vec<(Vec<Expr>, Option<&str>)> =
            want.iter().map(|(e, c)| (without_counters(e), Some(*c))).collect();
        fixed_ok &= hook_ok && got == want;
    }
    for c in &chains {
        if fixed.iter().any(|(n, _, _)| *n == c.name) {
            continue;
        }
        if c.name != ACCEPT_CHAIN && !c.name.starts_with("egress-") && !c.name.starts_with("ingress-")
            || c.hook.is_some()
        {
            view.problems.push(format!("chain {} is not one the agent makes", c.name));
            continue;
        }
        let mut list = Vec::new();
        for r in rules.iter().filter(|r| r.chain == c.name) {
            match parse_rule(&r.exprs) {
                Some((matches, verdict)) => {
                    list.push(NRule { matches, verdict, comment: r.comment.clone().unwrap_or_default() })
                }
                None => view
                    .problems
                    .push(format!("chain {}: a rule the agent does not write ({:?})", c.name, r.comment)),
            }
        }
        view.ruleset.chains.insert(c.name.clone(), list);
    }
    view.fixed_ok = fixed_ok && view.problems.is_empty();
    Ok(view)
}

/// Reads the agent's table. Each object kind is its own dump, so a change in between (the CNI
/// holding a pod, another program's table) could mix two states: the read is repeated until
/// the ruleset's generation stayed the same throughout (a few tries; then the last read).
pub fn read(sock: &mut Socket) -> Result<View> {
    let mut last = None;
    for _ in 0..4 {
        let before = sock.generation().map_err(Error::from)?;
        match read_once(sock) {
            Ok(view) => {
                let after = sock.generation().map_err(Error::from)?;
                if before == after {
                    return Ok(view);
                }
                last = Some(view);
            }
            Err(NlError::Interrupted) => {}
            Err(e) => return Err(e.into()),
        }
    }
    last.ok_or(Error::Nft(NlError::Interrupted))
}

/// The mapping of the read-back rules by chain, for tests and explain output.
pub fn chain_names(view: &View) -> BTreeMap<String, usize> {
    view.ruleset.chains.iter().map(|(n, r)| (n.clone(), r.len())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::ops::{elements, rule_exprs};

    #[test]
    fn every_rule_the_renderer_writes_reads_back() {
        let id = |s: &str| s.parse::<SetId>().unwrap();
        let rules = [
            NRule {
                matches: vec![Match::Src(id("azn-i000000000001")), Match::Proto(6), Match::Ports(80, 80)],
                verdict: Verdict::Return,
                comment: String::new(),
            },
            NRule {
                matches: vec![
                    Match::Dst(id("azn-n000000000002")),
                    Match::Proto(17),
                    Match::Ports(1000, 2000),
                ],
                verdict: Verdict::Return,
                comment: String::new(),
            },
            NRule {
                matches: vec![Match::Proto(132), Match::NamedPort(id("azn-p000000000003"))],
                verdict: Verdict::Return,
                comment: String::new(),
            },
            NRule { matches: vec![], verdict: Verdict::Drop, comment: String::new() },
            NRule {
                matches: vec![Match::Src(id("azn-i000000000004")), Match::Dst(id("azn-i000000000005"))],
                verdict: Verdict::Accept,
                comment: String::new(),
            },
        ];
        for r in rules {
            assert_eq!(parse_rule(&rule_exprs(&r)), Some((r.matches.clone(), r.verdict)), "{r:?}");
        }
        assert_eq!(parse_rule(&[Expr::verdict(NVerdict::Jump("x".into()))]), None);
        assert_eq!(
            parse_rule(&[Expr::Other { name: "log".into(), data: vec![] }, Expr::verdict(NVerdict::Drop)]),
            None
        );
    }

    #[test]
    fn every_element_kind_reads_back() {
        let ranges = Elems::Ranges(vec![(0, 9), (20, 29), (100, u32::MAX)]);
        let addrs = Elems::Addrs(["10.0.0.1".parse().unwrap()].into());
        let ports = Elems::Ports([("10.0.0.1".parse().unwrap(), 6, 8080)].into());
        for e in [ranges, addrs, ports] {
            let (mut elems, _) = elements(&e);
            elems.reverse(); // the kernel lists an interval set backwards
            assert_eq!(elems_of(e.kind(), &elems), Some(e.clone()));
        }
        assert_eq!(elems_of(SetKind::HashIp, &[Elem::key(vec![1, 2])]), None);
    }
}
