//! The baselines: the multi-statement patterns the DAL replaces, written honestly, on the same
//! schema, Diesel and pool as the store ([`BenchEnv`]), writing the same events where compared.
//! They read before and after writing, send a statement per task, and wrap in a transaction what
//! one statement could do (each method lists its statements). In their favour: their reads fetch
//! only the columns they need, and `create` without `event` writes no history event.
#![allow(clippy::expect_used)] // measurement code: a failing baseline is a broken benchmark

use chrono::{DateTime, Utc};
use dal_core::{TaskExecution, TaskExecutionStore};
use dal_diesel::bind::{id, instant, json};
use dal_diesel::row::Row as TaskRow;
use dal_diesel::schema::{execution_events as e, task_executions as t};
use dal_diesel::types::IdValue;
use dal_tests::provision::{postgres::TempSchema, sqlite::TempDatabase};
use diesel::prelude::*;
use serde_json::json;
use uuid::Uuid;

/// The backends the benchmarks compare: `dal-postgres` and `dal-sqlite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// `postgres` or `sqlite`.
    pub fn name(self) -> &'static str {
        if self == Backend::Postgres { "postgres" } else { "sqlite" }
    }

    /// `DAL_BENCH_BACKENDS` (comma-separated: `sqlite`, `postgres`), both by default.
    pub fn from_env() -> Vec<Backend> {
        let list = std::env::var("DAL_BENCH_BACKENDS").unwrap_or("postgres,sqlite".into());
        let listed = |b: &Backend| list.split(',').any(|name| name.trim() == b.name());
        [Backend::Postgres, Backend::Sqlite].into_iter().filter(listed).collect()
    }
}

/// A store (the DAL), the baselines over its pool, and their database (removed on drop).
#[allow(missing_docs)]
pub struct BenchEnv {
    pub kind: Backend,
    pub store: Box<dyn TaskExecutionStore>,
    pub baseline: Baseline,
    _database: Box<dyn std::any::Any>,
}

impl BenchEnv {
    /// A fresh store of `pool_size` connections: a temporary SQLite file or a PostgreSQL schema.
    pub fn new(kind: Backend, pool_size: u32) -> Self {
        if kind == Backend::Sqlite {
            let file = TempDatabase::new();
            let store = file.open(|options| options.pool_size(pool_size));
            let baseline = Baseline::Sqlite(store.pool().clone());
            return BenchEnv { kind, store: Box::new(store), baseline, _database: Box::new(file) };
        }
        let schema = TempSchema::with_connections(pool_size);
        // DAL_BENCH_PG_OPTIONS: session settings (e.g. `-c synchronous_commit=off`);
        // DAL_BENCH_TRANSACTION_POOLING=1: the store as behind a pooler (nothing prepared).
        let mut options = std::env::var("DAL_BENCH_PG_OPTIONS").unwrap_or_default();
        let pooling = std::env::var("DAL_BENCH_TRANSACTION_POOLING").is_ok_and(|v| v == "1");
        if pooling {
            options.push_str(" -c enable_seqscan=off -c enable_bitmapscan=off");
        }
        let options = dal_postgres::PgOptions::new(schema.url_with_options(options.trim()));
        let store = options.transaction_pooling(pooling).pool_size(pool_size).connect();
        let store = store.expect("connect a PostgreSQL store for the benchmarks");
        let baseline = Baseline::Pg(store.pool().clone());
        BenchEnv { kind, store: Box::new(store), baseline, _database: Box::new(schema) }
    }
}

/// The baseline patterns over a store's pool, on PostgreSQL or SQLite.
#[allow(missing_docs)]
pub enum Baseline {
    Pg(dal_postgres::PgPool),
    Sqlite(dal_sqlite::SqlitePool),
}

/// Runs `$body` with `$conn` a connection of the pool: one source for both (one schema).
macro_rules! on_pool {
    ($self:ident, $conn:ident => $body:expr) => {
        match $self {
            Baseline::Pg(pool) => on_pool!(pool, $conn, $body),
            Baseline::Sqlite(pool) => on_pool!(pool, $conn, $body),
        }
    };
    ($pool:ident, $conn:ident, $body:expr) => {{
        let $conn = &mut $pool.get().expect("a connection from the pool");
        $body
    }};
}

/// `INSERT` of a history event as the DAL writes it: `(attempt, claim, recovery_attempts)`.
macro_rules! log {
    ($conn:expr, $wf:expr, $task:expr, $kind:expr, $counters:expr, $runner:expr, $at:expr) => {{
        let (attempt, claim, recovery_attempts) = $counters;
        let data = json!({"attempt": attempt, "claim": claim, "recovery_attempts": recovery_attempts});
        diesel::insert_into(e::table)
            .values((
                e::id.eq(id(Uuid::now_v7())),
                e::workflow_execution_id.eq(id($wf)),
                e::task_execution_id.eq(id($task)),
                e::event_type.eq($kind),
                e::event_data.eq(json(data)),
                e::runner_id.eq($runner),
                e::created_at.eq(instant($at)),
            ))
            .execute($conn)
    }};
}

