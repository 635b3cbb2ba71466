//! A bad setting, named by its key or its environment variable.

/// A bad setting: one line naming the key or the variable, and why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// An environment variable's value.
    #[error("{var}={value:?}: {why}")]
    Env {
        var: String,
        value: String,
        why: String,
    },
    /// A key of the attribute (a `Builder` method).
    #[error("`{key}` = {why}")]
    Key { key: String, why: String },
}

impl ConfigError {
    pub(super) fn env(var: &str, value: &str, why: &str) -> Self {
        ConfigError::Env {
            var: var.to_owned(),
            value: value.to_owned(),
            why: why.to_owned(),
        }
    }

    pub(super) fn key(key: &str, why: &str) -> Self {
        ConfigError::Key {
            key: key.to_owned(),
            why: why.to_owned(),
        }
    }
}
