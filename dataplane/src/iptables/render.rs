//! The IR as text for the ipset and iptables tools: one `ipset restore` script and one
//! `iptables-restore` script (filter table, agent-owned chains only; the jumps into them are
//! fixed by the backend). Pure and deterministic, so it is golden-tested.
//!
//! Chains: `AZURE-NPM` (entry: established traffic accepted, marks cleared, then the three
//! below), `AZURE-NPM-ACCEPT`, `AZURE-NPM-EGRESS`, `AZURE-NPM-INGRESS`. Marks: egress allowed
//! 0x1000, ingress allowed 0x2000 (kube-proxy uses 0x4000/0x8000, azure-vnet 0x20000).

use std::fmt::Write;

use policy_compiler::incremental::Delta;
use policy_compiler::ir::{Action, Chain, IpSet, Ir, Member, Rule, SetId, SetKind};
use policy_compiler::model::Protocol;

pub const ENTRY_CHAIN: &str = "AZURE-NPM";
/// Addresses of pods the CNI attached that the agent has not programmed yet (azure-vnet's
/// `hold.rs`): dropped, from and to (the node's own traffic to them excepted), until the agent
/// takes them out. Not `azn-`: its members are the CNI's, never the agent's desired state.
pub const HOLD_SET: &str = "azure-npm-new";
pub const EGRESS_MARK: &str = "0x1000/0x1000";
pub const INGRESS_MARK: &str = "0x2000/0x2000";
const BOTH_MARKS: &str = "0x0/0x3000";

/// What the Linux renderer could not express (IPv6 members: the Linux dataplane is IPv4 for now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes(pub Vec<String>);

fn kind_text(kind: SetKind) -> &'static str {
    match kind {
        SetKind::HashIp => "hash:ip",
        SetKind::HashNet => "hash:net",
        SetKind::HashIpPort => "hash:ip,port",
    }
}

fn proto_text(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn member_text(m: &Member) -> Option<String> {
    m.is_v4().then(|| match m {
        Member::Ip(ip) => ip.to_string(),
        Member::Net { net, nomatch: false } => net.to_string(),
        Member::Net { net, nomatch: true } => format!("{net} nomatch"),
        Member::IpPort { ip, protocol, port } => format!("{ip},{}:{port}", proto_text(*protocol)),
    })
}

/// The most members one set may hold. The kernel's default (65536) is too small for a merged
/// ipBlock list or a namespace of a 100k-pod cluster; the kernel sizes a set by its members,
/// not by this bound, so a higher one costs nothing until used. A set made by an older version
/// with a smaller bound is replaced (`resize`): `create -exist` refuses a set of the same name
/// whose bound differs.
pub const MAX_SET_MEMBERS: usize = 1 << 20;

/// The temporary set a `resize` fills and swaps in; never referenced by a rule.
pub const RESIZE_SET: &str = "azn-resize";

/// `ipset restore` input that replaces each set, keeping its name, members and the rules that
/// refer to it, with one made with `MAX_SET_MEMBERS`: a copy filled under a temporary name,
/// swapped in (the kernel exchanges the two sets, references included), the old one destroyed.
/// `leftover`: the temporary set exists already (an interrupted replacement) and goes first.
pub fn resize<'a>(sets: impl IntoIterator<Item = &'a IpSet>, leftover: bool, notes: &mut Notes) -> String {
    let mut out = String::new();
    if leftover {
        let _ = writeln!(out, "destroy {RESIZE_SET}");
    }
    for set in sets {
        let kind = kind_text(set.kind());
        let _ = writeln!(out, "create {RESIZE_SET} {kind} family inet maxelem {MAX_SET_MEMBERS}");
        add_members(&mut out, &RESIZE_SET, set, notes);
        let _ = writeln!(out, "swap {RESIZE_SET} {}", set.id);
        let _ = writeln!(out, "destroy {RESIZE_SET}");
    }
    out
}

fn create_line(set: &IpSet) -> String {
    format!("create {} {} family inet maxelem {MAX_SET_MEMBERS} -exist", set.id, kind_text(set.kind()))
}

/// `ipset restore` input that creates every set (if missing) and fills it; members grouped by
/// set (switching sets costs the kernel about a millisecond each time).
pub fn ipset_restore(ir: &Ir, notes: &mut Notes) -> String {
    // The entry chain refers to the hold set (its members are the CNI's; never filled here).
    let mut out = format!("create {HOLD_SET} hash:ip family inet -exist\n");
    for set in ir.sets.values() {
        let _ = writeln!(out, "{}", create_line(set));
    }
    for set in ir.sets.values() {
        add_members(&mut out, &set.id, set, notes);
    }
    out
}

