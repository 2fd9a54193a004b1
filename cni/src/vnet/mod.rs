//! azure-vnet: the CNI network plugin that puts pods directly on the VNet (bridge mode).
//!
//! ```text
//! ADD: config ─▶ bridge::ensure (enslave master, move its addresses/routes; once per node)
//!        ─▶ IPAM ADD (exec) ─▶ veth (peer born in the pod netns) ─▶ pod address + routes
//!        ─▶ host side on the bridge ─▶ SNAT (once per subnet) ─▶ port mappings ─▶ record
//!      any failure undoes the completed steps, newest first
//! DEL: veth ─▶ port mappings ─▶ record ─▶ IPAM DEL   (each tolerant of "already gone")
//! ```
//! Netlink lives in `netlink.rs`; iptables rendering is pure in `iptables.rs`.

pub mod bridge;
pub mod config;
pub mod delegate;
pub mod iptables;
pub mod names;
pub mod netlink;
pub mod plugin;
pub mod state;

pub use plugin::VnetPlugin;
