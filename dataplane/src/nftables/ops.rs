//! Changes to the agent's table, and their netlink encoding as one batch.
//!
//! A change list comes from a diff of two rulesets (startup, policy changes, repairs) or
//! straight from an incremental render (pod events). Whatever their order in the list, they
//! are encoded in an order the kernel accepts within one transaction: sets and chains exist
//! before rules and map elements refer to them, and references are gone before what they
//! point at is deleted. The transaction is atomic, so no packet sees a state in between.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use nfnl::expr::{cmp, meta, payload, Expr, Verdict as NVerdict, REG32_00, REG_1};
use nfnl::object::{msg, set_flags, Chain, Data, Elem, Rule, Set, Table, DATA_VERDICT, ELEM_INTERVAL_END};
use nfnl::Batch;
use policy_compiler::ir::{SetId, SetKind};

use super::ruleset::{Direction, Elems, Match, NRule, Ruleset, Verdict, DIRECTIONS};
use super::{FAMILY, TABLE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    NewSet(SetId),
    /// Elements to add; for ranges, after `FlushSet`, all of them.
    AddElems(SetId, Elems),
    FlushSet(SetId),
    DelElems(SetId, Elems),
    DelSet(SetId),
    /// A new chain with its rules.
    NewChain(String, Vec<NRule>),
    /// An existing chain's rules, all replaced.
    ReplaceRules(String, Vec<NRule>),
    DelChain(String),
    MapAdd(Direction, BTreeMap<Ipv4Addr, String>),
    MapDel(Direction, BTreeSet<Ipv4Addr>),
}

/// What is in `a` and not in `b`, as elements.
fn minus(a: &Elems, b: &Elems) -> Option<Elems> {
    let out = match (a, b) {
        (Elems::Addrs(x), Elems::Addrs(y)) => Elems::Addrs(x.difference(y).copied().collect()),
        (Elems::Ports(x), Elems::Ports(y)) => Elems::Ports(x.difference(y).copied().collect()),
        _ => return None,
    };
    (out.count() > 0).then_some(out)
}

/// The changes that turn the elements `old` into `new` in set `id`.
pub fn elems_ops(id: SetId, old: &Elems, new: &Elems, ops: &mut Vec<Op>) {
    if old == new {
        return;
    }
    if let Elems::Ranges(_) = new {
        ops.push(Op::FlushSet(id));
        if new.count() > 0 {
            ops.push(Op::AddElems(id, new.clone()));
        }
        return;
    }
    if let Some(added) = minus(new, old) {
        ops.push(Op::AddElems(id, added));
    }
    if let Some(removed) = minus(old, new) {
        ops.push(Op::DelElems(id, removed));
    }
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &Ruleset, new: &Ruleset) -> Vec<Op> {
    let mut ops = Vec::new();
    for (id, elems) in &new.sets {
        match old.sets.get(id) {
            None => {
                ops.push(Op::NewSet(*id));
                elems_ops(*id, &Elems::empty(id.kind()), elems, &mut ops);
            }
            Some(before) => elems_ops(*id, before, elems, &mut ops),
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            None => ops.push(Op::NewChain(name.clone(), rules.clone())),
            Some(before) if before != rules => ops.push(Op::ReplaceRules(name.clone(), rules.clone())),
            Some(_) => {}
        }
    }
    for d in DIRECTIONS {
        let (before, after) = (old.map(d), new.map(d));
        let changed: BTreeMap<Ipv4Addr, String> = after
            .iter()
            .filter(|(ip, c)| before.get(ip) != Some(c))
            .map(|(ip, c)| (*ip, c.clone()))
            .collect();
        let gone: BTreeSet<Ipv4Addr> =
            before.iter().filter(|(ip, c)| after.get(ip) != Some(c)).map(|(ip, _)| *ip).collect();
        if !gone.is_empty() {
            ops.push(Op::MapDel(d, gone));
        }
        if !changed.is_empty() {
            ops.push(Op::MapAdd(d, changed));
        }
    }
    ops.extend(old.chains.keys().filter(|n| !new.chains.contains_key(*n)).map(|n| Op::DelChain(n.clone())));
    ops.extend(old.sets.keys().filter(|id| !new.sets.contains_key(id)).map(|id| Op::DelSet(*id)));
    ops
}

