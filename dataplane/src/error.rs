//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {program}: {reason}")]
    Exec { program: String, reason: String },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
    #[error("cannot tell the iptables backend from {0:?}; refusing to guess")]
    UnknownBackend(String),
    /// A tool's output (or a saved copy of it) that is not in the tool's format.
    #[error("{tool} line {line} is not in its format: {text:?}")]
    KernelText { tool: &'static str, line: usize, text: String },
    /// Something the backend cannot do (a question it cannot answer, an IR it cannot express).
    #[error("{0}")]
    Unsupported(String),
    /// The kernel's nf_tables interface refused or failed.
    #[error("nftables: {0}")]
    Nft(#[from] nfnl::Error),
    /// A table with the agent's name that the agent did not make.
    #[error("table inet {table} exists and was not made by azure-npm ({found}); refusing to touch it (remove it, or run azure-npm with --dataplane iptables)")]
    ForeignTable { table: &'static str, found: String },
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Exec { .. } => "exec",
            Error::Failed { .. } => "command_failed",
            Error::UnknownBackend(_) => "backend",
            Error::KernelText { .. } => "kernel_text",
            Error::Unsupported(_) => "unsupported",
            Error::Nft(_) => "nftables",
            Error::ForeignTable { .. } => "foreign_table",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
