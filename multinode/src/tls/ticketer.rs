//! Session tickets encrypted with the keys the master hands every node, so
//! that a ticket one node issued opens on every other (nginx's
//! `ssl_session_ticket_key`, made and rotated for the operator).
//!
//! A ticket is the key's id (4 bytes), a random nonce (12 bytes) and the
//! session state sealed with AES-256-GCM, the id as associated data.

use std::sync::{Arc, RwLock};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::control::tickets::{TicketKey, TicketKeys};

/// A new key, random, with a random id.
pub(crate) fn new_key() -> Result<TicketKey, String> {
    let random = SystemRandom::new();
    let mut secret = [0u8; 32];
    let mut id = [0u8; 4];
    random
        .fill(&mut secret)
        .and_then(|()| random.fill(&mut id))
        .map_err(|_| "the system's random source failed".to_owned())?;
    Ok(TicketKey {
        id: u32::from_be_bytes(id),
        secret,
    })
}

/// The keys a node uses, which the master's rotations replace.
#[derive(Clone)]
pub(crate) struct Ticketer {
    keys: Arc<RwLock<Sealers>>,
    /// How long a ticket is good for, as the client is told: as long as its
    /// key is kept at least (one rotation period).
    lifetime: u32,
}

/// The keys, ready to seal and open.
struct Sealers {
    current: (u32, LessSafeKey),
    previous: Option<(u32, LessSafeKey)>,
}

fn sealer(key: &TicketKey) -> (u32, LessSafeKey) {
    let unbound = UnboundKey::new(&AES_256_GCM, &key.secret).expect("32 bytes");
    (key.id, LessSafeKey::new(unbound))
}

impl Sealers {
    fn of(keys: &TicketKeys) -> Self {
        Sealers {
            current: sealer(&keys.current),
            previous: keys.previous.as_ref().map(sealer),
        }
    }
}

impl Ticketer {
    pub fn new(keys: &TicketKeys, lifetime: std::time::Duration) -> Self {
        Ticketer {
            keys: Arc::new(RwLock::new(Sealers::of(keys))),
            lifetime: u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// Takes the keys after a rotation.
    pub fn set(&self, keys: &TicketKeys) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Sealers::of(keys);
    }
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticketer(the master's keys)")
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let (id, key) = &keys.current;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let id = id.to_be_bytes();
        let mut ticket = Vec::with_capacity(4 + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&id);
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce);
        key.seal_in_place_append_tag(nonce, Aad::from(id), &mut sealed)
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (id, rest) = cipher.split_first_chunk::<4>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let wanted = u32::from_be_bytes(*id);
        let (_, key) = std::iter::once(&keys.current)
            .chain(&keys.previous)
            .find(|(key_id, _)| *key_id == wanted)?;
        let mut opened = sealed.to_vec();
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let plain = key.open_in_place(nonce, Aad::from(*id), &mut opened).ok()?;
        let len = plain.len();
        opened.truncate(len);
        Some(opened)
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    #[test]
    fn a_ticket_opens_with_the_same_keys_after_one_rotation_and_not_with_others() {
        let keys = TicketKeys {
            current: new_key().unwrap(),
            previous: None,
        };
        let hour = std::time::Duration::from_secs(3600);
        let (one, two) = (Ticketer::new(&keys, hour), Ticketer::new(&keys, hour));
        let ticket = one.encrypt(b"session state").unwrap();
        assert_eq!(two.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        let rotated = keys.rotated(new_key().unwrap());
        two.set(&rotated);
        assert!(
            two.decrypt(&ticket).is_some(),
            "the previous key still opens"
        );
        two.set(&rotated.rotated(new_key().unwrap()));
        assert!(
            two.decrypt(&ticket).is_none(),
            "two rotations later it does not"
        );
        let mut forged = ticket.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(one.decrypt(&forged).is_none());
        assert!(one.decrypt(&ticket[..10]).is_none());
        let other = Ticketer::new(
            &TicketKeys {
                current: new_key().unwrap(),
                previous: None,
            },
            hour,
        );
        assert!(other.decrypt(&ticket).is_none());
    }
}
