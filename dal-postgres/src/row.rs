//! Rows as PostgreSQL stores them, and their conversion to and from the model.
//!
//! PostgreSQL has native `uuid`, `timestamptz` and `jsonb`, so only the status needs
//! converting.

use chrono::{DateTime, Utc};
use dal_core::{DalError, Result, TaskExecution};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::schema::task_executions;

/// A `task_executions` row as read (`SELECT` or `RETURNING`), exported as `TaskRow` for
/// statements of your own over the store's pool: select it with `TaskRow::as_select()` (or
/// `as_returning()`) and convert it with `TaskExecution::try_from`, which fails with
/// [`DalError::Database`] on a value the schema should not hold.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = task_executions, check_for_backend(diesel::pg::Pg))]
pub struct Row {
    id: Uuid,
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
    claimed_by: Option<Uuid>,
    heartbeat_at: Option<DateTime<Utc>>,
    abandoned_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    claim_count: i32,
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
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The columns a new task is inserted with (one row; many rows go as arrays, see `insert`); the
/// others take their defaults (`NULL`, 0).
#[derive(Debug, Insertable)]
#[diesel(table_name = task_executions, treat_none_as_default_value = false)]
pub(crate) struct NewRow<'a> {
    id: Uuid,
    workflow_execution_id: Uuid,
    task_name: &'a str,
    status: &'static str,
    attempt: i32,
    max_attempts: i32,
    trigger_rules: &'a Value,
    task_configuration: &'a Value,
    retry_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
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