/// Applies changes to a ruleset as the kernel will (to keep the backend's copy in step).
pub fn apply(rs: &mut Ruleset, ops: &[Op]) {
    for op in ops {
        match op {
            Op::NewSet(id) => {
                rs.sets.insert(*id, Elems::empty(id.kind()));
            }
            Op::AddElems(id, e) => match (rs.sets.get_mut(id), e) {
                (Some(Elems::Addrs(x)), Elems::Addrs(y)) => x.extend(y),
                (Some(Elems::Ports(x)), Elems::Ports(y)) => x.extend(y),
                (Some(Elems::Ranges(x)), Elems::Ranges(y)) => x.extend(y),
                _ => {}
            },
            Op::FlushSet(id) => {
                rs.sets.insert(*id, Elems::empty(id.kind()));
            }
            Op::DelElems(id, e) => match (rs.sets.get_mut(id), e) {
                (Some(Elems::Addrs(x)), Elems::Addrs(y)) => x.retain(|a| !y.contains(a)),
                (Some(Elems::Ports(x)), Elems::Ports(y)) => x.retain(|a| !y.contains(a)),
                _ => {}
            },
            Op::DelSet(id) => {
                rs.sets.remove(id);
            }
            Op::NewChain(n, rules) | Op::ReplaceRules(n, rules) => {
                rs.chains.insert(n.clone(), rules.clone());
            }
            Op::DelChain(n) => {
                rs.chains.remove(n);
            }
            Op::MapAdd(d, m) => rs.map_mut(*d).extend(m.iter().map(|(k, v)| (*k, v.clone()))),
            Op::MapDel(d, ips) => rs.map_mut(*d).retain(|ip, _| !ips.contains(ip)),
        }
    }
}

// ---- encoding ----

/// nft's data type numbers (for `nft list`; the kernel only stores them).
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

pub fn set_object(name: &str, kind: SetKind, id: u32) -> Set {
    let (flags, key_type, key_len, concat) = match kind {
        SetKind::HashIp => (0, TYPE_IPADDR, 4, vec![]),
        SetKind::HashNet => (set_flags::INTERVAL, TYPE_IPADDR, 4, vec![]),
        // A hash of 12-byte keys (address, protocol, port, each padded to 4 bytes); without a
        // field description, so kernels before 5.6 take it too. The key type makes `nft list`
        // print it as the concatenation it is.
        SetKind::HashIpPort => (
            0,
            (((TYPE_IPADDR << TYPE_BITS) | TYPE_INET_PROTOCOL) << TYPE_BITS) | TYPE_INET_SERVICE,
            12,
            vec![],
        ),
    };
    Set { table: TABLE.into(), name: name.into(), flags, key_type, key_len, data: None, concat, id, size: 0 }
}

pub fn map_object(d: Direction, id: u32) -> Set {
    Set {
        table: TABLE.into(),
        name: d.map().into(),
        flags: set_flags::MAP,
        key_type: TYPE_IPADDR,
        key_len: 4,
        data: Some((DATA_VERDICT, 0)),
        concat: vec![],
        id,
        size: 0,
    }
}

