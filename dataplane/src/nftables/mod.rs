//! The nftables backend: one table of the agent's own (`inet azure-npm`), programmed over
//! netlink (`nfnl`), every apply one transaction, read back by netlink dumps.
//!
//! - It never touches another table: kube-proxy's, the CNI's and anyone else's stay as they
//!   are, and a table with the agent's name that the agent did not make is refused.
//! - Each apply is one batch: the kernel takes all of it or none of it, so a failed apply, or
//!   an agent killed in the middle, leaves the old state or the new one, never a mix.
//! - A pod event costs the changes it makes (elements, map entries, maybe a group chain); the
//!   first program after a start, a policy change or a repair is a diff of whole models.
//! - A table that drifted beyond elements and rules (a fixed chain edited, a hook removed, a
//!   set retyped) or was left by another layout version is replaced whole, in one transaction,
//!   keeping the CNI's held addresses.

pub mod eval;
pub mod ops;
pub mod read;
pub mod render;
pub mod ruleset;
pub mod text;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use nfnl::object::{msg, Chain, Hook, Table};
use nfnl::{Batch, Socket};
use policy_compiler::incremental::Delta;
use policy_compiler::ir::{Ir, SetKind};
use policy_compiler::model::Protocol;

use self::ops::{map_object, rule_object, set_object, Encoder};
use self::read::{fixed_chains, TableState, View, PRIORITY};
use self::render::Renderer;
use self::ruleset::{Elems, Ruleset, DIRECTIONS};
use crate::error::{Error, Result};
use crate::{Dataplane, Drift, Installed, KernelTrace};

/// The agent's table, in the `inet` family (IPv4 today; IPv6 traffic is not its business).
pub const TABLE: &str = "azure-npm";
pub const FAMILY: u8 = nfnl::family::INET;
/// The table's comment: who made it, and the layout of its contents. A table of ours with
/// another layout is replaced whole (in one transaction); a table without it is not ours.
pub const LAYOUT_PREFIX: &str = "azure-npm/";
pub const LAYOUT: &str = "azure-npm/1";
/// Sets and maps are made without a size: a size makes the kernel pick a fixed-size hash whose
/// buckets are sized for it up front (a set of 2^20 took 16 MiB and made a 20k-pod program 18x
/// slower, and every dump walks all the buckets). The node's limits bound the members instead.
pub const SET_SIZE: u32 = 0;
/// The set of held pod addresses (azure-vnet adds a new pod's address before the pod runs;
/// the agent takes it out once the pod is programmed).
pub const HOLD: &str = "hold";

pub struct Nftables {
    sock: Socket,
    /// The IR the kernel holds, and its rendering.
    renderer: Renderer,
    /// What a read found, when the next apply must start from it rather than from
    /// `renderer` (after a start, a failure or drift).
    actual: Option<View>,
    /// The kernel's state is unknown (not read yet, or a failed apply): `adopt` before `apply`.
    unknown: bool,
    /// The size sets and maps are made with.
    set_size: u32,
    /// A pause before each transaction, so tests can watch a slow agent
    /// (`AZURE_NPM_TEST_STEP_DELAY_MS`; never set in production).
    step_delay: Option<std::time::Duration>,
}

impl Nftables {
    /// Opens the netlink socket and checks that the kernel answers for nf_tables.
    pub fn new() -> Result<Nftables> {
        Nftables::with_set_size(SET_SIZE)
    }

