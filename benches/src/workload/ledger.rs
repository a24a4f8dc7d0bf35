//! The run's workflow executions and what happened to each, counted as it happened, from the
//! start or from what a dead process left ([`resume`]): all the checks know of those removed.

use std::{collections::BTreeMap, ops::Range, sync::Mutex, sync::MutexGuard, sync::PoisonError};

use dal_core::{DalError, ExecutionEvent, Pruned, TaskExecution, TaskExecutionStore, TaskStatus};
use serde::Serialize;
use uuid::Uuid;

/// Workflow executions per `create_many`.
pub const WORKFLOWS_PER_BATCH: usize = 100;

/// The `index`th workflow execution of run `run`: the run id's first 8 bytes, then the index.
pub fn workflow_id(run: Uuid, index: usize) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&run.as_bytes()[..8]);
    bytes[8..].copy_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v8(bytes)
}

/// A workflow execution's tasks completed, exhausted and abandoned, events written, removals
/// reported, whether removed before a resume, and whether stored when the run started (`held`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Counted {
    pub outcomes: [u64; 3],
    pub events: u64,
    pub pruned: u32,
    pub pruned_before: bool,
    held: bool,
}

impl Counted {
    /// The outcomes of `tasks` and the events of their `histories`.
    pub fn of(tasks: &[TaskExecution], histories: &Histories) -> Counted {
        let mut counted = Counted::default();
        for task in tasks {
            match task.status {
                TaskStatus::Completed => counted.outcomes[0] += 1,
                TaskStatus::Failed => counted.outcomes[1 + usize::from(task.is_abandoned())] += 1,
                _ => {}
            }
        }
        counted.events = histories.values().map(|h| h.len() as u64).sum();
        counted
    }

