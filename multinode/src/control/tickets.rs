//! The session-ticket keys the master makes and hands to every node, so that a
//! client resumes its TLS session on whichever node it reaches: the key that
//! encrypts new tickets, and the one before it, still accepted for a while.

/// One key: its id (written in each ticket, so the node knows which key to
/// try) and its secret (AES-256-GCM).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TicketKey {
    pub id: u32,
    pub secret: [u8; 32],
}

/// The keys in use.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TicketKeys {
    /// Encrypts new tickets, and decrypts.
    pub current: TicketKey,
    /// Only decrypts: the tickets it made stay good until the next rotation.
    pub previous: Option<TicketKey>,
}

impl TicketKeys {
    /// The keys after `next` replaces the current one.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub fn rotated(&self, next: TicketKey) -> TicketKeys {
        TicketKeys {
            current: next,
            previous: Some(self.current.clone()),
        }
    }
}

/// Key material is never printed: only the ids.
impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| k.id))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_keeps_the_previous_key_for_decrypting_and_debug_shows_no_secret() {
        let key = |id, byte| TicketKey {
            id,
            secret: [byte; 32],
        };
        let keys = TicketKeys {
            current: key(1, 0xab),
            previous: None,
        };
        let rotated = keys.rotated(key(2, 0xcd)).rotated(key(3, 0xef));
        assert_eq!(rotated.current.id, 3);
        assert_eq!(rotated.previous.as_ref().map(|k| k.id), Some(2));
        let shown = format!("{rotated:?}");
        assert!(!shown.contains("239") && !shown.contains("ef"), "{shown}");
    }
}
