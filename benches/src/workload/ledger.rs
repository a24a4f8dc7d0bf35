//! The run's workflow executions and what happened to each, counted as it happened: how their
//! tasks finished, the events written, what retention reported removing. Of those retention
//! removed, the ledger is all the checks know; the others they compare with the database.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use dal_core::{Pruned, TaskExecution, TaskStatus};
use uuid::Uuid;

use super::metrics::Outcome;

/// Workflow executions per `create_many`.
pub const WORKFLOWS_PER_BATCH: usize = 100;

/// The id of the `index`th workflow execution of run `run`: the run id's first 8 bytes, then
/// the index, as a version-8 UUID. So a run's id names all its workflow executions.
pub fn workflow_id(run: Uuid, index: usize) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&run.as_bytes()[..8]);
    bytes[8..].copy_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v8(bytes)
}

/// The index of `workflow` in run `run`, if it is one of its workflow executions.
fn workflow_index(run: Uuid, workflow: Uuid) -> Option<usize> {
    // The UUID's variant bits cover the index's top two bits, always zero.
    let index = usize::try_from(workflow.as_u64_pair().1 & (u64::MAX >> 2)).ok()?;
    (workflow_id(run, index) == workflow).then_some(index)
}

/// One workflow execution's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed on their last attempt.
    pub exhausted: u64,
    /// Tasks abandoned by the sweeper.
    pub abandoned: u64,
    /// History events written.
    pub events: u64,
    /// Times retention reported removing it.
    pub pruned: u32,
    /// Removed by retention before a resumed run started: nothing else is known of it.
    pub pruned_before: bool,
}

impl Counted {
    /// The tasks of `tasks` completed, exhausted and abandoned.
    pub fn of_rows(tasks: &[TaskExecution]) -> Counted {
        let mut counted = Counted::default();
        for task in tasks {
            match task.status {
                TaskStatus::Completed => counted.completed += 1,
                TaskStatus::Failed if task.is_abandoned() => counted.abandoned += 1,
                TaskStatus::Failed => counted.exhausted += 1,
                _ => {}
            }
        }
        counted
    }

    /// Tasks completed, exhausted and abandoned.
    pub fn outcomes(&self) -> [u64; 3] {
        [self.completed, self.exhausted, self.abandoned]
    }

    /// Tasks seen finishing.
    pub fn finished(&self) -> u64 {
        self.outcomes().iter().sum()
    }

    /// Adds `other`'s tasks and events to these.
    pub fn add(&mut self, other: &Counted) {
        self.completed += other.completed;
        self.exhausted += other.exhausted;
        self.abandoned += other.abandoned;
        self.events += other.events;
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Completed, exhausted, abandoned.
    outcomes: [AtomicU32; 3],
    finished: AtomicU32,
    events: AtomicU64,
    pruned: AtomicU32,
    settled: AtomicBool,
    /// In the database when the run started (stored, or already removed).
    held: bool,
    pruned_before: bool,
}

/// The ledger of a run, shared by its threads.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The run's id.
    pub run: Uuid,
    /// Tasks in each workflow execution.
    pub tasks_per_workflow: u32,
    /// What the stored workflow executions had finished when the run started.
    pub before: Counted,
    tallies: Vec<Tally>,
    settled: AtomicUsize,
    finished: AtomicU64,
    batches: Mutex<Vec<Pruned>>,
}

impl Ledger {
    /// The ledger of run `run`: `workflows` workflow executions of `tasks_per_workflow` tasks,
    /// none in the database yet.
    pub fn new(run: Uuid, workflows: u32, tasks_per_workflow: u32) -> Ledger {
        let tallies = (0..workflows).map(|_| Tally::default()).collect();
        Ledger { run, tasks_per_workflow, tallies, ..Ledger::default() }
    }

    /// Starts the `index`th workflow execution from what the database held: its tasks, so
    /// counted, or nothing, retention having removed it.
    pub fn held(&mut self, index: usize, stored: Option<Counted>) {
        let count = |n: u64| AtomicU32::new(u32::try_from(n).unwrap_or(u32::MAX));
        let Some(tally) = self.tallies.get_mut(index) else {
            return;
        };
        let c = stored.unwrap_or_default();
        (tally.outcomes, tally.finished) = (c.outcomes().map(count), count(c.finished()));
        (tally.events, tally.held, tally.pruned_before) = (c.events.into(), true, stored.is_none());
        self.before.add(&c);
        *self.finished.get_mut() += c.finished();
        let settled = stored.is_none() || c.finished() >= u64::from(self.tasks_per_workflow);
        if settled && !std::mem::replace(tally.settled.get_mut(), true) {
            *self.settled.get_mut() += 1;
        }
    }

