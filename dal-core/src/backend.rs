//! What a storage backend provides: a handful of primitive statements.
//!
//! **For backend authors.** Users of a store need none of this module: see [`crate::prelude`].
//!
//! A backend crate (`dal-postgres`, `dal-sqlite`) implements [`Backend`] with Diesel and its own
//! schema; [`crate::Store`] builds every public operation from these primitives, so validation,
//! the state machine, id and time assignment, error classification and tracing are written once
//! for all backends. Each primitive is one SQL statement (except where a method says otherwise)
//! and never reads before it writes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::event::{EventSpec, ExecutionEvent};
use crate::plan::{CyclePlan, Plan, Stale};
use crate::{Lease, PruneCursor, Pruned, RetryStats, TaskExecution, TaskStatus};

/// The primitive statements of a backend. Implemented by the backend crates; callers use
/// [`crate::TaskStore`] on a [`crate::Store`] instead.
pub trait Backend: Send + Sync + 'static {
    /// The backend's name in traces and test names: `"postgres"` or `"sqlite"`.
    const NAME: &'static str;

    /// The connection pool, for statements of the user's own.
    type Pool;

    /// The store's connection pool.
    fn pool(&self) -> &Self::Pool;

    /// Inserts fully formed rows (ids and times already assigned, input already validated) and
    /// returns them as stored (`INSERT ... RETURNING`), in any order, with one `event` per row
    /// (when there is one: none with the history off) written in the same atomic unit. All or nothing: one multi-row statement, or, only where
    /// the backend's bind-parameter limit forces it, several inside one transaction. A unique
    /// violation is reported as [`crate::DalError::Database`] with
    /// [`crate::DatabaseErrorKind::UniqueViolation`].
    fn insert(
        &self,
        rows: &[TaskExecution],
        event: Option<&EventSpec>,
    ) -> Result<Vec<TaskExecution>>;

    /// Reads one row by id (one `SELECT`).
    fn get(&self, id: Uuid) -> Result<Option<TaskExecution>>;

    /// Reads the rows of a workflow execution ordered by `created_at`, then `id` (one `SELECT`).
    fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>>;

    /// Applies `plan` to task `id` in one `UPDATE ... WHERE id = $id AND <plan.guard>
    /// RETURNING ...`. Returns the row as written, or `None` when no row met the guard (then
    /// nothing changed).
    ///
    /// Every write that changes tasks (this one, `claim`, `apply_stale`) writes `plan.event`
    /// for each changed row in the same atomic unit as the change, and no event when nothing
    /// changed. The event's data is [`EventSpec::data_for`] the row as written; its time is
    /// `plan.effects.updated_at`.
    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>>;

    /// Claims up to `limit` tasks in one statement: the `Ready` tasks whose queue position
    /// ([`crate::plan::due_at`]) is from `from` to `due_at`, smallest `(due_at, id)` first, and
    /// applies `plan` to them (which leaves their queue position as it was). Concurrent claimers never take the same task and never wait for
    /// each other (PostgreSQL: the candidates are locked `FOR UPDATE SKIP LOCKED` in a
    /// materialized CTE, so the `LIMIT` holds whatever plan the update gets; SQLite: one
    /// writer at a time). Returns the claimed rows, each with its queue position, in any order.
    fn claim(
        &self,
        due_at: DateTime<Utc>,
        from: DateTime<Utc>,
        limit: u32,
        plan: &Plan,
    ) -> Result<Vec<(TaskExecution, DateTime<Utc>)>>;

    /// Applies `plan` in one statement to every task whose current claim is one of `leases`
    /// (not empty, all of one runner: `plan.event`'s runner) and whose status is in
    /// `plan.guard.from`. Returns the rows written, in any order. Row locks are taken in id
    /// order, the one order every multi-row write that waits for locks uses, so concurrent
    /// batches cannot deadlock each other.
    fn apply_leased(&self, leases: &[Lease], plan: &Plan) -> Result<Vec<TaskExecution>>;

    /// One runner cycle as one atomic unit: applies `cycle.complete` to the tasks whose current
    /// claim is one of `cycle.completed` and whose status is in its guard, each failure's plan
    /// to its task on the same terms, and then claims as [`Backend::claim`] does (the range
    /// `cycle.range`, the plan `cycle.claim`), with each changed row's event. The leased rows
    /// are locked together in id order (the order of every multi-row write that waits), the
    /// claimed ones skipped when locked. Returns every row written, each with its queue
    /// position, in any order: `Completed` and `Failed` rows are the finished tasks, `Running`
    /// ones the claimed. PostgreSQL: one statement; SQLite: one `BEGIN IMMEDIATE` transaction.
    fn cycle(&self, cycle: &CyclePlan<'_>) -> Result<Vec<(TaskExecution, DateTime<Utc>)>>;

    /// Applies `plan` in one statement to every task that `stale` selects and that is in
    /// `plan.guard.from`; the selection is evaluated by the statement that writes. Tasks
    /// another transaction holds a lock on are skipped (they are being written, so their
    /// runner is not known to be dead; the next sweep looks again), so a sweep never waits
    /// for, nor deadlocks with, a runner's write. Returns the rows written, in any order.
    fn apply_stale(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>>;

    /// Reads the claimed tasks (statuses of [`crate::plan::CLAIMED`]) whose last heartbeat is
    /// before `older_than`, by id (one `SELECT`).
    fn find_stale(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>>;

    /// Reads up to `limit` `Ready` tasks whose queue position is at most `due_at` (only
    /// those with `retry_at` set when `retries_only`), in claim order: smallest `(due_at, id)`
    /// first (one `SELECT`).
    fn list_ready(
        &self,
        due_at: DateTime<Utc>,
        limit: u32,
        retries_only: bool,
    ) -> Result<Vec<TaskExecution>>;

    /// Reads the events of one task, in the order they were written (one `SELECT`).
    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>>;

    /// Reads up to `limit` events of a workflow execution with `seq > after`, in the order
    /// they were written (one `SELECT`).
    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>>;

    /// Reads the tasks in `status` of the workflow executions `workflow_execution_ids` (not
    /// empty), by id (one `SELECT`, one parameter for all ids).
    fn tasks_with_status(
        &self,
        workflow_execution_ids: &[Uuid],
        status: TaskStatus,
    ) -> Result<Vec<TaskExecution>>;

    /// Reads the deferred tasks (`Running`, sub-status `deferred`) of the workflow executions
    /// `workflow_execution_ids` (not empty), by id (one `SELECT`).
    fn deferred_tasks(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<TaskExecution>>;

    /// Reads `(workflow execution, task name, status)` of the tasks of
    /// `workflow_execution_ids` (not empty), only those named in `task_names` when given (one
    /// `SELECT`).
    fn task_statuses(
        &self,
        workflow_execution_ids: &[Uuid],
        task_names: Option<&[&str]>,
    ) -> Result<Vec<(Uuid, String, TaskStatus)>>;

    /// The workflow executions among `workflow_execution_ids` (not empty) that have tasks, all
    /// terminal (one grouped `SELECT`).
    fn complete_workflows(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<Uuid>>;

    /// Whether a task of the workflow execution is abandoned (one `SELECT EXISTS`).
    fn has_abandoned(&self, workflow_execution_id: Uuid) -> Result<bool>;

    /// The retry statistics of a workflow execution (one aggregate `SELECT`).
    fn retry_stats(&self, workflow_execution_id: Uuid) -> Result<RetryStats>;

    /// The tasks of a workflow execution that failed on their last attempt and were not
    /// abandoned, by id (one `SELECT`).
    fn exhausted_tasks(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>>;

    /// How many tasks are in each status that has any (one grouped `SELECT`).
    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>>;

    /// Deletes, as one atomic unit, the finished workflow executions found among the first
    /// `limit` finished tasks (`Completed`, `Failed`, `Skipped`) with `completed_at` before
    /// `older_than` and `(completed_at, id)` after `after`, in that order: those whose every
    /// task is finished and none changed at or after `older_than`, with all their tasks and
    /// events. The condition is checked on the rows as locked (in id order), so a task reset
    /// or changed meanwhile keeps its whole workflow execution. `next` is the last task
    /// scanned when `limit` were scanned, `None` otherwise. PostgreSQL: one statement;
    /// SQLite: reads without the write lock, then, only when something looks finished, one
    /// `BEGIN IMMEDIATE` transaction that checks again and deletes.
    fn prune(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned>;
}
