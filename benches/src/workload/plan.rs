//! What a process that died left of its run, read back by `--resume`. Each workflow execution
//! of the run is stored (the starting point; the sweeper recovers the dead process's claims), or
//! absent: removed by retention if its batch was recorded or has others stored, else never
//! created. So a batch created but not recorded, and all of it finished and removed since, is
//! created and run again: the one case this cannot tell.

use std::collections::BTreeMap;

use dal_core::{DalError, ExecutionEvent, TaskExecution, TaskExecutionStore};
use serde::Serialize;
use uuid::Uuid;

use super::ledger::{Counted, Ledger, workflow_id};

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

/// Starts `ledger` from what `store` holds of its run, `created_batches` creation batches
/// recorded.
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
            let mut counted = Counted::of_rows(&tasks);
            counted.events = histories.values().map(|h| h.len() as u64).sum();
            let claimed = tasks.iter().filter(|t| t.claimed_by.is_some()).count();
            found.tasks_claimed += claimed as u64;
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
        for (index, counted) in batch.zip(stored) {
            ledger.held(index, counted);
        }
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
    let tasks = store.list_for_workflow(workflow)?;
    let mut histories = Histories::new();
    let mut after = None;
    while !tasks.is_empty() {
        let page = store.events_for_workflow(workflow, after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for event in page {
            let task = event.task_execution_id;
            histories.entry(task).or_default().push(event);
        }
    }
    Ok((tasks, histories))
}
