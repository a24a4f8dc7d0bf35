//! Rows as both databases return them, and their conversion to the model. With the schema's own
//! types ([`crate::types`]) a column decodes to its model type directly; only the status, the
//! sub-status and an event's type are parsed here.

use chrono::{DateTime, Utc};
use dal_core::{DalError, ExecutionEvent, Result, TaskExecution};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::schema::{execution_events, task_executions};
use crate::types::{Id, IdValue, Instant, Json, MaybeId};
use diesel::sql_types::{Integer, Nullable, Text};

/// A `task_executions` row as read (`SELECT` or `RETURNING`); `TaskExecution::try_from` fails
/// with [`DalError::Database`] on a value the schema should not hold.
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

/// The columns a write returns, in the order of [`Row`], then the queue position: a write's
/// `RETURNING` list, decoded by position as [`Written`].
pub const RETURNING: &str = "id, workflow_execution_id, task_name, status, attempt, \
    max_attempts, trigger_rules, task_configuration, error_details, last_error, retry_at, \
    started_at, completed_at, recovery_attempts, last_recovery_at, claimed_by, heartbeat_at, \
    abandoned_at, created_at, updated_at, claim_count, sub_status, due_at";

/// The SQL types of [`RETURNING`].
pub type Returned = (
    (
        Id,
        Id,
        Text,
        Text,
        Integer,
        Integer,
        Json,
        Json,
        Nullable<Text>,
        Nullable<Text>,
        Nullable<Instant>,
        Nullable<Instant>,
        Nullable<Instant>,
        Integer,
        Nullable<Instant>,
        Nullable<Id>,
        Nullable<Instant>,
        Nullable<Instant>,
        Instant,
        Instant,
        Integer,
        Nullable<Text>,
    ),
    Nullable<Instant>,
);

/// A row as a write returned it, with its queue position.
pub type Written = (Row, Option<DateTime<Utc>>);

/// A write whose text ends in `RETURNING` [`RETURNING`] (or selects it), typed so that its rows
/// decode by position.
#[derive(Debug)]
pub struct Returning<Q>(pub Q);

impl<Q> diesel::query_builder::Query for Returning<Q> {
    type SqlType = Returned;
}

impl<Q: diesel::query_builder::QueryFragment<DB>, DB: diesel::backend::Backend>
    diesel::query_builder::QueryFragment<DB> for Returning<Q>
{
    fn walk_ast<'b>(&'b self, pass: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }
}

impl<Q: diesel::query_builder::QueryId> diesel::query_builder::QueryId for Returning<Q> {
    type QueryId = Q::QueryId;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q, Conn> RunQueryDsl<Conn> for Returning<Q> {}

/// Written rows as the model.
pub fn written(rows: Vec<Written>) -> Result<Vec<(TaskExecution, Option<DateTime<Utc>>)>> {
    rows.into_iter().map(|(row, due_at)| Ok((TaskExecution::try_from(row)?, due_at))).collect()
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
