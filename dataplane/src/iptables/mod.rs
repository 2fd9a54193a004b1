//! The ipset + iptables backend: each delta is at most one `ipset -exist restore` that only
//! narrows (new sets, isolation, removals from allow sets) before a single atomic
//! `iptables-restore --noflush` of the agent's chains and one that widens after it (see
//! `render::ipset_delta`: no state in between allows more than the old or the new one); sets
//! are destroyed last, in one batch, and a set the kernel still holds is left for the next
//! round rather than failing the apply. The entry chain is jumped to from FORWARD (bridged pod
//! traffic passes it when br_netfilter is on) and OUTPUT (traffic from the node itself).

pub mod readback;
pub mod render;

use std::collections::HashMap;
use std::net::IpAddr;

use policy_compiler::compiled;
use policy_compiler::incremental::Delta;
use policy_compiler::ir::{Ir, Member, Rule, SetId};
use policy_compiler::model::Protocol;

use self::readback::{kernel_shape, KernelView};
use self::render::{Notes, ENTRY_CHAIN, HOLD_SET};
use crate::choice::{reported, Variant};
use crate::error::{Error, Result};
use crate::exec::Exec;
use crate::{v4_members, Dataplane, Drift, Installed, KernelTrace};

/// The built-in chains that jump to the agent's entry chain.
pub const HOOKS: [&str; 2] = ["FORWARD", "OUTPUT"];

pub struct Iptables {
    exec: Box<dyn Exec>,
    /// Which iptables (nf_tables-based or legacy), and the save/restore programs for it.
    pub variant: Variant,
    save: &'static str,
    restore: &'static str,
    /// Sets the kernel refused to destroy (still referenced); retried on the next apply.
    pub pending_destroy: Vec<String>,
    /// A pause after each step of an apply, so tests can observe and kill in between
    /// (`AZURE_NPM_TEST_STEP_DELAY_MS`; never set in production).
    step_delay: Option<std::time::Duration>,
    /// The hooks' jumps as last read from the kernel (`None`: not read yet). When known, a
    /// chain rewrite fixes them in the same transaction instead of saving the table again.
    known_jumps: Option<Vec<String>>,
    /// The hold set (render::HOLD_SET) exists: made by this process or seen at the last read.
    hold_ready: bool,
    /// The agent's chains as programmed (accept, egress, ingress), and whether the hooks and
    /// the entry chain were intact at the last read: when not, the next apply rewrites the
    /// chains (which fixes both) even if the delta leaves them alone.
    chains: [Vec<Rule>; 3],
    wired: bool,
    /// IPv4 members of each set programmed (what `ipset list` shows, the hold set aside),
    /// and their sum; kept in step with the deltas (a pod event costs its own members).
    members: HashMap<SetId, usize>,
    entries: usize,
    /// Replaces the undersized sets found at the last read (`render::resize`); runs first in
    /// the next apply.
    resize: String,
    /// Sets of the agent's names but not its types, found at the last read: destroyed first
    /// when the next apply creates that name, else with the sets it destroys.
    misfits: Vec<SetId>,
}

impl Iptables {
    /// The variant `iptables --version` reports; refuses to start when it cannot tell.
    pub fn new(exec: Box<dyn Exec>) -> Result<Iptables> {
        let version = exec.run("iptables", &["--version"], "")?;
        let variant = reported(&version).ok_or_else(|| Error::UnknownBackend(version.trim().to_string()))?;
        Ok(Iptables::build(exec, variant, Some(variant)))
    }

    /// A given variant (chosen by evidence, `choice`): the plain `iptables-save`/`-restore`
    /// when they are that variant, else `iptables-legacy-…` or `iptables-nft-…`.
    pub fn for_variant(exec: Box<dyn Exec>, variant: Variant) -> Iptables {
        let plain = exec.run("iptables", &["--version"], "").ok().and_then(|v| reported(&v));
        Iptables::build(exec, variant, plain)
    }

