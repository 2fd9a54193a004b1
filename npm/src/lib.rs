//! azure-npm: the Network Policy Manager agent (watch → compile → program ipset/iptables).
//!
//! ```text
//! YAML snapshot ──policy_compiler::snapshot──▶ Cluster ──▶ debug::{reachability, explain}
//! (coming: kube / dir: sources ──▶ compiler deltas ──▶ Linux dataplane, metrics)
//! ```
//! Today: the `azure-npm debug` tools over YAML snapshots.

pub mod debug;
