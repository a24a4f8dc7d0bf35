//! [`dal_core::Backend`] for SQLite: a write and the insert of its events (built from the rows
//! it returned) are one `BEGIN IMMEDIATE` transaction, a write without events one statement.
//! Every statement has one of a few texts, so all stay prepared.

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dal_core::clock::Ids;
use dal_core::event::EventSpec;
use dal_core::plan::{Claim, Plan, Stale};
use dal_core::wake::{Bell, WakeSource};
use dal_core::{
    Backend, DalError, ExecutionEvent, PruneCursor, Pruned, Result, RetryStats, TaskExecution,
    TaskStatus,
};
use dal_diesel::errors::from_pool;
use dal_diesel::prepared::Prepared;
use dal_diesel::row::{RETURNING, Returning, Written, written};
use dal_diesel::types::{Id, Instant, Json};
use dal_diesel::write::{PLAN, Param, TASK, distinct, guard, inserted, params, set_list, task};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, BoxedSqlQuery, Query, QueryFragment, QueryId, SqlQuery};
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::errors::{forget_busy, from_diesel};

/// The connection pool of a SQLite store.
pub type SqlitePool = Pool<ConnectionManager<SqliteConnection>>;

/// The SQLite backend: a pool of connections to one file, and a write gate. SQLite lets one
/// writer in at a time: writers of this process queue on the gate and are woken as soon as it
/// is free, instead of sleeping in the busy handler, which still arbitrates between processes.
pub struct SqliteBackend {
    pool: SqlitePool,
    write_gate: Mutex<()>,
    event_ids: Ids,
    /// The file and how often its change counter is read (none in memory).
    watched: Option<(String, Duration)>,
}

/// What fails a transaction: a statement, or reading back what it returned.
enum TxError {
    Diesel(diesel::result::Error),
    Dal(DalError),
}

impl From<diesel::result::Error> for TxError {
    fn from(err: diesel::result::Error) -> Self {
        TxError::Diesel(err)
    }
}

impl From<DalError> for TxError {
    fn from(err: DalError) -> Self {
        TxError::Dal(err)
    }
}

/// Written rows, each with its queue position (`due_at`), which the claim floor reads.
type Rows = Vec<(TaskExecution, Option<DateTime<Utc>>)>;

/// The rows of each statement of a write, with the event each of its rows gets.
type Logged<'e> = Vec<(Rows, Option<&'e EventSpec>)>;

impl SqliteBackend {
    pub(crate) fn new(pool: SqlitePool, watched: Option<(String, Duration)>) -> Self {
        SqliteBackend { pool, write_gate: Mutex::new(()), event_ids: Ids::default(), watched }
    }

    /// A pooled connection, with no give-up of a busy handler left noted on this thread.
    fn conn(&self) -> Result<PooledConnection<ConnectionManager<SqliteConnection>>> {
        forget_busy();
        self.pool.get().map_err(from_pool)
    }

    fn read<T>(&self, run: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>) -> Result<T> {
        run(&mut *self.conn()?).map_err(from_diesel)
    }

    /// Runs `write` behind the write gate: alone when `alone` (one statement, no events), else
    /// in one `BEGIN IMMEDIATE` transaction with the events of the rows it wrote (each with the
    /// event it names), inserted in task id order, at `at`.
    fn write<'e>(
        &self,
        alone: bool,
        at: DateTime<Utc>,
        write: impl FnOnce(&mut SqliteConnection) -> std::result::Result<Logged<'e>, TxError>,
    ) -> Result<Rows> {
        let _gate = self.gate();
        let mut conn = self.conn()?;
        let run = |conn: &mut SqliteConnection| -> std::result::Result<Rows, TxError> {
            let groups = write(conn)?;
            let mut events: Vec<(&EventSpec, &TaskExecution)> = groups
                .iter()
                .filter_map(|(rows, event)| {
                    event.map(|e| rows.iter().map(move |(row, _)| (e, row)))
                })
                .flatten()
                .collect();
            if !events.is_empty() {
                events.sort_unstable_by_key(|(_, row)| row.id);
                log(conn, &self.event_ids, &events, at)?;
            }
            Ok(groups.into_iter().flat_map(|(rows, _)| rows).collect())
        };
        let result = if alone { run(&mut conn) } else { conn.immediate_transaction(run) };
        result.map_err(|err| match err {
            TxError::Diesel(err) => from_diesel(err),
            TxError::Dal(err) => err,
        })
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        self.write_gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `query` with `param` bound.
fn bind(
    q: BoxedSqlQuery<'_, Sqlite, SqlQuery>,
    param: Param,
) -> BoxedSqlQuery<'_, Sqlite, SqlQuery> {
    match param {
        Param::Id(v) => q.bind::<Nullable<Id>, _>(v),
        Param::Time(v) => q.bind::<Nullable<Instant>, _>(v),
        Param::Text(v) => q.bind::<Nullable<Text>, _>(v),
        Param::Int(v) => q.bind::<Nullable<Integer>, _>(v),
        Param::Bool(v) => q.bind::<Nullable<Bool>, _>(v),
        Param::Json(v) => q.bind::<Nullable<Json>, _>(v),
    }
}

