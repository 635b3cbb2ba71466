//! HTTPS for `http::serve` (the `tls` feature): each node makes its rustls
//! configuration from the PEM files when it starts (the master's own node
//! again at each reload), with ALPN `h2` and `http/1.1`, and encrypts its
//! session tickets with the keys the master hands every node.

pub(crate) mod ticketer;

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::{Tickets, TlsFiles};
use crate::control::tickets::{TicketKey, TicketKeys};
use ticketer::Ticketer;

/// One node's TLS: what it accepts connections with now.
#[derive(Clone)]
pub(crate) struct Tls {
    files: TlsFiles,
    config: Arc<RwLock<Arc<ServerConfig>>>,
    /// The master's keys; `None` with per-node keys.
    ticketer: Option<Ticketer>,
}

impl Tls {
    /// Reads `files` and makes the configuration; `keys` are the master's
    /// (none: this node makes its own).
    pub fn start(files: &TlsFiles, keys: Option<&TicketKeys>) -> Result<Tls, String> {
        let ticketer = match (files.tickets, keys) {
            (Tickets::Shared, Some(keys)) => Some(Ticketer::new(keys, files.rotate)),
            _ => None,
        };
        let config = server_config(files, ticketer.as_ref())?;
        Ok(Tls {
            files: files.clone(),
            config: Arc::new(RwLock::new(Arc::new(config))),
            ticketer,
        })
    }

    /// Reads the files again (a reload of the master's own node).
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files, self.ticketer.as_ref())?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Takes the keys after a rotation.
    pub fn set_keys(&self, keys: &TicketKeys) {
        if let Some(ticketer) = &self.ticketer {
            ticketer.set(keys);
        }
    }

    /// What the next connection is accepted with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(config.clone())
    }
}

/// The files, never the keys.
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .field("tickets", &self.files.tickets)
            .finish_non_exhaustive()
    }
}

/// Whether `files` make a configuration: one line naming the file if not.
pub(crate) fn check(files: &TlsFiles) -> Result<(), String> {
    server_config(files, None).map(drop)
}

/// The first keys of a master, unless every node keeps its own.
pub(crate) fn first_keys(files: &TlsFiles) -> Result<Option<TicketKeys>, String> {
    Ok(match files.tickets {
        Tickets::Shared => Some(TicketKeys {
            current: ticketer::new_key()?,
            previous: None,
        }),
        Tickets::PerNode => None,
    })
}

/// A new key for a rotation.
pub(crate) fn next_key() -> Result<TicketKey, String> {
    ticketer::new_key()
}

fn server_config(files: &TlsFiles, ticketer: Option<&Ticketer>) -> Result<ServerConfig, String> {
    let (cert, key) = (&files.cert, &files.key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "the certificate {} holds no PEM certificate",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "the private key {} does not go with the certificate {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = match ticketer {
        Some(ticketer) => Arc::new(ticketer.clone()),
        None => rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS: {e}"))?,
    };
    Ok(config)
}
