//! Which worker is due to be recycled, from what the supervisor reads of each
//! serving worker once a second: the requests its slot has served, and its
//! resident memory. Decisions only; the state machine recycles one node at a
//! time, in the order they came due.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::slot::{Generation, Slot};
use crate::config::Recycling;

/// How long after asking for a worker's recycling it is asked for again if
/// the same incarnation still serves: its replacement failed, or could not
/// start.
const RETRY: Duration = Duration::from_secs(10);

/// One serving worker's figures now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Reading {
    pub slot: Slot,
    pub generation: Generation,
    /// The requests its slot served since this incarnation started (those
    /// of the one it replaces, while that drains, included).
    pub served: u64,
    /// Resident bytes; `None` if it could not be read.
    pub resident: Option<u64>,
}

/// Why a worker is recycled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Why {
    Requests {
        served: u64,
        limit: u64,
    },
    Memory {
        resident: u64,
        limit: u64,
        over: Duration,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Requests { served, limit } => {
                write!(
                    f,
                    "it served {served} requests (its max_requests with jitter: {limit})"
                )
            }
            Why::Memory {
                resident,
                limit,
                over,
            } => write!(
                f,
                "its resident memory, {} MiB, stayed over max_memory ({} MiB) for {:.1} s",
                resident >> 20,
                limit >> 20,
                over.as_secs_f64()
            ),
        }
    }
}

/// What to do with a worker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Replace it the rolling way.
    Recycle {
        slot: Slot,
        generation: Generation,
        why: Why,
    },
    /// Kill it now: over the hard ceiling.
    Kill {
        slot: Slot,
        generation: Generation,
        resident: u64,
        ceiling: u64,
    },
}

/// One incarnation as watched.
#[derive(Debug)]
struct Watched {
    generation: Generation,
    /// `max_requests` plus this incarnation's jitter.
    limit: Option<u64>,
    /// Since when its memory is over `max_memory`.
    over_since: Option<Instant>,
    /// When recycling was last asked for: asked again only after
    /// [`RETRY`], in case that replacement failed.
    asked: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Recycler {
    settings: Recycling,
    watched: BTreeMap<Slot, Watched>,
}

impl Recycler {
    pub fn new(settings: Recycling) -> Self {
        Recycler {
            settings,
            watched: BTreeMap::new(),
        }
    }

    /// The verdicts on `readings`, every serving worker's, taken at `now`.
    pub fn look(&mut self, readings: &[Reading], now: Instant) -> Vec<Verdict> {
        self.watched
            .retain(|slot, _| readings.iter().any(|r| r.slot == *slot));
        let mut verdicts = Vec::new();
        for reading in readings {
            let settings = &self.settings;
            let watched = self
                .watched
                .entry(reading.slot)
                .or_insert_with(|| Watched::first(reading, settings));
            if watched.generation != reading.generation {
                *watched = Watched::first(reading, settings);
            }
            if let (Some(resident), Some(ceiling)) = (reading.resident, settings.hard) {
                if resident > ceiling {
                    verdicts.push(Verdict::Kill {
                        slot: reading.slot,
                        generation: reading.generation,
                        resident,
                        ceiling,
                    });
                    continue;
                }
            }
            if let Some(why) = watched.due(reading, settings, now) {
                watched.asked = Some(now);
                verdicts.push(Verdict::Recycle {
                    slot: reading.slot,
                    generation: reading.generation,
                    why,
                });
            }
        }
        verdicts
    }
}

impl Watched {
    fn first(reading: &Reading, settings: &Recycling) -> Self {
        let jitter = match settings.jitter {
            0 => 0,
            j => spread(reading.slot, reading.generation) % (j + 1),
        };
        Watched {
            generation: reading.generation,
            limit: settings.max_requests.map(|max| max.saturating_add(jitter)),
            over_since: None,
            asked: None,
        }
    }

