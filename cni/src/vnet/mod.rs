//! azure-vnet: the CNI network plugin that puts pods directly on the VNet, in bridge or
//! transparent mode.
//!
//! ```text
//! ADD: config ─▶ node::prepare (bridge: take over master + MAC translation table; transparent:
//!        forwarding; once per node) ─▶ IPAM ADD ─▶ mode::Driver::plan (pure: a list of steps)
//!        ─▶ endpoint record ─▶ step::apply_all on the kernel (undone newest first on failure)
//! DEL: re-plan from the record ─▶ step::undo_all (going on past failures) ─▶ record ─▶ IPAM DEL
//! CHECK: re-plan ─▶ every step must still hold      GC: undo what is not listed, orphans too
//! ```
//! The kernel sits behind `step::Kernel` (`kernel.rs`: rtnetlink in `netlink.rs`, nf_tables
//! elements in `nft.rs`, iptables rendering in `iptables.rs`), so plans and rollback are tested
//! against a recording fake.

pub mod bridge;
pub mod call;
pub mod config;
pub mod delegate;
pub mod hold;
pub mod iptables;
pub mod kernel;
pub mod mac;
pub mod mode;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod node;
pub mod plugin;
pub mod reaper;
pub mod records;
pub mod state;
pub mod step;
pub mod translation;

pub use plugin::VnetPlugin;
