//! The execution history on SQLite: SQLite has no data-modifying `WITH`, so a write and its
//! events run as one `BEGIN IMMEDIATE` transaction: the write (`... RETURNING`), one multi-row
//! `INSERT` of the events built from the returned rows (no read), `COMMIT`.
//!
//! SQLite compiles a statement again for every new text, and a multi-row `INSERT`'s text
//! changes with its row count. So an `INSERT` of up to [`SHAPED_UP_TO`] events is padded to a
//! fixed shape (a power of two rows) and kept prepared; a larger one is compiled at each use,
//! where the compile is a small part of the work.

use chrono::{DateTime, Utc};
use dal_core::TaskExecution;
use dal_core::event::{EventSpec, NewEvent};
use dal_core::ids::Ids;
use dal_diesel::prepared::PreparedAs;
use dal_diesel::row::NewEventRow;
use dal_diesel::schema::execution_events as e;
use dal_diesel::types::{Id, Instant, Json};
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::sql_types::{Nullable, Text};
use diesel::sqlite::Sqlite;

use crate::statements::MAX_BINDS;

/// Inserts `event` for each of `rows` (the rows a write returned), at `at`.
pub(crate) fn log(
    conn: &mut SqliteConnection,
    ids: &Ids,
    event: &EventSpec,
    rows: &[TaskExecution],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    log_each(conn, ids, rows.iter().map(|row| (event, row)).collect(), at)
}

/// Inserts each row's event (the rows some writes of one transaction returned), at `at`.
pub(crate) fn log_each(
    conn: &mut SqliteConnection,
    ids: &Ids,
    mut rows: Vec<(&EventSpec, &TaskExecution)>,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    // The events of one write take their `seq` in task id order, as on PostgreSQL.
    rows.sort_unstable_by_key(|(_, row)| row.id);
    let events: Vec<NewEvent> = rows
        .iter()
        .map(|(event, row)| event.event_for(row, ids.at(at), at))
        .collect();
    if let [one] = events.as_slice() {
        // Fixed text, kept prepared.
        diesel::insert_into(e::table)
            .values(NewEventRow::from(one))
            .execute(conn)?;
    } else if (2..=SHAPED_UP_TO).contains(&events.len()) {
        Shaped::new(&events).execute(conn)?;
    } else {
        for part in events.chunks(MAX_BINDS / NewEventRow::BINDS) {
            let part: Vec<NewEventRow<'_>> = part.iter().map(NewEventRow::from).collect();
            diesel::insert_into(e::table).values(part).execute(conn)?;
        }
    }
    Ok(())
}

/// The most events an `INSERT` of a fixed shape carries (256 rows, 1,792 parameters): the
/// shapes are the powers of two from 2 to this, eight statements kept prepared per connection.
/// Measured on this kind of machine: the compile of a 32-row events `INSERT` costs about
/// 50 µs, a third of its execution (BENCHMARKS.md, "Statements that stay prepared on SQLite").
pub(crate) const SHAPED_UP_TO: usize = 256;

/// The statement cache's key of the shape of `N` rows.
struct Shape<const N: usize>;

/// A multi-row events `INSERT` of a fixed shape: `INSERT INTO execution_events (...) SELECT *
/// FROM (VALUES (...), ...) WHERE column1 IS NOT NULL`, the events' rows in order, then rows of
/// NULLs up to the shape, which the `WHERE` leaves out (an event's id is never NULL). SQLite
/// yields the `VALUES` rows in their order, so the events take their `seq` in that order, as
/// with a plain multi-row `VALUES`.
struct Shaped<'a> {
    /// Each event with its type's text (bound by reference).
    events: Vec<(&'a NewEvent, &'static str)>,
    /// Rows in the statement: the next power of two, at least 2.
    rows: usize,
}

impl<'a> Shaped<'a> {
    fn new(events: &'a [NewEvent]) -> Self {
        Shaped {
            events: events.iter().map(|e| (e, e.event_type.as_str())).collect(),
            rows: events.len().next_power_of_two().max(2),
        }
    }

    /// Runs the statement, kept prepared under its shape's key.
    fn execute(self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        macro_rules! by_shape {
            ($($n:literal)*) => {
                match self.rows {
                    $($n => PreparedAs::<Shape<$n>, _>::new(self).execute(conn),)*
                    rows => Err(diesel::result::Error::QueryBuilderError(
                        format!("no events INSERT shape of {rows} rows").into(),
                    )),
                }
            };
        }
        by_shape!(2 4 8 16 32 64 128 256)
    }
}

impl QueryFragment<Sqlite> for Shaped<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO execution_events (id, workflow_execution_id, task_execution_id, \
             event_type, event_data, runner_id, created_at) SELECT * FROM (VALUES ",
        );
        for row in 0..self.rows {
            out.push_sql(if row == 0 { "(" } else { ", (" });
            if let Some((event, event_type)) = self.events.get(row) {
                out.push_bind_param::<Id, _>(&event.id)?;
                out.push_sql(", ");
                out.push_bind_param::<Id, _>(&event.workflow_execution_id)?;
                out.push_sql(", ");
                out.push_bind_param::<Id, _>(&event.task_execution_id)?;
                out.push_sql(", ");
                out.push_bind_param::<Text, _>(event_type)?;
                out.push_sql(", ");
                out.push_bind_param::<Json, _>(&event.event_data)?;
                out.push_sql(", ");
                out.push_bind_param::<Nullable<Id>, _>(&event.runner_id)?;
                out.push_sql(", ");
                out.push_bind_param::<Instant, _>(&event.created_at)?;
            } else {
                for column in 0..NewEventRow::BINDS {
                    if column > 0 {
                        out.push_sql(", ");
                    }
                    out.push_bind_param::<Nullable<Text>, Option<&str>>(&None)?;
                }
            }
            out.push_sql(")");
        }
        out.push_sql(") WHERE column1 IS NOT NULL");
        Ok(())
    }
}
