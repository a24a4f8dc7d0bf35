//! The rows: a task execution as stored, and the input that creates one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{SubStatus, TaskStatus};

/// One task execution: a row of `task_executions`, as the statement that wrote or read it
/// returned it. Times have microsecond precision on both backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskExecution {
    /// Primary key; a UUIDv7, so keys arrive in time order.
    pub id: Uuid,
    /// The workflow execution this task belongs to.
    pub workflow_execution_id: Uuid,
    /// The task's name, unique within its workflow execution.
    pub task_name: String,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// The attempt being made or last made, from 1 to `max_attempts`.
    pub attempt: i32,
    /// How many attempts the task may make in all (at least 1).
    pub max_attempts: i32,
    /// The rules that decide whether the task runs, for the engine to evaluate.
    pub trigger_rules: Value,
    /// The task's configuration, for the engine.
    pub task_configuration: Value,
    /// Why the task is in its current outcome: the error of a failure, the reason of a skip or
    /// an abandonment. Cleared when the task goes back to `Ready` for a retry.
    pub error_details: Option<String>,
    /// The most recent error the task hit; kept across retries, cleared by
    /// `reset_retry_state`.
    pub last_error: Option<String>,
    /// When a retry becomes due; a `Ready` task with a future `retry_at` is not claimable yet.
    pub retry_at: Option<DateTime<Utc>>,
    /// When the current attempt started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// How many times the task was reset after its runner was presumed dead.
    pub recovery_attempts: i32,
    /// When the task was last reset for recovery.
    pub last_recovery_at: Option<DateTime<Utc>>,
    /// The runner that holds the task's claim, if any.
    pub claimed_by: Option<Uuid>,
    /// The last sign of life from the runner holding the claim.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// How many times the task has been claimed. Every claim adds one, so a [`Lease`] taken
    /// by an earlier claim, even by the same runner, no longer matches.
    pub claim_count: i32,
    /// Set when the task was abandoned (given up on, not failed by its own error): such a task
    /// is `Failed` with this time set.
    pub abandoned_at: Option<DateTime<Utc>>,
    /// What a `Running` task is doing (`None` in every other status).
    pub sub_status: Option<SubStatus>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

impl TaskExecution {
    /// Whether the task was abandoned (see [`TaskExecution::abandoned_at`]).
    pub fn is_abandoned(&self) -> bool {
        self.abandoned_at.is_some()
    }

    /// The lease of the task's current claim, if it is claimed.
    pub fn lease(&self) -> Option<Lease> {
        self.claimed_by.map(|runner_id| Lease {
            task_id: self.id,
            runner_id,
            claim: self.claim_count,
        })
    }
}

/// Proof of one claim of one task by one runner: the fence of the runner protocol. A call
/// that takes a lease succeeds only while it is the task's current claim (same runner, same
/// claim number), so a runner presumed dead cannot finish an attempt that was recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The claimed task.
    pub task_id: Uuid,
    /// The runner holding the claim.
    pub runner_id: Uuid,
    /// The task's `claim_count` when it was claimed.
    pub claim: i32,
}

/// A task claimed by `claim_ready`, with the lease that finishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The task as the claim left it (`Running`, claimed).
    pub task: TaskExecution,
    /// The claim's lease.
    pub lease: Lease,
}

/// Retry statistics of a workflow execution, aggregated by the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryStats {
    /// Tasks that needed a retry (`attempt > 1`).
    pub tasks_retried: i64,
    /// Retries in all (the sum of `attempt - 1`).
    pub total_retries: i64,
    /// The highest attempt any task reached; 0 for a workflow without tasks.
    pub max_attempt: i32,
    /// Tasks that failed on their last attempt (`Failed`, `attempt >= max_attempts`, not
    /// abandoned).
    pub tasks_exhausted: i64,
}

/// How far behind the queue is ([`crate::WorkflowReads::queue_lag`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLag {
    /// `Ready` tasks due now: claimable, not yet claimed.
    pub due: i64,
    /// How long the oldest of them has been due; `None` when there is none.
    pub oldest_due_age: Option<chrono::TimeDelta>,
    /// `Running` tasks.
    pub running: i64,
}

/// How many tasks are in each status (a field per status), over the whole store (for metrics
/// gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct StatusCounts {
    pub not_started: i64,
    pub ready: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl StatusCounts {
    /// The count of `status`.
    pub fn get(&self, status: TaskStatus) -> i64 {
        *{ *self }.slot(status)
    }

    /// The field that counts `status`.
    pub(crate) fn slot(&mut self, status: TaskStatus) -> &mut i64 {
        match status {
            TaskStatus::NotStarted => &mut self.not_started,
            TaskStatus::Ready => &mut self.ready,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Skipped => &mut self.skipped,
        }
    }

    /// All tasks.
    pub fn total(&self) -> i64 {
        TaskStatus::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// What `complete_many` did with a batch of leases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The tasks completed, as written, by id.
    pub completed: Vec<TaskExecution>,
    /// The leases that were no longer the current claim (or whose task was not `Running`):
    /// their tasks were left unchanged.
    pub lost: Vec<Lease>,
}

/// A task a runner failed, with the error it failed with: one entry of [`Finished::failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    /// The lease the runner holds on the task.
    pub lease: Lease,
    /// The error, kept in `error_details` and `last_error` and in the `failed` event.
    pub error: String,
}

