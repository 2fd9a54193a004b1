//! The Linux dataplane: each delta is at most one `ipset -exist restore` that only narrows
//! (new sets, isolation, removals from allow sets) before a single atomic `iptables-restore
//! --noflush` of the agent's chains and one that widens after it (see `render::ipset_delta`:
//! no state in between allows more than the old or the new one); sets are destroyed last, in
//! one batch, and a set the kernel still holds is left for the next round rather than failing
//! the apply. The entry chain is jumped to from FORWARD (bridged pod traffic passes it when
//! br_netfilter is on) and OUTPUT (traffic from the node itself).

use policy_compiler::incremental::Delta;
use policy_compiler::readback::KernelView;
use policy_compiler::render::{self, Notes, ENTRY_CHAIN, HOLD_SET};

use super::exec::Exec;
use super::Dataplane;
use crate::error::{Error, Result};

/// The built-in chains that jump to the agent's entry chain.
pub const HOOKS: [&str; 2] = ["FORWARD", "OUTPUT"];

pub struct Linux {
    exec: Box<dyn Exec>,
    /// `nf_tables` or `legacy`, from `iptables --version`.
    pub backend: String,
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
}

impl Linux {
    /// Detects the iptables backend; refuses to start when it cannot tell.
    pub fn new(exec: Box<dyn Exec>) -> Result<Linux> {
        let version = exec.run("iptables", &["--version"], "")?;
        let backend = if version.contains("nf_tables") {
            "nf_tables"
        } else if version.contains("legacy") {
            "legacy"
        } else {
            return Err(Error::UnknownBackend(version.trim().to_string()));
        };
        let step_delay = std::env::var("AZURE_NPM_TEST_STEP_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        Ok(Linux {
            exec,
            backend: backend.to_string(),
            pending_destroy: Vec::new(),
            step_delay,
            known_jumps: None,
            hold_ready: false,
        })
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
        let save = self.exec.run("iptables-save", &["-t", "filter"], "")?;
        let mut script = String::from("*filter\n");
        for hook in HOOKS {
            let jump = format!("-A {hook} -j {ENTRY_CHAIN}");
            if !save.lines().any(|l| l.trim() == jump) {
                script += &format!("-I {hook} 1 -j {ENTRY_CHAIN}\n");
            }
        }
        if script.len() > "*filter\n".len() {
            self.exec.run("iptables-restore", &["-w", "10", "--noflush"], &(script + "COMMIT\n"))?;
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
}

impl Dataplane for Linux {
    fn read(&mut self) -> Result<KernelView> {
        let sets = self.exec.run("ipset", &["save"], "")?;
        let rules = self.exec.run("iptables-save", &["-t", "filter"], "")?;
        let view = KernelView::read(&sets, &rules).map_err(Error::Input)?;
        self.hold_ready = sets.lines().any(|l| l.starts_with(&format!("create {HOLD_SET} ")));
        self.known_jumps = Some(view.jumps.clone());
        Ok(view)
    }

    fn apply(&mut self, delta: &Delta) -> Result<()> {
        let mut notes = Notes::default();
        let phases = render::ipset_delta(delta, &mut notes);
        // The entry chain refers to the hold set, so it exists before any chain rewrite.
        let narrow = match delta.chains {
            Some(_) if !self.hold_ready => {
                format!("create {HOLD_SET} hash:ip family inet -exist\n{}", phases.narrow)
            }
            _ => phases.narrow.clone(),
        };
        self.ipset_restore(&narrow)?;
        self.hold_ready |= delta.chains.is_some();
        self.pause();
        if let Some(chains) = &delta.chains {
            let script = render::iptables_chains(chains);
            match &self.known_jumps {
                Some(jumps) => {
                    let fixes = Self::hook_fixes(jumps);
                    let body = script.strip_suffix("COMMIT\n").unwrap_or(&script);
                    self.exec.run(
                        "iptables-restore",
                        &["-w", "10", "--noflush"],
                        &format!("{body}{fixes}COMMIT\n"),
                    )?;
                    self.known_jumps = Some(HOOKS.iter().map(|h| h.to_string()).collect());
                }
                None => {
                    self.exec.run("iptables-restore", &["-w", "10", "--noflush"], &script)?;
                    self.ensure_jumps()?;
                }
            }
            self.pause();
        }
        self.ipset_restore(&phases.widen)?;
        self.pause();
        let mut names = std::mem::take(&mut self.pending_destroy);
        names.extend(phases.destroy);
        self.destroy(names);
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        let save = self.exec.run("iptables-save", &["-t", "filter"], "")?;
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
        self.exec.run("iptables-restore", &["-w", "10", "--noflush"], &(script + "COMMIT\n"))?;
        let sets = self.exec.run("ipset", &["list", "-n"], "")?;
        let names: Vec<String> =
            sets.lines().filter(|n| n.starts_with("azn-") || *n == HOLD_SET).map(str::to_string).collect();
        self.destroy(names);
        Ok(())
    }