    fn build(exec: Box<dyn Exec>, variant: Variant, plain: Option<Variant>) -> Iptables {
        let (save, restore) = match (plain == Some(variant), variant) {
            (true, _) => ("iptables-save", "iptables-restore"),
            (false, Variant::Nft) => ("iptables-nft-save", "iptables-nft-restore"),
            (false, Variant::Legacy) => ("iptables-legacy-save", "iptables-legacy-restore"),
        };
        let step_delay = std::env::var("AZURE_NPM_TEST_STEP_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        Iptables {
            exec,
            variant,
            save,
            restore,
            pending_destroy: Vec::new(),
            step_delay,
            known_jumps: None,
            hold_ready: false,
            chains: Default::default(),
            wired: false,
            members: HashMap::new(),
            entries: 0,
            resize: String::new(),
            misfits: Vec::new(),
        }
    }

    /// Reads what the kernel holds of the agent's (`ipset save`, `iptables-save`).
    pub fn read(&mut self) -> Result<KernelView> {
        let sets = self.exec.run("ipset", &["save"], "")?;
        let rules = self.exec.run(self.save, &["-t", "filter"], "")?;
        let view = KernelView::read(&sets, &rules)?;
        let undersized = view.undersized.iter().filter_map(|id| view.ir.sets.get(id));
        self.resize = render::resize(undersized, view.resize_leftover, &mut Notes::default());
        self.misfits = view.misfits.iter().copied().collect();
        if !view.undersized.is_empty() {
            tracing::info!(
                "{} sets were made with a smaller maxelem (an older version); the next apply replaces them",
                view.undersized.len()
            );
        }
        self.hold_ready = sets.lines().any(|l| l.starts_with(&format!("create {HOLD_SET} ")));
        self.known_jumps = Some(view.jumps.clone());
        Ok(view)
    }

    fn pause(&self) {
        if let Some(d) = self.step_delay {
            std::thread::sleep(d);
        }
    }

    fn ipset_restore(&self, script: &str) -> Result<()> {
        if script.is_empty() {
            return Ok(());
        }
        self.exec.run("ipset", &["-exist", "restore"], script).map(|_| ())
    }

    /// Adds the jumps into the entry chain where they are missing (first position).
    fn ensure_jumps(&self) -> Result<()> {
        let save = self.exec.run(self.save, &["-t", "filter"], "")?;
        let mut script = String::from("*filter\n");
        for hook in HOOKS {
            let jump = format!("-A {hook} -j {ENTRY_CHAIN}");
            if !save.lines().any(|l| l.trim() == jump) {
                script += &format!("-I {hook} 1 -j {ENTRY_CHAIN}\n");
            }
        }
        if script.len() > "*filter\n".len() {
            self.exec.run(self.restore, &["-w", "10", "--noflush"], &(script + "COMMIT\n"))?;
        }
        Ok(())
    }

    /// iptables-restore lines that leave exactly one jump per hook, given the jumps present.
    fn hook_fixes(jumps: &[String]) -> String {
        let mut out = String::new();
        for hook in HOOKS {
            match jumps.iter().filter(|j| *j == hook).count() {
                0 => out += &format!("-I {hook} 1 -j {ENTRY_CHAIN}\n"),
                n => {
                    for _ in 1..n {
                        out += &format!("-D {hook} -j {ENTRY_CHAIN}\n");
                    }
                }
            }
        }
        out
    }

    /// The sets the kernel holds (`None`: the listing failed).
    fn listed(&self) -> Option<std::collections::BTreeSet<String>> {
        self.exec.run("ipset", &["list", "-n"], "").ok().map(|l| l.lines().map(str::to_string).collect())
    }

