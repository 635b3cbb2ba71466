//! Recycling: when a node is replaced for what it has become, a worker that
//! served `max_requests` (plus a jitter of its own), or whose resident memory
//! stayed over `max_memory` for `max_memory_window`; `max_memory_hard` kills
//! at once. The keys, their `Builder` methods and `MULTINODE_` variables.

use std::time::Duration;

use super::builder::{Builder, RecyclingKeys as Keys};
use super::error::ConfigError;
use super::ranges;

pub(crate) const ENV_MAX_REQUESTS: &str = "MULTINODE_MAX_REQUESTS";
pub(crate) const ENV_MAX_REQUESTS_JITTER: &str = "MULTINODE_MAX_REQUESTS_JITTER";
pub(crate) const ENV_MAX_MEMORY: &str = "MULTINODE_MAX_MEMORY";
pub(crate) const ENV_MAX_MEMORY_WINDOW: &str = "MULTINODE_MAX_MEMORY_WINDOW";
pub(crate) const ENV_MAX_MEMORY_HARD: &str = "MULTINODE_MAX_MEMORY_HARD";

/// How long memory must stay over `max_memory` by default: a spike is not a leak.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// The recycling settings a master runs with; all off by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Recycling {
    pub max_requests: Option<u64>,
    pub jitter: u64,
    pub max_memory: Option<u64>,
    pub window: Duration,
    pub hard: Option<u64>,
}

impl Recycling {
    /// Whether anything is to be watched.
    pub fn is_on(&self) -> bool {
        self.max_requests.is_some() || self.max_memory.is_some() || self.hard.is_some()
    }
}

impl Builder {
    /// A worker that has served this many requests is replaced the rolling
    /// way: its replacement starts, and once it is ready the old one drains
    /// (gunicorn's `max_requests`), one node at a time. Counted per
    /// incarnation; off by default. Overridden by `MULTINODE_MAX_REQUESTS`.
    /// The master's own node (node 0, unless `master_listen = false`) is
    /// never recycled.
    ///
    /// ```
    /// let builder = multinode::Builder::new().max_requests(100_000).max_requests_jitter(10_000);
    /// # let _ = builder;
    /// ```
    pub fn max_requests(mut self, requests: u64) -> Self {
        self.recycling.max_requests = Some(requests);
        self
    }

    /// Up to this many requests more than `max_requests`, drawn for each
    /// incarnation, so that nodes started together do not come due together
    /// (and if they do, they are still recycled one at a time). Overridden by
    /// `MULTINODE_MAX_REQUESTS_JITTER`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().max_requests(1000).max_requests_jitter(100);
    /// # let _ = builder;
    /// ```
    pub fn max_requests_jitter(mut self, requests: u64) -> Self {
        self.recycling.jitter = requests;
        self
    }

    /// A worker whose resident memory stays over this many bytes for
    /// [`max_memory_window`](Self::max_memory_window) is replaced the rolling
    /// way, with no request cut. The attribute and `MULTINODE_MAX_MEMORY`
    /// also take sizes such as `"512M"` or `"2G"` (powers of 1024). Off by
    /// default.
    ///
    /// ```
    /// let builder = multinode::Builder::new().max_memory(512 * 1024 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.recycling.max_memory = Some(bytes);
        self
    }

    /// How long memory must stay over `max_memory` before the node is
    /// recycled (default 10 s): a spike is not a leak. Overridden by
    /// `MULTINODE_MAX_MEMORY_WINDOW` (seconds).
    ///
    /// ```
    /// let builder = multinode::Builder::new()
    ///     .max_memory(512 << 20)
    ///     .max_memory_window(std::time::Duration::from_secs(30));
    /// # let _ = builder;
    /// ```
    pub fn max_memory_window(mut self, window: Duration) -> Self {
        self.recycling.window = Some(window);
        self
    }

    /// A worker whose resident memory is over this many bytes is killed at
    /// once (SIGKILL, logged with its figure) and started again: what is in
    /// flight on it is lost, as in a crash. For a leak faster than a rolling
    /// replacement. Off by default; `MULTINODE_MAX_MEMORY_HARD`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().max_memory(512 << 20).max_memory_hard(1 << 30);
    /// # let _ = builder;
    /// ```
    pub fn max_memory_hard(mut self, bytes: u64) -> Self {
        self.recycling.hard = Some(bytes);
        self
    }
}

