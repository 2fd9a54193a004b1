//! The IR as text for the Linux kernel: one `ipset restore` script and one `iptables-restore`
//! script (filter table, agent-owned chains only; where they are jumped to from is the agent's
//! business). Pure and deterministic, so it is golden-tested.
//!
//! Chains: `AZURE-NPM` (entry: established traffic accepted, marks cleared, then the three
//! below), `AZURE-NPM-ACCEPT`, `AZURE-NPM-EGRESS`, `AZURE-NPM-INGRESS`. Marks: egress allowed
//! 0x1000, ingress allowed 0x2000 (kube-proxy uses 0x4000/0x8000, azure-vnet 0x20000).

use std::fmt::Write;

use crate::ir::{Action, Chain, IpSet, Ir, Member, Rule, SetKind};
use crate::model::Protocol;

pub const ENTRY_CHAIN: &str = "AZURE-NPM";
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
    let v4 = match m {
        Member::Ip(ip) | Member::IpPort { ip, .. } => ip.is_ipv4(),
        Member::Net { net, .. } => net.addr().is_ipv4(),
    };
    v4.then(|| match m {
        Member::Ip(ip) => ip.to_string(),
        Member::Net { net, nomatch: false } => net.to_string(),
        Member::Net { net, nomatch: true } => format!("{net} nomatch"),
        Member::IpPort { ip, protocol, port } => format!("{ip},{}:{port}", proto_text(*protocol)),
    })
}

/// `ipset restore` input that creates every set (if missing) and fills it; members grouped by
/// set (switching sets costs the kernel about a millisecond each time).
pub fn ipset_restore(ir: &Ir, notes: &mut Notes) -> String {
    let mut out = String::new();
    for set in ir.sets.values() {
        let _ = writeln!(out, "create {} {} family inet -exist", set.name, kind_text(set.kind));
    }
    for set in ir.sets.values() {
        add_members(&mut out, set, notes);
    }
    out
}

fn add_members(out: &mut String, set: &IpSet, notes: &mut Notes) {
    for m in &set.members {
        match member_text(m) {
            Some(text) => {
                let _ = writeln!(out, "add {} {text} -exist", set.name);
            }
            None => notes.0.push(format!("{} ({}): IPv6 member {m:?} not rendered", set.name, set.key)),
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
    }
    for c in chains {
        for r in ir.chain(c) {
            out += &rule_text(c, r);
            out.push('\n');
        }
    }
    out + "COMMIT\n"
}

/// A delta as the three `ipset restore` scripts it needs, in the order they must run around
/// the chain rewrite: before (create sets, add members), after (remove members), and the sets
/// to destroy last (each on its own, since the kernel refuses to destroy a set still in use).
/// Removing a `nomatch` member names it without the keyword (ipset refuses it otherwise).
pub fn ipset_delta(delta: &crate::incremental::Delta, notes: &mut Notes) -> (String, String, Vec<String>) {
    let mut before = String::new();
    for set in &delta.created {
        let _ = writeln!(before, "create {} {} family inet -exist", set.name, kind_text(set.kind));
    }
    for (name, members) in &delta.added {
        for m in members {
            match member_text(m) {
                Some(text) => {
                    let _ = writeln!(before, "add {name} {text} -exist");
                }
                None => notes.0.push(format!("{name}: IPv6 member {m:?} not rendered")),
            }
        }
    }
    let mut after = String::new();
    for (name, members) in &delta.removed {
        for m in members {
            let text = match m {
                Member::Net { net, .. } if net.addr().is_ipv4() => Some(net.to_string()),
                other => member_text(other),
            };
            if let Some(text) = text {
                let _ = writeln!(after, "del {name} {text} -exist");
            }
        }
    }
    (before, after, delta.destroyed.clone())
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
