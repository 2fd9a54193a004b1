//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket itself failed (open, send, receive).
    #[error("netfilter netlink socket: {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// Bytes from the kernel (or a file) that are not what the protocol allows.
    #[error("malformed netlink data: {0}")]
    Malformed(String),
    /// The kernel refused a request; `what` names it (and the element, when the kernel said
    /// which one).
    #[error("{what}: {} (errno {errno})", errno_text(*.errno))]
    Refused { what: String, errno: i32 },
    /// A listing the kernel marked inconsistent: the ruleset changed while it was read.
    #[error("the ruleset changed while it was listed")]
    Interrupted,
}

impl Error {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub fn malformed(what: impl Into<String>) -> Error {
        Error::Malformed(what.into())
    }
}

pub fn errno_text(errno: i32) -> String {
    let text = nix::errno::Errno::from_raw(errno).desc();
    match errno {
        // What nf_tables means by it.
        libc::ENFILE => format!("{text}: the set is full"),
        _ => text.to_string(),
    }
}

pub const ENOENT: i32 = libc::ENOENT;
pub const EEXIST: i32 = libc::EEXIST;
pub const EBUSY: i32 = libc::EBUSY;

pub type Result<T, E = Error> = std::result::Result<T, E>;
