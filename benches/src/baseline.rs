//! The baselines: the multi-statement patterns that the DAL replaces, written honestly.
//!
//! They run on the same schema, through the same Diesel and the same pool as the store they are
//! compared with, and do the same work where the comparison says so: a read-update-insert
//! transition writes the same history event as the DAL, a claim per task writes its event. What
//! they do differently is what the engines we compare with do: read before writing, read after
//! writing, one statement per task, a transaction around statements that one statement could
//! replace. Each method's documentation lists its statements.
//!
//! Two things favour the baselines: their reads fetch only the columns they need, and the
//! `create` pattern writes no history event (the DAL's `create` does).

#![allow(clippy::expect_used)] // measurement code: a failing baseline is a broken benchmark

use chrono::{DateTime, Utc};
use dal_core::{DalError, TaskExecution};
use dal_diesel::bind::{id, instant, json};
use dal_diesel::row::Row as TaskRow;
use dal_diesel::schema::{execution_events as e, task_executions as t};
use dal_diesel::types::IdValue;
use diesel::prelude::*;
use serde_json::json;
use uuid::Uuid;

/// A baseline pattern per operation, for one backend.
pub trait Baseline {
    /// `INSERT` (no `RETURNING`), then `SELECT` of the row: 2 statements. Returns the id.
    fn create_insert_then_select(&self, workflow_execution_id: Uuid, task_name: &str) -> Uuid;

    /// The same work as the DAL's `create` (the task and its `created` event), the old way:
    /// `BEGIN`, `INSERT` of the task, `INSERT` of the event, `SELECT` of the row, `COMMIT`: 5
    /// statements.
    fn create_with_event_transaction(&self, workflow_execution_id: Uuid, task_name: &str) -> Uuid;

    /// `SELECT` of the counter and status, then `UPDATE` with `recovery_attempts = n + 1`
    /// computed by the client: 2 statements, and a lost update when two callers interleave.
    fn reset_select_then_update(&self, id: Uuid);

    /// `BEGIN`, `SELECT` of the row, `UPDATE`, `INSERT` of the history event, `COMMIT`: 5
    /// statements for a recovery reset with its event.
    fn reset_read_update_insert(&self, id: Uuid);

    /// `SELECT` of up to `limit` due ready ids, then per task an `UPDATE ... RETURNING` that
    /// claims it and an `INSERT` of its event: `1 + 2n` statements. Returns the claimed ids.
    fn claim_scan_then_each(&self, runner_id: Uuid, limit: i64) -> Vec<Uuid>;

    /// The read-update-insert transaction of `reset_read_update_insert` for any simple
    /// transition: `BEGIN`, `SELECT`, `UPDATE` of the status to `to`, `INSERT` of `event`,
    /// `COMMIT` (5 statements).
    fn transition_read_update_insert(&self, id: Uuid, to: &'static str, event: &'static str);

    /// The ids of a workflow execution's tasks in `list_for_workflow`'s order: the DAL's read
    /// without the rest of each row, for what reading and decoding the whole row costs.
    fn list_ids(&self, workflow_execution_id: Uuid) -> Vec<Uuid>;
}

/// A row read by a baseline, as the model's task: the same decoding the DAL does.
fn task<R>(row: R) -> TaskExecution
where
    TaskExecution: TryFrom<R, Error = DalError>,
{
    TaskExecution::try_from(row).expect("a task row the schema allows")
}

/// The data of a `claimed` event, as the DAL writes it.
fn event_data(task: &TaskExecution) -> serde_json::Value {
    serde_json::json!({
        "attempt": task.attempt,
        "claim": task.claim_count,
        "recovery_attempts": task.recovery_attempts,
    })
}