/// `$from AS <column>, ...`: a row of `w` with the values of `columns` from `$from` on.
fn w_row(from: usize, columns: &[&str]) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, col)| format!("${} AS {col}", from + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The texts of the guarded writes, each the plan of row source `w` on the tasks it selects.
struct Writes {
    /// A plan (`$2...`) on the tasks whose id and current claim are in `$1`, a JSON array of
    /// `[id, runner, claim]`.
    update: String,
    /// A plan on task `$1` (and its lease, `$2` and `$3`).
    apply: String,
    /// A plan (`$1...`) on up to `$38` `Ready` tasks due from `$36` to `$37`, oldest first. `LIMIT +?`:
    /// SQLite prepares a statement with `LIMIT ?` again whenever the limit is bound.
    claim: String,
    /// A plan (`$1...`) on the claims whose heartbeat is before `$36`, recovered `$37` to `$38`
    /// times.
    sweep: String,
}

/// [`Writes`], built once.
fn writes() -> &'static Writes {
    static SQL: OnceLock<Writes> = OnceLock::new();
    SQL.get_or_init(|| {
        // The claim's range and limit; the sweep's threshold and recovery range.
        let (from, upto, limit) = (PLAN.len() + 1, PLAN.len() + 2, PLAN.len() + 3);
        let (due, least, most) = (PLAN.len() + 1, PLAN.len() + 2, PLAN.len() + 3);
        let leases = format!(
            "SELECT unhex(j.value ->> 0) AS id, unhex(j.value ->> 1) AS runner, j.value ->> 2 AS \
             claim, p.* FROM json_each($1) AS j, (SELECT {}) AS p",
            w_row(2, &PLAN)
        );
        let task = format!("SELECT {}, {}", w_row(1, &TASK), w_row(1 + TASK.len(), &PLAN));
        let claimable = format!(
            "t.id IN (SELECT id FROM task_executions WHERE status = 'ready' AND due_at BETWEEN ${from} \
             AND ${upto} ORDER BY due_at, id LIMIT +${limit})"
        );
        let stale = format!(
            "t.claimed_by IS NOT NULL AND t.heartbeat_at < ${due} AND t.recovery_attempts \
             BETWEEN ${least} AND ${most}"
        );
        let write = |w: &str, filter: &str, lease| {
            format!(
                "UPDATE task_executions AS t SET {} FROM ({w}) AS w WHERE {filter} AND {} \
                 RETURNING {RETURNING}",
                set_list("w"),
                guard(lease, "w")
            )
        };
        let plan = format!("SELECT {}", w_row(1, &PLAN));
        Writes {
            update: write(&leases, "t.id = w.id", Some("w")),
            apply: write(&task, "t.id = w.id", Some("w")),
            claim: write(&plan, &claimable, None),
            sweep: write(&plan, &stale, None),
        }
    })
}

/// `INSERT INTO <into> SELECT * FROM (VALUES (...), ...) WHERE column1 IS NOT NULL`, optionally
/// `RETURNING` its rows: padded with rows of `NULL`s (never the first column of a real row) to
/// the next power of two, so that an insert has one of a dozen texts and stays prepared.
struct Insert {
    into: &'static str,
    rows: Vec<Vec<Param>>,
    returning: bool,
}