/// `UPDATE` of a recovery reset, `recovery_attempts = $n` computed by the client.
macro_rules! reset_update {
    ($conn:expr, $task:expr, $n:expr, $now:expr) => {
        diesel::update(t::table.find(id($task)))
            .set((
                t::status.eq("ready"),
                t::recovery_attempts.eq($n),
                t::last_recovery_at.eq(Some($now)),
                t::started_at.eq(None::<DateTime<Utc>>),
                t::claimed_by.eq(None::<Uuid>),
                t::heartbeat_at.eq(None::<DateTime<Utc>>),
                t::updated_at.eq(instant($now)),
            ))
            .execute($conn)
    };
}

/// A row read by a baseline, as the model's task: the same decoding the DAL does.
fn task(row: TaskRow) -> TaskExecution {
    TaskExecution::try_from(row).expect("a task row the schema allows")
}

impl Baseline {
    /// `INSERT`, `SELECT` of the row (2); `event`: `BEGIN`, `INSERT` ×2, `SELECT`, `COMMIT` (5).
    pub fn create(&self, workflow: Uuid, task_name: &str, event: bool) -> Uuid {
        on_pool!(self, conn => {
            let (task_id, now) = (Uuid::now_v7(), Utc::now());
            let steps = |conn: &mut _| -> QueryResult<Uuid> {
                diesel::insert_into(t::table)
                    .values((
                        t::id.eq(id(task_id)),
                        t::workflow_execution_id.eq(id(workflow)),
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
                if event {
                    log!(conn, workflow, task_id, "created", (1, 0, 0), None::<Uuid>, now)?;
                }
                let row: TaskRow = t::table.find(id(task_id)).select(TaskRow::as_select()).first(conn)?;
                Ok(task(row).id)
            };
            if event { conn.transaction(steps) } else { steps(conn) }.expect("create")
        })
    }

    /// `SELECT` of the counter, `UPDATE` to it + 1 (2 statements; racing callers lose updates).
    pub fn reset_select_then_update(&self, task_id: Uuid) {
        on_pool!(self, conn => {
            let (status, n): (String, i32) = t::table
                .find(id(task_id))
                .select((t::status, t::recovery_attempts))
                .first(conn)
                .expect("select");
            assert!(status == "ready" || status == "running");
            reset_update!(conn, task_id, n + 1, Utc::now()).expect("update");
        })
    }

    /// A recovery reset: `BEGIN`, `SELECT`, `UPDATE`, `INSERT` of its event, `COMMIT` (5).
    pub fn reset_read_update_insert(&self, task_id: Uuid) {
        on_pool!(self, conn => conn.transaction(|conn| {
            let columns =
                (t::workflow_execution_id, t::status, t::recovery_attempts, t::attempt, t::claim_count);
            let (wf, status, n, attempt, claim): (IdValue, String, i32, i32, i32) =
                t::table.find(id(task_id)).select(columns).first(conn)?;
            assert!(status == "ready" || status == "running");
            let now = Utc::now();
            reset_update!(conn, task_id, n + 1, now)?;
            log!(conn, wf.0, task_id, "recovered", (attempt, claim, n + 1), None::<Uuid>, now)
        }))
        .expect("transaction");
    }

    /// `SELECT` of due ids, per task `UPDATE ... RETURNING` and `INSERT` of its event (`1 + 2n`).
    pub fn claim_scan_then_each(&self, runner_id: Uuid, limit: i64) -> Vec<Uuid> {
        on_pool!(self, conn => {
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
                if let Some(c) = row.map(task) {
                    let counters = (c.attempt, c.claim_count, c.recovery_attempts);
                    let wf = c.workflow_execution_id;
                    log!(conn, wf, task_id, "claimed", counters, Some(runner_id), now).expect("event");
                    claimed.push(task_id);
                }
            }
            claimed
        })
    }

    /// Any transition: `BEGIN`, `SELECT`, `UPDATE` to `to`, `INSERT` of `event`, `COMMIT` (5).
    pub fn transition_read_update_insert(&self, task_id: Uuid, to: &str, event: &str) {
        on_pool!(self, conn => conn.transaction(|conn| {
            let columns = (t::workflow_execution_id, t::attempt, t::claim_count, t::recovery_attempts);
            let (wf, attempt, claim, n): (IdValue, i32, i32, i32) =
                t::table.find(id(task_id)).select(columns).first(conn)?;
            let now = Utc::now();
            diesel::update(t::table.find(id(task_id)))
                .set((t::status.eq(to), t::updated_at.eq(instant(now))))
                .execute(conn)?;
            log!(conn, wf.0, task_id, event, (attempt, claim, n), None::<Uuid>, now)
        }))
        .expect("transaction");
    }

    /// A workflow execution's task ids in `list_for_workflow`'s order, without the rest of rows.
    pub fn list_ids(&self, workflow: Uuid) -> Vec<Uuid> {
        let ids: Vec<IdValue> = on_pool!(self, conn => t::table
            .filter(t::workflow_execution_id.eq(id(workflow)))
            .order((t::created_at, t::id))
            .select(t::id)
            .load(conn)
            .expect("select ids"));
        ids.into_iter().map(|IdValue(task_id)| task_id).collect()
    }
}