    /// Destroys sets: one batch (thousands of sets cost one process, not thousands), and when
    /// the kernel refuses one of them (still referenced; `ipset restore` stops there) the rest
    /// set by set, keeping the refused ones for the next round. One already gone is done. Which
    /// sets exist is read first, so the outcome never depends on the wording of ipset's messages.
    fn destroy(&mut self, names: Vec<String>) {
        if names.is_empty() {
            self.pending_destroy = Vec::new();
            return;
        }
        let mut present = self.listed();
        let names: Vec<String> =
            names.into_iter().filter(|n| present.as_ref().is_none_or(|p| p.contains(n))).collect();
        if present.is_some() {
            let batch: String = names.iter().map(|n| format!("destroy {n}\n")).collect();
            if self.ipset_restore(&batch).is_ok() {
                self.pending_destroy = Vec::new();
                return;
            }
            present = self.listed(); // the batch destroyed the sets before the refused one
        }
        let mut keep = Vec::new();
        for name in names {
            if present.as_ref().is_some_and(|p| !p.contains(&name)) {
                continue;
            }
            if let Err(e) = self.exec.run("ipset", &["destroy", &name], "") {
                tracing::debug!("{name} stays for the next round: {e}");
                keep.push(name);
            }
        }
        self.pending_destroy = keep;
    }

    /// Follows a delta in the per-set member counts.
    fn count(&mut self, delta: &Delta) {
        let v4 = |s: &std::collections::BTreeSet<Member>| s.iter().filter(|x| x.is_v4()).count();
        for set in &delta.created {
            self.members.entry(set.id).or_insert(0);
        }
        for (id, m) in &delta.added {
            *self.members.entry(*id).or_default() += v4(m);
            self.entries += v4(m);
        }
        for (id, m) in &delta.removed {
            let n = self.members.entry(*id).or_default();
            let gone = v4(m).min(*n);
            *n -= gone;
            self.entries -= gone;
        }
        for id in &delta.destroyed {
            self.entries -= self.members.remove(id).unwrap_or(0);
        }
    }
}

