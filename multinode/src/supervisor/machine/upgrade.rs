//! The whole-binary upgrade, as the old master decides it: one at a time,
//! within `upgrade_timeout`; once the new tree serves, this one stops.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{Action, Machine, Phase, Upgrade};
use crate::supervisor::notice::Notice;

impl Machine {
    /// SIGUSR2.
    pub(super) fn upgrade(&mut self, now: Instant, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Done) {
            return;
        }
        match self.upgrade {
            Upgrade::Idle => {
                info!("SIGUSR2: upgrade: starting a new master");
                self.upgrades += 1;
                let (attempt, deadline) = (self.upgrades, now + self.settings.upgrade_timeout);
                self.upgrade = Upgrade::Starting { deadline, attempt };
                out.push(Action::StartUpgrade { attempt });
            }
            Upgrade::Starting { .. } | Upgrade::HandedOver => {
                warn!("SIGUSR2: an upgrade is under way; this one is refused");
            }
        }
    }

    /// Every node of upgrade `attempt`'s new master is ready: this tree stops,
    /// if that is the upgrade under way; a master that answers after its
    /// deadline, after a stop or after another upgrade began is killed.
    pub(super) fn upgraded(&mut self, attempt: u32, pid: u32, now: Instant, out: &mut Vec<Action>) {
        if !matches!(self.upgrade, Upgrade::Starting { attempt: a, .. } if a == attempt) {
            warn!("upgrade: the new master (pid {pid}) answered too late; killing it");
            out.push(Action::KillUpgrade { attempt });
            return;
        }
        info!("upgrade: the new master (pid {pid}) serves; this master drains and exits");
        self.upgrade = Upgrade::HandedOver;
        out.push(Action::Notify(Notice::Upgraded { pid }));
        self.stop("upgrade", 0, now, out);
    }

    /// Upgrade `attempt`'s new master failed before it was ready: killed, in
    /// case it lives on (it said something other than "ready").
    pub(super) fn upgrade_failed(&mut self, attempt: u32, why: &str, out: &mut Vec<Action>) {
        if matches!(self.upgrade, Upgrade::Starting { attempt: a, .. } if a == attempt) {
            error!("upgrade failed: {why}; this master serves on");
            self.upgrade = Upgrade::Idle;
        }
        out.push(Action::KillUpgrade { attempt });
    }

    /// The new master is not ready in time: killed.
    pub(super) fn upgrade_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Upgrade::Starting { deadline, attempt } = self.upgrade {
            if now >= deadline {
                error!(
                    "upgrade failed: the new master was not ready in {:?}; stopping it; this master serves on",
                    self.settings.upgrade_timeout
                );
                self.upgrade = Upgrade::Idle;
                out.push(Action::KillUpgrade { attempt });
            }
        }
    }

    /// A stop while a new master starts: it drains its own tree too, and is
    /// killed if it says ready later.
    pub(super) fn stop_upgrade(&mut self, out: &mut Vec<Action>) {
        if let Upgrade::Starting { attempt, .. } = self.upgrade {
            info!("upgrade: stopping the new master too");
            self.upgrade = Upgrade::Idle;
            out.push(Action::StopUpgrade { attempt });
        }
    }

    /// When the upgrade's deadline is due, if one is.
    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        match self.upgrade {
            Upgrade::Starting { deadline, .. } => Some(deadline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Command, Input, Settings};
    use super::*;

    fn machine(now: Instant) -> Machine {
        Machine::new(Settings {
            workers: 1..3,
            master_serves: true,
            restart: true,
            boot_failures: 3,
            shutdown_timeout: Duration::from_secs(5),
            watchdog: None,
            max_slot: 4,
            nodes: 3,
            started: now,
            upgrade_timeout: Duration::from_secs(30),
        })
    }

    fn starts_upgrade(actions: &[Action]) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, Action::StartUpgrade { .. }))
    }

    #[test]
    fn one_upgrade_at_a_time_and_a_slow_new_master_is_stopped() {
        let now = Instant::now();
        let mut machine = machine(now);
        machine.handle(Input::Start, now);
        let first = machine.handle(Input::Signal(Command::Upgrade), now);
        assert!(starts_upgrade(&first));
        let second = machine.handle(Input::Signal(Command::Upgrade), now);
        assert!(!starts_upgrade(&second), "refused while one is under way");
        assert_eq!(
            machine.next_deadline(),
            Some(now + machine.settings.upgrade_timeout)
        );
        let late = machine.handle(Input::Tick, now + machine.settings.upgrade_timeout);
        assert!(late.contains(&Action::KillUpgrade { attempt: 1 }));
        assert_eq!(machine.upgrade, Upgrade::Idle);
        // Its exit, reported after, changes nothing but one more kill (it may
        // live on); another upgrade may start.
        let failed = Input::UpgradeFailed {
            attempt: 1,
            why: "killed".into(),
        };
        let after = machine.handle(failed, now);
        assert_eq!(after, vec![Action::KillUpgrade { attempt: 1 }]);
        assert!(starts_upgrade(
            &machine.handle(Input::Signal(Command::Upgrade), now)
        ));
    }

    #[test]
    fn a_ready_new_master_gets_the_service_and_this_tree_stops_silently() {
        let now = Instant::now();
        let mut machine = machine(now);
        machine.handle(Input::Start, now);
        machine.handle(Input::Signal(Command::Upgrade), now);
        let handed = machine.handle(
            Input::UpgradeReady {
                attempt: 1,
                pid: 42,
            },
            now,
        );
        assert!(handed.contains(&Action::Notify(Notice::Upgraded { pid: 42 })));
        assert!(handed.contains(&Action::StopMaster), "this tree stops");
        let stopping = |a: &Action| matches!(a, Action::Notify(Notice::Stopping { .. }));
        assert!(
            !handed.iter().any(stopping),
            "STOPPING=1 would stop the service"
        );
        assert!(matches!(machine.phase, Phase::Stopping { .. }));
    }

    #[test]
    fn a_stop_stops_the_new_master_too_and_a_late_ready_kills_it() {
        let now = Instant::now();
        let mut machine = machine(now);
        machine.handle(Input::Start, now);
        machine.handle(Input::Signal(Command::Upgrade), now);
        let stop = machine.handle(Input::Signal(Command::Terminate), now);
        assert!(stop.contains(&Action::StopUpgrade { attempt: 1 }));
        let late = machine.handle(
            Input::UpgradeReady {
                attempt: 1,
                pid: 42,
            },
            now,
        );
        assert_eq!(late, vec![Action::KillUpgrade { attempt: 1 }]);
        assert_ne!(machine.upgrade, Upgrade::HandedOver);
    }

    #[test]
    fn a_ready_after_the_deadline_or_from_an_older_attempt_kills_that_master() {
        let now = Instant::now();
        let mut machine = machine(now);
        machine.handle(Input::Start, now);
        machine.handle(Input::Signal(Command::Upgrade), now);
        machine.handle(Input::Tick, now + machine.settings.upgrade_timeout);
        machine.handle(Input::Signal(Command::Upgrade), now);
        let old = machine.handle(
            Input::UpgradeReady {
                attempt: 1,
                pid: 41,
            },
            now,
        );
        assert_eq!(old, vec![Action::KillUpgrade { attempt: 1 }]);
        assert!(matches!(
            machine.upgrade,
            Upgrade::Starting { attempt: 2, .. }
        ));
    }
}
