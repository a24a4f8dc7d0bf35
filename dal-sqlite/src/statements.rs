//! The statements: [`dal_core::Backend`] for SQLite.

use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use dal_core::event::EventSpec;
use dal_core::ids::Ids;
use dal_core::plan::{Plan, Stale};
use dal_core::sql::PreparedAs;
use dal_core::{
    Backend, DalError, ExecutionEvent, Lease, PruneCursor, Pruned, Result, RetryStats, StatusSet,
    TaskExecution, TaskStatus,
};
use diesel::SqliteConnection;
use diesel::dsl::{case_when, count_star, exists, max, min, sum};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::{BigInt, Binary, Bool, Integer, Nullable, Text};
use uuid::Uuid;

use crate::errors::{from_diesel, from_pool};
use crate::history::{self, EventRow};
use crate::json_in::{in_ids, in_texts};
use crate::leases::held_by;
use crate::row::uuid;
use crate::row::{NewRow, Row, micros, time};
use crate::schema::execution_events as e;
use crate::schema::task_executions::{self as t, table as tasks};

/// SQLite's limit on bind parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER` of the bundled
/// build, the default since SQLite 3.32).
const MAX_BINDS: usize = 32_766;

/// The connection pool of a SQLite store.
pub type SqlitePool = Pool<ConnectionManager<SqliteConnection>>;

/// The SQLite backend: a pool of connections to one database file, and a write gate.
///
/// SQLite lets one writer at a time into a database. Writers of this process queue on the
/// gate (a mutex) and are woken as soon as it is free, instead of sleeping in SQLite's busy
/// handler; the busy timeout still arbitrates with other processes. Readers do not take the
/// gate (WAL lets them read during a write).
pub struct SqliteBackend {
    pool: SqlitePool,
    write_gate: Mutex<()>,
    event_ids: Ids,
}

impl SqliteBackend {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        SqliteBackend {
            pool,
            write_gate: Mutex::new(()),
            event_ids: Ids::new(),
        }
    }

    /// Runs `write` (statements returning task rows) and, when there is an event, inserts it
    /// for each returned row, all in one `BEGIN IMMEDIATE` transaction: nothing is written
    /// unless everything is. Without an event the write runs alone (one statement).
    fn write_logged(
        &self,
        event: Option<&EventSpec>,
        at: DateTime<Utc>,
        write: impl FnOnce(&mut SqliteConnection) -> QueryResult<Vec<Row>>,
    ) -> Result<Vec<TaskExecution>> {
        let _gate = self.gate();
        let mut conn = self.pool.get().map_err(from_pool)?;
        let Some(event) = event else {
            return rows(write(&mut conn).map_err(from_diesel)?);
        };
        conn.immediate_transaction(|conn| {
            let written = rows(write(conn)?).map_err(TxError::Dal)?;
            history::log(conn, &self.event_ids, event, &written, at)?;
            Ok(written)
        })
        .map_err(|err| match err {
            TxError::Diesel(err) => from_diesel(err),
            TxError::Dal(err) => err,
        })
    }

    /// The store's connection pool, for statements of your own (reports, extensions,
    /// benchmarks). Connections come set up like the store's own; writes made through them do
    /// not take the store's write gate and so wait in SQLite's busy handler instead.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn read<T>(&self, run: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>) -> Result<T> {
        let mut conn = self.pool.get().map_err(from_pool)?;
        run(&mut conn).map_err(from_diesel)
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        // The gate guards no data: a panic while holding it leaves nothing to repair.
        self.write_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn rows(rows: Vec<Row>) -> Result<Vec<TaskExecution>> {
    rows.into_iter().map(TaskExecution::try_from).collect()
}

fn events(rows: Vec<EventRow>) -> Result<Vec<ExecutionEvent>> {
    rows.into_iter().map(ExecutionEvent::try_from).collect()
}

/// What fails a logged write: a statement, or reading back what it returned.
enum TxError {
    Diesel(diesel::result::Error),
    Dal(DalError),
}

impl From<diesel::result::Error> for TxError {
    fn from(err: diesel::result::Error) -> Self {
        TxError::Diesel(err)
    }
}