/// `add` lines for a set's members, into the set named `name` (its own, or `RESIZE_SET`).
fn add_members(out: &mut String, name: &dyn std::fmt::Display, set: &IpSet, notes: &mut Notes) {
    for m in &set.members {
        match member_text(m) {
            Some(text) => {
                let _ = writeln!(out, "add {name} {text} -exist");
            }
            None => notes.0.push(format!("{} ({}): IPv6 member {m:?} not rendered", set.id, set.key)),
        }
    }
}

fn rule_text(chain: Chain, r: &Rule) -> String {
    let mut s = format!("-A {chain}");
    if let Some(p) = r.protocol {
        let _ = write!(s, " -p {}", proto_text(p));
    }
    if let Some(set) = &r.src_set {
        let _ = write!(s, " -m set --match-set {set} src");
    }
    if let Some(set) = &r.dst_set {
        let _ = write!(s, " -m set --match-set {set} dst");
    }
    if let (Some(p), Some((lo, hi))) = (r.protocol, r.dports) {
        let range = if lo == hi { lo.to_string() } else { format!("{lo}:{hi}") };
        let _ = write!(s, " -m {} --dport {range}", proto_text(p));
    }
    if let Some(set) = &r.dst_named_port {
        let _ = write!(s, " -m set --match-set {set} dst,dst");
    }
    let _ = write!(s, " -m comment --comment \"{}\"", r.comment.replace('"', "'"));
    let mark = if chain == Chain::Egress { EGRESS_MARK } else { INGRESS_MARK };
    match r.action {
        Action::Accept => s + " -j ACCEPT",
        Action::MarkAllowed => format!("{s} -j MARK --set-xmark {mark}"),
        Action::DropUnlessAllowed => format!("{s} -m mark ! --mark {mark} -j DROP"),
    }
}

/// `iptables-restore --noflush` input: declares (and so rewrites) the agent's chains.
pub fn iptables_restore(ir: &Ir) -> String {
    let chains = [Chain::Accept, Chain::Egress, Chain::Ingress];
    let mut out = String::from("*filter\n");
    let _ = writeln!(out, ":{ENTRY_CHAIN} - [0:0]");
    for c in chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    let _ = writeln!(
        out,
        "-A {ENTRY_CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"replies and established flows\" -j ACCEPT"
    );
    let _ = writeln!(out, "-A {ENTRY_CHAIN} -j MARK --set-xmark {BOTH_MARKS}");
    for c in chains {
        let _ = writeln!(out, "-A {ENTRY_CHAIN} -j {c}");
        if c == Chain::Accept {
            // After what is always allowed (the node to its pods), before any policy.
            let _ = writeln!(
                out,
                "-A {ENTRY_CHAIN} -m set --match-set {HOLD_SET} src -m comment --comment \"new pod, not programmed yet\" -j DROP"
            );
            let _ = writeln!(
                out,
                "-A {ENTRY_CHAIN} -m set --match-set {HOLD_SET} dst -m addrtype ! --src-type LOCAL -m comment --comment \"new pod, not programmed yet\" -j DROP"
            );
        }
    }
    for c in chains {
        for r in ir.chain(c) {
            out += &rule_text(c, r);
            out.push('\n');
        }
    }
    out + "COMMIT\n"
}

/// Whether adding `m` to `set` lets more traffic through: adding to an isolation set isolates
/// (narrows), a `nomatch` entry carves an exception (narrows), anything else allows more.
fn add_widens(set: SetId, m: &Member) -> bool {
    !set.is_isolation() && !matches!(m, Member::Net { nomatch: true, .. })
}

/// A delta as `ipset restore` scripts around the chain rewrite, ordered so that no state in
/// between allows more than the old or the new one:
/// - `narrow` (before the rewrite): create new sets and fill them (no rule references them
///   yet; filling a set the kernel's rules already use is also about twice as slow), then every
///   change that narrows (members leaving allow sets, members joining isolation sets, new
///   `nomatch` exceptions), so the old rules see at most their old allowances and the new rules
///   find their isolation in place;
/// - `widen` (after it): every change that allows more;
/// - the sets to destroy, last and one by one (the kernel refuses to destroy a set in use).
///
/// Within a script deletions come before additions, so an entry whose `nomatch` flag flips is
/// deleted and re-added. A `nomatch` member is deleted without the keyword (ipset refuses it).
pub struct IpsetPhases {
    pub narrow: String,
    pub widen: String,
    pub destroy: Vec<SetId>,
}