impl QueryFragment<Sqlite> for Insert {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        const NULL: Option<String> = None;
        out.push_sql("INSERT INTO ");
        out.push_sql(self.into);
        out.push_sql(" SELECT * FROM (VALUES ");
        let width = self.rows.first().map_or(0, Vec::len);
        for i in 0..self.rows.len().next_power_of_two() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            for j in 0..width {
                if j > 0 {
                    out.push_sql(", ");
                }
                match self.rows.get(i).map(|row| &row[j]) {
                    Some(Param::Id(v)) => out.push_bind_param::<Nullable<Id>, _>(v)?,
                    Some(Param::Time(v)) => out.push_bind_param::<Nullable<Instant>, _>(v)?,
                    Some(Param::Text(v)) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                    Some(Param::Int(v)) => out.push_bind_param::<Nullable<Integer>, _>(v)?,
                    Some(Param::Bool(v)) => out.push_bind_param::<Nullable<Bool>, _>(v)?,
                    Some(Param::Json(v)) => out.push_bind_param::<Nullable<Json>, _>(v)?,
                    None => out.push_bind_param::<Nullable<Text>, _>(&NULL)?,
                }
            }
            out.push_sql(")");
        }
        out.push_sql(") WHERE column1 IS NOT NULL");
        if self.returning {
            out.push_sql(" RETURNING ");
            out.push_sql(RETURNING);
        }
        Ok(())
    }
}

impl QueryId for Insert {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Insert {
    type SqlType = diesel::sql_types::Untyped;
}

impl RunQueryDsl<SqliteConnection> for Insert {}

/// Inserts `rows` (values in the order of `into`'s columns) in chunks of SQLite's parameter
/// limit, returning the rows inserted when `returning`.
fn insert(
    conn: &mut SqliteConnection,
    into: &'static str,
    rows: Vec<Vec<Param>>,
    returning: bool,
) -> QueryResult<Vec<Written>> {
    let chunk = chunk(rows.first().map_or(1, Vec::len));
    let mut written = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let rows: Vec<Vec<Param>> = rows.by_ref().take(chunk).collect();
        let insert = Insert { into, rows, returning };
        if returning {
            written.extend(Returning(insert).load::<Written>(conn)?);
        } else {
            insert.execute(conn)?;
        }
    }
    Ok(written)
}

/// The most rows of `width` values one insert carries: a power of two within SQLite's limit of
/// 32,766 parameters a statement.
fn chunk(width: usize) -> usize {
    (32_766 / width.max(1) + 1).next_power_of_two() / 2
}

/// The columns of a task an insert writes.
const TASK_COLUMNS: &str = "task_executions (id, workflow_execution_id, task_name, status, \
    attempt, max_attempts, trigger_rules, task_configuration, retry_at, created_at, updated_at, \
    due_at)";

/// The columns of an event an insert writes.
const EVENT_COLUMNS: &str = "execution_events (id, workflow_execution_id, task_execution_id, \
    event_type, event_data, runner_id, created_at)";

fn hex(id: Uuid) -> Value {
    id.simple().to_string().into()
}

/// Inserts each row's event, in the order given, at `at`.
fn log(
    conn: &mut SqliteConnection,
    ids: &Ids,
    events: &[(&EventSpec, &TaskExecution)],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    let rows = events
        .iter()
        .map(|(event, row)| {
            vec![
                Param::Id(Some(ids.at(at))),
                Param::Id(Some(row.workflow_execution_id)),
                Param::Id(Some(row.id)),
                Param::Text(Some(event.event_type.as_str().to_owned())),
                Param::Json(Some(event.data_for(row))),
                Param::Id(event.runner_id),
                Param::Time(Some(at)),
            ]
        })
        .collect();
    insert(conn, EVENT_COLUMNS, rows, false).map(drop)
}

/// Writes `plan` to the tasks of `targets` (leases as `[id, runner, claim]`).
fn update(
    conn: &mut SqliteConnection,
    targets: &[Value],
    plan: &Plan,
) -> std::result::Result<Rows, TxError> {
    let query = diesel::sql_query(&writes().update)
        .into_boxed()
        .bind::<Text, _>(Value::from(targets.to_vec()).to_string());
    let query = params(plan).into_iter().fold(query, bind);
    Ok(written(Prepared(Returning(query)).load::<Written>(conn)?)?)
}

impl Backend for SqliteBackend {
    const NAME: &'static str = "sqlite";

