//! The agent's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {program}: {reason}")]
    Exec { program: String, reason: String },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
    #[error("cannot tell the iptables backend from {0:?}; refusing to guess")]
    UnknownBackend(String),
    #[error("reading the cluster: {0}")]
    Source(String),
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Exec { .. } => "exec",
            Error::Failed { .. } => "command_failed",
            Error::UnknownBackend(_) => "backend",
            Error::Source(_) => "source",
            Error::Input(_) => "input",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
