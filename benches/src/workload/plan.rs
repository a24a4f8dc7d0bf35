//! What a run has to do: its workflow executions, created in batches, and, when it resumes a
//! run whose process died, what that process left.
//!
//! On `--resume` each workflow execution of the run is read back ([`Plan::resume`]):
//! - stored: its tasks and history are the starting point; the claims the dead process held
//!   are recovered by the sweeper once stale;
//! - absent, in a batch the record says was created or of which others are stored: retention
//!   removed it (it removes only workflow executions whose every task finished);
//! - absent otherwise: never created; the new run creates it.
//!
//! The one case this cannot tell: a batch created just before the process died, not yet
//! recorded, and all of it already finished and removed. It is then created and run again.

use std::collections::BTreeMap;
use std::ops::Range;

use dal_core::{DalError, ExecutionEvent, TaskExecution, TaskExecutionStore};
use serde::Serialize;
use uuid::Uuid;

use super::ledger::{Before, Counted, workflow_id};

/// Workflow executions per `create_many`.
pub const WORKFLOWS_PER_BATCH: usize = 100;

/// What a resumed run found, for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Resumed {
    /// Workflow executions stored.
    pub workflows_stored: u64,
    /// Workflow executions removed by retention.
    pub workflows_pruned: u64,
    /// Workflow executions not created yet.
    pub workflows_to_create: u64,
    /// Tasks finished, in the stored workflow executions.
    pub tasks_finished: u64,
    /// Tasks claimed by the dead process.
    pub tasks_claimed: u64,
    /// History events stored.
    pub events: u64,
}

/// What a run has to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The run's id.
    pub run_id: Uuid,
    /// What the database held of each workflow execution, in creation order.
    pub before: Vec<Before>,
    /// Set when the run resumes one whose process died.
    pub resumed: Option<Resumed>,
}

/// The history of a workflow execution by task, each oldest first.
pub type Histories = BTreeMap<Uuid, Vec<ExecutionEvent>>;

impl Plan {
    /// A new run of `workflows` workflow executions.
    pub fn fresh(run_id: Uuid, workflows: u32) -> Plan {
        let before = vec![Before::Nothing; workflows as usize];
        Plan {
            run_id,
            before,
            resumed: None,
        }
    }

    /// Run `run_id` (of `workflows` workflow executions, `created_batches` creation batches
    /// recorded) as `store` holds it.
    pub fn resume(
        store: &dyn TaskExecutionStore,
        run_id: Uuid,
        workflows: u32,
        created_batches: u64,
    ) -> Result<Plan, DalError> {
        let mut plan = Plan::fresh(run_id, workflows);
        let mut found = Resumed::default();
        for (number, range) in plan.batches().enumerate() {
            let mut created = (number as u64) < created_batches;
            for index in range.clone() {
                let (tasks, histories) = read_workflow(store, workflow_id(run_id, index))?;
                if tasks.is_empty() {
                    continue;
                }
                let counted = Counted {
                    events: histories.values().map(|h| h.len() as u64).sum(),
                    ..Counted::of_rows(&tasks)
                };
                created = true;
                found.workflows_stored += 1;
                found.tasks_finished += counted.finished();
                found.tasks_claimed +=
                    tasks.iter().filter(|t| t.claimed_by.is_some()).count() as u64;
                found.events += counted.events;
                plan.before[index] = Before::Stored(counted);
            }
            for before in plan.before[range]
                .iter_mut()
                .filter(|b| **b == Before::Nothing)
            {
                if created {
                    found.workflows_pruned += 1;
                    *before = Before::Pruned;
                } else {
                    found.workflows_to_create += 1;
                }
            }
        }
        plan.resumed = Some(found);
        Ok(plan)
    }

    /// The creation batches: their workflow executions' indexes.
    pub fn batches(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let n = self.before.len();
        let batch = move |b: usize| b * WORKFLOWS_PER_BATCH..((b + 1) * WORKFLOWS_PER_BATCH).min(n);
        (0..n.div_ceil(WORKFLOWS_PER_BATCH)).map(batch)
    }

    /// The batches still to create, each with its number.
    pub fn batches_to_create(&self) -> Vec<(u64, Range<usize>)> {
        let batches = self
            .batches()
            .enumerate()
            .map(|(n, range)| (n as u64, range));
        batches
            .filter(|(_, range)| self.before[range.start] == Before::Nothing)
            .collect()
    }
}

/// A workflow execution's tasks and history.
pub fn read_workflow(
    store: &dyn TaskExecutionStore,
    workflow: Uuid,
) -> Result<(Vec<TaskExecution>, Histories), DalError> {
    let tasks = store.list_for_workflow(workflow)?;
    let mut histories = Histories::new();
    let mut after = None;
    while !tasks.is_empty() {
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
    Ok((tasks, histories))
}