    type Pool = SqlitePool;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn insert(
        &self,
        rows: &[TaskExecution],
        event: Option<&EventSpec>,
    ) -> Result<Vec<TaskExecution>> {
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let values: Vec<Vec<Param>> = rows.iter().map(inserted).collect();
        // More than one chunk takes a transaction even without events: all or nothing.
        let alone = event.is_none() && values.len() <= chunk(values[0].len());
        let rows = self.write(alone, first.created_at, |conn| {
            let rows = insert(conn, TASK_COLUMNS, values, true)?;
            Ok(vec![(written(rows)?, event)])
        })?;
        Ok(rows.into_iter().map(|(row, _)| row).collect())
    }

    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>> {
        let at = plan.effects.updated_at;
        let rows = self.write(plan.event.is_none(), at, |conn| {
            let query = task(id, plan.guard.lease)
                .into_iter()
                .chain(params(plan))
                .fold(diesel::sql_query(&writes().apply).into_boxed(), bind);
            Ok(vec![(
                written(Prepared(Returning(query)).load::<Written>(conn)?)?,
                plan.event.as_ref(),
            )])
        })?;
        Ok(rows.into_iter().next().map(|(row, _)| row))
    }

    fn cycle(&self, finished: &[Plan], claim: &Claim) -> Result<Rows> {
        let (plans, tasks) = distinct(finished);
        // Without events, a claim alone or one plan alone is one statement.
        let statements = plans.len() + usize::from(claim.limit > 0);
        let alone = claim.plan.event.is_none() && statements <= 1;
        self.write(alone, claim.plan.effects.updated_at, |conn| {
            let mut groups = Vec::new();
            // The claim first: it must not see the tasks this cycle makes `Ready`.
            if claim.limit > 0 {
                let query = params(&claim.plan)
                    .into_iter()
                    .fold(diesel::sql_query(&writes().claim).into_boxed(), bind)
                    .bind::<Instant, _>(claim.from)
                    .bind::<Instant, _>(claim.due_at)
                    .bind::<BigInt, _>(i64::from(claim.limit));
                let rows = written(Prepared(Returning(query)).load::<Written>(conn)?)?;
                groups.push((rows, claim.plan.event.as_ref()));
            }
            // One statement per distinct plan, for all its tasks; a task already written (a
            // retry applied) skips its other plan.
            let mut done = std::collections::HashSet::new();
            for (i, (plan, _)) in plans.into_iter().enumerate() {
                let targets: Vec<Value> = tasks
                    .iter()
                    .filter(|(l, at)| *at == i && !done.contains(&l.task_id))
                    .map(|(l, _)| json!([hex(l.task_id), hex(l.runner_id), l.claim]))
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let rows = update(conn, &targets, plan)?;
                done.extend(rows.iter().map(|(row, _)| row.id));
                groups.push((rows, plan.event.as_ref()));
            }
            Ok(groups)
        })
    }

    fn sweep(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>> {
        let at = plan.effects.updated_at;
        let rows = self.write(plan.event.is_none(), at, |conn| {
            let query = params(plan)
                .into_iter()
                .fold(diesel::sql_query(&writes().sweep).into_boxed(), bind)
                .bind::<Instant, _>(stale.older_than)
                .bind::<Integer, _>(stale.recovery_attempts.0)
                .bind::<Integer, _>(stale.recovery_attempts.1);
            Ok(vec![(
                written(Prepared(Returning(query)).load::<Written>(conn)?)?,
                plan.event.as_ref(),
            )])
        })?;
        Ok(rows.into_iter().map(|(row, _)| row).collect())
    }

    fn prune(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned> {
        use crate::retention::{find, remove};
        let mut conn = self.conn()?;
        // The batch is read without the write lock; only a batch with something to remove
        // takes it, and checks again under it before deleting.
        let found = find(&mut conn, older_than, limit, after).map_err(from_diesel)?;
        if found.finished.is_empty() {
            return remove(None, found, older_than).map_err(from_diesel);
        }
        let _gate = self.gate();
        conn.immediate_transaction(|conn| remove(Some(conn), found, older_than))
            .map_err(from_diesel)
    }

    dal_diesel::reads!(read, ("IN (", ")"));

    fn wake_source(&self) -> WakeSource {
        self.watched
            .as_ref()
            .map_or(WakeSource::Local, |(_, every)| WakeSource::ChangeChecks { every: *every })
    }

    fn watch(&self, bell: Weak<Bell>) {
        if let Some((path, every)) = &self.watched {
            crate::watch::spawn(path.clone(), *every, bell);
        }
    }
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend").field("pool", &self.pool.state()).finish_non_exhaustive()
    }
}
