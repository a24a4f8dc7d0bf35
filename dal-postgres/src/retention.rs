//! Retention on PostgreSQL: one batch of `prune_finished` as one statement.

use chrono::{DateTime, Utc};
use dal_core::{PruneCursor, Pruned};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

/// One batch: scan the next finished tasks; keep their workflow executions that look finished
/// (a plain read, no lock); lock all their tasks in id order, check again on the locked rows,
/// and delete the tasks and events of those still finished. `$1` the cut-off, `$2`/`$3` the
/// cursor (`completed_at`, id) to scan after, `$4` the batch.
const PRUNE: &str = "\
WITH scanned AS MATERIALIZED (
    SELECT id, workflow_execution_id, completed_at FROM task_executions
    WHERE status IN ('completed', 'failed', 'skipped') AND completed_at < $1
      AND (completed_at, id) > ($2, $3)
    ORDER BY completed_at, id
    LIMIT $4
), finished AS MATERIALIZED (
    SELECT workflow_execution_id FROM (SELECT DISTINCT workflow_execution_id FROM scanned) AS seen
    WHERE NOT EXISTS (
        SELECT 1 FROM task_executions t
        WHERE t.workflow_execution_id = seen.workflow_execution_id
          AND (t.status NOT IN ('completed', 'failed', 'skipped') OR t.updated_at >= $1))
), locked AS MATERIALIZED (
    SELECT id, workflow_execution_id, status, updated_at FROM task_executions
    WHERE workflow_execution_id IN (SELECT workflow_execution_id FROM finished)
    ORDER BY id
    FOR UPDATE
), doomed AS MATERIALIZED (
    SELECT workflow_execution_id FROM locked
    GROUP BY workflow_execution_id
    HAVING bool_and(status IN ('completed', 'failed', 'skipped')) AND max(updated_at) < $1
), tasks_gone AS (
    DELETE FROM task_executions
    WHERE id IN (SELECT locked.id FROM locked JOIN doomed USING (workflow_execution_id))
    RETURNING 1
), events_gone AS (
    DELETE FROM execution_events
    WHERE task_execution_id IN (SELECT locked.id FROM locked JOIN doomed USING (workflow_execution_id))
    RETURNING 1
)
SELECT
    (SELECT count(*) FROM scanned) AS scanned,
    (SELECT completed_at FROM scanned ORDER BY completed_at DESC, id DESC LIMIT 1) AS last_completed_at,
    (SELECT id FROM scanned ORDER BY completed_at DESC, id DESC LIMIT 1) AS last_id,
    (SELECT coalesce(array_agg(workflow_execution_id), '{}') FROM doomed) AS workflows,
    (SELECT count(*) FROM tasks_gone) AS tasks,
    (SELECT count(*) FROM events_gone) AS events";

/// What the statement returns: one row.
#[derive(Debug, QueryableByName)]
struct Batch {
    #[diesel(sql_type = BigInt)]
    scanned: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_completed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    last_id: Option<Uuid>,
    #[diesel(sql_type = Array<SqlUuid>)]
    workflows: Vec<Uuid>,
    #[diesel(sql_type = BigInt)]
    tasks: i64,
    #[diesel(sql_type = BigInt)]
    events: i64,
}

/// Runs one batch on `conn`.
pub(crate) fn prune(
    conn: &mut PgConnection,
    older_than: DateTime<Utc>,
    limit: u32,
    after: Option<PruneCursor>,
) -> QueryResult<Pruned> {
    // Before every finished task: the store's times are from year 1 on, its ids UUIDv7.
    let after = after.unwrap_or(PruneCursor {
        completed_at: dal_core::validate::earliest_time(),
        task_id: Uuid::nil(),
    });
    // Not kept prepared (Diesel does not cache a `sql_query`): planned for each batch with the
    // table as it is then; batches are rare and their best plan depends on the table's size.
    let batch: Batch = diesel::sql_query(PRUNE)
        .bind::<Timestamptz, _>(older_than)
        .bind::<Timestamptz, _>(after.completed_at)
        .bind::<SqlUuid, _>(after.task_id)
        .bind::<Integer, _>(i32::try_from(limit).unwrap_or(i32::MAX))
        .get_result(conn)?;
    Ok(Pruned {
        workflows: batch.workflows,
        tasks: u64::try_from(batch.tasks).unwrap_or_default(),
        events: u64::try_from(batch.events).unwrap_or_default(),
        next: batch
            .last_completed_at
            .zip(batch.last_id)
            .filter(|_| batch.scanned >= i64::from(limit))
            .map(|(completed_at, task_id)| PruneCursor { completed_at, task_id }),
    })
}
