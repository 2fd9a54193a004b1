//! azure-vnet-ipam: hands out the node's secondary VNet addresses to pods.
//!
//! ```text
//! config ─▶ IpamConfig ─▶ fetch (nmagent XML | interfaces JSON) ─▶ select_pool (match NIC by MAC)
//!                                                                   │
//!   store: lock ─▶ load State ─▶ allocator::{refresh, reserve, release, collect_garbage} ─▶ save
//! ```
//! The source is asked outside the lock and at most every `refreshIntervalMs`; the lock covers
//! only the read-modify-write of the state file.

pub mod allocator;
pub mod config;
pub mod http;
pub mod interfaces_json;
pub mod nic;
pub mod nmagent;
pub mod plugin;
pub mod source;
pub mod state;

pub use plugin::IpamPlugin;
