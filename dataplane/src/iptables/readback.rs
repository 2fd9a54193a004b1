//! The inverse of `render`: `ipset save` and `iptables-save` text read back into the IR, so the
//! agent can compare the kernel with what it programmed (drift, adoption after a restart) and
//! `azure-npm debug explain --dataplane` can judge a packet by the kernel's actual state.
//!
//! Only what the agent owns is read: sets named `azn-*`, the chains `AZURE-NPM*`, and the
//! jumps to `AZURE-NPM` from built-in chains. Sets read back have no key or definition (the
//! kernel does not keep them): `SetDef::Fixed` and an empty key. A set or rule of the agent's
//! that does not read as one the renderer writes is reported, never guessed at.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use policy_compiler::ir::{Action, Chain, IpSet, Ir, Member, Rule, SetDef, SetId, SetKind, SET_PREFIX};
use policy_compiler::model::Protocol;

use super::render::{iptables_restore, EGRESS_MARK, ENTRY_CHAIN, INGRESS_MARK, MAX_SET_MEMBERS, RESIZE_SET};
use crate::error::{Error, Result};

/// What the kernel holds of the agent's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    pub ir: Ir,
    /// Agent chains declared in the filter table.
    pub chains: BTreeSet<String>,
    /// The entry chain holds exactly the rules the renderer writes.
    pub entry_ok: bool,
    /// Built-in chains that jump to the entry chain, once per jump.
    pub jumps: Vec<String>,
    /// Lines that belong to the agent but do not read as anything it writes.
    pub problems: Vec<String>,
    /// The agent's sets made with a smaller `maxelem` than it makes them now (by an older
    /// version): they are replaced by a swap at the next apply.
    pub undersized: BTreeSet<SetId>,
    /// The swap's temporary set (`RESIZE_SET`) is left from an interrupted replacement.
    pub resize_leftover: bool,
    /// Sets named as the agent names them but of a type it never makes them (also in
    /// `problems`): replaced when the agent needs the name, else destroyed.
    pub misfits: BTreeSet<SetId>,
}

impl KernelView {
    /// Reads both tools' output; errors only on text that is not their format at all.
    pub fn read(ipset_save: &str, iptables_save: &str) -> Result<KernelView> {
        let mut view = KernelView::default();
        read_sets(ipset_save, &mut view)?;
        read_rules(iptables_save, &mut view)?;
        Ok(view)
    }

    /// All four agent chains exist, the entry chain is intact and each hook jumps to it once.
    pub fn wired(&self, hooks: &[&str]) -> bool {
        let all = [ENTRY_CHAIN.to_string()]
            .into_iter()
            .chain([Chain::Accept, Chain::Egress, Chain::Ingress].map(|c| c.to_string()));
        all.into_iter().all(|c| self.chains.contains(&c))
            && self.entry_ok
            && hooks.iter().all(|h| self.jumps.iter().filter(|j| j == h).count() == 1)
    }
}

/// The IR as the kernel would show it: no keys or definitions, IPv4 members only (what the
/// Linux renderer writes), comments with `"` turned into `'`.
pub fn kernel_shape(ir: &Ir) -> Ir {
    let sets = ir
        .sets
        .iter()
        .map(|(id, set)| {
            let members = set.members.iter().filter(|m| m.is_v4()).cloned().collect();
            (*id, IpSet { key: String::new(), def: SetDef::Fixed, members, ..set.clone() })
        })
        .collect();
    let shape = |rules: &[Rule]| -> Vec<Rule> {
        rules.iter().map(|r| Rule { comment: r.comment.replace('"', "'"), ..r.clone() }).collect()
    };
    Ir { sets, accept: shape(&ir.accept), egress: shape(&ir.egress), ingress: shape(&ir.ingress) }
}

fn not_format(tool: &'static str, line: usize, text: &str) -> Error {
    Error::KernelText { tool, line, text: text.chars().take(200).collect() }
}

fn read_sets(text: &str, view: &mut KernelView) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["create", name, ..] if *name == RESIZE_SET => view.resize_leftover = true,
            ["add", name, ..] if *name == RESIZE_SET => {}
            ["create", name, kind, options @ ..] if name.starts_with(SET_PREFIX) => {
                let Ok(id) = name.parse::<SetId>() else {
                    view.problems.push(format!("set {name} is not named as the agent names sets"));
                    continue;
                };
                if set_kind(kind) != Some(id.kind()) {
                    view.problems.push(format!("set {name} has type {kind}, which the agent never makes it"));
                    view.misfits.insert(id);
                    continue;
                }
                let maxelem = options.iter().skip_while(|w| **w != "maxelem").nth(1);
                if maxelem.and_then(|m| m.parse::<usize>().ok()).is_some_and(|m| m < MAX_SET_MEMBERS) {
                    view.undersized.insert(id);
                }
                let set = IpSet { id, key: String::new(), def: SetDef::Fixed, members: BTreeSet::new() };
                view.ir.sets.insert(id, set);
            }
            ["add", name, ..] if name.parse::<SetId>().is_ok_and(|id| view.misfits.contains(&id)) => {}
            ["add", name, rest @ ..] if name.starts_with(SET_PREFIX) => {
                let Some(set) = name.parse::<SetId>().ok().and_then(|id| view.ir.sets.get_mut(&id)) else {
                    view.problems.push(format!("line {}: member of unknown set {name}", n + 1));
                    continue;
                };
                match member(set.kind(), rest) {
                    Some(m) => {
                        set.members.insert(m);
                    }
                    None => view.problems.push(format!("line {}: unreadable member {line:?}", n + 1)),
                }
            }
            ["create" | "add", ..] => {}
            _ => return Err(not_format("ipset save", n + 1, line)),
        }
    }
    Ok(())
}

