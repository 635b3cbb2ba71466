//! Recycling, the supervisor's side: once a second, what each serving worker
//! has become (its slot's requests from the load table, its resident memory
//! from `/proc`), for the recycler to judge.

use super::machine::Input;
use super::recycler::Reading;
use super::Supervisor;

impl Supervisor {
    /// The recycler's verdicts on every serving worker now, as inputs.
    pub(super) fn recycling_inputs(&mut self) -> Vec<Input> {
        let Some(recycler) = self.recycler.as_mut() else {
            return Vec::new();
        };
        let readings: Vec<Reading> = self
            .workers
            .iter()
            .filter(|(at, _)| self.machine.serving(at.slot) == Some(at.generation))
            .map(|(at, worker)| Reading {
                slot: at.slot,
                generation: at.generation,
                served: (self.shm.table().totals(at.slot).1).saturating_sub(worker.requests_before),
                resident: crate::metrics::process::resident(worker.pid),
            })
            .collect();
        let now = std::time::Instant::now();
        recycler
            .look(&readings, now)
            .into_iter()
            .map(Input::Verdict)
            .collect()
    }
}
