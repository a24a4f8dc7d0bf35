//! Retention on SQLite: one batch of `prune_finished` in two steps (SQLite has no
//! data-modifying `WITH`). [`find`] reads the batch and checks its workflow executions without
//! the write lock, so a batch with nothing to remove never takes it; [`remove`], only when
//! there is something to remove, checks them again and deletes, inside one `BEGIN IMMEDIATE`
//! transaction that the caller opens.

use chrono::{DateTime, Utc};
use dal_core::{PruneCursor, Pruned};
use dal_diesel::dialect::{IdList, in_ids};
use dal_diesel::prepared::Prepared;
use dal_diesel::schema::{execution_events, task_executions};
use dal_diesel::types::{Id, IdValue, Instant};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use uuid::Uuid;

/// The next finished tasks before the cut-off (`?1`), after the cursor (`?2`, `?3`), at most `?4`
/// (`+?`: SQLite prepares a statement with `LIMIT ?` again whenever the limit is bound, see
/// `dal_diesel::dialect::Limited`).
const SCAN: &str = "\
SELECT id, workflow_execution_id, completed_at FROM task_executions
WHERE status IN ('completed', 'failed', 'skipped') AND completed_at < ?
  AND (completed_at, id) > (?, ?)
ORDER BY completed_at, id
LIMIT +?";

/// Of the workflow executions in `?1` (a JSON array of hex ids), those whose every task is
/// finished and none changed at or after `?2`.
const DOOMED: &str = "\
SELECT workflow_execution_id FROM task_executions
WHERE workflow_execution_id IN (SELECT unhex(value) FROM json_each(?))
GROUP BY workflow_execution_id
HAVING min(status IN ('completed', 'failed', 'skipped')) = 1 AND max(updated_at) < ?";

#[derive(Debug, QueryableByName)]
struct Scanned {
    #[diesel(sql_type = Id)]
    id: IdValue,
    #[diesel(sql_type = Id)]
    workflow_execution_id: IdValue,
    #[diesel(sql_type = Instant)]
    completed_at: DateTime<Utc>,
}

#[derive(Debug, QueryableByName)]
struct Doomed {
    #[diesel(sql_type = Id)]
    workflow_execution_id: IdValue,
}

/// What [`find`] read: where the pass goes on, and the workflow executions that looked
/// finished.
#[derive(Debug)]
pub(crate) struct Found {
    /// Where the pass goes on.
    next: Option<PruneCursor>,
    /// The workflow executions that looked finished entirely.
    pub(crate) finished: Vec<Uuid>,
}

/// Reads the next finished tasks before `older_than` after `after` (at most `limit`), and
/// which of their workflow executions look finished entirely: one or two reads, no lock.
pub(crate) fn find(
    conn: &mut SqliteConnection,
    older_than: DateTime<Utc>,
    limit: u32,
    after: Option<PruneCursor>,
) -> QueryResult<Found> {
    // Before every finished task: the store's times are from year 1 on, its ids UUIDv7.
    let after = after.unwrap_or(PruneCursor {
        completed_at: dal_core::validate::earliest_time(),
        task_id: Uuid::nil(),
    });
    let scanned: Vec<Scanned> = Prepared(
        diesel::sql_query(SCAN)
            .bind::<Instant, _>(older_than)
            .bind::<Instant, _>(after.completed_at)
            .bind::<Id, _>(after.task_id)
            .bind::<Integer, _>(i32::try_from(limit).unwrap_or(i32::MAX)),
    )
    .load(conn)?;
    let read: Vec<(PruneCursor, Uuid)> = scanned
        .iter()
        .map(|row| {
            (
                PruneCursor { completed_at: row.completed_at, task_id: row.id.0 },
                row.workflow_execution_id.0,
            )
        })
        .collect();
    let next = read.last().filter(|_| read.len() >= limit as usize).map(|(cursor, _)| *cursor);
    let mut candidates: Vec<Uuid> = read.iter().map(|(_, wf)| *wf).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let finished = finished_among(conn, &candidates, older_than)?;
    Ok(Found { next, finished })
}

/// Of `candidates`, the workflow executions whose every task is finished and none changed at
/// or after `older_than` (one read; none when there are no candidates).
fn finished_among(
    conn: &mut SqliteConnection,
    candidates: &[Uuid],
    older_than: DateTime<Utc>,
) -> QueryResult<Vec<Uuid>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let doomed: Vec<Doomed> = Prepared(
        diesel::sql_query(DOOMED)
            .bind::<Text, _>(IdList(candidates))
            .bind::<Instant, _>(older_than),
    )
    .load(conn)?;
    Ok(doomed.iter().map(|row| row.workflow_execution_id.0).collect())
}

/// Inside the caller's `BEGIN IMMEDIATE` transaction: checks the workflow executions `found`
/// took for finished again, and deletes the tasks and events of those still finished. Without
/// a transaction (nothing looked finished), only reports what `found` read.
pub(crate) fn remove(
    conn: Option<&mut SqliteConnection>,
    found: Found,
    older_than: DateTime<Utc>,
) -> QueryResult<Pruned> {
    let (mut tasks, mut events, mut workflows) = (0, 0, Vec::new());
    if let Some(conn) = conn {
        workflows = finished_among(conn, &found.finished, older_than)?;
        if !workflows.is_empty() {
            // Diesel's own DELETEs: their text is fixed (the ids are one JSON parameter), so
            // Diesel keeps them prepared.
            // The events first, found through their tasks (events are keyed by task).
            let doomed = task_executions::table
                .filter(in_ids(task_executions::workflow_execution_id, &workflows));
            events = diesel::delete(execution_events::table.filter(
                execution_events::task_execution_id.eq_any(doomed.select(task_executions::id)),
            ))
            .execute(conn)?;
            tasks = diesel::delete(doomed).execute(conn)?;
        }
    }
    Ok(Pruned { workflows, tasks: tasks as u64, events: events as u64, next: found.next })
}
