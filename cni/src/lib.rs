//! Azure's VNet CNI plugins for Linux, and the CNI protocol skeleton they share.
//!
//! ```text
//! runtime ──exec (CNI_* env, JSON on stdin)──▶ skel::run ──▶ Plugin::{add,del,check,status,gc}
//!                                                              │
//!   azure-vnet-ipam: ipam::IpamPlugin ── source (NMAgent XML over HTTP | interfaces JSON)
//!                                      ── allocator (pure) over state in store (flock + rename)
//! ```
//! Results and errors go back on stdout in the shape of the config's `cniVersion`.

pub mod fields;
pub mod ipam;
pub mod logging;
pub mod runtime;
pub mod skel;
pub mod store;
pub mod vnet;
