//! policy-compiler: Namespaces, Pods and NetworkPolicies in, IP sets and ordered rules out.
//!
//! Not built yet; see issue 4. The crate exists so the workspace layout is the final one.