impl Dataplane for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn adopt(&mut self) -> Result<Ir> {
        let view = self.read()?;
        if !view.problems.is_empty() {
            tracing::warn!("kernel state the agent does not recognise: {}", view.problems.join("; "));
        }
        self.wired = view.wired(&HOOKS) && view.problems.is_empty();
        tracing::info!(
            "adopted kernel state: {} sets, {} rules, hooks {}",
            view.ir.sets.len(),
            view.ir.rule_count(),
            if self.wired { "intact" } else { "incomplete" }
        );
        self.chains = [view.ir.accept.clone(), view.ir.egress.clone(), view.ir.ingress.clone()];
        self.members = view
            .ir
            .sets
            .iter()
            .map(|(id, s)| (*id, s.members.iter().filter(|m| m.is_v4()).count()))
            .collect();
        self.entries = v4_members(&view.ir);
        Ok(view.ir)
    }

    fn drift(&mut self, expected: &Ir) -> Result<Vec<Drift>> {
        let view = self.read()?;
        Ok(drift(&view, &kernel_shape(expected)))
    }

    fn apply(&mut self, delta: &Delta) -> Result<()> {
        let mut notes = Notes::default();
        let phases = render::ipset_delta(delta, &mut notes);
        // Rewriting the chains also restores the entry chain and the hooks.
        let chains = match &delta.chains {
            Some(c) => Some(c),
            None if !self.wired => Some(&self.chains),
            None => None,
        };
        // A misfit of a name this delta creates goes first (`create -exist` refuses a set of
        // another type); the others go with the sets destroyed at the end.
        let (recreated, stale): (Vec<SetId>, Vec<SetId>) =
            self.misfits.iter().partition(|id| delta.created.iter().any(|s| s.id == **id));
        let mut first = self.resize.clone();
        first.extend(recreated.iter().map(|id| format!("destroy {id}\n")));
        // The entry chain refers to the hold set, so it exists before any chain rewrite.
        let narrow = match chains {
            Some(_) if !self.hold_ready => {
                format!("{first}create {HOLD_SET} hash:ip family inet -exist\n{}", phases.narrow)
            }
            _ => format!("{first}{}", phases.narrow),
        };
        self.ipset_restore(&narrow)?;
        self.resize.clear();
        self.misfits.clear();
        self.hold_ready |= chains.is_some();
        self.pause();
        if let Some(chains) = chains {
            let script = render::iptables_chains(chains);
            match &self.known_jumps {
                Some(jumps) => {
                    let fixes = Self::hook_fixes(jumps);
                    let body = script.strip_suffix("COMMIT\n").unwrap_or(&script);
                    self.exec.run(
                        self.restore,
                        &["-w", "10", "--noflush"],
                        &format!("{body}{fixes}COMMIT\n"),
                    )?;
                    self.known_jumps = Some(HOOKS.iter().map(|h| h.to_string()).collect());
                }
                None => {
                    self.exec.run(self.restore, &["-w", "10", "--noflush"], &script)?;
                    self.ensure_jumps()?;
                }
            }
            self.chains = chains.clone();
            self.wired = true;
            self.pause();
        }
        self.ipset_restore(&phases.widen)?;
        self.pause();
        let mut names = std::mem::take(&mut self.pending_destroy);
        names.extend(phases.destroy.iter().chain(&stale).map(|id| id.to_string()));
        self.destroy(names);
        self.count(delta);
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        let save = self.exec.run(self.save, &["-t", "filter"], "")?;
        let mut script = String::from("*filter\n");
        for hook in HOOKS {
            let jump = format!("-A {hook} -j {ENTRY_CHAIN}");
            for _ in save.lines().filter(|l| l.trim() == jump) {
                script += &format!("-D {hook} -j {ENTRY_CHAIN}\n");
            }
        }
        let ours: Vec<&str> = save
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c == ENTRY_CHAIN || c.starts_with("AZURE-NPM-"))
            .collect();
        for chain in &ours {
            script += &format!("-F {chain}\n");
        }
        for chain in &ours {
            script += &format!("-X {chain}\n");
        }
        self.exec.run(self.restore, &["-w", "10", "--noflush"], &(script + "COMMIT\n"))?;
        let sets = self.exec.run("ipset", &["list", "-n"], "")?;
        let names: Vec<String> = sets
            .lines()
            .filter(|n| n.starts_with(policy_compiler::ir::SET_PREFIX) || *n == HOLD_SET)
            .map(str::to_string)
            .collect();
        self.destroy(names);
        (self.members, self.entries, self.wired) = (HashMap::new(), 0, false);
        Ok(())
    }

    fn admit(&mut self, ips: &[IpAddr]) -> Result<()> {
        let script: String =
            ips.iter().filter(|ip| ip.is_ipv4()).map(|ip| format!("del {HOLD_SET} {ip} -exist\n")).collect();
        self.ipset_restore(&script)
    }

    fn installed(&self) -> Installed {
        let rules = self.chains.iter().map(Vec::len).sum::<usize>() + entry_rules();
        // The hold set is the agent's too.
        Installed { rules, sets: self.members.len() + 1, entries: self.entries }
    }

    fn explain(&mut self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Result<KernelTrace> {
        Ok(explain(&self.read()?, src, dst, protocol, port))
    }
}

/// Rules of the entry chain as the renderer writes it (established, clear marks, the holds,
/// the jumps).
pub fn entry_rules() -> usize {
    // Counted once from the renderer's own text (asked at every program, for the metrics).
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        let prefix = format!("-A {ENTRY_CHAIN} ");
        render::iptables_restore(&Ir::default()).lines().filter(|l| l.starts_with(&prefix)).count()
    })
}

/// How the kernel differs from the expected shape.
pub fn drift(view: &KernelView, expected: &Ir) -> Vec<Drift> {
    let mut out = Vec::new();
    if view.ir.sets != expected.sets || !view.undersized.is_empty() || view.resize_leftover {
        out.push(Drift::Sets);
    }
    if (&view.ir.accept, &view.ir.egress, &view.ir.ingress)
        != (&expected.accept, &expected.egress, &expected.ingress)
        || !view.problems.is_empty()
    {
        out.push(Drift::Rules);
    }
    if !view.wired(&HOOKS) {
        out.push(Drift::Hooks);
    }
    out
}

