//! The execution history on SQLite: SQLite has no data-modifying `WITH`, so a write and its
//! events run as one `BEGIN IMMEDIATE` transaction: the write (`... RETURNING`), one multi-row
//! `INSERT` of the events built from the returned rows (no read; of a fixed shape up to 1,024
//! events, see `shaped`), `COMMIT`.

use chrono::{DateTime, Utc};
use dal_core::TaskExecution;
use dal_core::event::{EventSpec, NewEvent};
use dal_core::ids::Ids;
use dal_diesel::row::NewEventRow;
use dal_diesel::schema::execution_events as e;
use diesel::SqliteConnection;
use diesel::prelude::*;

use crate::shaped::{self, EventValues};
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
    } else if shaped::shaped(events.len()) {
        shaped::insert_events(conn, events.iter().map(EventValues::from).collect())?;
    } else {
        for part in events.chunks(MAX_BINDS / NewEventRow::BINDS) {
            let part: Vec<NewEventRow<'_>> = part.iter().map(NewEventRow::from).collect();
            diesel::insert_into(e::table).values(part).execute(conn)?;
        }
    }
    Ok(())
}