    pub(crate) fn finished(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    pub(crate) fn add(&mut self, other: &Counted) {
        (0..3).for_each(|i| self.outcomes[i] += other.outcomes[i]);
        self.events += other.events;
    }
}

/// The ledger of a run, shared by its threads; `before`: what was finished when the run started.
#[derive(Debug, Default)]
#[allow(missing_docs)]
pub struct Ledger {
    pub run: Uuid,
    pub tasks_per_workflow: u32,
    pub before: Counted,
    counted: Mutex<Vec<Counted>>,
    pruned: Mutex<Vec<Pruned>>,
}

impl Ledger {
    /// The ledger of run `run`: `workflows` of `tasks_per_workflow` tasks, none stored yet.
    pub fn new(run: Uuid, workflows: u32, tasks_per_workflow: u32) -> Ledger {
        let counted = Mutex::new(vec![Counted::default(); workflows as usize]);
        Ledger { run, tasks_per_workflow, counted, ..Ledger::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Counted>> {
        self.counted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index of `workflow` in the run, if it is one of its workflow executions.
    fn index(&self, workflow: Uuid) -> Option<usize> {
        // The UUID's variant bits cover the index's top two bits, always zero.
        let index = usize::try_from(workflow.as_u64_pair().1 & (u64::MAX >> 2)).ok()?;
        (workflow_id(self.run, index) == workflow).then_some(index)
    }

    /// Starts the `index`th workflow execution from what was stored (`None`: removed).
    pub(crate) fn held(&mut self, index: usize, stored: Option<Counted>) {
        let c = stored.unwrap_or_default();
        self.before.add(&c);
        let all = self.counted.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = all.get_mut(index) {
            *slot = Counted { held: true, pruned_before: stored.is_none(), ..c };
        }
    }

    /// A call changed a task of each of `workflows` and wrote its event; finished as `how`.
    pub fn record(&self, workflows: impl IntoIterator<Item = Uuid>, how: Option<usize>) {
        let mut all = self.lock();
        for index in workflows.into_iter().filter_map(|w| self.index(w)) {
            all[index].events += 1;
            if let Some(how) = how {
                all[index].outcomes[how] += 1;
            }
        }
    }

    /// A `prune_finished` batch reported `pruned`.
    pub fn pruned(&self, pruned: &Pruned) {
        let mut all = self.lock();
        for index in pruned.workflows.iter().filter_map(|w| self.index(*w)) {
            // Even if removed early: the run must not wait for it (the checks then fail).
            all[index].pruned += 1;
        }
        if !pruned.workflows.is_empty() || pruned.tasks > 0 || pruned.events > 0 {
            self.pruned.lock().unwrap_or_else(PoisonError::into_inner).push(pruned.clone());
        }
    }

    /// The creation batches: their workflow executions' indexes.
    pub(crate) fn batches(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let n = self.lock().len();
        let batch = move |b: usize| b * WORKFLOWS_PER_BATCH..((b + 1) * WORKFLOWS_PER_BATCH).min(n);
        (0..n.div_ceil(WORKFLOWS_PER_BATCH)).map(batch)
    }

    /// The creation batches still to make (none of theirs held), each with its number.
    pub fn batches_to_create(&self) -> Vec<(u64, Range<usize>)> {
        let batches = self.batches().enumerate();
        let all = self.lock();
        let to_create = batches.filter(|(_, range)| !all[range.start].held);
        to_create.map(|(n, range)| (n as u64, range)).collect()
    }

    /// Whether every workflow execution has finished or was removed.
    pub(crate) fn all_settled(&self) -> bool {
        let per_workflow = u64::from(self.tasks_per_workflow);
        self.lock().iter().all(|c| c.pruned > 0 || c.pruned_before || c.finished() >= per_workflow)
    }

    pub(crate) fn finished_tasks(&self) -> u64 {
        self.lock().iter().map(Counted::finished).sum()
    }

    /// The workflow executions of the run, in creation order.
    pub fn workflows(&self) -> impl Iterator<Item = Uuid> + '_ {
        (0..self.lock().len()).map(|i| workflow_id(self.run, i))
    }

    /// The figures of `workflow`, if it is one of the run's.
    pub fn counted(&self, workflow: Uuid) -> Option<Counted> {
        self.lock().get(self.index(workflow)?).copied()
    }

    /// The `prune_finished` batches that removed anything, in the order they reported.
    pub(crate) fn batches_pruned(&self) -> Vec<Pruned> {
        self.pruned.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// What a resumed run found: workflow executions stored, removed, not created yet; in those
/// stored, tasks finished, tasks claimed by the dead process, events.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Resumed {
    pub workflows_stored: u64,
    pub workflows_pruned: u64,
    pub workflows_to_create: u64,
    pub tasks_finished: u64,
    pub tasks_claimed: u64,
    pub events: u64,
}

/// Starts `ledger` from what `store` holds, `created_batches` recorded. A workflow execution
/// absent was removed if its batch was recorded or has others stored, else never created (so a
/// batch created, not recorded and all removed since is made again: the one case it cannot tell).
pub fn resume(
    store: &dyn TaskExecutionStore,
    ledger: &mut Ledger,
    created_batches: u64,
) -> Result<Resumed, DalError> {
    let mut found = Resumed::default();
    for (number, batch) in ledger.batches().enumerate() {
        let mut stored = Vec::new();
        for index in batch.clone() {
            let (tasks, histories) = read_workflow(store, workflow_id(ledger.run, index))?;
            let counted = Counted::of(&tasks, &histories);
            found.tasks_claimed += tasks.iter().filter(|t| t.claimed_by.is_some()).count() as u64;
            found.tasks_finished += counted.finished();
            found.events += counted.events;
            stored.push((!tasks.is_empty()).then_some(counted));
        }
        let held = stored.iter().flatten().count() as u64;
        found.workflows_stored += held;
        if held == 0 && number as u64 >= created_batches {
            found.workflows_to_create += batch.len() as u64;
            continue;
        }
        found.workflows_pruned += batch.len() as u64 - held;
        batch.zip(stored).for_each(|(index, counted)| ledger.held(index, counted));
    }
    Ok(found)
}

/// The history of a workflow execution by task, each oldest first.
pub type Histories = BTreeMap<Uuid, Vec<ExecutionEvent>>;

/// A workflow execution's tasks and history.
pub fn read_workflow(
    store: &dyn TaskExecutionStore,
    workflow: Uuid,
) -> Result<(Vec<TaskExecution>, Histories), DalError> {
    let (tasks, mut histories, mut after) =
        (store.list_for_workflow(workflow)?, Histories::new(), None);
    while !tasks.is_empty() {
        let page = store.events_for_workflow(workflow, after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for event in page {
            histories.entry(event.task_execution_id).or_default().push(event);
        }
    }
    Ok((tasks, histories))
}
