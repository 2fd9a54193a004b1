//! dataplane: the seam between azure-npm and the kernel. The agent hands compiler deltas
//! (dataplane-neutral IR) to a backend; each backend owns its rendering, its apply and its
//! read-back:
//!
//! - `iptables`: ipset + iptables-restore scripts (the tools' text), read back with `ipset save`
//!   and `iptables-save`;
//! - `nftables`: one table of the agent's own, programmed over netlink, one transaction per
//!   apply, read back by netlink dumps;
//! - `hns`: the Windows HNS ACL rendering (render only; no Windows agent yet).
//!
//! The agent never knows a backend's hooks, chains or counts: it asks.

pub mod choice;
pub mod error;
pub mod exec;
pub mod hns;
pub mod iptables;
pub mod nftables;

use std::net::IpAddr;

use policy_compiler::compiled::Trace;
use policy_compiler::incremental::Delta;
use policy_compiler::ir::Ir;
use policy_compiler::model::Protocol;
use serde::Serialize;

pub use crate::error::{Error, Result};

/// What a backend holds in the kernel, in its own terms (for metrics and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Installed {
    pub rules: usize,
    pub sets: usize,
    /// Set members (ipset entries, or nftables elements).
    pub entries: usize,
}

/// What differs between the kernel and what the agent programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    /// A set or its members.
    Sets,
    /// The agent's rules or chains.
    Rules,
    /// The hooks that send traffic to the agent's rules.
    Hooks,
}

impl Drift {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Drift::Sets => "sets",
            Drift::Rules => "rules",
            Drift::Hooks => "hooks",
        }
    }
}

/// A verdict from the kernel's actual state.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTrace {
    /// Which backend's state was read.
    pub backend: &'static str,
    pub allowed: bool,
    pub trace: Trace,
    /// Traffic reaches the agent's rules (hooks and entry intact); when not, the kernel lets
    /// everything through and `allowed` says so.
    pub wired: bool,
    /// What the backend found of the agent's that does not read as anything it writes.
    pub problems: Vec<String>,
}

pub trait Dataplane {
    /// The backend's name: `iptables` or `nftables`.
    fn name(&self) -> &'static str;
    /// Reads the kernel and returns the IR it is known to hold; the next delta applies on top
    /// of it. What the backend cannot vouch for is left out, so the next apply rewrites it.
    fn adopt(&mut self) -> Result<Ir>;
    /// Reads the kernel and says how it differs from `expected` (the IR last programmed).
    fn drift(&mut self, expected: &Ir) -> Result<Vec<Drift>>;
    /// Moves the kernel from the IR it holds to that IR with `delta` applied, such that no
    /// state in between (nor after a failure) allows more than the old or the new one.
    fn apply(&mut self, delta: &Delta) -> Result<()>;
    /// Lets traffic of these pods' addresses through (the CNI held them until the agent had
    /// programmed the pods; see `iptables::render::HOLD_SET`). Addresses not held are fine.
    fn admit(&mut self, ips: &[IpAddr]) -> Result<()>;
    /// Removes everything the backend owns.
    fn cleanup(&mut self) -> Result<()>;
    /// What the backend holds now.
    fn installed(&self) -> Installed;
    /// The kernel's verdict on one packet, from its live state.
    fn explain(&mut self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Result<KernelTrace>;
}

impl Dataplane for Box<dyn Dataplane> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn adopt(&mut self) -> Result<Ir> {
        (**self).adopt()
    }
    fn drift(&mut self, expected: &Ir) -> Result<Vec<Drift>> {
        (**self).drift(expected)
    }
    fn apply(&mut self, delta: &Delta) -> Result<()> {
        (**self).apply(delta)
    }
    fn admit(&mut self, ips: &[IpAddr]) -> Result<()> {
        (**self).admit(ips)
    }
    fn cleanup(&mut self) -> Result<()> {
        (**self).cleanup()
    }
    fn installed(&self) -> Installed {
        (**self).installed()
    }
    fn explain(&mut self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> Result<KernelTrace> {
        (**self).explain(src, dst, protocol, port)
    }
}

/// IPv4 members of an IR (what the IPv4 dataplanes write).
pub fn v4_members(ir: &Ir) -> usize {
    ir.sets.values().map(|s| s.members.iter().filter(|m| m.is_v4()).count()).sum()
}

/// Opens the chosen backend.
pub fn open(backend: choice::Backend, exec: Box<dyn exec::Exec>) -> Result<Box<dyn Dataplane>> {
    Ok(match backend {
        choice::Backend::Nftables => Box::new(nftables::Nftables::new()?),
        choice::Backend::Iptables(v) => Box::new(iptables::Iptables::for_variant(exec, v)),
    })
}

/// The backend not chosen, when it left state of the agent's behind (after a switch of
/// backend): to be cleaned up once the chosen one has programmed.
pub fn leftovers(
    chosen: choice::Backend,
    evidence: &choice::Evidence,
    exec: Box<dyn exec::Exec>,
) -> Option<Box<dyn Dataplane>> {
    match chosen {
        choice::Backend::Nftables => {
            let mut other = iptables::Iptables::for_variant(exec, evidence.variant()?);
            let view = other.read().ok()?;
            (!view.ir.sets.is_empty() || !view.chains.is_empty() || !view.jumps.is_empty())
                .then(|| Box::new(other) as Box<dyn Dataplane>)
        }
        choice::Backend::Iptables(_) => {
            let mut other = nftables::Nftables::new().ok()?;
            let table = other.read().ok()?.table;
            matches!(table, nftables::read::TableState::Ours | nftables::read::TableState::Older(_))
                .then(|| Box::new(other) as Box<dyn Dataplane>)
        }
    }
}
