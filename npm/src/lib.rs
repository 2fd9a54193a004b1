//! azure-npm: the Network Policy Manager agent (watch → compile → program ipset/iptables).
//!
//! ```text
//! YAML snapshot ──policy_compiler::snapshot──▶ Cluster ──▶ debug::{reachability, explain, render}
//! compiler deltas ──▶ dataplane::Dataplane (linux: ipset restore + iptables-restore)
//! dir: source ──▶ agent (compile, diff, apply) ──▶ dataplane
//! (coming: kube source, node view, metrics, drift repair)
//! ```

pub mod agent;
pub mod cli;
pub mod dataplane;
pub mod debug;
pub mod error;
pub mod metrics;
pub mod source;