/// The names under which the fixed statements are kept prepared (see `PreparedAs`).
mod keys {
    pub(super) struct Apply;
    pub(super) struct Claim;
    pub(super) struct Leased;
    pub(super) struct Stale;
    pub(super) struct ListReady;
    pub(super) struct ListRetries;
}

/// `status IN (<set>)` with six slots, unused ones bound to NULL (which matches nothing): the
/// SQL text is the same for every set, so SQLite prepares it once per connection. One slot per
/// status: the build stops here when a status is added, until a slot is added too.
const _: () = assert!(
    TaskStatus::ALL.len() == 6,
    "status_in! has six slots: one per TaskStatus"
);
macro_rules! status_in {
    ($col:expr, $set:expr) => {{
        let mut slots = $set.iter().map(|s| Some(s.as_str()));
        let mut slot = || slots.next().flatten();
        let (s0, s1, s2, s3, s4, s5) = (slot(), slot(), slot(), slot(), slot(), slot());
        $col.nullable()
            .eq(s0)
            .or($col.nullable().eq(s1))
            .or($col.nullable().eq(s2))
            .or($col.nullable().eq(s3))
            .or($col.nullable().eq(s4))
            .or($col.nullable().eq(s5))
    }};
}

/// `col = CASE WHEN <keep> THEN col ELSE <value> END`.
macro_rules! assign {
    ($col:expr, $assign:expr, $sql:ty, $encode:expr) => {
        $col.eq(case_when($assign.keeps().into_sql::<Bool>(), $col)
            .otherwise($assign.value().map($encode).into_sql::<Nullable<$sql>>()))
    };
}

/// The `SET` list of a plan: every column a plan may touch, in one fixed text.
macro_rules! plan_set {
    ($e:expr) => {{
        let e = $e;
        let (attempt_m, attempt_a) = e.attempt.coefficients(1);
        let (recovery_m, recovery_a) = e.recovery_attempts.coefficients(0);
        let (claims_m, claims_a) = e.claim_count.coefficients(0);
        (
            t::status.eq(e.status.as_str()),
            t::attempt.eq(t::attempt * attempt_m + attempt_a),
            t::recovery_attempts.eq(t::recovery_attempts * recovery_m + recovery_a),
            t::claim_count.eq(t::claim_count * claims_m + claims_a),
            assign!(t::error_details, e.error_details, Text, String::as_str),
            assign!(t::last_error, e.last_error, Text, String::as_str),
            assign!(t::retry_at, e.retry_at, BigInt, |at| micros(*at)),
            assign!(t::started_at, e.started_at, BigInt, |at| micros(*at)),
            assign!(t::completed_at, e.completed_at, BigInt, |at| micros(*at)),
            assign!(
                t::last_recovery_at,
                e.last_recovery_at,
                BigInt,
                |at| micros(*at)
            ),
            assign!(t::claimed_by, e.claimed_by, Binary, |id| id
                .as_bytes()
                .as_slice()),
            assign!(t::heartbeat_at, e.heartbeat_at, BigInt, |at| micros(*at)),
            assign!(t::abandoned_at, e.abandoned_at, BigInt, |at| micros(*at)),
            t::updated_at.eq(micros(e.updated_at)),
            // The queue position, set when the task enters Ready (`dal_core::plan::due_at`):
            // the later of its retry time as written and now; kept otherwise. (SQLite's
            // two-argument max() is NULL when either is, hence the coalesce.)
            t::due_at.eq(case_when(
                (e.status == TaskStatus::Ready).into_sql::<Bool>(),
                later(
                    coalesce(
                        case_when(e.retry_at.keeps().into_sql::<Bool>(), t::retry_at).otherwise(
                            e.retry_at
                                .value()
                                .map(|at| micros(*at))
                                .into_sql::<Nullable<BigInt>>(),
                        ),
                        micros(e.updated_at),
                    ),
                    micros(e.updated_at),
                ),
            )
            .otherwise(t::due_at)),
        )
    }};
}