pub fn ipset_delta(delta: &Delta, notes: &mut Notes) -> IpsetPhases {
    let mut narrow = String::new();
    for set in &delta.created {
        let _ = writeln!(narrow, "{}", create_line(set));
    }
    let created: std::collections::BTreeSet<SetId> = delta.created.iter().map(|s| s.id).collect();
    let widens = |id: SetId, m: &Member| add_widens(id, m) && !created.contains(&id);
    let mut widen = String::new();
    for phase_widens in [false, true] {
        let out = if phase_widens { &mut widen } else { &mut narrow };
        for (name, members) in &delta.removed {
            for m in members.iter().filter(|m| widens(*name, m) != phase_widens) {
                let text = match m {
                    Member::Net { net, .. } if net.addr().is_ipv4() => Some(net.to_string()),
                    other => member_text(other),
                };
                if let Some(text) = text {
                    let _ = writeln!(out, "del {name} {text} -exist");
                }
            }
        }
        for (name, members) in &delta.added {
            for m in members.iter().filter(|m| widens(*name, m) == phase_widens) {
                match member_text(m) {
                    Some(text) => {
                        let _ = writeln!(out, "add {name} {text} -exist");
                    }
                    None => notes.0.push(format!("{name}: IPv6 member {m:?} not rendered")),
                }
            }
        }
    }
    IpsetPhases { narrow, widen, destroy: delta.destroyed.clone() }
}

/// The agent's chains for these rules (accept, egress, ingress), as `iptables-restore` input.
pub fn iptables_chains(chains: &[Vec<Rule>; 3]) -> String {
    let ir = Ir {
        accept: chains[0].clone(),
        egress: chains[1].clone(),
        ingress: chains[2].clone(),
        ..Ir::default()
    };
    iptables_restore(&ir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::ir::{SetDef, SetRole};

    #[test]
    fn narrowing_changes_run_before_the_rewrite_and_widening_ones_after() {
        let ip = |s: &str| Member::Ip(s.parse().unwrap());
        let net = |s: &str, nomatch| Member::Net { net: s.parse().unwrap(), nomatch };
        let id = |text: &str| text.parse::<SetId>().unwrap();
        let (x1, i2, n3) = (id("azn-x000000000001"), id("azn-i000000000002"), id("azn-n000000000003"));
        let delta = Delta {
            added: [
                (x1, [ip("10.0.0.1")].into()),
                (i2, [ip("10.0.0.2")].into()),
                (n3, [net("10.1.0.0/16", true), net("10.2.0.0/16", false)].into()),
            ]
            .into(),
            removed: [
                (x1, [ip("10.0.0.3")].into()),
                (i2, [ip("10.0.0.4")].into()),
                (n3, [net("10.2.0.0/16", true)].into()),
            ]
            .into(),
            ..Delta::default()
        };
        let p = ipset_delta(&delta, &mut Notes::default());
        assert_eq!(
            p.narrow,
            "del azn-i000000000002 10.0.0.4 -exist\nadd azn-n000000000003 10.1.0.0/16 nomatch -exist\n\
             add azn-x000000000001 10.0.0.1 -exist\n"
        );
        // A new set is filled before the rewrite: no rule uses it yet.
        let i9 = SetId { role: SetRole::Ip, hash: 9 };
        let fresh = Delta {
            created: vec![IpSet {
                id: i9,
                key: String::new(),
                def: SetDef::Fixed,
                members: Default::default(),
            }],
            added: [(i9, [ip("10.0.0.9")].into())].into(),
            ..Delta::default()
        };
        let q = ipset_delta(&fresh, &mut Notes::default());
        assert_eq!(
            (q.narrow.as_str(), q.widen.as_str()),
            (
                "create azn-i000000000009 hash:ip family inet maxelem 1048576 -exist\n\
                 add azn-i000000000009 10.0.0.9 -exist\n",
                ""
            )
        );
        // The exception 10.2.0.0/16 turns into an allowance: deleted, then added without nomatch.
        assert_eq!(
            p.widen,
            "del azn-n000000000003 10.2.0.0/16 -exist\ndel azn-x000000000001 10.0.0.3 -exist\n\
             add azn-i000000000002 10.0.0.2 -exist\nadd azn-n000000000003 10.2.0.0/16 -exist\n"
        );
    }
}
