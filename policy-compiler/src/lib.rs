//! policy-compiler: Kubernetes NetworkPolicy semantics, pure (no I/O, no async, no kernel).
//!
//! ```text
//! YAML / k8s-openapi objects ──convert──▶ model::Cluster ──semantic::evaluate──▶ Verdict
//!                                             │
//!                                             └──(coming: compile ──▶ IR sets + rules ──▶ compiled evaluator,
//!                                                  ipset/iptables-restore and HNS rendering, deltas)
//! ```
//! `semantic` is the reference: it follows the API text (see `../shared/DESIGN.md`) rule by
//! rule and explains each verdict.

pub mod convert;
pub mod model;
pub mod selector;
pub mod semantic;
pub mod snapshot;