diesel::define_sql_function! {
    /// The first of two values that is not NULL.
    fn coalesce(a: Nullable<BigInt>, b: BigInt) -> BigInt;
}

diesel::define_sql_function! {
    /// SQLite's scalar (two-argument) `max`: the larger value.
    #[sql_name = "max"]
    fn later(a: BigInt, b: BigInt) -> Nullable<BigInt>;
}

/// `'ready'` as a literal in the statement's text, not a parameter: SQLite uses a partial
/// index only when the query's `WHERE` implies the index's, and a parameter implies nothing.
fn ready() -> diesel::expression::SqlLiteral<Text> {
    diesel::dsl::sql::<Text>("'ready'")
}

impl Backend for SqliteBackend {
    const NAME: &'static str = "sqlite";

    fn insert(&self, rows_in: &[TaskExecution], event: &EventSpec) -> Result<Vec<TaskExecution>> {
        let new_rows: Vec<NewRow<'_>> = rows_in.iter().map(NewRow::from).collect();
        // The store's clock stamped the rows; an empty batch sends nothing.
        let Some(at) = rows_in.first().map(|row| row.created_at) else {
            return Ok(Vec::new());
        };
        self.write_logged(Some(event), at, |conn| {
            if let [one] = new_rows.as_slice() {
                // The single-row statement has fixed SQL text, so it is prepared once per
                // connection; a multi-row one differs with its row count.
                return diesel::insert_into(tasks)
                    .values(one)
                    .returning(Row::as_returning())
                    .get_results(conn);
            }
            let mut all = Vec::with_capacity(new_rows.len());
            for part in new_rows.chunks(MAX_BINDS / NewRow::BINDS) {
                all.extend(
                    diesel::insert_into(tasks)
                        .values(part)
                        .returning(Row::as_returning())
                        .get_results(conn)?,
                );
            }
            Ok(all)
        })
    }

    fn get(&self, id: Uuid) -> Result<Option<TaskExecution>> {
        self.read(|conn| {
            tasks
                .find(id.as_bytes().as_slice())
                .select(Row::as_select())
                // By primary key: at most one row. No LIMIT: SQLite re-prepares a statement
                // whose LIMIT is a parameter each time it runs.
                .get_result(conn)
                .optional()
        })?
        .map(TaskExecution::try_from)
        .transpose()
    }

    fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
        rows(self.read(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq(workflow_execution_id.as_bytes().as_slice()))
                .order((t::created_at, t::id))
                .select(Row::as_select())
                .load(conn)
        })?)
    }

    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>> {
        let lease = plan.guard.lease;
        let lease_guard = lease.is_none().into_sql::<Bool>().or(t::claimed_by
            .eq(lease.as_ref().map(|l| l.runner_id.as_bytes().as_slice()))
            .and(t::claim_count.eq(lease.map_or(0, |l| l.claim))));
        let attempt_guard = t::attempt.lt(t::max_attempts).or(plan
            .guard
            .needs_attempt_left
            .into_sql::<Bool>()
            .eq(false));
        let mut written =
            self.write_logged(plan.event.as_ref(), plan.effects.updated_at, |conn| {
                PreparedAs::<keys::Apply, _>::new(
                    diesel::update(tasks)
                        .filter(t::id.eq(id.as_bytes().as_slice()))
                        .filter(status_in!(t::status, plan.guard.from))
                        .filter(attempt_guard)
                        .filter(lease_guard)
                        .set(plan_set!(&plan.effects))
                        .returning(Row::as_returning()),
                )
                .get_results(conn)
            })?;
        Ok(written.pop())
    }

    fn claim(
        &self,
        due_at: DateTime<Utc>,
        from: DateTime<Utc>,
        limit: u32,
        plan: &Plan,
    ) -> Result<Vec<(TaskExecution, DateTime<Utc>)>> {
        let candidates = diesel::alias!(crate::schema::task_executions as candidates);
        let oldest_due = candidates
            .select(candidates.field(t::id))
            .filter(candidates.field(t::status).eq(ready()))
            .filter(
                candidates
                    .field(t::due_at)
                    .between(micros(from), micros(due_at)),
            )
            .order((candidates.field(t::due_at), candidates.field(t::id)))
            .limit(i64::from(limit));
        // One statement: SQLite runs it alone among writers, so no other claim can take the
        // same rows between the subquery and the update. A claim leaves the queue position as
        // it was: returned, it moves the floor.
        let mut positions = Vec::new();
        let rows = self.write_logged(plan.event.as_ref(), plan.effects.updated_at, |conn| {
            let claimed: Vec<(Row, Option<i64>)> = PreparedAs::<keys::Claim, _>::new(
                diesel::update(tasks)
                    .filter(t::id.eq_any(oldest_due))
                    .set(plan_set!(&plan.effects))
                    .returning((Row::as_returning(), t::due_at)),
            )
            .get_results(conn)?;
            Ok(claimed
                .into_iter()
                .map(|(row, at)| {
                    positions.push(at);
                    row
                })
                .collect())
        })?;
        rows.into_iter()
            .zip(positions)
            .map(|(task, at)| Ok((task, at.map(time).transpose()?.unwrap_or(due_at))))
            .collect()
    }

    fn apply_leased(&self, leases: &[Lease], plan: &Plan) -> Result<Vec<TaskExecution>> {
        self.write_logged(plan.event.as_ref(), plan.effects.updated_at, |conn| {
            PreparedAs::<keys::Leased, _>::new(
                diesel::update(tasks)
                    .filter(held_by(leases))
                    .filter(status_in!(t::status, plan.guard.from))
                    .set(plan_set!(&plan.effects))
                    .returning(Row::as_returning()),
            )
            .get_results(conn)
        })
    }

    fn apply_stale(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>> {
        let (low, high) = stale.recovery_attempts;
        self.write_logged(plan.event.as_ref(), plan.effects.updated_at, |conn| {
            PreparedAs::<keys::Stale, _>::new(
                diesel::update(tasks)
                    .filter(t::claimed_by.is_not_null())
                    .filter(t::heartbeat_at.lt(micros(stale.older_than)))
                    .filter(status_in!(t::status, plan.guard.from))
                    .filter(t::recovery_attempts.between(low, high))
                    .set(plan_set!(&plan.effects))
                    .returning(Row::as_returning()),
            )
            .get_results(conn)
        })
    }

    fn find_stale(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>> {
        rows(self.read(|conn| {
            tasks
                .filter(t::claimed_by.is_not_null())
                .filter(t::heartbeat_at.lt(micros(older_than)))
                .filter(status_in!(t::status, dal_core::plan::CLAIMED))
                .order(t::id)
                .select(Row::as_select())
                .load(conn)
        })?)
    }

    fn list_ready(
        &self,
        due_at: DateTime<Utc>,
        limit: u32,
        retries_only: bool,
    ) -> Result<Vec<TaskExecution>> {
        let due = tasks
            .filter(t::status.eq(ready()))
            .filter(t::due_at.le(micros(due_at)))
            .order((t::due_at, t::id))
            .limit(i64::from(limit))
            .select(Row::as_select());
        rows(self.read(|conn| {
            if retries_only {
                // Its own statement, on the retries' own partial index.
                PreparedAs::<keys::ListRetries, _>::new(due.filter(t::retry_at.is_not_null()))
                    .load(conn)
            } else {
                PreparedAs::<keys::ListReady, _>::new(due).load(conn)
            }
        })?)
    }

    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>> {
        events(self.read(|conn| {
            e::table
                .filter(e::task_execution_id.eq(task_execution_id.as_bytes().as_slice()))
                .order(e::seq)
                .select(EventRow::as_select())
                .load(conn)
        })?)
    }

    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>> {
        events(self.read(|conn| {
            e::table
                .filter(e::workflow_execution_id.eq(workflow_execution_id.as_bytes().as_slice()))
                .filter(e::seq.gt(after))
                .order(e::seq)
                .limit(i64::from(limit))
                .select(EventRow::as_select())
                .load(conn)
        })?)
    }

    fn tasks_with_status(
        &self,
        workflow_execution_ids: &[Uuid],
        status: TaskStatus,
    ) -> Result<Vec<TaskExecution>> {
        rows(self.read(|conn| {
            tasks
                .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                .filter(t::status.eq(status.as_str()))
                .order(t::id)
                .select(Row::as_select())
                .load(conn)
        })?)
    }

    fn task_statuses(
        &self,
        workflow_execution_ids: &[Uuid],
        task_names: Option<&[&str]>,
    ) -> Result<Vec<(Uuid, String, TaskStatus)>> {
        let every_name = task_names.is_none();
        let names = task_names.unwrap_or_default();
        let found: Vec<(Vec<u8>, String, String)> = self.read(|conn| {
            tasks
                .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                .filter(
                    every_name
                        .into_sql::<Bool>()
                        .or(in_texts(t::task_name, names)),
                )
                .select((t::workflow_execution_id, t::task_name, t::status))
                .load(conn)
        })?;
        found
            .into_iter()
            .map(|(workflow, name, status)| Ok((uuid(&workflow)?, name, status.parse()?)))
            .collect()
    }

    fn complete_workflows(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let complete: Vec<Vec<u8>> = self.read(|conn| {
            tasks
                .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                .group_by(t::workflow_execution_id)
                .having(
                    min(case_when(
                        status_in!(t::status, StatusSet::TERMINAL),
                        1.into_sql::<Integer>(),
                    )
                    .otherwise(0.into_sql::<Integer>()))
                    .eq(1),
                )
                .select(t::workflow_execution_id)
                .load(conn)
        })?;
        complete.iter().map(|id| uuid(id)).collect()
    }

    fn has_abandoned(&self, workflow_execution_id: Uuid) -> Result<bool> {
        self.read(|conn| {
            diesel::select(exists(
                tasks
                    .filter(
                        t::workflow_execution_id.eq(workflow_execution_id.as_bytes().as_slice()),
                    )
                    .filter(t::abandoned_at.is_not_null()),
            ))
            .get_result(conn)
        })
    }

    fn retry_stats(&self, workflow_execution_id: Uuid) -> Result<RetryStats> {
        let (retried, retries, highest, exhausted): (
            Option<i64>,
            Option<i64>,
            Option<i32>,
            Option<i64>,
        ) = self.read(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq(workflow_execution_id.as_bytes().as_slice()))
                .select((
                    sum(case_when(t::attempt.gt(1), 1.into_sql::<Integer>())
                        .otherwise(0.into_sql::<Integer>())),
                    sum(t::attempt - 1),
                    max(t::attempt),
                    sum(case_when(
                        t::status
                            .eq(TaskStatus::Failed.as_str())
                            .and(t::attempt.ge(t::max_attempts))
                            .and(t::abandoned_at.is_null()),
                        1.into_sql::<Integer>(),
                    )
                    .otherwise(0.into_sql::<Integer>())),
                ))
                .get_result(conn)
        })?;
        Ok(RetryStats {
            tasks_retried: retried.unwrap_or(0),
            total_retries: retries.unwrap_or(0),
            max_attempt: highest.unwrap_or(0),
            tasks_exhausted: exhausted.unwrap_or(0),
        })
    }

    fn exhausted_tasks(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
        rows(self.read(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq(workflow_execution_id.as_bytes().as_slice()))
                .filter(t::status.eq(TaskStatus::Failed.as_str()))
                .filter(t::attempt.ge(t::max_attempts))
                .filter(t::abandoned_at.is_null())
                .order(t::id)
                .select(Row::as_select())
                .load(conn)
        })?)
    }

    fn prune(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned> {
        use crate::retention::{find, remove};
        let mut conn = self.pool.get().map_err(from_pool)?;
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

    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>> {
        let counts: Vec<(String, i64)> = self.read(|conn| {
            tasks
                .group_by(t::status)
                .select((t::status, count_star()))
                .load(conn)
        })?;
        counts
            .into_iter()
            .map(|(status, count)| Ok((status.parse()?, count)))
            .collect()
    }
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("pool", &self.pool.state())
            .finish_non_exhaustive()
    }
}
