//! Rows as both databases store them, and their conversion to and from the model. With the
//! schema's own types ([`crate::types`]) a column decodes to its model type directly; only the
//! status, the sub-status and an event's type are parsed here.

use chrono::{DateTime, Utc};
use dal_core::event::NewEvent;
use dal_core::{DalError, ExecutionEvent, Result, TaskExecution};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::bind::Bind;
use crate::schema::{execution_events, task_executions};
use crate::types::{Id, IdValue, Instant, Json, MaybeId};

/// A `task_executions` row as read (`SELECT` or `RETURNING`), exported as `TaskRow` for
/// statements of your own over the store's pool: select it with `TaskRow::as_select()` (or
/// `as_returning()`) and convert it with `TaskExecution::try_from`, which fails with
/// [`DalError::Database`] on a value the schema should not hold.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = task_executions)]
pub struct Row {
    #[diesel(deserialize_as = IdValue)]
    id: Uuid,
    #[diesel(deserialize_as = IdValue)]
    workflow_execution_id: Uuid,
    task_name: String,
    status: String,
    attempt: i32,
    max_attempts: i32,
    trigger_rules: Value,
    task_configuration: Value,
    error_details: Option<String>,
    last_error: Option<String>,
    retry_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    recovery_attempts: i32,
    last_recovery_at: Option<DateTime<Utc>>,
    #[diesel(deserialize_as = MaybeId)]
    claimed_by: Option<Uuid>,
    heartbeat_at: Option<DateTime<Utc>>,
    abandoned_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    claim_count: i32,
    sub_status: Option<String>,
}

impl TryFrom<Row> for TaskExecution {
    type Error = DalError;

    fn try_from(row: Row) -> Result<Self> {
        Ok(TaskExecution {
            id: row.id,
            workflow_execution_id: row.workflow_execution_id,
            task_name: row.task_name,
            status: row.status.parse()?,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            trigger_rules: row.trigger_rules,
            task_configuration: row.task_configuration,
            error_details: row.error_details,
            last_error: row.last_error,
            retry_at: row.retry_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            recovery_attempts: row.recovery_attempts,
            last_recovery_at: row.last_recovery_at,
            claimed_by: row.claimed_by,
            heartbeat_at: row.heartbeat_at,
            claim_count: row.claim_count,
            abandoned_at: row.abandoned_at,
            sub_status: row.sub_status.map(|s| s.parse()).transpose()?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Rows as the model.
pub fn tasks(rows: Vec<Row>) -> Result<Vec<TaskExecution>> {
    rows.into_iter().map(TaskExecution::try_from).collect()
}

/// The columns a new task is inserted with; the others take their defaults (`NULL`, 0).
/// Insertable by value only (its fields are converted to parameters on the way).
#[derive(Debug, Insertable)]
#[diesel(table_name = task_executions, treat_none_as_default_value = false)]
pub struct NewRow<'a> {
    #[diesel(serialize_as = Bind<Id, Uuid>)]
    id: Uuid,
    #[diesel(serialize_as = Bind<Id, Uuid>)]
    workflow_execution_id: Uuid,
    task_name: &'a str,
    status: &'static str,
    attempt: i32,
    max_attempts: i32,
    #[diesel(serialize_as = Bind<Json, &'a Value>)]
    trigger_rules: &'a Value,
    #[diesel(serialize_as = Bind<Json, &'a Value>)]
    task_configuration: &'a Value,
    retry_at: Option<DateTime<Utc>>,
    #[diesel(serialize_as = Bind<Instant, DateTime<Utc>>)]
    created_at: DateTime<Utc>,
    #[diesel(serialize_as = Bind<Instant, DateTime<Utc>>)]
    updated_at: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
}

impl NewRow<'_> {
    /// How many bind parameters one row takes.
    pub const BINDS: usize = 12;
}

impl<'a> From<&'a TaskExecution> for NewRow<'a> {
    fn from(task: &'a TaskExecution) -> Self {
        NewRow {
            id: task.id,
            workflow_execution_id: task.workflow_execution_id,
            task_name: &task.task_name,
            status: task.status.as_str(),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            trigger_rules: &task.trigger_rules,
            task_configuration: &task.task_configuration,
            retry_at: task.retry_at,
            created_at: task.created_at,
            updated_at: task.updated_at,
            due_at: dal_core::plan::due_at(task.status, task.retry_at, task.created_at),
        }
    }
}

/// An `execution_events` row as read.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = execution_events)]
pub struct EventRow {
    seq: i64,
    #[diesel(deserialize_as = IdValue)]
    id: Uuid,
    #[diesel(deserialize_as = IdValue)]
    workflow_execution_id: Uuid,
    #[diesel(deserialize_as = IdValue)]
    task_execution_id: Uuid,
    event_type: String,
    event_data: Value,
    #[diesel(deserialize_as = MaybeId)]
    runner_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for ExecutionEvent {
    type Error = DalError;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(ExecutionEvent {
            seq: row.seq,
            id: row.id,
            workflow_execution_id: row.workflow_execution_id,
            task_execution_id: row.task_execution_id,
            event_type: row.event_type.parse()?,
            event_data: row.event_data,
            runner_id: row.runner_id,
            created_at: row.created_at,
        })
    }
}

/// Event rows as the model.
pub fn events(rows: Vec<EventRow>) -> Result<Vec<ExecutionEvent>> {
    rows.into_iter().map(ExecutionEvent::try_from).collect()
}

/// An event as inserted by a statement of its own (where the database cannot insert a write's
/// events in the write's statement).
#[derive(Debug, Insertable)]
#[diesel(table_name = execution_events, treat_none_as_default_value = false)]
pub struct NewEventRow<'a> {
    #[diesel(serialize_as = Bind<Id, Uuid>)]
    id: Uuid,
    #[diesel(serialize_as = Bind<Id, Uuid>)]
    workflow_execution_id: Uuid,
    #[diesel(serialize_as = Bind<Id, Uuid>)]
    task_execution_id: Uuid,
    event_type: &'static str,
    #[diesel(serialize_as = Bind<Json, &'a Value>)]
    event_data: &'a Value,
    runner_id: Option<Uuid>,
    #[diesel(serialize_as = Bind<Instant, DateTime<Utc>>)]
    created_at: DateTime<Utc>,
}

impl NewEventRow<'_> {
    /// How many bind parameters one row takes.
    pub const BINDS: usize = 7;
}

impl<'a> From<&'a NewEvent> for NewEventRow<'a> {
    fn from(event: &'a NewEvent) -> Self {
        NewEventRow {
            id: event.id,
            workflow_execution_id: event.workflow_execution_id,
            task_execution_id: event.task_execution_id,
            event_type: event.event_type.as_str(),
            event_data: &event.event_data,
            runner_id: event.runner_id,
            created_at: event.created_at,
        }
    }
}
