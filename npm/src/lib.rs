//! azure-npm: the Network Policy Manager agent (watch → compile → program ipset/iptables).
//!
//! Not built yet; see issue 5. The crate exists so the workspace layout is the final one.