fn set_kind(text: &str) -> Option<SetKind> {
    match text {
        "hash:ip" => Some(SetKind::HashIp),
        "hash:net" => Some(SetKind::HashNet),
        "hash:ip,port" => Some(SetKind::HashIpPort),
        _ => None,
    }
}

fn member(kind: SetKind, words: &[&str]) -> Option<Member> {
    let (entry, flags) = words.split_first()?;
    let nomatch = flags.contains(&"nomatch");
    match kind {
        SetKind::HashIp => Some(Member::Ip(entry.parse().ok()?)),
        SetKind::HashNet => {
            // ipset prints a host entry without its /32.
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
            };
            Some(Member::Net { net, nomatch })
        }
        SetKind::HashIpPort => {
            let (ip, rest) = entry.split_once(',')?;
            let (protocol, port) = rest.split_once(':')?;
            Some(Member::IpPort {
                ip: ip.parse().ok()?,
                protocol: Protocol::parse(protocol)?,
                port: port.parse().ok()?,
            })
        }
    }
}

fn read_rules(text: &str, view: &mut KernelView) -> Result<()> {
    let expected_entry: Vec<Vec<String>> = iptables_restore(&Ir::default())
        .lines()
        .filter(|l| l.starts_with(&format!("-A {ENTRY_CHAIN} ")))
        .map(|l| words(l).unwrap_or_default())
        .collect();
    let mut entry = Vec::new();
    let mut table = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.to_string());
            continue;
        }
        if table.as_deref() != Some("filter") {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if chain == ENTRY_CHAIN || chain.starts_with("AZURE-NPM-") {
                view.chains.insert(chain.to_string());
            }
            continue;
        }
        let w = words(line).ok_or_else(|| not_format("iptables-save", n + 1, line))?;
        let (chain, args) = match w.as_slice() {
            [a, chain, args @ ..] if a == "-A" => (chain.as_str(), args),
            _ => return Err(not_format("iptables-save", n + 1, line)),
        };
        if chain == ENTRY_CHAIN {
            entry.push(w.clone());
        } else if let Some(c) = agent_chain(chain) {
            match rule(c, args) {
                Ok(r) => match c {
                    Chain::Accept => view.ir.accept.push(r),
                    Chain::Egress => view.ir.egress.push(r),
                    Chain::Ingress => view.ir.ingress.push(r),
                },
                Err(e) => view.problems.push(format!("{chain}: {e}: {line}")),
            }
        } else if args.len() == 2 && args[0] == "-j" && args[1] == ENTRY_CHAIN {
            view.jumps.push(chain.to_string());
        } else if args.iter().any(|a| a == ENTRY_CHAIN) {
            view.problems.push(format!("a jump the agent does not write: {line}"));
        }
    }
    view.entry_ok = entry == expected_entry;
    if !view.entry_ok && view.chains.contains(ENTRY_CHAIN) {
        view.problems.push(format!("{ENTRY_CHAIN} does not hold the agent's entry rules"));
    }
    Ok(())
}

fn agent_chain(name: &str) -> Option<Chain> {
    [Chain::Accept, Chain::Egress, Chain::Ingress].into_iter().find(|c| c.to_string() == name)
}

/// Splits a rule line into words; a double-quoted word may hold spaces. `None`: a quote that
/// never closes.
fn words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { return Some(out) };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => word.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => word.push(c),
                    None => return None,
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        out.push(word);
    }
}

