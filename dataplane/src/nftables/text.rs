//! The table as an `nft -f` script: what `azure-npm debug render --target nftables` prints,
//! for people. The agent itself never runs nft; a test loads this script with nft and reads
//! the kernel back, which must give what the netlink encoder writes (two independent ways
//! into the kernel, one result).

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::read::{fixed_chains, ENTRY, PRIORITY};
use super::ruleset::{Elems, Match, NRule, Ruleset, Verdict, DIRECTIONS};
use super::{HOLD, LAYOUT, TABLE};

fn proto(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn quote(comment: &str) -> String {
    comment.replace('"', "'")
}

fn rule(r: &NRule) -> String {
    let mut parts: Vec<String> = r
        .matches
        .iter()
        .map(|m| match m {
            Match::Src(s) => format!("ip saddr @{s}"),
            Match::Dst(s) => format!("ip daddr @{s}"),
            Match::Proto(p) => format!("meta l4proto {}", proto(*p)),
            Match::Ports(lo, hi) if lo == hi => format!("th dport {lo}"),
            Match::Ports(lo, hi) => format!("th dport {lo}-{hi}"),
            Match::NamedPort(s) => format!("ip daddr . meta l4proto . th dport @{s}"),
        })
        .collect();
    parts.push(
        match r.verdict {
            Verdict::Accept => "accept",
            Verdict::Return => "return",
            Verdict::Drop => "counter drop",
        }
        .into(),
    );
    format!("{} comment \"{}\"", parts.join(" "), quote(&r.comment))
}

fn elements(e: &Elems) -> Vec<String> {
    match e {
        Elems::Addrs(a) => a.iter().map(Ipv4Addr::to_string).collect(),
        Elems::Ranges(r) => {
            r.iter().map(|(lo, hi)| format!("{}-{}", Ipv4Addr::from(*lo), Ipv4Addr::from(*hi))).collect()
        }
        Elems::Ports(p) => p.iter().map(|(ip, pr, port)| format!("{ip} . {} . {port}", proto(*pr))).collect(),
    }
}

fn set(out: &mut String, kind: &str, name: &str, typ: &str, flags: &str, elems: Vec<String>) {
    let _ = writeln!(out, "\t{kind} {name} {{\n\t\ttype {typ};{flags}");
    if !elems.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
    }
    out.push_str("\t}\n");
}

/// The fixed rules as nft writes them (the same expressions as `read::fixed_chains`).
fn fixed_rule(chain: &str, i: usize) -> &'static str {
    match (chain, i) {
        (ENTRY, 0) => "ct state established,related accept",
        (ENTRY, 1) => "jump always",
        (ENTRY, 2) => "ip saddr @hold counter drop",
        (ENTRY, 3) => "ip daddr @hold fib saddr type != local counter drop",
        (ENTRY, 4) => "ip saddr vmap @isolated-egress",
        (ENTRY, 5) => "ip daddr vmap @isolated-ingress",
        _ => "meta nfproto ipv4 jump entry",
    }
}

/// The whole table; a leading `delete` replaces what is there (load with `nft -f`).
pub fn script(rs: &Ruleset) -> String {
    let mut out = format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\tcomment \"{LAYOUT}\"\n"
    );
    set(&mut out, "set", HOLD, "ipv4_addr", "", Vec::new());
    for d in DIRECTIONS {
        let entries = rs.map(d).iter().map(|(ip, chain)| format!("{ip} : jump {chain}")).collect();
        set(&mut out, "map", d.map(), "ipv4_addr : verdict", "", entries);
    }
    for (id, elems) in &rs.sets {
        let (typ, flags) = match elems {
            Elems::Addrs(_) => ("ipv4_addr", ""),
            Elems::Ranges(_) => ("ipv4_addr", " flags interval;"),
            Elems::Ports(_) => ("ipv4_addr . inet_proto . inet_service", ""),
        };
        set(&mut out, "set", &id.to_string(), typ, flags, elements(elems));
    }
    // Chains before the rules that jump to them: declare every chain first.
    for (name, hook, _) in fixed_chains() {
        match hook {
            Some(_) => {
                let h = if name == "forward" { "forward" } else { "output" };
                let _ = writeln!(
                    out,
                    "\tchain {name} {{ type filter hook {h} priority {PRIORITY}; policy accept; }}"
                );
            }
            None => {
                let _ = writeln!(out, "\tchain {name} {{ }}");
            }
        }
    }
    for name in rs.chains.keys() {
        let _ = writeln!(out, "\tchain {name} {{ }}");
    }
    out.push_str("}\n");
    for (name, rules) in &rs.chains {
        for r in rules {
            let _ = writeln!(out, "add rule inet {TABLE} {name} {}", rule(r));
        }
    }
    for (name, _, rules) in fixed_chains() {
        for (i, (_, comment)) in rules.iter().enumerate() {
            let _ =
                writeln!(out, "add rule inet {TABLE} {name} {} comment \"{comment}\"", fixed_rule(name, i));
        }
    }
    out
}
