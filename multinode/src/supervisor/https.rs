//! The master's side of HTTPS (the `tls` feature): the session-ticket keys it
//! makes, hands every node and rotates, and the check of the certificate
//! before a reload starts replacements that would read it.

use std::time::Duration;

use crate::config::TlsFiles;
use crate::control::identity::Identity;
use crate::control::tickets::TicketKeys;
use crate::tls::Tls;

pub(crate) struct Https {
    files: TlsFiles,
    /// The keys every node shares; `None`: each node makes its own.
    keys: Option<TicketKeys>,
    /// The master's own node's TLS.
    master: Tls,
}

impl Https {
    /// The master's HTTPS for `files`: the first keys, and its own node's TLS
    /// (which reads the files: an error names the one that does not load).
    pub fn start(files: &TlsFiles) -> Result<Https, String> {
        let keys = crate::tls::first_keys(files)?;
        let master = Tls::start(files, keys.as_ref())?;
        Ok(Https {
            files: files.clone(),
            keys,
            master,
        })
    }

    /// How often the ticket keys change (`MULTINODE_TLS_ROTATE_SECS`); the
    /// previous key opens tickets one more period, so a ticket is good for one
    /// to two periods.
    pub fn rotate_every(&self) -> Duration {
        self.files.rotate
    }

    /// The master's own node's TLS.
    pub fn master(&self) -> Tls {
        self.master.clone()
    }

    /// Gives a new worker the keys.
    pub fn greet(&self, identity: &mut Identity) {
        identity.ticket_keys = self.keys.clone();
    }

    /// A rotation: the new keys, for the workers (the master's node has them).
    pub fn rotate(&mut self) -> Result<Option<TicketKeys>, String> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let keys = keys.rotated(crate::tls::next_key()?);
        self.master.set_keys(&keys);
        self.keys = Some(keys.clone());
        Ok(Some(keys))
    }

    /// Before a reload: whether the files load (the replacements will read
    /// them); if so, the master's own node serves them from now on.
    pub fn reload(&self) -> Result<(), String> {
        crate::tls::check(&self.files)?;
        self.master.reload()
    }
}
