//! The supervisor's hands: a worker's report becomes the state machine's
//! input, and each action the machine returns is carried out.

use std::collections::VecDeque;

use tracing::info;

use super::machine::{Action, Input, SpawnFailure};
use super::notice;
use super::process::{self, Event, Report};
use super::Supervisor;
use crate::control::incarnation::Incarnation;
use crate::control::{ToMaster, ToWorker};
use crate::mesh::peer::Inbound;

impl Supervisor {
    /// A worker's report as the state machine's input.
    pub(super) fn on_event(
        &mut self,
        Event {
            slot,
            generation,
            report,
        }: Event,
    ) -> Option<Input> {
        Some(match report {
            Report::Said(ToMaster::Ready) => {
                self.journal_ready(slot, generation);
                Input::Ready { slot, generation }
            }
            Report::Said(ToMaster::Heartbeat) => Input::Heartbeat { slot, generation },
            Report::Said(ToMaster::Draining) => Input::Draining { slot, generation },
            Report::Said(ToMaster::Failed { reason }) => Input::Failed {
                slot,
                generation,
                reason,
            },
            Report::Said(ToMaster::Remesh { id, generation: to }) => {
                self.remesh(Incarnation::new(slot, generation), Incarnation::new(id, to));
                return None;
            }
            Report::Said(ToMaster::JoinMesh) => {
                self.join(Incarnation::new(slot, generation));
                return None;
            }
            Report::Exited(status) => {
                self.workers.remove(&Incarnation::new(slot, generation));
                self.joined.remove(&Incarnation::new(slot, generation));
                if let Ok(status) = &status {
                    self.record_exit(slot, status);
                }
                self.shm.table().release(slot, generation); // its connections died with it
                if !self.workers.keys().any(|k| k.slot == slot) {
                    self.shm.table().set_live(slot, false);
                }
                let success = status.as_ref().is_ok_and(|s| s.success());
                let status = match status {
                    Ok(status) => status.to_string(),
                    Err(error) => format!("unknown status ({error})"),
                };
                self.journal_exited(slot, generation, &status);
                Input::Exited {
                    slot,
                    generation,
                    success,
                    status,
                }
            }
        })
    }

    /// Carries out one action; `Some(code)` when the supervisor is done.
    pub(super) async fn apply(
        &mut self,
        action: Action,
        inputs: &mut VecDeque<Input>,
    ) -> Option<i32> {
        self.journal_action(&action);
        match action {
            Action::Spawn {
                slot,
                generation,
                members,
            } => match self.spawn(slot, generation, members) {
                Ok(worker) => {
                    info!(node = slot, generation, pid = worker.pid, "node started");
                    self.journal_started(slot, generation, worker.pid);
                    self.workers
                        .insert(Incarnation::new(slot, generation), worker);
                    self.mesh(slot, generation);
                    // Its task greets it now: the worker goes on starting while
                    // the next ones are started, not after all of them.
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    let failure = match process::is_lack_of_resources(&error) {
                        true => SpawnFailure::Resources(error.to_string()),
                        false => SpawnFailure::Other(error.to_string()),
                    };
                    inputs.push_back(Input::SpawnFailed {
                        slot,
                        generation,
                        failure,
                    });
                }
            },
            Action::Serving { slot } => self.shm.table().set_live(slot, true),
            Action::Drain { slot, generation } => {
                if let Some(worker) = self.workers.get(&Incarnation::new(slot, generation)) {
                    worker.send(ToWorker::Shutdown, None);
                }
                // A slot whose last process drains takes no more connections.
                if !self
                    .workers
                    .keys()
                    .any(|k| k.slot == slot && k.generation != generation)
                {
                    self.shm.table().set_live(slot, false);
                }
            }
            Action::Kill { slot, generation } => {
                if let Some(worker) = self.workers.get(&Incarnation::new(slot, generation)) {
                    worker.kill();
                }
            }
            Action::Gone { slot } => {
                let _ = self.master_mesh.send(Inbound::Gone { id: slot });
                for worker in self.workers.values() {
                    worker.send(ToWorker::NodeGone { id: slot }, None);
                }
            }
            Action::CloseListener { slot } => self.close_queue(slot),
            Action::StopMaster => {
                self.shm.table().set_live(0, false);
                self.master_shutdown.cancel();
            }
            Action::Exit { code } => {
                self.log_totals();
                return Some(code);
            }
            Action::KillAllAndExit { code } => self.kill_all_and_exit(code).await,
            Action::Notify(notice) => {
                if let notice::Notice::Upgraded { pid } = notice {
                    crate::init::announce(pid);
                }
                self.systemd.notice(&notice);
                if let (notice::Notice::Ready { .. }, Some(old)) = (&notice, self.old_master.take())
                {
                    info!("upgrade: every node is ready; the old master drains");
                    old.ready();
                }
            }
            Action::StartUpgrade { attempt } => {
                if let Err(why) = self.start_upgrade(attempt) {
                    inputs.push_back(Input::UpgradeFailed { attempt, why });
                }
            }
            Action::KillUpgrade { attempt } => {
                if let Some(new) = self.new_masters.get(&attempt) {
                    new.kill();
                }
            }
            Action::StopUpgrade { attempt } => {
                if let Some(new) = self.new_masters.get(&attempt) {
                    new.stop();
                }
            }
        }
        None
    }
}
