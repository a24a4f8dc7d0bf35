//! What the run did to each workflow execution, counted as it happened: the tasks it saw
//! finish and how, the history events its calls wrote, and whether retention removed it.
//!
//! Retention deletes finished workflow executions during the run, so at the end the database no
//! longer holds everything the checks look at. The ledger is what the checks know of those:
//! every task of a pruned workflow execution must have been seen finishing, and each
//! `prune_finished` batch must have removed exactly its workflow executions' tasks and the
//! events the run wrote to them. For the workflow executions still stored, the checks compare
//! the ledger with the database, which shows that the ledger counts what the database holds.
//!
//! A resumed run's ledger starts from what the database held (see [`super::plan`]): the
//! figures of the stored workflow executions are counted in from the start, and those retention
//! removed before are settled, known only as pruned before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use dal_core::Pruned;
use uuid::Uuid;

use super::plan::{Before, Plan};

/// How a task finished, as the run saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Completed by a runner (`complete_many`, also with a lease from before a crash).
    Completed,
    /// Failed on its last attempt.
    Exhausted,
    /// Abandoned by the sweeper at the recovery cap.
    Abandoned,
}

#[derive(Debug, Default)]
struct Tally {
    completed: AtomicU32,
    exhausted: AtomicU32,
    abandoned: AtomicU32,
    /// Tasks seen finishing, however.
    finished: AtomicU32,
    /// History events the run's calls wrote (one per task changed).
    events: AtomicU64,
    /// Times a `prune_finished` batch reported it removed.
    pruned: AtomicU32,
    /// Finished entirely, or pruned: the run need not wait for it.
    settled: AtomicBool,
    /// Removed by retention before the run started (a resumed run).
    pruned_before: bool,
}

impl Tally {
    fn starting_from(before: Before) -> Tally {
        let tally = Tally::default();
        match before {
            Before::Nothing => tally,
            Before::Pruned => Tally {
                pruned_before: true,
                ..tally
            },
            Before::Stored(counted) => {
                let count = |n: u64| AtomicU32::new(u32::try_from(n).unwrap_or(u32::MAX));
                Tally {
                    completed: count(counted.completed),
                    exhausted: count(counted.exhausted),
                    abandoned: count(counted.abandoned),
                    finished: count(counted.finished()),
                    events: AtomicU64::new(counted.events),
                    ..tally
                }
            }
        }
    }
}

/// One workflow execution's figures, as the checks read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// Tasks completed.
    pub completed: u64,
    /// Tasks that failed on their last attempt.
    pub exhausted: u64,
    /// Tasks abandoned.
    pub abandoned: u64,
    /// History events written.
    pub events: u64,
    /// Times reported removed by retention (0: still stored, or should be).
    pub pruned: u32,
    /// Removed by retention before the run started: nothing else is known of it.
    pub pruned_before: bool,
}

impl Counted {
    /// Tasks seen finishing.
    pub fn finished(&self) -> u64 {
        self.completed + self.exhausted + self.abandoned
    }
}

/// What one `prune_finished` batch reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedBatch {
    /// The workflow executions it removed.
    pub workflows: Vec<Uuid>,
    /// The task executions it deleted.
    pub tasks: u64,
    /// The execution events it deleted.
    pub events: u64,
}

/// The per-workflow-execution record of a run, shared by its threads.
#[derive(Debug)]
pub struct Ledger {
    workflows: Vec<Uuid>,
    index: HashMap<Uuid, usize>,
    tallies: Vec<Tally>,
    tasks_per_workflow: u32,
    settled: AtomicUsize,
    finished: AtomicU64,
    /// Rows returned for workflow executions the run did not create (there should be none).
    strays: AtomicU64,
    batches: Mutex<Vec<PrunedBatch>>,
    /// The tasks finished before the run started (a resumed run).
    finished_before: Counted,
}

impl Ledger {
    /// A ledger of `workflows`, each to get `tasks_per_workflow` tasks.
    pub fn new(workflows: Vec<Uuid>, tasks_per_workflow: u32) -> Self {
        let before = vec![Before::Nothing; workflows.len()];
        Ledger::starting_from(workflows, &before, tasks_per_workflow)
    }

    /// The ledger of `plan`, each workflow execution starting from what the database held.
    pub fn of_plan(plan: &Plan, tasks_per_workflow: u32) -> Self {
        Ledger::starting_from(plan.workflows.clone(), &plan.before, tasks_per_workflow)
    }

    fn starting_from(workflows: Vec<Uuid>, before: &[Before], tasks_per_workflow: u32) -> Self {
        let index = workflows.iter().enumerate().map(|(i, w)| (*w, i)).collect();
        let tallies: Vec<Tally> = before.iter().map(|b| Tally::starting_from(*b)).collect();
        let mut finished_before = Counted::default();
        for b in before {
            if let Before::Stored(counted) = b {
                finished_before.completed += counted.completed;
                finished_before.exhausted += counted.exhausted;
                finished_before.abandoned += counted.abandoned;
                finished_before.events += counted.events;
            }
        }
        let ledger = Ledger {
            workflows,
            index,
            tallies,
            tasks_per_workflow,
            settled: AtomicUsize::new(0),
            finished: AtomicU64::new(finished_before.finished()),
            strays: AtomicU64::new(0),
            batches: Mutex::new(Vec::new()),
            finished_before,
        };
        for tally in &ledger.tallies {
            if tally.pruned_before || tally.finished.load(Ordering::Relaxed) >= tasks_per_workflow {
                ledger.settle(tally);
            }
        }
        ledger
    }

    /// What the stored workflow executions had finished when the run started (zero for a new
    /// run): tasks by outcome, and history events.
    pub fn finished_before(&self) -> Counted {
        self.finished_before
    }

