//! What a storage backend provides: a few primitive statements. **For backend authors; not a
//! stable interface.** Users of a store need none of it (see [`crate::prelude`]).
//!
//! [`crate::Store`] builds every operation from these primitives; a backend turns each call
//! into SQL and decides nothing. Every primitive that changes tasks writes, in the same atomic
//! unit, each changed row's event when the plan has one ([`crate::event::EventSpec::data_for`]
//! the row as written, at the plan's `effects.updated_at`), in task id order.

use std::sync::Weak;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::event::{EventSpec, ExecutionEvent};
use crate::plan::{Claim, Plan, Stale};
use crate::wake::{Bell, WakeSource};
use crate::{PruneCursor, Pruned, RetryStats, TaskExecution, TaskStatus};

/// The primitive statements of a backend.
pub trait Backend: Send + Sync + 'static {
    /// The backend's name in traces and test names: `"postgres"` or `"sqlite"`.
    const NAME: &'static str;

    /// The connection pool, for statements of the user's own.
    type Pool;

    /// The store's connection pool.
    fn pool(&self) -> &Self::Pool;

    /// Inserts fully formed rows, with `event` for each, and returns them as stored, in any
    /// order; all or nothing. A taken name is `Database { kind: UniqueViolation }`.
    fn insert(
        &self,
        rows: &[TaskExecution],
        event: Option<&EventSpec>,
    ) -> Result<Vec<TaskExecution>>;

    /// Applies `plan` to task `id` if the row meets `plan.guard`, in one statement; `None` when
    /// it does not (nothing changed).
    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>>;

    /// One runner cycle as one atomic unit: applies each of `finished` (leased plans, in task
    /// id order, a task's plans guarding disjoint rows) to its lease's task if the row meets
    /// its guard, locking those rows in that order, then claims as `claim` says, skipping rows
    /// another transaction holds. All writes see the rows as they were before the unit: a task
    /// a plan makes `Ready` is not claimed by it. Returns every row written, each with its queue
    /// position (`due_at`) as written, in any order.
    fn cycle(
        &self,
        finished: &[Plan],
        claim: &Claim,
    ) -> Result<Vec<(TaskExecution, Option<DateTime<Utc>>)>>;

    /// Applies `plan` to every task `stale` selects that meets the guard, in one statement,
    /// skipping rows another transaction holds. Returns the rows written, in any order.
    fn sweep(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>>;

    /// Deletes, as one atomic unit, the workflow executions among those of the first `limit`
    /// finished tasks with `completed_at` before `older_than` and `(completed_at, id)` after
    /// `after`, in that order, whose every task is finished and unchanged since `older_than`,
    /// with all their tasks and events; checked on the rows as locked (in id order). `next`:
    /// the last task scanned when `limit` were, else `None`.
    fn prune(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned>;

    /// One row by id.
    fn get(&self, id: Uuid) -> Result<Option<TaskExecution>>;

    /// The rows of a workflow execution, by `created_at` then `id`.
    fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>>;

    /// The claimed tasks whose last heartbeat is before `older_than`, by id.
    fn find_stale(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>>;

    /// Up to `limit` `Ready` tasks due by `due_at` (with `retry_at` set when `retries_only`),
    /// smallest `(due_at, id)` first.
    fn list_ready(
        &self,
        due_at: DateTime<Utc>,
        limit: u32,
        retries_only: bool,
    ) -> Result<Vec<TaskExecution>>;

    /// The events of one task, in the order they were written.
    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>>;

    /// Up to `limit` events of a workflow execution with `seq > after`, in order.
    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>>;

    /// The tasks in `status` of the workflow executions (not empty), by id.
    fn tasks_with_status(
        &self,
        workflows: &[Uuid],
        status: TaskStatus,
    ) -> Result<Vec<TaskExecution>>;

    /// The deferred tasks (`Running`, sub-status `deferred`) of the workflow executions, by id.
    fn deferred_tasks(&self, workflows: &[Uuid]) -> Result<Vec<TaskExecution>>;

    /// `(workflow execution, task name, status)` of the tasks of `workflows` (not empty), only
    /// those named in `names` when given.
    fn task_statuses(
        &self,
        workflows: &[Uuid],
        names: Option<&[&str]>,
    ) -> Result<Vec<(Uuid, String, TaskStatus)>>;

    /// The workflow executions among `workflows` (not empty) that have tasks, all terminal.
    fn complete_workflows(&self, workflows: &[Uuid]) -> Result<Vec<Uuid>>;

    /// Whether a task of the workflow execution is abandoned.
    fn has_abandoned(&self, workflow_execution_id: Uuid) -> Result<bool>;

    /// The retry statistics of a workflow execution.
    fn retry_stats(&self, workflow_execution_id: Uuid) -> Result<RetryStats>;

    /// The tasks of a workflow execution that failed on their last attempt and were not
    /// abandoned, by id.
    fn exhausted_tasks(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>>;

    /// How many tasks are in each status that has any.
    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>>;

    /// In one `SELECT`: the `Ready` tasks due by `now`, the earliest queue position among
    /// them, and the `Running` tasks.
    fn queue_lag(&self, now: DateTime<Utc>) -> Result<(i64, Option<DateTime<Utc>>, i64)>;

    /// How the backend hears of other processes' writes.
    fn wake_source(&self) -> WakeSource;

    /// Starts watching for other processes' writes, ringing `bell` until it is dropped; called
    /// once, at a store's first wait. Sends nothing on the store's pool.
    fn watch(&self, bell: Weak<Bell>);
}
