//! Benchmarks that print figures and never assert them. Each compares our plugin against
//! Debian's reference plugin measured in the same run, so the figure that matters is the ratio.
//!
//! - `ipam-bench`: azure-vnet-ipam vs host-local, same pool size.
//! - `vnet-bench`: azure-vnet + azure-vnet-ipam vs bridge + host-local, real pod namespaces.
//! - `policy-bench`: the compiler at scale (full compile, pod events, memory).
//! - `npm-bench`: the agent programming a real kernel vs the raw restore of the same state.

pub mod args;
pub mod cluster;
pub mod exec;
pub mod node;
pub mod stats;
