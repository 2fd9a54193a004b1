//! The agent's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Programming or reading the kernel.
    #[error(transparent)]
    Dataplane(#[from] dataplane::Error),
    #[error("reading the cluster: {0}")]
    Source(String),
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Dataplane(e) => e.metric_label(),
            Error::Source(_) => "source",
            Error::Input(_) => "input",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
