//! The whole-binary upgrade, as the old master decides it: one at a time,
//! within `READY_TIMEOUT`; once the new tree serves, this one stops.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{Action, Machine, Phase, Upgrade, READY_TIMEOUT};
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
                self.upgrade = Upgrade::Starting {
                    deadline: now + READY_TIMEOUT,
                };
                out.push(Action::StartUpgrade);
            }
            Upgrade::Starting { .. } | Upgrade::HandedOver => {
                warn!("SIGUSR2: an upgrade is under way; this one is refused");
            }
        }
    }

    /// Every node of the new master's tree is ready: this tree stops.
    pub(super) fn upgraded(&mut self, pid: u32, now: Instant, out: &mut Vec<Action>) {
        if !matches!(self.upgrade, Upgrade::Starting { .. }) {
            return;
        }
        info!("upgrade: the new master (pid {pid}) serves; this master drains and exits");
        self.upgrade = Upgrade::HandedOver;
        out.push(Action::Notify(Notice::Upgraded { pid }));
        self.stop("upgrade", 0, now, out);
    }

    /// The new master failed before it was ready.
    pub(super) fn upgrade_failed(&mut self, why: &str) {
        if matches!(self.upgrade, Upgrade::Starting { .. }) {
            error!("upgrade failed: {why}; this master serves on");
            self.upgrade = Upgrade::Idle;
        }
    }

    /// The new master is not ready in time: stopped.
    pub(super) fn upgrade_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Upgrade::Starting { deadline } = self.upgrade {
            if now >= deadline {
                error!(
                    "upgrade failed: the new master was not ready in {READY_TIMEOUT:?}; stopping it; this master serves on"
                );
                self.upgrade = Upgrade::Idle;
                out.push(Action::KillUpgrade);
            }
        }
    }

    /// When the upgrade's deadline is due, if one is.
    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        match self.upgrade {
            Upgrade::Starting { deadline } => Some(deadline),
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
        })
    }

    fn starts_upgrade(actions: &[Action]) -> bool {
        actions.contains(&Action::StartUpgrade)
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
        assert_eq!(machine.next_deadline(), Some(now + READY_TIMEOUT));
        let late = machine.handle(Input::Tick, now + READY_TIMEOUT);
        assert!(late.contains(&Action::KillUpgrade));
        assert_eq!(machine.upgrade, Upgrade::Idle);
        // Its exit, reported after, changes nothing; another upgrade may start.
        let after = machine.handle(
            Input::UpgradeFailed {
                why: "killed".into(),
            },
            now,
        );
        assert!(after.is_empty());
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
        let handed = machine.handle(Input::UpgradeReady { pid: 42 }, now);
        assert!(handed.contains(&Action::Notify(Notice::Upgraded { pid: 42 })));
        assert!(handed.contains(&Action::StopMaster), "this tree stops");
        let stopping = |a: &Action| matches!(a, Action::Notify(Notice::Stopping { .. }));
        assert!(
            !handed.iter().any(stopping),
            "STOPPING=1 would stop the service"
        );
        assert!(matches!(machine.phase, Phase::Stopping { .. }));
    }
}
