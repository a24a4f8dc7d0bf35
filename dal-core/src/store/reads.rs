//! The reads: the execution history, and the scheduler's questions about workflow executions.
//! One statement each, the aggregation in SQL.

use std::collections::HashMap;

use uuid::Uuid;

use super::Store;
use crate::backend::Backend;
use crate::error::Result;
use crate::{ExecutionEvent, QueueLag, RetryStats, StatusCounts, TaskExecution, TaskStatus};

/// The questions a scheduler tick asks about many workflow executions at once. Each is one
/// statement whatever the number of workflows or tasks; inputs of tens of thousands of ids are
/// bound as one parameter. Empty inputs return empty results without a round trip.
pub trait WorkflowReads: Send + Sync {
    /// The `NotStarted` tasks of the workflow executions, by id.
    fn pending_tasks(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<TaskExecution>>;

    /// The status of each named task of a workflow execution; names it has no task of are
    /// left out.
    fn task_statuses(
        &self,
        workflow_execution_id: Uuid,
        task_names: &[&str],
    ) -> Result<HashMap<String, TaskStatus>>;

    /// The status of every task of each workflow execution, by workflow then task name;
    /// workflow executions without tasks are left out.
    fn statuses_for_workflows(
        &self,
        workflow_execution_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, HashMap<String, TaskStatus>>>;

    /// Whether the workflow execution has tasks and every one is terminal (`Completed`,
    /// `Failed` or `Skipped`). A workflow execution without tasks (or an unknown id) is not
    /// complete.
    fn is_workflow_complete(&self, workflow_execution_id: Uuid) -> Result<bool>;

    /// The workflow executions among `workflow_execution_ids` that are complete (see
    /// [`WorkflowReads::is_workflow_complete`]), sorted.
    fn complete_workflows(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<Uuid>>;

    /// Whether a task of the workflow execution was abandoned (a regular failure is not).
    fn has_abandoned_task(&self, workflow_execution_id: Uuid) -> Result<bool>;

    /// The retry statistics of the workflow execution, aggregated by the database.
    fn retry_stats(&self, workflow_execution_id: Uuid) -> Result<RetryStats>;

    /// The tasks of the workflow execution that failed on their last attempt (and were not
    /// abandoned), by id.
    fn exhausted_tasks(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>>;

    /// How many tasks are in each status over the whole store (one grouped query), for
    /// metrics gauges.
    fn count_by_status(&self) -> Result<StatusCounts>;

    /// How far behind the queue is, for metrics: the `Ready` tasks due now, the age of the
    /// oldest of them, and the `Running` tasks (one `SELECT`, through the queue's indexes).
    fn queue_lag(&self) -> Result<QueueLag>;

    /// The deferred tasks of the workflow executions (`Running` with sub-status
    /// [`crate::SubStatus::Deferred`]), by id.
    fn deferred_tasks(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<TaskExecution>>;
}

impl<B: Backend> WorkflowReads for Store<B> {
    fn pending_tasks(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<TaskExecution>> {
        self.read("pending_tasks", workflow_execution_ids.is_empty(), || {
            self.backend.tasks_with_status(workflow_execution_ids, TaskStatus::NotStarted)
        })
    }

    fn task_statuses(
        &self,
        workflow_execution_id: Uuid,
        task_names: &[&str],
    ) -> Result<HashMap<String, TaskStatus>> {
        self.read("task_statuses", task_names.is_empty(), || {
            self.backend
                .task_statuses(&[workflow_execution_id], Some(task_names))
                .map(|rows| rows.into_iter().map(|(_, name, status)| (name, status)).collect())
        })
    }

    fn statuses_for_workflows(
        &self,
        workflow_execution_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, HashMap<String, TaskStatus>>> {
        self.read("statuses_for_workflows", workflow_execution_ids.is_empty(), || {
            self.backend.task_statuses(workflow_execution_ids, None).map(|rows| {
                let mut by_workflow: HashMap<Uuid, HashMap<String, TaskStatus>> = HashMap::new();
                for (workflow, name, status) in rows {
                    by_workflow.entry(workflow).or_default().insert(name, status);
                }
                by_workflow
            })
        })
    }

    fn is_workflow_complete(&self, workflow_execution_id: Uuid) -> Result<bool> {
        self.traced(
            "is_workflow_complete",
            self.backend
                .complete_workflows(&[workflow_execution_id])
                .map(|complete| complete.contains(&workflow_execution_id)),
        )
    }

    fn complete_workflows(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        self.read("complete_workflows", workflow_execution_ids.is_empty(), || {
            self.backend.complete_workflows(workflow_execution_ids).map(|mut ids| {
                ids.sort_unstable();
                ids
            })
        })
    }

    fn has_abandoned_task(&self, workflow_execution_id: Uuid) -> Result<bool> {
        self.traced("has_abandoned_task", self.backend.has_abandoned(workflow_execution_id))
    }

    fn retry_stats(&self, workflow_execution_id: Uuid) -> Result<RetryStats> {
        self.traced("retry_stats", self.backend.retry_stats(workflow_execution_id))
    }

    fn deferred_tasks(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<TaskExecution>> {
        self.read("deferred_tasks", workflow_execution_ids.is_empty(), || {
            self.backend.deferred_tasks(workflow_execution_ids)
        })
    }

    fn exhausted_tasks(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
        self.traced("exhausted_tasks", self.backend.exhausted_tasks(workflow_execution_id))
    }

    fn count_by_status(&self) -> Result<StatusCounts> {
        self.traced(
            "count_by_status",
            self.backend.count_by_status().map(|rows| {
                let mut counts = StatusCounts::default();
                for (status, count) in rows {
                    *counts.slot(status) += count;
                }
                counts
            }),
        )
    }

    fn queue_lag(&self) -> Result<QueueLag> {
        let now = self.now();
        let lag = self.backend.queue_lag(now).map(|(due, oldest, running)| QueueLag {
            due,
            oldest_due_age: oldest.map(|at| (now - at).max(chrono::TimeDelta::zero())),
            running,
        });
        self.traced("queue_lag", lag)
    }
}

/// The execution history: every change to a task leaves one event, written in the same atomic
/// unit as the change (heartbeats excepted); a rejected or rolled-back call leaves none.
pub trait HistoryStore: Send + Sync {
    /// The events of one task, oldest first (one `SELECT`). An unknown id has no events.
    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>>;

    /// Up to `limit` events of a workflow execution after the one whose `seq` is `after`,
    /// oldest first (keyset pagination; one `SELECT` through the workflow's tasks, whose events
    /// are each one index range; none for a `limit` of 0). On PostgreSQL
    /// `seq` is allocated at write, not commit: a page read while the workflow changes may miss
    /// an event committed just after; read a finished workflow's history to be sure.
    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>>;
}

impl<B: Backend> HistoryStore for Store<B> {
    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>> {
        self.trace(
            "events_for_task",
            Some(task_execution_id),
            1,
            self.backend.events_for_task(task_execution_id),
        )
    }

    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>> {
        self.read("events_for_workflow", limit == 0, || {
            self.backend.events_for_workflow(
                workflow_execution_id,
                after.unwrap_or(i64::MIN),
                limit,
            )
        })
    }
}