    /// Why this incarnation is due now, if it is and was not asked for
    /// lately.
    fn due(&mut self, reading: &Reading, settings: &Recycling, now: Instant) -> Option<Why> {
        let over = match (reading.resident, settings.max_memory) {
            (Some(resident), Some(limit)) if resident > limit => {
                Some((resident, limit, now - *self.over_since.get_or_insert(now)))
            }
            _ => {
                self.over_since = None;
                None
            }
        };
        if self.asked.is_some_and(|at| now < at + RETRY) {
            return None;
        }
        let served = reading.served;
        if let Some(limit) = self.limit.filter(|limit| served >= *limit) {
            return Some(Why::Requests { served, limit });
        }
        match over {
            Some((resident, limit, over)) if over >= settings.window => Some(Why::Memory {
                resident,
                limit,
                over,
            }),
            _ => None,
        }
    }
}

/// A number of its own for each incarnation (splitmix64): the jitter.
fn spread(slot: Slot, generation: Generation) -> u64 {
    let mut x = (slot as u64) << 32 ^ generation;
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Recycling {
        Recycling {
            window: Duration::from_secs(10),
            ..Recycling::default()
        }
    }

    fn reading(slot: Slot, generation: Generation, served: u64, resident: u64) -> Reading {
        Reading {
            slot,
            generation,
            served,
            resident: Some(resident),
        }
    }

    #[test]
    fn requests_ask_once_then_again_only_after_the_retry_time() {
        let mut recycler = Recycler::new(Recycling {
            max_requests: Some(100),
            ..settings()
        });
        let t = Instant::now();
        assert!(recycler.look(&[reading(1, 1, 99, 0)], t).is_empty());
        let due = recycler.look(&[reading(1, 1, 100, 0)], t);
        assert_eq!(
            due,
            vec![Verdict::Recycle {
                slot: 1,
                generation: 1,
                why: Why::Requests {
                    served: 100,
                    limit: 100
                }
            }]
        );
        assert!(recycler
            .look(&[reading(1, 1, 200, 0)], t + RETRY / 2)
            .is_empty());
        // Still the same incarnation: its replacement failed. Asked again.
        assert_eq!(recycler.look(&[reading(1, 1, 300, 0)], t + RETRY).len(), 1);
        // The next incarnation is judged afresh.
        assert!(recycler.look(&[reading(1, 2, 10, 0)], t + RETRY).is_empty());
        assert_eq!(recycler.look(&[reading(1, 2, 100, 0)], t + RETRY).len(), 1);
    }

    #[test]
    fn jitter_gives_each_incarnation_its_own_limit_within_the_range() {
        let recycling = Recycling {
            max_requests: Some(1000),
            jitter: 100,
            ..settings()
        };
        let limits: Vec<u64> = (1..40)
            .map(|slot| {
                Watched::first(&reading(slot, 1, 0, 0), &recycling)
                    .limit
                    .unwrap()
            })
            .collect();
        assert!(limits.iter().all(|l| (1000..=1100).contains(l)));
        let distinct: std::collections::BTreeSet<_> = limits.iter().collect();
        assert!(distinct.len() > 20, "{limits:?}");
    }

    #[test]
    fn memory_must_stay_over_for_the_window_and_a_dip_starts_it_again() {
        let mut recycler = Recycler::new(Recycling {
            max_memory: Some(100),
            ..settings()
        });
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert!(recycler.look(&[reading(1, 1, 0, 150)], t).is_empty());
        assert!(recycler
            .look(&[reading(1, 1, 0, 150)], t + 9 * s)
            .is_empty());
        assert!(recycler
            .look(&[reading(1, 1, 0, 90)], t + 10 * s)
            .is_empty());
        assert!(recycler
            .look(&[reading(1, 1, 0, 150)], t + 11 * s)
            .is_empty());
        let due = recycler.look(&[reading(1, 1, 0, 160)], t + 21 * s);
        assert_eq!(
            due,
            vec![Verdict::Recycle {
                slot: 1,
                generation: 1,
                why: Why::Memory {
                    resident: 160,
                    limit: 100,
                    over: 10 * s
                }
            }]
        );
    }

    #[test]
    fn over_the_ceiling_is_a_kill_every_time_it_is_seen() {
        let mut recycler = Recycler::new(Recycling {
            max_memory: Some(100),
            hard: Some(200),
            ..settings()
        });
        let t = Instant::now();
        let kill = Verdict::Kill {
            slot: 2,
            generation: 3,
            resident: 250,
            ceiling: 200,
        };
        assert_eq!(recycler.look(&[reading(2, 3, 0, 250)], t), vec![kill]);
        assert_eq!(recycler.look(&[reading(2, 3, 0, 250)], t), vec![kill]);
    }

    #[test]
    fn the_reasons_read_as_a_log_line_says_them() {
        let why = Why::Memory {
            resident: 300 << 20,
            limit: 256 << 20,
            over: Duration::from_secs(10),
        };
        assert_eq!(
            why.to_string(),
            "its resident memory, 300 MiB, stayed over max_memory (256 MiB) for 10.0 s"
        );
    }
}
