//! The foundation operations: create, read, and the lease-less transitions.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, unexpected};
use crate::backend::Backend;
use crate::clock;
use crate::error::{DalError, DatabaseErrorKind, Result};
use crate::event::{EventSpec, EventType};
use crate::plan::{Plan, Transition};
use crate::{NewTaskExecution, SubStatus, TaskExecution, validate};

/// The operations on task executions, implemented by [`Store`] for every backend; one store is
/// shared between threads. Every write is one statement that returns the row it wrote
/// (`RETURNING`), with no read before or after it, and atomic; a rejected call (validation,
/// not found, invalid transition, retries exhausted) changes nothing.
pub trait TaskStore: Send + Sync {
    /// Creates one task execution: one `INSERT ... RETURNING`.
    ///
    /// Errors: [`DalError::Validation`] (nothing sent), [`DalError::AlreadyExists`] when the
    /// workflow execution already has a task of that name.
    fn create(&self, new: &NewTaskExecution) -> Result<TaskExecution>;

    /// Creates many task executions, all or nothing, returned in input order: one multi-row
    /// `INSERT ... RETURNING` per chunk of the backend's bind-parameter limit, several chunks in
    /// one transaction; an empty input sends nothing. Errors: as [`TaskStore::create`]; a
    /// validation error names the item (`tasks[3].…`), a repeated task name included.
    fn create_many(&self, news: &[NewTaskExecution]) -> Result<Vec<TaskExecution>>;

    /// Reads one task execution (one `SELECT`). Errors: [`DalError::NotFound`].
    fn get(&self, id: Uuid) -> Result<TaskExecution>;

    /// The task executions of a workflow execution, ordered by creation (one `SELECT`).
    fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>>;

    /// Applies `transition` to task `id` in one guarded `UPDATE ... RETURNING` and returns the
    /// row as written. When the guard matches no row, one more `SELECT` tells why and the call
    /// fails with [`DalError::NotFound`], [`DalError::InvalidTransition`] (with the status
    /// found) or [`DalError::RetriesExhausted`]; nothing changed.
    fn transition(&self, id: Uuid, transition: Transition) -> Result<TaskExecution>;

    /// Sets (`Some`) or clears (`None`) the sub-status of a `Running` task in one guarded
    /// `UPDATE ... RETURNING`, event `deferred` ([`SubStatus::Deferred`]) or `resumed` (data:
    /// the new `sub_status`); status, claim and heartbeat are kept. Every write that moves a task
    /// out of `Running` clears it. Errors: [`DalError::InvalidTransition`], [`DalError::NotFound`].
    fn set_sub_status(&self, id: Uuid, sub_status: Option<SubStatus>) -> Result<TaskExecution>;

    /// `NotStarted` -> `Ready`. See [`TaskStore::transition`].
    fn mark_ready(&self, id: Uuid) -> Result<TaskExecution> {
        self.transition(id, Transition::MarkReady)
    }

    /// `NotStarted | Ready` -> `Skipped`, the reason kept in `error_details`; sets
    /// `completed_at`. See [`TaskStore::transition`].
    fn mark_skipped(&self, id: Uuid, reason: &str) -> Result<TaskExecution> {
        self.transition(id, Transition::MarkSkipped { reason: reason.to_owned() })
    }

    /// `Ready` -> `Running`; sets `started_at`. See [`TaskStore::transition`].
    fn mark_running(&self, id: Uuid) -> Result<TaskExecution> {
        self.transition(id, Transition::MarkRunning)
    }

    /// `Running` -> `Completed`; sets `completed_at`, clears the claim. For single-process
    /// engines: it does not check who holds the claim. See [`TaskStore::transition`].
    fn mark_completed(&self, id: Uuid) -> Result<TaskExecution> {
        self.transition(id, Transition::MarkCompleted)
    }

    /// `Ready | Running` -> `Failed`; the error goes to `error_details` and `last_error`; sets
    /// `completed_at`, clears the claim. See [`TaskStore::transition`].
    fn mark_failed(&self, id: Uuid, error: &str) -> Result<TaskExecution> {
        self.transition(id, Transition::MarkFailed { error: error.to_owned() })
    }

    /// Any non-terminal status -> `Failed` with `abandoned_at` set and the reason in
    /// `error_details` and `last_error`. See [`TaskStore::transition`].
    fn mark_abandoned(&self, id: Uuid, reason: &str) -> Result<TaskExecution> {
        self.transition(id, Transition::MarkAbandoned { reason: reason.to_owned() })
    }

    /// `Running | Failed` -> `Ready` with `attempt + 1` (computed by the database) and
    /// `retry_at` (cut to microseconds), only while `attempt < max_attempts`; clears
    /// `error_details`, `started_at`, `completed_at`, `abandoned_at` and the claim. Errors:
    /// [`DalError::RetriesExhausted`], and as [`TaskStore::transition`].
    fn schedule_retry(&self, id: Uuid, retry_at: DateTime<Utc>) -> Result<TaskExecution> {
        self.transition(id, Transition::ScheduleRetry { retry_at })
    }

    /// `Running | Ready` -> `Ready` with `recovery_attempts = recovery_attempts + 1` computed
    /// by the database (concurrent resets are all counted) and `last_recovery_at` set;
    /// clears `started_at` and the claim. See [`TaskStore::transition`].
    fn reset_task_for_recovery(&self, id: Uuid) -> Result<TaskExecution> {
        self.transition(id, Transition::ResetForRecovery)
    }

