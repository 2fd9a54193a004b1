//! nfnl: the kernel's netfilter netlink interface (nf_tables and ipset), spoken directly.
//!
//! ```text
//! objects (Table, Chain, Set, Elem, Rule + Expr) ──encode──▶ Batch ──Socket::commit──▶ kernel
//!                                                  (one transaction: all or nothing)
//! kernel ──Socket::dump──▶ messages ──decode──▶ objects
//! ```
//! Encoding and decoding are pure and unit-tested without a kernel; `Socket` only does I/O.
//! Everything the kernel sends is parsed strictly: malformed input is an error, never a panic
//! (fuzzed in `fuzz/`). Written from the kernel's UAPI headers (`linux/netlink.h`,
//! `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`); no GPL library is linked, so
//! the binaries stay MIT.

pub mod batch;
pub mod conntrack;
pub mod error;
pub mod expr;
pub mod object;
pub mod socket;
pub mod wire;

pub use batch::Batch;
pub use error::{Error, Result};
pub use expr::{Expr, Verdict};
pub use object::{Chain, Data, Elem, Hook, Rule, Set, Table};
pub use socket::Socket;

/// Address families of nf_tables tables (`NFPROTO_*`).
pub mod family {
    pub const INET: u8 = 1;
    pub const IPV4: u8 = 2;
    pub const BRIDGE: u8 = 7;
}