/// A concatenated (address, protocol, port) key: each field padded to 4 bytes.
pub fn port_key(ip: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = ip.octets().to_vec();
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// Elements and their labels (for errors).
pub fn elements(e: &Elems) -> (Vec<Elem>, Vec<String>) {
    let mut out = Vec::new();
    let mut labels = Vec::new();
    match e {
        Elems::Addrs(a) => {
            for ip in a {
                out.push(Elem::key(ip.octets().to_vec()));
                labels.push(ip.to_string());
            }
        }
        Elems::Ranges(r) => {
            for (lo, hi) in r {
                let label = format!("{}-{}", Ipv4Addr::from(*lo), Ipv4Addr::from(*hi));
                out.push(Elem::key(lo.to_be_bytes().to_vec()));
                labels.push(label.clone());
                if *hi != u32::MAX {
                    out.push(Elem {
                        key: (hi + 1).to_be_bytes().to_vec(),
                        data: None,
                        flags: ELEM_INTERVAL_END,
                    });
                    labels.push(label);
                }
            }
        }
        Elems::Ports(p) => {
            for (ip, proto, port) in p {
                out.push(Elem::key(port_key(*ip, *proto, *port)));
                labels.push(format!("{ip} . {proto} . {port}"));
            }
        }
    }
    (out, labels)
}

fn load_addr(offset: u32) -> Expr {
    Expr::Payload { dreg: REG_1, base: payload::NETWORK, offset, len: 4 }
}

fn lookup(set: &SetId) -> Expr {
    Expr::Lookup { set: set.to_string(), sreg: REG_1, dreg: None, inverted: false }
}

/// The expressions of one match.
pub fn match_exprs(m: &Match) -> Vec<Expr> {
    let dport = |dreg| Expr::Payload { dreg, base: payload::TRANSPORT, offset: 2, len: 2 };
    match m {
        Match::Src(s) => vec![load_addr(12), lookup(s)],
        Match::Dst(s) => vec![load_addr(16), lookup(s)],
        Match::Proto(p) => vec![
            Expr::Meta { dreg: REG_1, key: meta::L4PROTO },
            Expr::Cmp { sreg: REG_1, op: cmp::EQ, data: vec![*p] },
        ],
        Match::Ports(lo, hi) if lo == hi => {
            vec![dport(REG_1), Expr::Cmp { sreg: REG_1, op: cmp::EQ, data: lo.to_be_bytes().to_vec() }]
        }
        // As nft writes a range: two comparisons (big-endian bytes compare as numbers).
        Match::Ports(lo, hi) => vec![
            dport(REG_1),
            Expr::Cmp { sreg: REG_1, op: cmp::GTE, data: lo.to_be_bytes().to_vec() },
            Expr::Cmp { sreg: REG_1, op: cmp::LTE, data: hi.to_be_bytes().to_vec() },
        ],
        Match::NamedPort(s) => vec![
            load_addr(16),
            Expr::Meta { dreg: REG32_00 + 1, key: meta::L4PROTO },
            dport(REG32_00 + 2),
            lookup(s),
        ],
    }
}

/// A rule's expressions. Before its first address match, `meta nfproto ipv4`, where nft puts
/// it in an inet table: the kernel only sends IPv4 here anyway, but without it `nft list`
/// cannot tell the loads are IPv4 addresses and prints raw offsets.
pub fn rule_exprs(r: &NRule) -> Vec<Expr> {
    let mut e: Vec<Expr> = Vec::new();
    let mut ipv4 = false;
    for m in &r.matches {
        if !ipv4 && matches!(m, Match::Src(_) | Match::Dst(_) | Match::NamedPort(_)) {
            e.extend(nfproto_ipv4());
            ipv4 = true;
        }
        e.extend(match_exprs(m));
    }
    match r.verdict {
        Verdict::Accept => e.push(Expr::verdict(NVerdict::Accept)),
        Verdict::Return => e.push(Expr::verdict(NVerdict::Return)),
        Verdict::Drop => {
            e.push(Expr::Counter { packets: 0, bytes: 0 });
            e.push(Expr::verdict(NVerdict::Drop));
        }
    }
    e
}

pub fn rule_object(chain: &str, exprs: Vec<Expr>, comment: &str) -> Rule {
    Rule { table: TABLE.into(), chain: chain.into(), handle: None, exprs, comment: Some(comment.into()) }
}

/// Appends requests to a batch; set ids for NEWSET are numbered from `next_id`, sets are made
/// with room for `set_size` elements.
pub struct Encoder<'a> {
    pub batch: &'a mut Batch,
    pub next_id: u32,
    pub set_size: u32,
}