    /// The workflow executions, in the order they were made.
    pub fn workflows(&self) -> &[Uuid] {
        &self.workflows
    }

    /// Tasks in each workflow execution.
    pub fn tasks_per_workflow(&self) -> u32 {
        self.tasks_per_workflow
    }

    /// Every task of the run.
    pub fn tasks(&self) -> u64 {
        self.workflows.len() as u64 * u64::from(self.tasks_per_workflow)
    }

    fn tally(&self, workflow: Uuid) -> Option<&Tally> {
        let tally = self.index.get(&workflow).map(|&i| &self.tallies[i]);
        if tally.is_none() {
            self.strays.fetch_add(1, Ordering::Relaxed);
        }
        tally
    }

    /// A call changed a task of `workflow` (and wrote its event).
    pub fn changed(&self, workflow: Uuid) {
        if let Some(tally) = self.tally(workflow) {
            tally.events.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call finished a task of `workflow` (and wrote its event).
    pub fn finished(&self, workflow: Uuid, how: Finish) {
        let Some(tally) = self.tally(workflow) else {
            return;
        };
        tally.events.fetch_add(1, Ordering::Relaxed);
        let counter = match how {
            Finish::Completed => &tally.completed,
            Finish::Exhausted => &tally.exhausted,
            Finish::Abandoned => &tally.abandoned,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        if tally.finished.fetch_add(1, Ordering::Relaxed) + 1 == self.tasks_per_workflow {
            self.settle(tally);
        }
    }

    /// A `prune_finished` batch reported `pruned`.
    pub fn pruned(&self, pruned: &Pruned) {
        for workflow in &pruned.workflows {
            if let Some(tally) = self.tally(*workflow) {
                tally.pruned.fetch_add(1, Ordering::Relaxed);
                // Normally finished already; if retention removed it early, the run must not
                // wait for tasks that are gone (the checks then fail).
                self.settle(tally);
            }
        }
        if !pruned.workflows.is_empty() || pruned.tasks > 0 || pruned.events > 0 {
            self.batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(PrunedBatch {
                    workflows: pruned.workflows.clone(),
                    tasks: pruned.tasks,
                    events: pruned.events,
                });
        }
    }

    fn settle(&self, tally: &Tally) {
        if !tally.settled.swap(true, Ordering::Relaxed) {
            self.settled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every workflow execution has finished or was removed.
    pub fn all_settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed) >= self.workflows.len()
    }

    /// Tasks seen finishing so far, with those finished before the run started.
    pub fn finished_tasks(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Rows the store returned for workflow executions the run did not create.
    pub fn strays(&self) -> u64 {
        self.strays.load(Ordering::Relaxed)
    }

    /// The figures of `workflow`, if the run created it.
    pub fn counted(&self, workflow: Uuid) -> Option<Counted> {
        let tally = &self.tallies[*self.index.get(&workflow)?];
        let get = |c: &AtomicU32| u64::from(c.load(Ordering::Relaxed));
        Some(Counted {
            completed: get(&tally.completed),
            exhausted: get(&tally.exhausted),
            abandoned: get(&tally.abandoned),
            events: tally.events.load(Ordering::Relaxed),
            pruned: tally.pruned.load(Ordering::Relaxed),
            pruned_before: tally.pruned_before,
        })
    }

    /// The `prune_finished` batches that removed anything, in the order they reported.
    pub fn batches(&self) -> Vec<PrunedBatch> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_settles_when_its_last_task_finishes_or_when_pruned() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ledger = Ledger::new(vec![a, b], 2);
        ledger.changed(a);
        ledger.finished(a, Finish::Completed);
        assert!(!ledger.all_settled());
        ledger.finished(a, Finish::Exhausted);
        ledger.pruned(&Pruned {
            workflows: vec![b],
            tasks: 2,
            events: 0,
            next: None,
        });
        assert!(ledger.all_settled());
        let counted = ledger.counted(a).unwrap_or_default();
        assert_eq!(
            (counted.finished(), counted.events, counted.pruned),
            (2, 3, 0)
        );
        assert_eq!(ledger.counted(b).map(|c| c.pruned), Some(1));
        assert_eq!(ledger.batches().len(), 1);
        ledger.changed(Uuid::now_v7());
        assert_eq!(ledger.strays(), 1);
    }

    #[test]
    fn a_resumed_ledger_counts_from_what_was_stored() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let stored = Counted {
            completed: 1,
            exhausted: 0,
            abandoned: 0,
            events: 4,
            pruned: 0,
            pruned_before: false,
        };
        let done = Counted {
            completed: 1,
            abandoned: 1,
            events: 5,
            ..stored
        };
        let plan = Plan {
            run_id: Uuid::now_v7(),
            workflows: vec![a, b, c],
            before: vec![Before::Stored(stored), Before::Pruned, Before::Stored(done)],
            retries: Vec::new(),
            resumed: None,
        };
        let ledger = Ledger::of_plan(&plan, 2);
        // b was pruned and c finished before: only a is waited for.
        assert!(!ledger.all_settled());
        assert_eq!(ledger.finished_tasks(), 3);
        ledger.finished(a, Finish::Exhausted);
        assert!(ledger.all_settled());
        assert_eq!(
            ledger.counted(a),
            Some(Counted {
                exhausted: 1,
                events: 5,
                ..stored
            })
        );
        assert_eq!(
            ledger.counted(b),
            Some(Counted {
                pruned_before: true,
                ..Counted::default()
            })
        );
        assert_eq!(
            ledger.finished_before(),
            Counted {
                completed: 2,
                abandoned: 1,
                events: 9,
                ..Counted::default()
            }
        );
    }
}
