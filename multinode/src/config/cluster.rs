//! The `cluster` setting: the Redis server through which the machines of one
//! program meet, and this machine's name among them. The URL may hold a
//! password: it is shown only through [`redact`].

use std::fmt;

use super::error::ConfigError;

pub(crate) const ENV_CLUSTER: &str = "MULTINODE_CLUSTER";
pub(crate) const ENV_MACHINE: &str = "MULTINODE_MACHINE";

/// The longest machine name.
const MAX_NAME: usize = 64;

/// Where the machines meet, and who this one is; every node gets it from the
/// master (over its private control socket).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Cluster {
    /// The Redis URL, password and all: never logged as it is.
    pub url: String,
    pub machine: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &redact(&self.url))
            .field("machine", &self.machine)
            .finish()
    }
}

/// The cluster settings from the `cluster` key and the environment;
/// `MULTINODE_CLUSTER` set empty turns a `cluster` key off.
pub(crate) fn resolve(
    key: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Cluster>, ConfigError> {
    let from_env = env(ENV_CLUSTER);
    let url = match from_env.as_deref().or(key) {
        Some(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => return Ok(None),
    };
    if let Err(why) = check_url(&url) {
        let shown = redact(&url);
        return Err(match from_env {
            Some(_) => ConfigError::env(ENV_CLUSTER, &shown, &why),
            None => ConfigError::key("cluster", &format!("{shown:?}: {why}")),
        });
    }
    let machine = match env(ENV_MACHINE) {
        Some(name) if valid_name(&name) => name,
        Some(name) => {
            let why = format!(
                "expected 1 to {MAX_NAME} letters, digits, '.', '-' or '_' naming this machine"
            );
            return Err(ConfigError::env(ENV_MACHINE, &name, &why));
        }
        None => default_name(),
    };
    Ok(Some(Cluster { url, machine }))
}

#[cfg(feature = "cluster")]
fn check_url(url: &str) -> Result<(), String> {
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        // The client's message may quote the URL: only its kind is shown.
        Err(error) => Err(format!(
            "not a Redis URL (redis://, rediss:// for TLS, redis+unix://): {:?}",
            error.kind()
        )),
    }
}

#[cfg(not(feature = "cluster"))]
fn check_url(_url: &str) -> Result<(), String> {
    Err("needs multinode's `cluster` feature".to_owned())
}

/// `url` with its password, if any, replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The host name and the master's pid: unique among the machines, and the
/// same in every process of this one (workers take it from the master).
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| if valid_name(&c.to_string()) { c } else { '-' })
        .take(MAX_NAME - 12)
        .collect();
    let host = if host.is_empty() {
        "machine".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact("rediss://user:secret@host"),
            "rediss://user:***@host"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact("redis+unix:///tmp/r.sock"),
            "redis+unix:///tmp/r.sock"
        );
        let bad = resolve(Some("redis://:secret@[::1"), &env(&[])).unwrap_err();
        assert!(!bad.to_string().contains("secret"), "{bad}");
        assert!(bad.to_string().starts_with("`cluster` = "), "{bad}");
        let cluster = Cluster {
            url: "redis://:secret@host".into(),
            machine: "a".into(),
        };
        assert!(!format!("{cluster:?}").contains("secret"));
    }

    #[test]
    fn the_environment_sets_or_clears_the_cluster_and_names_the_machine() {
        assert!(resolve(None, &env(&[])).unwrap().is_none());
        let off = resolve(Some("redis://h"), &env(&[(ENV_CLUSTER, "")])).unwrap();
        assert!(off.is_none(), "MULTINODE_CLUSTER=\"\" turns it off");
        let bad_name = [(ENV_CLUSTER, "redis://h"), (ENV_MACHINE, "a b")];
        #[cfg(feature = "cluster")]
        {
            let named = [(ENV_CLUSTER, "redis://h"), (ENV_MACHINE, "eu-1")];
            let cluster = resolve(None, &env(&named)).unwrap().unwrap();
            assert_eq!(
                (cluster.url.as_str(), cluster.machine.as_str()),
                ("redis://h", "eu-1")
            );
            let err = resolve(None, &env(&bad_name)).unwrap_err().to_string();
            assert!(err.starts_with("MULTINODE_MACHINE=\"a b\""), "{err}");
            let default = resolve(Some("redis://h"), &env(&[])).unwrap().unwrap();
            assert!(valid_name(&default.machine), "{}", default.machine);
            for url in [
                "rediss://:pw@h:6380",
                "redis+unix:///tmp/r.sock",
                "redis://h/3",
            ] {
                assert!(resolve(Some(url), &env(&[])).is_ok(), "{url}");
            }
        }
        #[cfg(not(feature = "cluster"))]
        {
            let err = resolve(None, &env(&bad_name)).unwrap_err().to_string();
            assert!(err.contains("`cluster` feature"), "{err}");
        }
    }
}