impl Encoder<'_> {
    pub fn table(&mut self, comment: &str) {
        let t = Table { name: TABLE.into(), flags: 0, comment: Some(comment.into()) };
        self.batch.add(msg::NEWTABLE, FAMILY, true, &t.encode(), format!("creating table inet {TABLE}"));
    }

    pub fn new_set(&mut self, set: Set) {
        self.next_id += 1;
        let set = Set { id: self.next_id, size: self.set_size, ..set };
        let label = format!("creating set {}", set.name);
        self.batch.add(msg::NEWSET, FAMILY, true, &set.encode(), label);
    }

    pub fn elems(&mut self, set: &str, delete: bool, e: &Elems) {
        let (elems, labels) = elements(e);
        self.batch.elems(FAMILY, TABLE, set, delete, &elems, &labels);
    }

    pub fn new_chain(&mut self, chain: Chain) {
        let label = format!("creating chain {}", chain.name);
        self.batch.add(msg::NEWCHAIN, FAMILY, true, &chain.encode(), label);
    }

    pub fn rule(&mut self, rule: &Rule) {
        let label =
            format!("adding rule {:?} to chain {}", rule.comment.as_deref().unwrap_or(""), rule.chain);
        self.batch.add(msg::NEWRULE, FAMILY, true, &rule.encode(), label);
    }

    pub fn rules(&mut self, chain: &str, rules: &[NRule]) {
        for r in rules {
            self.rule(&rule_object(chain, rule_exprs(r), &r.comment));
        }
    }

    pub fn flush_chain(&mut self, chain: &str) {
        let label = format!("flushing chain {chain}");
        self.batch.add(msg::DELRULE, FAMILY, false, &Rule::delete(TABLE, chain, None), label);
    }

    pub fn map(&mut self, d: Direction, delete: bool, entries: &BTreeMap<Ipv4Addr, String>) {
        let elems: Vec<Elem> = entries
            .iter()
            .map(|(ip, chain)| Elem {
                key: ip.octets().to_vec(),
                data: (!delete).then(|| Data::Verdict(NVerdict::Jump(chain.clone()))),
                flags: 0,
            })
            .collect();
        let labels: Vec<String> = entries.iter().map(|(ip, c)| format!("{ip} : jump {c}")).collect();
        self.batch.elems(FAMILY, TABLE, d.map(), delete, &elems, &labels);
    }

    fn op(&mut self, op: &Op, phase: u8) {
        match op {
            Op::NewSet(id) => self.new_set(set_object(&id.to_string(), id.kind(), 0)),
            Op::FlushSet(id) => self.elems(&id.to_string(), true, &Elems::empty(id.kind())),
            Op::AddElems(id, e) => self.elems(&id.to_string(), false, e),
            Op::NewChain(name, _) if phase == 2 => {
                self.new_chain(Chain { table: TABLE.into(), name: name.clone(), hook: None })
            }
            Op::NewChain(name, rules) => self.rules(name, rules),
            Op::ReplaceRules(name, rules) => {
                self.flush_chain(name);
                self.rules(name, rules);
            }
            Op::MapDel(d, ips) => {
                let entries = ips.iter().map(|ip| (*ip, String::new())).collect();
                self.map(*d, true, &entries);
            }
            Op::MapAdd(d, entries) => self.map(*d, false, entries),
            Op::DelElems(id, e) => self.elems(&id.to_string(), true, e),
            Op::DelChain(name) => {
                self.flush_chain(name);
                let label = format!("deleting chain {name}");
                self.batch.add(msg::DELCHAIN, FAMILY, false, &Chain::named(TABLE, name), label);
            }
            Op::DelSet(id) => {
                let label = format!("deleting set {id}");
                self.batch.add(msg::DELSET, FAMILY, false, &Set::named(TABLE, &id.to_string()), label);
            }
        }
    }
}

/// When an op goes into the batch: (0) new sets, (1) their elements, (2) new chains, (3)
/// rules, (4) map entries removed, (5) added, (6) set elements removed, (7) chains deleted,
/// (8) sets deleted. A new chain appears twice: created in 2, filled in 3.
fn phase_of(op: &Op) -> u8 {
    match op {
        Op::NewSet(_) => 0,
        Op::FlushSet(_) | Op::AddElems(..) => 1,
        Op::NewChain(..) => 2,
        Op::ReplaceRules(..) => 3,
        Op::MapDel(..) => 4,
        Op::MapAdd(..) => 5,
        Op::DelElems(..) => 6,
        Op::DelChain(_) => 7,
        Op::DelSet(_) => 8,
    }
}

impl Encoder<'_> {
    /// The changes, in an order the kernel accepts within one transaction.
    pub fn ops(&mut self, ops: &[Op]) {
        for phase in 0..9u8 {
            for op in ops {
                let p = phase_of(op);
                if p == phase || (phase == 3 && matches!(op, Op::NewChain(..))) {
                    self.op(op, phase);
                }
            }
        }
    }
}

/// The fixed rules' expressions, used by the encoder and by the read-back to recognise them.
pub fn nfproto_ipv4() -> Vec<Expr> {
    vec![
        Expr::Meta { dreg: REG_1, key: meta::NFPROTO },
        Expr::Cmp { sreg: REG_1, op: cmp::EQ, data: vec![2] },
    ]
}