    /// The creation batches: their workflow executions' indexes.
    pub fn batches(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let n = self.tallies.len();
        let batch = move |b: usize| b * WORKFLOWS_PER_BATCH..((b + 1) * WORKFLOWS_PER_BATCH).min(n);
        (0..n.div_ceil(WORKFLOWS_PER_BATCH)).map(batch)
    }

    /// The creation batches still to make (none of their workflow executions held), each with
    /// its number.
    pub fn batches_to_create(&self) -> Vec<(u64, Range<usize>)> {
        let mut to_create = Vec::new();
        for (n, range) in self.batches().enumerate() {
            if !self.tallies[range.start].held {
                to_create.push((n as u64, range));
            }
        }
        to_create
    }

    fn tally(&self, workflow: Uuid) -> Option<&Tally> {
        self.tallies.get(workflow_index(self.run, workflow)?)
    }

    fn settle(&self, tally: &Tally) {
        if !tally.settled.swap(true, Relaxed) {
            self.settled.fetch_add(1, Relaxed);
        }
    }

    /// A call changed a task of `workflow`, and wrote its event.
    pub fn changed(&self, workflow: Uuid) {
        if let Some(tally) = self.tally(workflow) {
            tally.events.fetch_add(1, Relaxed);
        }
    }

    /// A call finished a task of `workflow` (`how`: completed, exhausted or abandoned it), and
    /// wrote its event.
    pub(crate) fn finished(&self, workflow: Uuid, how: Outcome) {
        let Some(tally) = self.tally(workflow) else {
            return;
        };
        tally.events.fetch_add(1, Relaxed);
        // `how` is one of the first three outcomes.
        let outcome = tally.outcomes.get(how as usize);
        outcome.map(|n| n.fetch_add(1, Relaxed));
        self.finished.fetch_add(1, Relaxed);
        if tally.finished.fetch_add(1, Relaxed) + 1 == self.tasks_per_workflow {
            self.settle(tally);
        }
    }

    /// A `prune_finished` batch reported `pruned`.
    pub fn pruned(&self, pruned: &Pruned) {
        for workflow in &pruned.workflows {
            if let Some(tally) = self.tally(*workflow) {
                tally.pruned.fetch_add(1, Relaxed);
                // Even if removed early: the run must not wait for it (the checks then fail).
                self.settle(tally);
            }
        }
        if !pruned.workflows.is_empty() || pruned.tasks > 0 || pruned.events > 0 {
            let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
            batches.push(pruned.clone());
        }
    }

    /// Whether every workflow execution has finished or was removed.
    pub fn all_settled(&self) -> bool {
        self.settled.load(Relaxed) >= self.tallies.len()
    }

    /// Tasks seen finishing, with those finished before the run started.
    pub fn finished_tasks(&self) -> u64 {
        self.finished.load(Relaxed)
    }

    /// The workflow executions of the run, in creation order.
    pub fn workflows(&self) -> impl Iterator<Item = Uuid> + '_ {
        (0..self.tallies.len()).map(|i| workflow_id(self.run, i))
    }

    /// The figures of `workflow`, if it is one of the run's.
    pub fn counted(&self, workflow: Uuid) -> Option<Counted> {
        let tally = self.tallies.get(workflow_index(self.run, workflow)?)?;
        let [completed, exhausted, abandoned] = tally.outcomes.each_ref().map(|n| n.load(Relaxed));
        Some(Counted {
            completed: completed.into(),
            exhausted: exhausted.into(),
            abandoned: abandoned.into(),
            events: tally.events.load(Relaxed),
            pruned: tally.pruned.load(Relaxed),
            pruned_before: tally.pruned_before,
        })
    }

    /// The `prune_finished` batches that removed anything, in the order they reported.
    pub fn batches_pruned(&self) -> Vec<Pruned> {
        let batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        batches.clone()
    }
}
