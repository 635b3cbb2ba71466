//! The `cluster` setting: the Redis server through which the machines of one
//! program meet, the program's namespace there, and this machine's name among
//! them; and the names of everything multinode keeps in that Redis. The URL may
//! hold a password: it is shown only through [`redact`].

use std::fmt;

use super::error::ConfigError;
pub(crate) use super::redis_url::redact;
use super::redis_url::{target, Target};

pub(crate) const ENV_CLUSTER: &str = "MULTINODE_CLUSTER";
pub(crate) const ENV_MACHINE: &str = "MULTINODE_MACHINE";
pub(crate) const ENV_NAMESPACE: &str = "MULTINODE_NAMESPACE";

/// The longest machine or namespace name.
const MAX_NAME: usize = 64;

/// Where the machines meet, and who this one is; every node gets it from the
/// master (over its private control socket).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Cluster {
    /// The Redis URL, password and all: never logged as it is.
    pub url: String,
    /// The program's name in that Redis: every key and channel carries it.
    pub namespace: String,
    pub machine: String,
}

/// The names of what the machines of one namespace keep in Redis.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl Cluster {
    /// `machine`'s claim on its name: the token of the master that holds it.
    pub fn claim_key(&self, machine: &str) -> String {
        format!("multinode:{}:machine:{machine}", self.namespace)
    }

    /// The live machines: a sorted set whose scores are when each claim
    /// lapses (Redis's clock, in ms).
    pub fn machines_key(&self) -> String {
        format!("multinode:{}:machines", self.namespace)
    }

    /// The live nodes, `MACHINE:ID`, scored as the machines are.
    pub fn nodes_key(&self) -> String {
        format!("multinode:{}:nodes", self.namespace)
    }

    /// The channel of every node of `machine` (broadcasts).
    pub fn machine_channel(&self, machine: &str) -> String {
        format!("multinode:{}:to:{machine}", self.namespace)
    }

    /// The channel of node `id` of `machine`.
    pub fn node_channel(&self, machine: &str, id: usize) -> String {
        format!("multinode:{}:to:{machine}:{id}", self.namespace)
    }

    /// Whether the URL names the sentinels of a primary, not one server.
    pub fn target(&self) -> Target {
        target(&self.url).unwrap_or(Target::Server)
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("machine", &self.machine)
            .finish()
    }
}

/// The cluster settings from the `cluster` and `namespace` keys and the
/// environment; `MULTINODE_CLUSTER` set empty turns a `cluster` key off.
pub(crate) fn resolve(
    (key, namespace): (Option<&str>, Option<&str>),
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
        Some(name) => return Err(ConfigError::env(ENV_MACHINE, &name, &name_rule("machine"))),
        None => default_name(),
    };
    let namespace = match (env(ENV_NAMESPACE), namespace) {
        (Some(name), _) if valid_name(&name) => name,
        (Some(name), _) => {
            return Err(ConfigError::env(
                ENV_NAMESPACE,
                &name,
                &name_rule("program"),
            ))
        }
        (None, Some(name)) if valid_name(name) => name.to_owned(),
        (None, Some(name)) => {
            let why = format!("{name:?}: {}", name_rule("program"));
            return Err(ConfigError::key("namespace", &why));
        }
        (None, None) => default_namespace(),
    };
    Ok(Some(Cluster {
        url,
        namespace,
        machine,
    }))
}

fn name_rule(what: &str) -> String {
    format!("expected 1 to {MAX_NAME} letters, digits, '.', '-' or '_' naming this {what}")
}

#[cfg(feature = "cluster")]
fn check_url(url: &str) -> Result<(), String> {
    if let Target::Sentinel(_) = target(url)? {
        return Ok(());
    }
    match redis::Client::open(url) {
        Ok(_) => Ok(()),
        // The client's message may quote the URL: only its kind is shown.
        Err(error) => Err(format!(
            "not a Redis URL (redis://, rediss:// for TLS, redis+unix://, \
             redis+sentinel://): {:?}",
            error.kind()
        )),
    }
}