    /// With sets and maps of a fixed size (tests fill one to see the kernel refuse).
    pub fn with_set_size(set_size: u32) -> Result<Nftables> {
        let mut sock = Socket::open()?;
        sock.generation()?;
        let step_delay = std::env::var("AZURE_NPM_TEST_STEP_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        Ok(Nftables {
            sock,
            renderer: Renderer::new(Ir::default())?,
            actual: None,
            unknown: true,
            set_size,
            step_delay,
        })
    }

    fn encoder<'a>(&self, batch: &'a mut Batch) -> Encoder<'a> {
        Encoder { batch, next_id: 0, set_size: self.set_size }
    }

    /// Reads what the kernel holds of the agent's table.
    pub fn read(&mut self) -> Result<View> {
        read::read(&mut self.sock)
    }

    fn bootstrap(enc: &mut Encoder<'_>, hold: &BTreeSet<Ipv4Addr>) {
        enc.table(LAYOUT);
        enc.new_set(set_object(HOLD, SetKind::HashIp, 0));
        if !hold.is_empty() {
            enc.elems(HOLD, false, &Elems::Addrs(hold.clone()));
        }
        for d in DIRECTIONS {
            enc.new_set(map_object(d, 0));
        }
        for (name, hook, _) in fixed_chains() {
            let hook = hook.map(|num| Hook { num, priority: PRIORITY, kind: "filter".into(), policy: 1 });
            enc.new_chain(Chain { table: TABLE.into(), name: name.into(), hook });
        }
    }

    /// The fixed chains' rules (after the chains they jump to exist).
    fn fixed_rules(enc: &mut Encoder<'_>) {
        for (name, _, rules) in fixed_chains() {
            for (exprs, comment) in rules {
                enc.rule(&rule_object(name, exprs, comment));
            }
        }
    }

    /// A batch that takes the kernel from `view` to `target`.
    fn batch_from(&self, view: &View, target: &Ruleset) -> Result<Batch> {
        let mut batch = Batch::new();
        let mut enc = self.encoder(&mut batch);
        match &view.table {
            TableState::Foreign(found) => {
                return Err(Error::ForeignTable { table: TABLE, found: found.clone() });
            }
            TableState::Ours if view.fixed_ok => enc.ops(&ops::diff(&view.ruleset, target)),
            state => {
                if *state != TableState::Missing {
                    tracing::warn!("table inet {TABLE} ({state:?}) is replaced whole");
                    enc.batch.add(
                        msg::DELTABLE,
                        FAMILY,
                        false,
                        &Table::named(TABLE),
                        format!("deleting table inet {TABLE}"),
                    );
                }
                Self::bootstrap(&mut enc, &view.hold);
                enc.ops(&ops::diff(&Ruleset::default(), target));
                Self::fixed_rules(&mut enc);
            }
        }
        Ok(batch)
    }

    fn commit(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(d) = self.step_delay {
            std::thread::sleep(d);
        }
        let start = std::time::Instant::now();
        self.sock.commit(batch)?;
        tracing::debug!(
            "committed {} requests ({} bytes) in {:?}",
            batch.len(),
            batch.bytes(),
            start.elapsed()
        );
        Ok(())
    }

    /// The held addresses now in the kernel.
    fn held(&mut self) -> Result<BTreeSet<Ipv4Addr>> {
        let mut out = BTreeSet::new();
        let attrs = nfnl::object::elems_header(TABLE, HOLD);
        let result = self.sock.dump(msg::GETSETELEM, FAMILY, &attrs, |m| {
            for e in nfnl::object::decode_elems(&m.nf()?.1)?.2 {
                if let Ok(k) = <[u8; 4]>::try_from(e.key.as_slice()) {
                    out.insert(Ipv4Addr::from(k));
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(out),
            // No table or no hold set: nothing is held.
            Err(e) if e.errno() == Some(nfnl::error::ENOENT) => Ok(BTreeSet::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Dataplane for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn adopt(&mut self) -> Result<Ir> {
        let view = self.read()?;
        if let TableState::Foreign(found) = &view.table {
            return Err(Error::ForeignTable { table: TABLE, found: found.clone() });
        }
        if !view.problems.is_empty() {
            tracing::warn!(
                "in table inet {TABLE}, what the agent does not recognise: {}",
                view.problems.join("; ")
            );
        }
        tracing::info!(
            "adopted table inet {TABLE}: {:?}, {} sets, {} rules, {} isolated pods, fixed chains {}",
            view.table,
            view.ruleset.sets.len(),
            view.ruleset.rule_count(),
            view.ruleset.egress.len() + view.ruleset.ingress.len(),
            if view.fixed_ok { "intact" } else { "to be rebuilt" }
        );
        // The IR is not kept in the kernel: the next apply renders it and diffs against what
        // was found, so only what differs is written.
        self.renderer = Renderer::new(Ir::default())?;
        self.actual = Some(view);
        self.unknown = false;
        Ok(Ir::default())
    }

    fn drift(&mut self, expected: &Ir) -> Result<Vec<Drift>> {
        let view = self.read()?;
        let want = self.renderer.ruleset();
        let mut out = Vec::new();
        if view.ruleset.sets != want.sets {
            out.push(Drift::Sets);
        }
        if (&view.ruleset.chains, &view.ruleset.egress, &view.ruleset.ingress)
            != (&want.chains, &want.egress, &want.ingress)
            || !view.problems.is_empty()
            || self.renderer.ir() != expected
        {
            out.push(Drift::Rules);
        }
        if view.table != TableState::Ours || !view.fixed_ok {
            out.push(Drift::Hooks);
        }
        Ok(out)
    }

    fn apply(&mut self, delta: &Delta) -> Result<()> {
        if self.unknown {
            // A delta is relative to what the kernel holds; that is not known here.
            return Err(Error::Unsupported(
                "the nftables state is unknown (a start or a failed apply): adopt() reads it first".into(),
            ));
        }
        let result = match self.actual.take() {
            Some(view) => {
                let mut ir = self.renderer.ir().clone();
                delta.apply(&mut ir);
                let next = Renderer::new(ir)?;
                let batch = match self.batch_from(&view, next.ruleset()) {
                    Ok(b) => b,
                    Err(e) => {
                        self.actual = Some(view);
                        return Err(e);
                    }
                };
                let result = self.commit(&batch);
                match result {
                    Ok(()) => self.renderer = next,
                    Err(_) => self.actual = Some(view),
                }
                result
            }
            None => {
                let changes = self.renderer.apply(delta)?;
                let mut batch = Batch::new();
                self.encoder(&mut batch).ops(&changes);
                self.commit(&batch)
            }
        };
        if result.is_err() {
            // The renderer may have moved on without the kernel: start over from a read.
            self.unknown = true;
        }
        result
    }

    fn admit(&mut self, ips: &[IpAddr]) -> Result<()> {
        // Read what is held first (a dump costs microseconds; a refused transaction costs the
        // kernel an RCU grace period, milliseconds), and remove only that.
        for attempt in 0..2 {
            let held = self.held()?;
            let go: BTreeSet<Ipv4Addr> = ips
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(a) if held.contains(a) => Some(*a),
                    _ => None,
                })
                .collect();
            if go.is_empty() {
                return Ok(());
            }
            let mut batch = Batch::new();
            self.encoder(&mut batch).elems(HOLD, true, &Elems::Addrs(go));
            match self.commit(&batch) {
                // The CNI let one go meanwhile (its DEL): read again.
                Err(Error::Nft(e)) if e.errno() == Some(nfnl::error::ENOENT) && attempt == 0 => continue,
                other => return other,
            }
        }
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        let view = self.read()?;
        match view.table {
            TableState::Missing => {}
            TableState::Foreign(found) => {
                tracing::warn!("table inet {TABLE} was not made by azure-npm ({found}); left alone");
            }
            _ => {
                let mut batch = Batch::new();
                batch.add(
                    msg::DELTABLE,
                    FAMILY,
                    false,
                    &Table::named(TABLE),
                    format!("deleting table inet {TABLE}"),
                );
                self.commit(&batch)?;
            }
        }
        self.renderer = Renderer::new(Ir::default())?;
        self.unknown = true;
        Ok(())
    }

    fn installed(&self) -> Installed {
        let rs = self.renderer.ruleset();
        // The fixed chains' rules, counted once (asked at every program, for the metrics).
        static FIXED: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let fixed = *FIXED.get_or_init(|| fixed_chains().iter().map(|(_, _, r)| r.len()).sum());
        // The hold set and the two maps are the agent's too.
        Installed { rules: rs.rule_count() + fixed, sets: rs.sets.len() + 3, entries: rs.element_count() }
    }

    fn explain(&mut self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Result<KernelTrace> {
        let view = self.read()?;
        let trace = eval::evaluate(&view.ruleset, &view.hold, &|_| false, src, dst, protocol, port);
        let wired = view.table == TableState::Ours && view.fixed_ok;
        let mut problems = view.problems.clone();
        if !wired {
            problems
                .push(format!("table inet {TABLE} is {:?} and its fixed chains are not intact", view.table));
        }
        Ok(KernelTrace { backend: "nftables", allowed: trace.allowed || !wired, trace, wired, problems })
    }
}
