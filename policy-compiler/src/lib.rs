//! policy-compiler: Kubernetes NetworkPolicy semantics, pure (no I/O, no async, no kernel).
//!
//! ```text
//! YAML / k8s-openapi objects ──convert──▶ model::Cluster ──semantic::evaluate──▶ Verdict
//!                                             │
//!                                             └──compile──▶ ir::Ir (sets + rules) ──compiled::evaluate──▶ Trace
//!                                                      └──incremental──▶ Delta per event
//! ```
//! The IR is dataplane-neutral: each backend (ipset + iptables, nftables, Windows HNS; in
//! `npm::dataplane`) renders it, applies it and reads the kernel back in its own terms.
//! `semantic` is the reference: it follows the API text (see `../shared/DESIGN.md`) rule by
//! rule and explains each verdict. `compiled` walks the IR as the kernel would; the two must
//! agree on every query (conformance cases and a property test).

pub mod compile;
pub mod compiled;
pub mod convert;
pub mod error;
pub mod incremental;
pub mod ir;
pub mod limits;
pub mod model;
pub mod reach;
pub mod selector;
pub mod semantic;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