#[cfg(not(feature = "cluster"))]
fn check_url(_url: &str) -> Result<(), String> {
    Err("needs multinode's `cluster` feature".to_owned())
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

/// The program's file name (what `ps` shows), in the characters a name may
/// hold: the same in every process and across upgrades of one program.
fn default_namespace() -> String {
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_ref()
        .and_then(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A binary replaced on disk reads as "name (deleted)".
    let name = name.trim_end_matches(" (deleted)");
    let name: String = name
        .chars()
        .map(|c| if valid_name(&c.to_string()) { c } else { '_' })
        .take(MAX_NAME)
        .collect();
    if name.is_empty() {
        "program".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_env::env;
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        let bad = resolve((Some("redis://:secret@[::1"), None), &env(&[])).unwrap_err();
        assert!(!bad.to_string().contains("secret"), "{bad}");
        assert!(bad.to_string().starts_with("`cluster` = "), "{bad}");
        let cluster = Cluster {
            url: "redis://:secret@host".into(),
            namespace: "app".into(),
            machine: "a".into(),
        };
        assert!(!format!("{cluster:?}").contains("secret"));
    }

    #[test]
    fn every_key_and_channel_carries_the_namespace() {
        let cluster = Cluster {
            url: "redis://h".into(),
            namespace: "shop".into(),
            machine: "a".into(),
        };
        for name in [
            cluster.claim_key("b"),
            cluster.machines_key(),
            cluster.nodes_key(),
            cluster.machine_channel("b"),
            cluster.node_channel("b", 3),
        ] {
            assert!(name.starts_with("multinode:shop:"), "{name}");
        }
        assert_eq!(cluster.node_channel("b", 3), "multinode:shop:to:b:3");
    }

    #[test]
    fn the_environment_sets_or_clears_the_cluster_and_names_the_machine() {
        assert!(resolve((None, None), &env(&[])).unwrap().is_none());
        let off = resolve((Some("redis://h"), None), &env(&[(ENV_CLUSTER, "")])).unwrap();
        assert!(off.is_none(), "MULTINODE_CLUSTER=\"\" turns it off");
        let bad_name = [(ENV_CLUSTER, "redis://h"), (ENV_MACHINE, "a b")];
        #[cfg(feature = "cluster")]
        {
            let named = [(ENV_CLUSTER, "redis://h"), (ENV_MACHINE, "eu-1")];
            let cluster = resolve((None, None), &env(&named)).unwrap().unwrap();
            assert_eq!(
                (cluster.url.as_str(), cluster.machine.as_str()),
                ("redis://h", "eu-1")
            );
            let err = resolve((None, None), &env(&bad_name))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("MULTINODE_MACHINE=\"a b\""), "{err}");
            let default = resolve((Some("redis://h"), None), &env(&[]))
                .unwrap()
                .unwrap();
            assert!(valid_name(&default.machine), "{}", default.machine);
            assert!(valid_name(&default.namespace), "{}", default.namespace);
            let keyed = resolve((Some("redis://h"), Some("shop")), &env(&[])).unwrap();
            assert_eq!(keyed.unwrap().namespace, "shop");
            let from_env = [(ENV_CLUSTER, "redis://h"), (ENV_NAMESPACE, "staging")];
            let cluster = resolve((None, Some("shop")), &env(&from_env)).unwrap();
            assert_eq!(cluster.unwrap().namespace, "staging", "the variable wins");
            let bad = [(ENV_CLUSTER, "redis://h"), (ENV_NAMESPACE, "a:b")];
            let err = resolve((None, None), &env(&bad)).unwrap_err().to_string();
            assert!(err.starts_with("MULTINODE_NAMESPACE=\"a:b\""), "{err}");
            let err = resolve((Some("redis://h"), Some("")), &env(&[])).unwrap_err();
            assert!(err.to_string().starts_with("`namespace` = "), "{err}");
            for url in [
                "rediss://:pw@h:6380",
                "redis+unix:///tmp/r.sock",
                "redis://h/3",
                "redis+sentinel://s1:26379,s2:26379/main",
            ] {
                assert!(resolve((Some(url), None), &env(&[])).is_ok(), "{url}");
            }
        }
        #[cfg(not(feature = "cluster"))]
        {
            let err = resolve((None, None), &env(&bad_name))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`cluster` feature"), "{err}");
        }
    }
}
