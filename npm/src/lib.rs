//! azure-npm: the Network Policy Manager agent (watch → compile → program the kernel).
//!
//! ```text
//! kube / dir: source ──Update──▶ agent (policy_compiler: compile, events → deltas)
//!                                  └──▶ dataplane::Dataplane (iptables | nftables) ──▶ kernel
//!                                  └──▶ metrics (/metrics, /node-metrics, /cluster-metrics, /readyz)
//! YAML snapshot ──policy_compiler::snapshot──▶ Cluster ──▶ debug::{reachability, explain, render}
//! ```

pub mod agent;
pub mod backend;
pub mod cli;
pub mod debug;
pub mod error;
pub mod metrics;
pub mod source;

/// The backends (a crate of their own, without the agent's Kubernetes dependencies).
pub use ::dataplane;
