//! The seam between the agent and the kernel: the agent hands compiler deltas to a dataplane.
//! Linux (ipset + iptables restore files) is here; a recording fake backs the unit tests.

pub mod exec;
pub mod linux;

use policy_compiler::incremental::Delta;
use policy_compiler::readback::KernelView;

use crate::error::Result;

pub trait Dataplane {
    /// What the kernel holds of the agent's state.
    fn read(&mut self) -> Result<KernelView>;
    /// Applies a delta in steps (narrowing set changes, chains, widening set changes, destroys)
    /// such that no state in between allows more than the old or the new one.
    fn apply(&mut self, delta: &Delta) -> Result<()>;
    /// Lets traffic of these pods' addresses through (the CNI held them until the agent had
    /// programmed the pods; see `render::HOLD_SET`). Addresses not held are fine.
    fn admit(&mut self, ips: &[std::net::IpAddr]) -> Result<()>;
    /// Removes everything the agent owns.
    fn cleanup(&mut self) -> Result<()>;
}