/// The patterns over one backend's pool: the same source for both, since both share one
/// schema (`dal_diesel`); `$baseline` is the backend's baseline type, `$conn` its connection.
macro_rules! patterns {
    ($baseline:ident, $conn:ty) => {
    fn log(
        conn: &mut $conn,
        wf: Uuid,
        task: Uuid,
        kind: &str,
        data: serde_json::Value,
        runner: Option<Uuid>,
        at: DateTime<Utc>,
    ) -> QueryResult<usize> {
        diesel::insert_into(e::table)
            .values((
                e::id.eq(id(Uuid::now_v7())),
                e::workflow_execution_id.eq(id(wf)),
                e::task_execution_id.eq(id(task)),
                e::event_type.eq(kind),
                e::event_data.eq(json(data)),
                e::runner_id.eq(runner),
                e::created_at.eq(instant(at)),
            ))
            .execute(conn)
    }

    impl Baseline for $baseline {
        fn create_insert_then_select(&self, workflow_execution_id: Uuid, task_name: &str) -> Uuid {
            let conn = &mut self.conn();
            let (task_id, now) = (Uuid::now_v7(), Utc::now());
            diesel::insert_into(t::table)
                .values((
                    t::id.eq(id(task_id)),
                    t::workflow_execution_id.eq(id(workflow_execution_id)),
                    t::task_name.eq(task_name),
                    t::status.eq("not_started"),
                    t::attempt.eq(1),
                    t::max_attempts.eq(1),
                    t::trigger_rules.eq(json(json!({"type": "Always"}))),
                    t::task_configuration.eq(json(json!({}))),
                    t::created_at.eq(instant(now)),
                    t::updated_at.eq(instant(now)),
                ))
                .execute(conn)
                .expect("insert");
            let row: TaskRow = t::table
                .find(id(task_id))
                .select(TaskRow::as_select())
                .first(conn)
                .expect("select");
            task(row).id
        }

        fn create_with_event_transaction(
            &self,
            workflow_execution_id: Uuid,
            task_name: &str,
        ) -> Uuid {
            let conn = &mut self.conn();
            let (task_id, now) = (Uuid::now_v7(), Utc::now());
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                diesel::insert_into(t::table)
                    .values((
                        t::id.eq(id(task_id)),
                        t::workflow_execution_id.eq(id(workflow_execution_id)),
                        t::task_name.eq(task_name),
                        t::status.eq("not_started"),
                        t::attempt.eq(1),
                        t::max_attempts.eq(1),
                        t::trigger_rules.eq(json(json!({"type": "Always"}))),
                        t::task_configuration.eq(json(json!({}))),
                        t::created_at.eq(instant(now)),
                        t::updated_at.eq(instant(now)),
                    ))
                    .execute(conn)?;
                let data = json!({"attempt": 1, "claim": 0, "recovery_attempts": 0});
                log(conn, workflow_execution_id, task_id, "created", data, None, now)?;
                let row: TaskRow = t::table.find(id(task_id)).select(TaskRow::as_select()).first(conn)?;
                Ok(task(row).id)
            })
            .expect("transaction")
        }

        fn reset_select_then_update(&self, task_id: Uuid) {
            let conn = &mut self.conn();
            let (status, n): (String, i32) = t::table
                .find(id(task_id))
                .select((t::status, t::recovery_attempts))
                .first(conn)
                .expect("select");
            assert!(status == "ready" || status == "running");
            let now = Utc::now();
            diesel::update(t::table.find(id(task_id)))
                .set((
                    t::status.eq("ready"),
                    t::recovery_attempts.eq(n + 1),
                    t::last_recovery_at.eq(Some(now)),
                    t::started_at.eq(None::<DateTime<Utc>>),
                    t::claimed_by.eq(None::<Uuid>),
                    t::heartbeat_at.eq(None::<DateTime<Utc>>),
                    t::updated_at.eq(instant(now)),
                ))
                .execute(conn)
                .expect("update");
        }

        fn reset_read_update_insert(&self, task_id: Uuid) {
            let conn = &mut self.conn();
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                let (wf, status, n, attempt, claim): (IdValue, String, i32, i32, i32) = t::table
                    .find(id(task_id))
                    .select((
                        t::workflow_execution_id,
                        t::status,
                        t::recovery_attempts,
                        t::attempt,
                        t::claim_count,
                    ))
                    .first(conn)?;
                assert!(status == "ready" || status == "running");
                let now = Utc::now();
                diesel::update(t::table.find(id(task_id)))
                    .set((
                        t::status.eq("ready"),
                        t::recovery_attempts.eq(n + 1),
                        t::last_recovery_at.eq(Some(now)),
                        t::started_at.eq(None::<DateTime<Utc>>),
                        t::claimed_by.eq(None::<Uuid>),
                        t::heartbeat_at.eq(None::<DateTime<Utc>>),
                        t::updated_at.eq(instant(now)),
                    ))
                    .execute(conn)?;
                let data = json!({"attempt": attempt, "claim": claim, "recovery_attempts": n + 1});
                log(conn, wf.0, task_id, "recovered", data, None, now)
            })
            .expect("transaction");
        }

        fn list_ids(&self, workflow_execution_id: Uuid) -> Vec<Uuid> {
            let ids: Vec<IdValue> = t::table
                .filter(t::workflow_execution_id.eq(id(workflow_execution_id)))
                .order((t::created_at, t::id))
                .select(t::id)
                .load(&mut self.conn())
                .expect("select ids");
            ids.into_iter().map(|IdValue(task_id)| task_id).collect()
        }

        fn claim_scan_then_each(&self, runner_id: Uuid, limit: i64) -> Vec<Uuid> {
            let conn = &mut self.conn();
            let now = Utc::now();
            let ids: Vec<IdValue> = t::table
                .filter(t::status.eq("ready"))
                .filter(t::retry_at.is_null().or(t::retry_at.le(Some(now))))
                .order(t::id)
                .limit(limit)
                .select(t::id)
                .load(conn)
                .expect("scan");
            let mut claimed = Vec::with_capacity(ids.len());
            for IdValue(task_id) in ids {
                let row: Option<TaskRow> =
                    diesel::update(t::table.find(id(task_id)).filter(t::status.eq("ready")))
                        .set((
                            t::status.eq("running"),
                            t::claimed_by.eq(Some(runner_id)),
                            t::heartbeat_at.eq(Some(now)),
                            t::started_at.eq(Some(now)),
                            t::claim_count.eq(t::claim_count + 1),
                            t::updated_at.eq(instant(now)),
                        ))
                        .returning(TaskRow::as_returning())
                        .get_result(conn)
                        .optional()
                        .expect("claim");
                if let Some(claimed_task) = row.map(task) {
                    let data = event_data(&claimed_task);
                    let wf = claimed_task.workflow_execution_id;
                    log(conn, wf, task_id, "claimed", data, Some(runner_id), now).expect("event");
                    claimed.push(task_id);
                }
            }
            claimed
        }

        fn transition_read_update_insert(&self, task_id: Uuid, to: &'static str, event: &'static str) {
            let conn = &mut self.conn();
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                let (wf, attempt, claim, n): (IdValue, i32, i32, i32) = t::table
                    .find(id(task_id))
                    .select((
                        t::workflow_execution_id,
                        t::attempt,
                        t::claim_count,
                        t::recovery_attempts,
                    ))
                    .first(conn)?;
                let now = Utc::now();
                diesel::update(t::table.find(id(task_id)))
                    .set((t::status.eq(to), t::updated_at.eq(instant(now))))
                    .execute(conn)?;
                let data = json!({"attempt": attempt, "claim": claim, "recovery_attempts": n});
                log(conn, wf.0, task_id, event, data, None, now)
            })
            .expect("transaction");
        }
    }
    };
}

/// The baselines on PostgreSQL.
pub mod postgres {
    use dal_postgres::PgPool;

    use super::*;

    /// The baselines over a PostgreSQL store's pool.
    pub struct PgBaseline(pub PgPool);

    impl PgBaseline {
        fn conn(
            &self,
        ) -> diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<PgConnection>> {
            self.0.get().expect("a connection from the pool")
        }
    }

    patterns!(PgBaseline, PgConnection);
}

/// The baselines on SQLite.
pub mod sqlite {
    use dal_sqlite::SqlitePool;

    use super::*;

    /// The baselines over a SQLite store's pool.
    pub struct SqliteBaseline(pub SqlitePool);

    impl SqliteBaseline {
        fn conn(
            &self,
        ) -> diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<SqliteConnection>>
        {
            self.0.get().expect("a connection from the pool")
        }
    }

    patterns!(SqliteBaseline, SqliteConnection);
}
