//! Why a process could not start its body.

/// Why a process could not start its body: one line, and its exit code.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    /// Bad configuration or environment: exit code 2.
    #[error("{0}")]
    Config(String),
    /// The system refused something (the port is taken, say): exit code 1.
    #[error("{what}: {why}")]
    System { what: String, why: String },
}

impl StartError {
    pub(super) fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::System { .. } => 1,
        }
    }

    pub(super) fn system(what: &str, error: impl std::fmt::Display) -> Self {
        StartError::System {
            what: what.to_owned(),
            why: error.to_string(),
        }
    }
}
