//! What a run has to do: its workflow executions, made in batches, and, when it resumes a run
//! whose process died, what that process left in the database.
//!
//! A run's workflow executions have ids made from the run's id and their index, so the record
//! of a run (its id and arguments, see [`super::record`]) names all of them. On `--resume`,
//! each is read back ([`Plan::resume`]):
//!
//! - stored: its tasks and history are the starting point ([`Before::Stored`]); tasks that
//!   failed with attempts left but were not yet retried (with `--retry fail-then-schedule`,
//!   the process died between `fail` and `schedule_retry`) are retried by the new run before
//!   its runners start; tasks claimed by the dead process are recovered by the sweeper once their heartbeats are stale;
//! - absent, in a batch the record says was created, or in a batch of which other workflow
//!   executions are stored: retention removed it ([`Before::Pruned`]; `prune_finished` only
//!   removes workflow executions whose every task is terminal);
//! - absent otherwise: never created; the new run creates it.
//!
//! The one case this cannot tell apart: a batch created just before the process died, the
//! record not yet updated, and all of its workflow executions already finished and pruned.
//! They are then created again, and run twice.

use std::collections::BTreeMap;

use dal_core::{DalError, ExecutionEvent, TaskExecution, TaskExecutionStore, TaskStatus};
use serde::Serialize;
use uuid::Uuid;

use super::ledger::Counted;

/// Workflow executions per `create_many` call.
pub const WORKFLOWS_PER_BATCH: usize = 100;

/// What the database held of a workflow execution when the run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Nothing: the run creates it.
    Nothing,
    /// Its tasks, with these figures (finished tasks and history events) already counted.
    Stored(Counted),
    /// Removed by retention before the run started.
    Pruned,
}

/// A failed task to retry before the runners start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The task.
    pub task: Uuid,
    /// Its workflow execution.
    pub workflow: Uuid,
}

/// What a resumed run found, for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Resumed {
    /// The run being finished.
    pub run_id: String,
    /// Workflow executions stored when the run resumed.
    pub workflows_stored: u64,
    /// Workflow executions removed by retention before.
    pub workflows_pruned: u64,
    /// Workflow executions not yet created.
    pub workflows_to_create: u64,
    /// Tasks already terminal (in the stored workflow executions).
    pub tasks_finished: u64,
    /// Tasks claimed by the dead process, left for the sweeper.
    pub tasks_claimed: u64,
    /// Tasks that failed with attempts left and were not retried, retried now.
    pub tasks_to_retry: u64,
    /// History events already stored.
    pub events: u64,
}

/// What a run has to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The run's id.
    pub run_id: Uuid,
    /// Every workflow execution of the run, in creation order.
    pub workflows: Vec<Uuid>,
    /// What the database held of each, by index.
    pub before: Vec<Before>,
    /// Failed tasks to retry first.
    pub retries: Vec<Retry>,
    /// Set when the run resumes one whose process died.
    pub resumed: Option<Resumed>,
}

/// The id of the `index`th workflow execution of run `run_id`: the run id's first 8 bytes
/// (its time and some of its randomness), then the index, as a version-8 UUID. Unique within
/// the run; a database holds one run.
pub fn workflow_id(run_id: Uuid, index: usize) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&run_id.as_bytes()[..8]);
    bytes[8..].copy_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v8(bytes)
}

impl Plan {
    /// A new run of `workflows` workflow executions: nothing stored yet.
    pub fn fresh(run_id: Uuid, workflows: u32) -> Plan {
        let workflows: Vec<Uuid> = (0..workflows as usize)
            .map(|i| workflow_id(run_id, i))
            .collect();
        Plan {
            run_id,
            before: vec![Before::Nothing; workflows.len()],
            workflows,
            retries: Vec::new(),
            resumed: None,
        }
    }

