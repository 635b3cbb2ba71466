//! An outage of one connection to Redis, and the backoff between tries.

use std::time::Duration;

use tracing::{info, warn};

/// The longest wait between two tries to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An outage of one connection: logged once when it starts and once when it
/// ends; the backoff between tries doubles up to `MAX_BACKOFF`.
pub(super) struct Outage {
    what: &'static str,
    /// What the outage means for the node, said when it starts.
    meaning: &'static str,
    down: bool,
    backoff: Duration,
}

impl Outage {
    pub fn new(what: &'static str, meaning: &'static str) -> Self {
        Outage {
            what,
            meaning,
            down: false,
            backoff: Duration::from_millis(100),
        }
    }

    pub fn started(&mut self, why: &str) {
        if !self.down {
            warn!(
                "cluster: lost the {} connection to Redis ({why}): {} until it is back",
                self.what, self.meaning
            );
            self.down = true;
        }
    }

    pub fn ended(&mut self) {
        if self.down {
            info!("cluster: the {} connection to Redis is back", self.what);
        }
        self.down = false;
        self.backoff = Duration::from_millis(100);
    }

    pub fn backoff(&mut self) -> Duration {
        let now = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        now
    }
}
