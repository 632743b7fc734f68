//! The other views of the queue: jobs by stage, the running monitor, the dead letter, and
//! costs.

use crate::model::{CostGrouping, CostRow, DeadJob, RunningJob, StageCount};

use crate::error::{Error, Result};
use crate::queue::Queue;

impl Queue {
    /// How many jobs sit at each stage, per status: where the pipeline spends its time.
    /// Reads every job (a full scan).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn stage_distribution(&self) -> Result<Vec<StageCount>> {
        self.engine().stages(self.owner())
    }

    /// The running jobs, oldest first, with stage, progress, how long they have run and how
    /// old their heartbeat is.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn running_jobs(&self) -> Result<Vec<RunningJob>> {
        self.engine().running(self.owner(), self.now_ms())
    }

    /// The dead letter: failed jobs, most recent failure first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit outside 1–10,000.
    pub fn dead_letter(&self, limit: usize) -> Result<Vec<DeadJob>> {
        if !(1..=10_000).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is outside 1–10000"),
            ));
        }
        self.engine().dead_letter(self.owner(), limit)
    }

    /// Counts and costs per status, owner or group; by owner, with each owner's budget, its
    /// spend against it and what remains. Reads every job of the scope (a full scan).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn costs(&self, by: CostGrouping) -> Result<Vec<CostRow>> {
        self.engine().costs(self.owner(), by)
    }
}
