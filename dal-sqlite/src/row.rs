//! Rows as SQLite stores them, and their conversion to and from the model.
//!
//! SQLite has no UUID, timestamp or JSON types: ids are 16-byte BLOBs, times are microseconds
//! since the Unix epoch, JSON is text. The conversions live here and nowhere else.

use chrono::{DateTime, Utc};
use dal_core::{DalError, DatabaseErrorKind, Result, TaskExecution};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::schema::task_executions;

/// A `task_executions` row as read (`SELECT` or `RETURNING`), exported as `TaskRow` for
/// statements of your own over the store's pool: select it with `TaskRow::as_select()` (or
/// `as_returning()`) and convert it with `TaskExecution::try_from`, which fails with
/// [`DalError::Database`] on a value the schema should not hold.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = task_executions, check_for_backend(diesel::sqlite::Sqlite))]
pub struct Row {
    id: Vec<u8>,
    workflow_execution_id: Vec<u8>,
    task_name: String,
    status: String,
    attempt: i32,
    max_attempts: i32,
    trigger_rules: String,
    task_configuration: String,
    error_details: Option<String>,
    last_error: Option<String>,
    retry_at: Option<i64>,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    recovery_attempts: i32,
    last_recovery_at: Option<i64>,
    claimed_by: Option<Vec<u8>>,
    heartbeat_at: Option<i64>,
    abandoned_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    claim_count: i32,
}

impl TryFrom<Row> for TaskExecution {
    type Error = DalError;

    fn try_from(row: Row) -> Result<Self> {
        Ok(TaskExecution {
            id: uuid(&row.id)?,
            workflow_execution_id: uuid(&row.workflow_execution_id)?,
            task_name: row.task_name,
            status: row.status.parse()?,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            trigger_rules: json(&row.trigger_rules)?,
            task_configuration: json(&row.task_configuration)?,
            error_details: row.error_details,
            last_error: row.last_error,
            retry_at: row.retry_at.map(time).transpose()?,
            started_at: row.started_at.map(time).transpose()?,
            completed_at: row.completed_at.map(time).transpose()?,
            recovery_attempts: row.recovery_attempts,
            last_recovery_at: row.last_recovery_at.map(time).transpose()?,
            claimed_by: row.claimed_by.as_deref().map(uuid).transpose()?,
            heartbeat_at: row.heartbeat_at.map(time).transpose()?,
            claim_count: row.claim_count,
            abandoned_at: row.abandoned_at.map(time).transpose()?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
        })
    }
}

/// The columns a new task is inserted with; the others take their defaults (`NULL`, 0).
#[derive(Debug, Insertable)]
#[diesel(table_name = task_executions, treat_none_as_default_value = false)]
pub(crate) struct NewRow<'a> {
    id: &'a [u8],
    workflow_execution_id: &'a [u8],
    task_name: &'a str,
    status: &'static str,
    attempt: i32,
    max_attempts: i32,
    trigger_rules: String,
    task_configuration: String,
    retry_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    due_at: Option<i64>,
}

impl NewRow<'_> {
    /// How many bind parameters one row takes.
    pub(crate) const BINDS: usize = 12;
}

impl<'a> From<&'a TaskExecution> for NewRow<'a> {
    fn from(task: &'a TaskExecution) -> Self {
        NewRow {
            id: task.id.as_bytes(),
            workflow_execution_id: task.workflow_execution_id.as_bytes(),
            task_name: &task.task_name,
            status: task.status.as_str(),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            trigger_rules: task.trigger_rules.to_string(),
            task_configuration: task.task_configuration.to_string(),
            retry_at: task.retry_at.map(micros),
            created_at: micros(task.created_at),
            updated_at: micros(task.updated_at),
            due_at: dal_core::plan::due_at(task.status, task.retry_at, task.created_at).map(micros),
        }
    }
}

/// A time as stored: microseconds since the Unix epoch.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| unexpected(format!("time {micros} µs is out of range")))
}

pub(crate) fn uuid(bytes: &[u8]) -> Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|e| unexpected(format!("stored id is not a UUID: {e}")))
}

fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| unexpected(format!("stored JSON does not parse: {e}")))
}

pub(crate) fn unexpected(message: String) -> DalError {
    DalError::Database {
        kind: DatabaseErrorKind::UnexpectedData,
        source: message.into(),
    }
}