    /// The plan of run `run_id` (of `workflows` workflow executions, `created_batches` creation
    /// batches recorded) resumed on `store`: every workflow execution read back (its tasks and
    /// its history), one at a time.
    pub fn resume(
        store: &dyn TaskExecutionStore,
        run_id: Uuid,
        workflows: u32,
        created_batches: u64,
    ) -> Result<Plan, DalError> {
        let mut plan = Plan::fresh(run_id, workflows);
        let mut resumed = Resumed {
            run_id: run_id.to_string(),
            ..Resumed::default()
        };
        let batches = plan.workflows.len().div_ceil(WORKFLOWS_PER_BATCH);
        for batch in 0..batches {
            let range = batch * WORKFLOWS_PER_BATCH
                ..((batch + 1) * WORKFLOWS_PER_BATCH).min(plan.workflows.len());
            let mut any_stored = false;
            for index in range.clone() {
                let workflow = plan.workflows[index];
                let tasks = store.list_for_workflow(workflow)?;
                if tasks.is_empty() {
                    continue;
                }
                any_stored = true;
                let events = history(store, workflow)?
                    .values()
                    .map(|h| h.len() as u64)
                    .sum();
                let counted = counted(&tasks, events);
                resumed.workflows_stored += 1;
                resumed.tasks_finished += counted.finished();
                resumed.events += events;
                for task in &tasks {
                    if task.claimed_by.is_some() {
                        resumed.tasks_claimed += 1;
                    }
                    if to_retry(task) {
                        resumed.tasks_to_retry += 1;
                        plan.retries.push(Retry {
                            task: task.id,
                            workflow,
                        });
                    }
                }
                plan.before[index] = Before::Stored(counted);
            }
            let created = (batch as u64) < created_batches || any_stored;
            for index in range {
                if plan.before[index] == Before::Nothing {
                    if created {
                        resumed.workflows_pruned += 1;
                        plan.before[index] = Before::Pruned;
                    } else {
                        resumed.workflows_to_create += 1;
                    }
                }
            }
        }
        plan.resumed = Some(resumed);
        Ok(plan)
    }

    /// The batches of workflow executions to create, each with its number.
    pub fn batches_to_create(&self) -> impl Iterator<Item = (u64, &[Uuid])> {
        self.workflows
            .chunks(WORKFLOWS_PER_BATCH)
            .enumerate()
            .filter(|(number, _)| self.before[number * WORKFLOWS_PER_BATCH] == Before::Nothing)
            .map(|(number, batch)| (number as u64, batch))
    }
}

/// Whether a task failed with attempts left, not retried: the runner that failed it died
/// before `schedule_retry`.
fn to_retry(task: &TaskExecution) -> bool {
    task.status == TaskStatus::Failed && !task.is_abandoned() && task.attempt < task.max_attempts
}

/// The figures of a stored workflow execution's tasks, as a run would have counted them.
fn counted(tasks: &[TaskExecution], events: u64) -> Counted {
    let mut counted = Counted {
        events,
        ..Counted::default()
    };
    for task in tasks {
        match task.status {
            TaskStatus::Completed => counted.completed += 1,
            TaskStatus::Failed if task.is_abandoned() => counted.abandoned += 1,
            TaskStatus::Failed if !to_retry(task) => counted.exhausted += 1,
            _ => {}
        }
    }
    counted
}

/// The history of a workflow execution, by task, each oldest first.
pub fn history(
    store: &dyn TaskExecutionStore,
    workflow: Uuid,
) -> Result<BTreeMap<Uuid, Vec<ExecutionEvent>>, DalError> {
    let mut histories: BTreeMap<Uuid, Vec<ExecutionEvent>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.events_for_workflow(workflow, after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for event in page {
            histories
                .entry(event.task_execution_id)
                .or_default()
                .push(event);
        }
    }
    Ok(histories)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ids_are_the_run_and_the_index() {
        let run = Uuid::now_v7();
        let (a, b) = (workflow_id(run, 0), workflow_id(run, 1));
        assert_ne!(a, b);
        assert_eq!(workflow_id(run, 1), b);
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(&a.as_bytes()[..6], &run.as_bytes()[..6]);
    }

    #[test]
    fn a_fresh_plan_creates_every_batch() {
        let plan = Plan::fresh(Uuid::now_v7(), 250);
        let batches: Vec<(u64, usize)> = plan
            .batches_to_create()
            .map(|(n, b)| (n, b.len()))
            .collect();
        assert_eq!(batches, vec![(0, 100), (1, 100), (2, 50)]);
    }
}