/// A failed attempt of a task to be retried, with its error and when the next attempt is due:
/// one entry of [`Finished::retried`], what [`crate::ClaimStore::fail_and_retry`] does alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetriedTask {
    /// The lease the runner holds on the task.
    pub lease: Lease,
    /// The error, kept in `last_error` and in the `retry_scheduled` event.
    pub error: String,
    /// When the next attempt is due.
    pub retry_at: DateTime<Utc>,
}

/// What a runner hands back at the end of a cycle: the tasks it completed, those it failed and
/// those whose failed attempt is to be retried, each with its lease. See
/// [`crate::ClaimStore::finish_and_claim`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finished {
    /// The leases of the tasks completed.
    pub completed: Vec<Lease>,
    /// The tasks failed, each with its error.
    pub failed: Vec<FailedTask>,
    /// The tasks whose failed attempt is retried, each with its error and retry time; one
    /// on its last attempt is failed instead.
    pub retried: Vec<RetriedTask>,
}

impl Finished {
    /// Whether there is nothing to finish.
    pub fn is_empty(&self) -> bool {
        self.completed.is_empty() && self.failed.is_empty() && self.retried.is_empty()
    }
}

/// What one runner cycle ([`crate::ClaimStore::finish_and_claim`]) did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cycle {
    /// The tasks completed, as written, by id.
    pub completed: Vec<TaskExecution>,
    /// The tasks failed, as written, by id: those of [`Finished::failed`], and those of
    /// [`Finished::retried`] that were on their last attempt.
    pub failed: Vec<TaskExecution>,
    /// The tasks whose retry was scheduled (`Ready`, `attempt + 1`), as written, by id.
    pub retried: Vec<TaskExecution>,
    /// The leases (of any list) that were no longer the current claim, or whose task was
    /// not in a status the outcome may start from: their tasks were left unchanged.
    pub lost: Vec<Lease>,
    /// The tasks claimed for the next cycle, by id, each with its lease.
    pub claimed: Vec<Claimed>,
}

/// What a stale-claim sweep did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Tasks reset to `Ready` with `recovery_attempts + 1`, as written.
    pub reset: Vec<TaskExecution>,
    /// Tasks at the recovery cap, abandoned (`Failed`, `abandoned_at` set), as written.
    pub abandoned: Vec<TaskExecution>,
}

/// Where a retention pass stands: the finished task it scanned last, in the order it scans
/// them (`completed_at`, then id). Pass it to the next `prune_finished` call to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCursor {
    /// When that task finished.
    pub completed_at: DateTime<Utc>,
    /// The task.
    pub task_id: Uuid,
}

impl PruneCursor {
    /// The cursor before every task that finished at `at` or later: a pass started after it
    /// reads only those (see `RetentionStore::prune_finished`).
    pub fn finished_since(at: DateTime<Utc>) -> Self {
        PruneCursor { completed_at: at, task_id: Uuid::nil() }
    }
}

/// What one batch of `prune_finished` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// The workflow executions removed, each with every one of its tasks and events, sorted.
    pub workflows: Vec<Uuid>,
    /// The task executions deleted.
    pub tasks: u64,
    /// The execution events deleted.
    pub events: u64,
    /// Where the next batch starts; `None` when the pass is over.
    pub next: Option<PruneCursor>,
}

/// The input of `create` and `create_many`.
///
/// [`NewTaskExecution::new`] gives the defaults: status `NotStarted`, attempt 1,
/// `max_attempts` 1, trigger rules `{"type":"Always"}`, configuration `{}`, no `retry_at`.
/// The fields are public so that struct-update syntax works:
///
/// ```
/// # use dal_core::NewTaskExecution;
/// let new = NewTaskExecution { max_attempts: 3, ..NewTaskExecution::new(uuid::Uuid::now_v7(), "extract") };
/// assert_eq!(new.attempt, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTaskExecution {
    /// The workflow execution the task belongs to.
    pub workflow_execution_id: Uuid,
    /// The task's name: 1 to 255 characters, no control characters, unique within the
    /// workflow execution.
    pub task_name: String,
    /// `NotStarted` (the default) or `Ready`; a task cannot be created in any other status.
    pub status: TaskStatus,
    /// From 1 to `max_attempts`.
    pub attempt: i32,
    /// At least 1.
    pub max_attempts: i32,
    /// Trigger rules for the engine.
    pub trigger_rules: Value,
    /// Configuration for the engine.
    pub task_configuration: Value,
    /// When the task becomes claimable, if not at once.
    pub retry_at: Option<DateTime<Utc>>,
}

impl NewTaskExecution {
    /// A task of `workflow_execution_id` named `task_name`, with the defaults.
    pub fn new(workflow_execution_id: Uuid, task_name: impl Into<String>) -> Self {
        NewTaskExecution {
            workflow_execution_id,
            task_name: task_name.into(),
            status: TaskStatus::NotStarted,
            attempt: 1,
            max_attempts: 1,
            trigger_rules: serde_json::json!({"type": "Always"}),
            task_configuration: serde_json::json!({}),
            retry_at: None,
        }
    }

    /// The same task with `max_attempts` set.
    pub fn with_max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The same task with `status` set (`NotStarted` or `Ready`).
    pub fn with_status(mut self, status: TaskStatus) -> Self {
        self.status = status;
        self
    }

    /// The same task with its trigger rules set.
    pub fn with_trigger_rules(mut self, trigger_rules: Value) -> Self {
        self.trigger_rules = trigger_rules;
        self
    }

    /// The same task with its configuration set.
    pub fn with_configuration(mut self, task_configuration: Value) -> Self {
        self.task_configuration = task_configuration;
        self
    }
}