/// Judges a packet by a kernel state (live, or read from saved files). Without the FORWARD
/// jump and an intact entry chain the agent's rules are never reached, so the kernel lets the
/// packet through.
pub fn explain(view: &KernelView, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> KernelTrace {
    let trace = compiled::evaluate(&view.ir, src, dst, protocol, port);
    let reached = view.entry_ok && view.jumps.iter().any(|j| j == "FORWARD");
    KernelTrace {
        backend: "iptables",
        allowed: trace.allowed || !reached,
        trace,
        wired: view.wired(&HOOKS),
        problems: view.problems.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::ir::SetId;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records every call and answers from a script.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Rc<RefCell<Vec<(String, String)>>>,
        version: &'static str,
        in_use: &'static str,
        /// What `ipset list -n` shows; empty: the listing fails.
        listed: &'static str,
    }

    impl Exec for Fake {
        fn run(&self, program: &str, args: &[&str], stdin: &str) -> Result<String> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.borrow_mut().push((line.clone(), stdin.to_string()));
            match (program, args) {
                ("iptables", ["--version"]) => Ok(self.version.to_string()),
                ("iptables-save", _) => Ok("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n".into()),
                ("ipset", ["list", "-n"]) if self.listed.is_empty() => {
                    Err(Error::Failed { program: "ipset".into(), stderr: "scripted".into() })
                }
                ("ipset", ["list", "-n"]) => Ok(self.listed.to_string()),
                ("ipset", ["save"]) => Ok(format!("create {HOLD_SET} hash:ip family inet hashsize 1024\n")),
                ("ipset", ["-exist", "restore"])
                    if !self.in_use.is_empty() && stdin.contains(&format!("destroy {}\n", self.in_use)) =>
                {
                    Err(Error::Failed { program: "ipset".into(), stderr: "scripted: in use".into() })
                }
                ("ipset", ["destroy", name]) if *name == self.in_use => Err(Error::Failed {
                    program: "ipset".into(),
                    stderr: "Set cannot be destroyed: it is in use".into(),
                }),
                _ => Ok(String::new()),
            }
        }
    }

    fn iptables(fake: &Fake) -> Iptables {
        Iptables::new(Box::new(fake.clone())).unwrap()
    }

    #[test]
    fn the_backend_is_detected_or_refused() {
        let nft = Fake { version: "iptables v1.8.9 (nf_tables)", ..Fake::default() };
        assert_eq!(iptables(&nft).variant, Variant::Nft);
        let weird = Fake { version: "iptables v9", ..Fake::default() };
        assert!(matches!(Iptables::new(Box::new(weird)), Err(Error::UnknownBackend(_))));
    }

    #[test]
    fn a_delta_runs_narrowing_chains_widening_destroy_in_that_order() {
        use policy_compiler::compile::compile;
        use policy_compiler::incremental::diff;
        use policy_compiler::snapshot::Snapshot;
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/policy/07-ipblock-except.yaml"
        ))
        .unwrap();
        let ir = compile(&Snapshot::from_yaml(&yaml).unwrap().cluster);
        let fake = Fake { version: "iptables v1.8.9 (legacy)", in_use: "", ..Fake::default() };
        let mut dp = iptables(&fake);
        dp.apply(&diff(&Default::default(), &ir)).unwrap();
        let calls = fake.calls.borrow().clone();
        let programs: Vec<&str> = calls.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            programs,
            [
                "iptables --version",
                "ipset -exist restore",
                "iptables-restore -w 10 --noflush",
                "iptables-save -t filter",
                "iptables-restore -w 10 --noflush",
            ]
        );
        // Everything is new: the sets are made and filled before the rules that use them.
        assert!(
            calls[1].1.contains("create ")
                && calls[1].1.contains("nomatch")
                && calls[1].1.contains("add azn-x")
        );
        assert!(calls[1].1.contains("add azn-i"), "new sets are filled before any rule uses them");
        assert!(
            calls[4].1.contains("-I FORWARD 1 -j AZURE-NPM")
                && calls[4].1.contains("-I OUTPUT 1 -j AZURE-NPM")
        );

        // Back to nothing: the rules go before the sets they reference.
        fake.calls.borrow_mut().clear();
        dp.apply(&diff(&ir, &Default::default())).unwrap();
        let calls = fake.calls.borrow().clone();
        let first_destroy = calls.iter().position(|(l, _)| l.starts_with("ipset destroy")).unwrap();
        let chains = calls.iter().position(|(l, _)| l.starts_with("iptables-restore")).unwrap();
        assert!(chains < first_destroy);
    }

    #[test]
    fn after_a_read_the_hooks_are_fixed_in_the_chain_transaction() {
        let fake = Fake { version: "iptables v1.8.9 (nf_tables)", ..Fake::default() };
        let mut dp = iptables(&fake);
        dp.adopt().unwrap();
        fake.calls.borrow_mut().clear();
        let delta = Delta { chains: Some(Default::default()), ..Delta::default() };
        dp.apply(&delta).unwrap();
        let calls = fake.calls.borrow().clone();
        assert_eq!(calls.len(), 1, "one transaction, no second save: {calls:?}");
        assert!(
            calls[0].1.contains("-I FORWARD 1 -j AZURE-NPM\n-I OUTPUT 1 -j AZURE-NPM\nCOMMIT\n"),
            "{}",
            calls[0].1
        );
        fake.calls.borrow_mut().clear();
        dp.apply(&delta).unwrap();
        assert!(!fake.calls.borrow()[0].1.contains("-I FORWARD"), "known to be in place now");
        assert_eq!(
            Iptables::hook_fixes(&["FORWARD".into(), "FORWARD".into(), "OUTPUT".into()]),
            "-D FORWARD -j AZURE-NPM\n"
        );
    }

    #[test]
    fn a_nomatch_member_is_removed_without_the_keyword() {
        let fake = Fake { version: "iptables v1.8.9 (nf_tables)", ..Fake::default() };
        let mut dp = iptables(&fake);
        let member = policy_compiler::ir::Member::Net { net: "10.0.2.0/24".parse().unwrap(), nomatch: true };
        let n1: SetId = "azn-n000000000001".parse().unwrap();
        let delta = Delta { removed: [(n1, [member].into())].into(), ..Delta::default() };
        dp.apply(&delta).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.last().unwrap().1, "del azn-n000000000001 10.0.2.0/24 -exist\n");
    }

    fn id(name: &str) -> SetId {
        name.parse().unwrap()
    }

    #[test]
    fn a_set_still_in_use_is_kept_for_the_next_round() {
        let fake = Fake {
            version: "iptables v1.8.9 (nf_tables)",
            in_use: "azn-i00000000b05e",
            listed: "azn-i00000000b05e\nazn-i00000000f4ee\n",
            ..Fake::default()
        };
        let mut dp = iptables(&fake);
        let delta =
            Delta { destroyed: vec![id("azn-i00000000b05e"), id("azn-i00000000f4ee")], ..Delta::default() };
        dp.apply(&delta).unwrap();
        assert_eq!(dp.pending_destroy, ["azn-i00000000b05e"]);

        // Gone already (destroyed by hand): done, without asking the kernel to destroy it.
        let fake = Fake { listed: "azn-i000000000123\n", ..fake };
        let mut dp = iptables(&fake);
        fake.calls.borrow_mut().clear();
        dp.apply(&Delta { destroyed: vec![id("azn-i00000000b05e")], ..Delta::default() }).unwrap();
        assert!(dp.pending_destroy.is_empty());
        assert!(!fake.calls.borrow().iter().any(|(l, _)| l.starts_with("ipset destroy")));
        assert!(!fake.calls.borrow().iter().any(|(_, stdin)| stdin.contains("destroy")));

        // Many sets, none in use: one batch.
        let fake =
            Fake { in_use: "", listed: "azn-i00000000000a\nazn-i00000000000b\nazn-i00000000000c\n", ..fake };
        let mut dp = iptables(&fake);
        fake.calls.borrow_mut().clear();
        let ids = ["azn-i00000000000a", "azn-i00000000000b", "azn-i00000000000c"].map(id).to_vec();
        dp.apply(&Delta { destroyed: ids, ..Delta::default() }).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(
            calls.last().unwrap().1,
            "destroy azn-i00000000000a\ndestroy azn-i00000000000b\ndestroy azn-i00000000000c\n"
        );
        assert!(!calls.iter().any(|(l, _)| l.starts_with("ipset destroy")));
    }
}
