//! Why a process could not start its body.

/// Why a process could not start its body: one line, and its exit code.
#[derive(Debug)]
pub(super) enum StartError {
    /// Bad configuration or environment: exit code 2.
    Config(String),
    /// The system refused something (the port is taken, say): exit code 1.
    System(String),
}

impl StartError {
    pub(super) fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::System(_) => 1,
        }
    }

    pub(super) fn system(what: &str, error: impl std::fmt::Display) -> Self {
        StartError::System(format!("{what}: {error}"))
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(line) | StartError::System(line) => f.write_str(line),
        }
    }
}