/// One rule of an agent chain, as `render::rule_text` writes it (options in any order).
fn rule(chain: Chain, args: &[String]) -> std::result::Result<Rule, String> {
    let mut r = Rule {
        comment: String::new(),
        src_set: None,
        dst_set: None,
        protocol: None,
        dports: None,
        dst_named_port: None,
        action: Action::Accept,
    };
    let mark = if chain == Chain::Egress { EGRESS_MARK } else { INGRESS_MARK };
    let mut negated_mark = false;
    let mut target = None;
    let mut set_mark = None;
    let mut i = 0;
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(|| "option without a value".to_string());
    while i < args.len() {
        match args[i].as_str() {
            "-p" => {
                r.protocol = Some(Protocol::parse(arg(i + 1)?).ok_or("unknown protocol")?);
                i += 2;
            }
            "-m" => i += 2,
            "--match-set" => {
                let name = arg(i + 1)?;
                let id =
                    name.parse::<SetId>().map_err(|_| format!("set {name} is not one the agent makes"))?;
                match arg(i + 2)? {
                    "src" => r.src_set = Some(id),
                    "dst" => r.dst_set = Some(id),
                    "dst,dst" => r.dst_named_port = Some(id),
                    other => return Err(format!("set matched on {other}")),
                }
                i += 3;
            }
            "--dport" => {
                let text = arg(i + 1)?;
                let (lo, hi) = text.split_once(':').unwrap_or((text, text));
                let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {text}"));
                r.dports = Some((port(lo)?, port(hi)?));
                i += 2;
            }
            "--comment" => {
                r.comment = arg(i + 1)?.to_string();
                i += 2;
            }
            "!" if arg(i + 1)? == "--mark" => {
                if arg(i + 2)? != mark {
                    return Err(format!("checks mark {}, not the chain's {mark}", arg(i + 2)?));
                }
                negated_mark = true;
                i += 3;
            }
            "--set-xmark" => {
                set_mark = Some(arg(i + 1)?.to_string());
                i += 2;
            }
            "-j" => {
                target = Some(arg(i + 1)?.to_string());
                i += 2;
            }
            other => return Err(format!("option {other} is not one the agent writes")),
        }
    }
    r.action = match (target.as_deref(), negated_mark, set_mark.as_deref()) {
        (Some("ACCEPT"), false, None) => Action::Accept,
        (Some("MARK"), false, Some(m)) if m == mark => Action::MarkAllowed,
        (Some("DROP"), true, None) => Action::DropUnlessAllowed,
        _ => return Err("target is not one the agent writes".into()),
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::render::{ipset_restore, Notes};
    use super::*;
    use policy_compiler::compile::compile;
    use policy_compiler::snapshot::Snapshot;

    fn case(name: &str) -> Ir {
        let path = format!("{}/../testdata/policy/{name}", env!("CARGO_MANIFEST_DIR"));
        compile(&Snapshot::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap().cluster)
    }

    /// What the kernel prints for a rendered IR, near enough: ipset adds `hashsize...` options
    /// and drops `-exist`; iptables-save adds built-in chains, the hooks and counters.
    fn as_saved(ir: &Ir) -> (String, String) {
        let ipset = ipset_restore(ir, &mut Notes::default())
            .replace(" family inet -exist", " family inet hashsize 1024 maxelem 65536")
            .replace(
                " family inet maxelem 1048576 -exist",
                " family inet hashsize 1024 maxelem 1048576 bucketsize 12",
            )
            .replace(" -exist", "")
            .replace("/32", "");
        let rules = iptables_restore(ir).replace(
            "*filter\n",
            "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n-A FORWARD -j AZURE-NPM\n-A OUTPUT -j AZURE-NPM\n",
        );
        (ipset, rules)
    }

    #[test]
    fn every_case_reads_back_as_it_was_rendered() {
        let dir = format!("{}/../testdata/policy", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let ir = case(&name);
            let (ipset, rules) = as_saved(&ir);
            let view = KernelView::read(&ipset, &rules).unwrap();
            assert_eq!(view.problems, Vec::<String>::new(), "{name}");
            assert_eq!(view.ir, kernel_shape(&ir), "{name}");
            assert!(view.wired(&["FORWARD", "OUTPUT"]), "{name}");
        }
    }

    #[test]
    fn drift_is_visible() {
        let ir = case("07-ipblock-except.yaml");
        let (ipset, rules) = as_saved(&ir);
        let unhooked = rules.replace("-A FORWARD -j AZURE-NPM\n", "");
        assert!(!KernelView::read(&ipset, &unhooked).unwrap().wired(&["FORWARD", "OUTPUT"]));
        let flushed: String =
            rules.lines().filter(|l| !l.starts_with("-A AZURE-NPM")).map(|l| format!("{l}\n")).collect();
        let view = KernelView::read(&ipset, &flushed).unwrap();
        assert!(!view.wired(&["FORWARD", "OUTPUT"]) && view.ir.rule_count() == 0);
        let edited = rules.replacen("-j DROP", "-j LOG", 1);
        assert_eq!(KernelView::read(&ipset, &edited).unwrap().problems.len(), 1);
    }

    #[test]
    fn foreign_state_is_ignored_and_garbage_is_refused() {
        let ipset = "create KUBE-X hash:ip family inet\nadd KUBE-X 1.2.3.4\n";
        let rules = "*nat\n-A POSTROUTING -j AZURE-NPM\n*filter\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n";
        let view = KernelView::read(ipset, rules).unwrap();
        assert!(view.ir.sets.is_empty() && view.jumps.is_empty() && view.problems.is_empty());
        assert!(KernelView::read("hello world", "").is_err());
        assert!(KernelView::read("", "*filter\n-A X -m comment --comment \"open").is_err());
        assert!(KernelView::read("", "*filter\nnonsense\n").is_err());
    }
}
