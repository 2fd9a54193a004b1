//! azure-npm: the Network Policy Manager agent (watch → compile → program ipset/iptables).
//!
//! ```text
//! YAML snapshot ──policy_compiler::snapshot──▶ Cluster ──▶ debug::{reachability, explain, render}
//! compiler deltas ──▶ dataplane::Dataplane (linux: ipset restore + iptables-restore)
//! (coming: kube / dir: sources, the sync loop, metrics)
//! ```

pub mod dataplane;
pub mod debug;
pub mod error;
