//! The `tls` setting: the certificate chain and private key (PEM files) that
//! `http::serve` speaks HTTPS with, and whether the nodes share their session
//! ticket keys.

use std::path::PathBuf;

use super::error::ConfigError;

pub(crate) const ENV_TLS_CERT: &str = "MULTINODE_TLS_CERT";
pub(crate) const ENV_TLS_KEY: &str = "MULTINODE_TLS_KEY";
pub(crate) const ENV_TLS_TICKETS: &str = "MULTINODE_TLS_TICKETS";
pub(crate) const ENV_TLS_ROTATE: &str = "MULTINODE_TLS_ROTATE_SECS";

/// How often the shared ticket keys change by default (Caddy: 12 h).
const ROTATE_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 60 * 60);

/// Where a node reads its certificate, each time it starts (so a reload or an
/// upgrade serves the files as they are then).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    pub tickets: Tickets,
    /// How often the master makes new ticket keys; the previous ones open
    /// tickets one period more.
    pub rotate: std::time::Duration,
}

/// Whose keys encrypt the session tickets.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Tickets {
    /// The master's, the same in every node: a client resumes on any node.
    Shared,
    /// Each node's own (rustls's default): a client resumes only on the node
    /// that issued its ticket.
    PerNode,
}

/// The TLS settings from the `tls_cert` and `tls_key` keys and the
/// environment; `MULTINODE_TLS_CERT` and `MULTINODE_TLS_KEY` set empty turn
/// the keys off.
pub(crate) fn resolve(
    (cert, key): (Option<&str>, Option<&str>),
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let pick = |var: &str, key: Option<&str>| match env(var) {
        Some(value) => (!value.trim().is_empty()).then(|| value.trim().to_owned()),
        None => key.filter(|k| !k.is_empty()).map(str::to_owned),
    };
    let (cert, key) = match (pick(ENV_TLS_CERT, cert), pick(ENV_TLS_KEY, key)) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(cert), None) => {
            let why = format!("a certificate needs its key: set {ENV_TLS_KEY} or `tls_key`");
            return Err(ConfigError::env(ENV_TLS_CERT, &cert, &why));
        }
        (None, Some(key)) => {
            let why = format!("a key needs its certificate: set {ENV_TLS_CERT} or `tls_cert`");
            return Err(ConfigError::env(ENV_TLS_KEY, &key, &why));
        }
    };
    if !cfg!(feature = "tls") {
        let why = "needs multinode's `tls` feature";
        return Err(ConfigError::env(ENV_TLS_CERT, &cert, why));
    }
    let tickets = match env(ENV_TLS_TICKETS).as_deref().map(str::trim) {
        None | Some("") | Some("shared") => Tickets::Shared,
        Some("node") => Tickets::PerNode,
        Some(other) => {
            let why = "expected \"shared\" (every node resumes every session) or \"node\"";
            return Err(ConfigError::env(ENV_TLS_TICKETS, other, why));
        }
    };
    let rotate = match env(ENV_TLS_ROTATE) {
        None => ROTATE_EVERY,
        Some(value) => match value.trim().parse::<u64>() {
            Ok(seconds) if (1..=7 * 24 * 3600).contains(&seconds) => {
                std::time::Duration::from_secs(seconds)
            }
            _ => {
                let why = "expected a whole number of seconds, 1 to a week";
                return Err(ConfigError::env(ENV_TLS_ROTATE, &value, why));
            }
        },
    };
    Ok(Some(TlsFiles {
        cert: cert.into(),
        key: key.into(),
        tickets,
        rotate,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_env::env;
    use super::*;

    #[test]
    fn a_certificate_and_its_key_come_together_and_the_environment_wins() {
        assert_eq!(resolve((None, None), &env(&[])).unwrap(), None);
        let lone = resolve((Some("c.pem"), None), &env(&[])).unwrap_err();
        assert!(
            lone.to_string().starts_with("MULTINODE_TLS_CERT=\"c.pem\""),
            "{lone}"
        );
        let off = [(ENV_TLS_CERT, ""), (ENV_TLS_KEY, "")];
        assert_eq!(resolve((Some("c"), Some("k")), &env(&off)).unwrap(), None);
        #[cfg(feature = "tls")]
        {
            let files = resolve((Some("c"), Some("k")), &env(&[(ENV_TLS_CERT, "e")]));
            let files = files.unwrap().unwrap();
            assert_eq!(
                (files.cert.to_str(), files.key.to_str()),
                (Some("e"), Some("k"))
            );
            assert_eq!(files.tickets, Tickets::Shared);
            assert_eq!(files.rotate, ROTATE_EVERY);
            let fast = [(ENV_TLS_ROTATE, "60")];
            let files = resolve((Some("c"), Some("k")), &env(&fast)).unwrap();
            assert_eq!(files.unwrap().rotate.as_secs(), 60);
            let zero = [(ENV_TLS_ROTATE, "0")];
            let err = resolve((Some("c"), Some("k")), &env(&zero)).unwrap_err();
            assert!(err
                .to_string()
                .starts_with("MULTINODE_TLS_ROTATE_SECS=\"0\""));
            let per_node = [(ENV_TLS_TICKETS, "node")];
            let files = resolve((Some("c"), Some("k")), &env(&per_node)).unwrap();
            assert_eq!(files.unwrap().tickets, Tickets::PerNode);
            let bad = [(ENV_TLS_TICKETS, "some")];
            let err = resolve((Some("c"), Some("k")), &env(&bad)).unwrap_err();
            assert!(err
                .to_string()
                .starts_with("MULTINODE_TLS_TICKETS=\"some\""));
        }
        #[cfg(not(feature = "tls"))]
        {
            let err = resolve((Some("c"), Some("k")), &env(&[])).unwrap_err();
            assert!(err.to_string().contains("`tls` feature"), "{err}");
        }
    }
}