/// The recycling settings: the environment over the keys.
pub(crate) fn resolve(
    keys: &Keys,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Recycling, ConfigError> {
    let count = |var: &str, key: &str, value: Option<u64>, least: u64| match env(var) {
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(n) if n >= least => Ok(Some(n)),
            _ => {
                let why = format!("expected a whole number of requests, at least {least}");
                Err(ConfigError::env(var, &text, &why))
            }
        },
        None if value.is_some_and(|n| n < least) => {
            let why = format!("0: expected at least {least}");
            Err(ConfigError::key(key, &why))
        }
        None => Ok(value),
    };
    let size = |var: &str, key: &str, value: Option<u64>| match env(var) {
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => match ranges::bytes(text.trim()) {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(ConfigError::env(var, &text, ranges::SIZE)),
        },
        None if value == Some(0) => Err(ConfigError::key(key, &format!("0: {}", ranges::SIZE))),
        None => Ok(value),
    };
    let max_requests = count(ENV_MAX_REQUESTS, "max_requests", keys.max_requests, 1)?;
    let jitter = count(
        ENV_MAX_REQUESTS_JITTER,
        "max_requests_jitter",
        Some(keys.jitter),
        0,
    )?;
    let max_memory = size(ENV_MAX_MEMORY, "max_memory", keys.max_memory)?;
    let hard = size(ENV_MAX_MEMORY_HARD, "max_memory_hard", keys.hard)?;
    let window = match env(ENV_MAX_MEMORY_WINDOW) {
        Some(text) => ranges::seconds(&text)
            .filter(|d| ranges::shutdown_timeout(ranges::millis(*d)))
            .ok_or_else(|| {
                let why = "expected seconds, at most a week";
                ConfigError::env(ENV_MAX_MEMORY_WINDOW, &text, why)
            })?,
        None => keys.window.unwrap_or(DEFAULT_WINDOW),
    };
    if let (Some(soft), Some(ceiling)) = (max_memory, hard) {
        if ceiling < soft {
            let why = format!("{ceiling} bytes: expected at least max_memory's {soft}");
            return Err(match env(ENV_MAX_MEMORY_HARD) {
                Some(text) => ConfigError::env(ENV_MAX_MEMORY_HARD, &text, &why),
                None => ConfigError::key("max_memory_hard", &why),
            });
        }
    }
    Ok(Recycling {
        max_requests,
        jitter: jitter.unwrap_or(0),
        max_memory,
        window,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_env::env as env_of;

    fn keys() -> Keys {
        Keys::default()
    }

    #[test]
    fn off_by_default() {
        let recycling = resolve(&keys(), &env_of(&[])).unwrap();
        assert!(!recycling.is_on());
        assert_eq!(recycling.window, DEFAULT_WINDOW);
    }

    #[test]
    fn the_environment_overrides_the_keys() {
        let mut keys = keys();
        keys.max_requests = Some(10);
        let env = env_of(&[
            (ENV_MAX_REQUESTS, "500"),
            (ENV_MAX_REQUESTS_JITTER, "50"),
            (ENV_MAX_MEMORY, "64M"),
            (ENV_MAX_MEMORY_WINDOW, "2.5"),
            (ENV_MAX_MEMORY_HARD, "1G"),
        ]);
        let recycling = resolve(&keys, &env).unwrap();
        assert_eq!(recycling.max_requests, Some(500));
        assert_eq!(recycling.jitter, 50);
        assert_eq!(recycling.max_memory, Some(64 << 20));
        assert_eq!(recycling.window, Duration::from_millis(2500));
        assert_eq!(recycling.hard, Some(1 << 30));
    }

    #[test]
    fn bad_values_name_the_variable_or_the_key() {
        let cases = [
            (ENV_MAX_REQUESTS, "0"),
            (ENV_MAX_REQUESTS, "many"),
            (ENV_MAX_MEMORY, "12Q"),
            (ENV_MAX_MEMORY_WINDOW, "-1"),
        ];
        for (var, value) in cases {
            let error = resolve(&keys(), &env_of(&[(var, value)])).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!("{var}=\"{value}\"")),
                "{error}"
            );
        }
        let mut bad = keys();
        bad.max_memory = Some(2 << 20);
        bad.hard = Some(1 << 20);
        let error = resolve(&bad, &env_of(&[])).unwrap_err().to_string();
        assert!(error.starts_with("`max_memory_hard` = "), "{error}");
    }
}