    fn admit(&mut self, ips: &[std::net::IpAddr]) -> Result<()> {
        let script: String =
            ips.iter().filter(|ip| ip.is_ipv4()).map(|ip| format!("del {HOLD_SET} {ip} -exist\n")).collect();
        self.ipset_restore(&script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn linux(fake: &Fake) -> Linux {
        Linux::new(Box::new(fake.clone())).unwrap()
    }

    #[test]
    fn the_backend_is_detected_or_refused() {
        let nft = Fake { version: "iptables v1.8.9 (nf_tables)", ..Fake::default() };
        assert_eq!(linux(&nft).backend, "nf_tables");
        let weird = Fake { version: "iptables v9", ..Fake::default() };
        assert!(matches!(Linux::new(Box::new(weird)), Err(Error::UnknownBackend(_))));
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
        let mut dp = linux(&fake);
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
        let mut dp = linux(&fake);
        dp.read().unwrap();
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
            Linux::hook_fixes(&["FORWARD".into(), "FORWARD".into(), "OUTPUT".into()]),
            "-D FORWARD -j AZURE-NPM\n"
        );
    }

    #[test]
    fn a_nomatch_member_is_removed_without_the_keyword() {
        let fake = Fake { version: "iptables v1.8.9 (nf_tables)", ..Fake::default() };
        let mut dp = linux(&fake);
        let member = policy_compiler::ir::Member::Net { net: "10.0.2.0/24".parse().unwrap(), nomatch: true };
        let delta = Delta { removed: [("azn-n1".to_string(), [member].into())].into(), ..Delta::default() };
        dp.apply(&delta).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.last().unwrap().1, "del azn-n1 10.0.2.0/24 -exist\n");
    }

    #[test]
    fn a_set_still_in_use_is_kept_for_the_next_round() {
        let fake = Fake {
            version: "iptables v1.8.9 (nf_tables)",
            in_use: "azn-busy",
            listed: "azn-busy\nazn-free\n",
            ..Fake::default()
        };
        let mut dp = linux(&fake);
        let delta = Delta { destroyed: vec!["azn-busy".into(), "azn-free".into()], ..Delta::default() };
        dp.apply(&delta).unwrap();
        assert_eq!(dp.pending_destroy, ["azn-busy"]);

        // Gone already (destroyed by hand): done, without asking the kernel to destroy it.
        let fake = Fake { listed: "azn-other\n", ..fake };
        let mut dp = linux(&fake);
        fake.calls.borrow_mut().clear();
        dp.apply(&Delta { destroyed: vec!["azn-busy".into()], ..Delta::default() }).unwrap();
        assert!(dp.pending_destroy.is_empty());
        assert!(!fake.calls.borrow().iter().any(|(l, _)| l.starts_with("ipset destroy")));
        assert!(!fake.calls.borrow().iter().any(|(_, stdin)| stdin.contains("destroy")));

        // Many sets, none in use: one batch.
        let fake = Fake { in_use: "", listed: "azn-a\nazn-b\nazn-c\n", ..fake };
        let mut dp = linux(&fake);
        fake.calls.borrow_mut().clear();
        let names = ["azn-a", "azn-b", "azn-c"].map(String::from).to_vec();
        dp.apply(&Delta { destroyed: names, ..Delta::default() }).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls.last().unwrap().1, "destroy azn-a\ndestroy azn-b\ndestroy azn-c\n");
        assert!(!calls.iter().any(|(l, _)| l.starts_with("ipset destroy")));
    }
}
