//! The crate's one error type. Every variant maps to a CNI error code (spec codes 1–11,
//! plugin-specific codes 100 and up, listed in `docs/cni-config.md`).

use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    #[error("unsupported field: {0}")]
    UnsupportedField(String),
    #[error("unknown container: {0}")]
    UnknownContainer(String),
    #[error("invalid environment variable {name}: {reason}")]
    InvalidEnv { name: &'static str, reason: String },
    #[error("I/O failure: {0}")]
    Io(String),
    #[error("decoding failure: {0}")]
    Decode(String),
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    #[error("try again later: {0}")]
    TryAgainLater(String),
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    #[error("state file {path} is corrupt: {reason}")]
    CorruptState { path: String, reason: String },
    #[error("address pool exhausted: {0}")]
    PoolExhausted(String),
    #[error("requested address unavailable: {0}")]
    AddressUnavailable(String),
    /// A requested address the (possibly stale) pool does not list: code 102 like the rest of
    /// `AddressUnavailable`, its own variant so IPAM can retry on a fresh pool by type.
    #[error("requested address unavailable: {0}")]
    NotInPool(String),
    #[error("host agent refused the query: {0}")]
    SourceRefused(String),
    #[error("malformed answer from the address source: {0}")]
    BadSourceAnswer(String),
    #[error("no local network interface matches: {0}")]
    NoMatchingNic(String),
    #[error("master interface unavailable: {0}")]
    MasterMissing(String),
    #[error("IPAM plugin not found: {0}")]
    DelegateMissing(String),
    /// An error returned by a delegated plugin, passed on with its own code.
    #[error("{plugin}: {msg}")]
    Delegate { plugin: String, code: u32, msg: String },
    #[error("address already in use on this node: {0}")]
    AddressInUse(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("iptables: {0}")]
    Iptables(String),
    #[error("CHECK found a difference: {0}")]
    Mismatch(String),
    #[error("address outside the VNet: {0}")]
    OutsideVnet(String),
    /// Teardown goes on past failures and reports them all; the code is the first one's.
    #[error("{} steps failed: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),
    /// nf_tables refused a request; `missing` when the table or map does not exist.
    #[error("nf_tables: {msg}")]
    Nft { missing: bool, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The CNI error code written to stdout.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) => 1,
            Error::UnsupportedField(_) => 2,
            Error::UnknownContainer(_) => 3,
            Error::InvalidEnv { .. } => 4,
            Error::Io(_) => 5,
            Error::Decode(_) => 6,
            Error::InvalidConfig(_) => 7,
            Error::TryAgainLater(_) => 11,
            Error::NotAvailable(_) => 50,
            Error::CorruptState { .. } => 100,
            Error::PoolExhausted(_) => 101,
            Error::AddressUnavailable(_) | Error::NotInPool(_) => 102,
            Error::SourceRefused(_) => 103,
            Error::BadSourceAnswer(_) => 104,
            Error::NoMatchingNic(_) => 105,
            Error::MasterMissing(_) => 110,
            Error::DelegateMissing(_) => 111,
            Error::Delegate { code, .. } => *code,
            Error::AddressInUse(_) => 113,
            Error::Netlink(_) => 114,
            Error::Iptables(_) => 115,
            Error::Mismatch(_) => 116,
            Error::OutsideVnet(_) => 117,
            Error::Nft { .. } => 118,
            Error::Several(all) => all.first().map_or(5, Error::code),
        }
    }

    /// `Ok` when nothing failed, the error itself when one did, `Several` otherwise.
    pub fn all(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// A hint for the operator, carried in the error JSON's `details`.
    pub fn details(&self) -> Option<String> {
        match self {
            Error::CorruptState { path, .. } => Some(format!(
                "the file was left untouched; move it aside (mv {path} {path}.bad), \
                 then run CNI GC (or delete and recreate the pods) so allocations are rebuilt"
            )),
            Error::TryAgainLater(_) => Some("transient; the runtime may retry".into()),
            _ => None,
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code(), "msg": self.to_string() });
        if let Some(d) = self.details() {
            v["details"] = d.into();
        }
        v
    }

    /// I/O error with the action and path that failed.
    pub fn io(action: &str, path: &std::path::Path, err: std::io::Error) -> Error {
        Error::Io(format!("{action} {}: {err}", path.display()))
    }
}