    /// `Ready | Completed | Failed | Skipped` -> `Ready` with attempt 1 and `retry_at`,
    /// `error_details`, `last_error`, `started_at`, `completed_at`, `abandoned_at` and the
    /// claim cleared; recovery counters are kept. See [`TaskStore::transition`].
    fn reset_retry_state(&self, id: Uuid) -> Result<TaskExecution> {
        self.transition(id, Transition::ResetRetryState)
    }
}

impl<B: Backend> Store<B> {
    /// The row a new task is inserted as: an id made at `now`, the times `now`, the rest the
    /// input's or its column's default.
    fn new_row(&self, new: &NewTaskExecution, now: DateTime<Utc>) -> TaskExecution {
        TaskExecution {
            id: self.new_id(now),
            workflow_execution_id: new.workflow_execution_id,
            task_name: new.task_name.clone(),
            status: new.status,
            attempt: new.attempt,
            max_attempts: new.max_attempts,
            trigger_rules: new.trigger_rules.clone(),
            task_configuration: new.task_configuration.clone(),
            error_details: None,
            last_error: None,
            retry_at: new.retry_at.map(clock::to_micros),
            started_at: None,
            completed_at: None,
            recovery_attempts: 0,
            last_recovery_at: None,
            claimed_by: None,
            heartbeat_at: None,
            claim_count: 0,
            abandoned_at: None,
            sub_status: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Inserts `rows` (made for `news`) with their `created` events unless the history is off.
    fn insert(
        &self,
        rows: &[TaskExecution],
        news: &[NewTaskExecution],
    ) -> Result<Vec<TaskExecution>> {
        let created =
            (self.history == super::History::Kept).then(|| EventSpec::new(EventType::Created));
        self.retrying("create", || self.backend.insert(rows, created.as_ref()))
            .inspect(|rows| self.wakeups.bell().ring_for(rows))
            .map_err(|err| self.explain_insert_error(err, news))
    }

    /// Turns a unique violation of an insert into [`DalError::AlreadyExists`] naming a task of
    /// `news` that exists. Failure path only: reads the workflows of the batch until it finds
    /// the taken name.
    fn explain_insert_error(&self, err: DalError, news: &[NewTaskExecution]) -> DalError {
        if !matches!(err, DalError::Database { kind: DatabaseErrorKind::UniqueViolation, .. }) {
            return err;
        }
        if let [new] = news {
            return DalError::AlreadyExists {
                workflow_execution_id: new.workflow_execution_id,
                task_name: new.task_name.clone(),
            };
        }
        let mut looked_at = HashSet::new();
        for new in news {
            if !looked_at.insert(new.workflow_execution_id) {
                continue;
            }
            let Ok(existing) = self.backend.list_for_workflow(new.workflow_execution_id) else {
                return err;
            };
            let taken: HashSet<&str> = existing.iter().map(|row| row.task_name.as_str()).collect();
            if let Some(clash) = news.iter().find(|candidate| {
                candidate.workflow_execution_id == new.workflow_execution_id
                    && taken.contains(candidate.task_name.as_str())
            }) {
                return DalError::AlreadyExists {
                    workflow_execution_id: clash.workflow_execution_id,
                    task_name: clash.task_name.clone(),
                };
            }
        }
        err
    }
}

impl<B: Backend> TaskStore for Store<B> {
    fn create(&self, new: &NewTaskExecution) -> Result<TaskExecution> {
        validate::new_task(new)?;
        let row = self.new_row(new, self.now());
        let id = row.id;
        self.trace(
            "create",
            Some(id),
            1,
            self.insert(std::slice::from_ref(&row), std::slice::from_ref(new)).and_then(|rows| {
                rows.into_iter()
                    .next()
                    .ok_or_else(|| unexpected("INSERT ... RETURNING returned no row"))
            }),
        )
    }

    fn create_many(&self, news: &[NewTaskExecution]) -> Result<Vec<TaskExecution>> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        validate::new_tasks(news)?;
        let now = self.now();
        let mut rows: Vec<TaskExecution> = news.iter().map(|new| self.new_row(new, now)).collect();
        let position: HashMap<Uuid, usize> =
            rows.iter().enumerate().map(|(i, row)| (row.id, i)).collect();
        // Inserted in one global order, by workflow execution and task name: two batches that
        // insert the same names wait for each other's uniqueness checks in the same order, so
        // they cannot deadlock (one fails with AlreadyExists). Returned in input order.
        rows.sort_unstable_by(|a, b| {
            (a.workflow_execution_id, &a.task_name).cmp(&(b.workflow_execution_id, &b.task_name))
        });
        self.traced(
            "create_many",
            self.insert(&rows, news).and_then(|stored| {
                let mut ordered: Vec<Option<TaskExecution>> = vec![None; rows.len()];
                for row in stored {
                    let i = position
                        .get(&row.id)
                        .ok_or_else(|| unexpected("INSERT ... RETURNING returned an unknown id"))?;
                    ordered[*i] = Some(row);
                }
                ordered
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| unexpected("INSERT ... RETURNING returned fewer rows"))
            }),
        )
    }

    fn get(&self, id: Uuid) -> Result<TaskExecution> {
        self.trace(
            "get",
            Some(id),
            1,
            self.backend.get(id).and_then(|row| row.ok_or(DalError::NotFound { id })),
        )
    }

    fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
        self.traced("list_for_workflow", self.backend.list_for_workflow(workflow_execution_id))
    }

    fn set_sub_status(&self, id: Uuid, sub_status: Option<SubStatus>) -> Result<TaskExecution> {
        self.guarded_write(id, Plan::sub_status(sub_status, self.now()))
    }

    fn transition(&self, id: Uuid, transition: Transition) -> Result<TaskExecution> {
        transition.validate()?;
        self.guarded_write(id, transition.plan(self.now()))
    }
}
