//! The execution history on SQLite: SQLite has no data-modifying `WITH`, so a write and its
//! events run as one `BEGIN IMMEDIATE` transaction: the write (`... RETURNING`), one multi-row
//! `INSERT` of the events built from the returned rows (no read), `COMMIT`.

use chrono::{DateTime, Utc};
use dal_core::event::{EventSpec, NewEvent};
use dal_core::ids::Ids;
use dal_core::{DalError, ExecutionEvent, Result, TaskExecution};
use diesel::SqliteConnection;
use diesel::prelude::*;

use crate::row::{micros, time, unexpected, uuid};
use crate::schema::execution_events as e;

/// SQLite's bind-parameter limit, as in `statements`.
const MAX_BINDS: usize = 32_766;

/// An event as inserted.
#[derive(Debug, Insertable)]
#[diesel(table_name = e, treat_none_as_default_value = false)]
struct NewEventRow<'a> {
    id: &'a [u8],
    workflow_execution_id: &'a [u8],
    task_execution_id: &'a [u8],
    event_type: &'static str,
    event_data: String,
    runner_id: Option<&'a [u8]>,
    created_at: i64,
}

impl NewEventRow<'_> {
    const BINDS: usize = 7;
}

impl<'a> From<&'a NewEvent> for NewEventRow<'a> {
    fn from(event: &'a NewEvent) -> Self {
        NewEventRow {
            id: event.id.as_bytes(),
            workflow_execution_id: event.workflow_execution_id.as_bytes(),
            task_execution_id: event.task_execution_id.as_bytes(),
            event_type: event.event_type.as_str(),
            event_data: event.event_data.to_string(),
            runner_id: event.runner_id.as_ref().map(|id| id.as_bytes().as_slice()),
            created_at: micros(event.created_at),
        }
    }
}

/// Inserts `event` for each of `rows` (the rows a write returned), at `at`.
pub(crate) fn log(
    conn: &mut SqliteConnection,
    ids: &Ids,
    event: &EventSpec,
    rows: &[TaskExecution],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    // The events of one write take their `seq` in task id order, as on PostgreSQL.
    let mut rows: Vec<&TaskExecution> = rows.iter().collect();
    rows.sort_unstable_by_key(|row| row.id);
    let events: Vec<NewEvent> = rows
        .iter()
        .map(|row| event.event_for(row, ids.at(at), at))
        .collect();
    let new_rows: Vec<NewEventRow<'_>> = events.iter().map(NewEventRow::from).collect();
    if let [one] = new_rows.as_slice() {
        // Fixed text, kept prepared.
        diesel::insert_into(e::table).values(one).execute(conn)?;
    } else {
        for part in new_rows.chunks(MAX_BINDS / NewEventRow::BINDS) {
            diesel::insert_into(e::table).values(part).execute(conn)?;
        }
    }
    Ok(())
}

/// An `execution_events` row as read.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = e, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct EventRow {
    seq: i64,
    id: Vec<u8>,
    workflow_execution_id: Vec<u8>,
    task_execution_id: Vec<u8>,
    event_type: String,
    event_data: String,
    runner_id: Option<Vec<u8>>,
    created_at: i64,
}

impl TryFrom<EventRow> for ExecutionEvent {
    type Error = DalError;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(ExecutionEvent {
            seq: row.seq,
            id: uuid(&row.id)?,
            workflow_execution_id: uuid(&row.workflow_execution_id)?,
            task_execution_id: uuid(&row.task_execution_id)?,
            event_type: row.event_type.parse()?,
            event_data: serde_json::from_str(&row.event_data)
                .map_err(|e| unexpected(format!("stored event data does not parse: {e}")))?,
            runner_id: row.runner_id.as_deref().map(uuid).transpose()?,
            created_at: time(row.created_at)?,
        })
    }
}
