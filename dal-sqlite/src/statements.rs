//! The statements: [`dal_core::Backend`] for SQLite.

use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use dal_core::event::EventSpec;
use dal_core::ids::Ids;
use dal_core::plan::{ClaimRange, CyclePlan, Plan, Stale};
use dal_core::{Backend, DalError, Lease, PruneCursor, Pruned, Result, TaskExecution};
use dal_diesel::bind::id as bind_id;
use dal_diesel::dialect::{in_query, limited, status_in};
use dal_diesel::errors::from_pool;
use dal_diesel::prepared::PreparedAs;
use dal_diesel::row::{NewRow, Row, tasks as rows};
use dal_diesel::schema::task_executions::{self as t, table as tasks};
use dal_diesel::statements::ready;
use dal_diesel::{apply_write, plan_set};
use diesel::SqliteConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use uuid::Uuid;

use crate::errors::{forget_busy, from_diesel};
use crate::history;
use crate::leases::held_by;
use crate::shaped::{self, TaskValues};

/// SQLite's limit on bind parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER` of the bundled
/// build, the default since SQLite 3.32).
pub(crate) const MAX_BINDS: usize = 32_766;

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
    /// unless everything is. Without an event a write of one statement runs alone; one of
    /// `several` statements still runs in a transaction.
    fn write_logged(
        &self,
        event: Option<&EventSpec>,
        several: bool,
        at: DateTime<Utc>,
        write: impl FnOnce(&mut SqliteConnection) -> QueryResult<Vec<Row>>,
    ) -> Result<Vec<TaskExecution>> {
        let _gate = self.gate();
        let mut conn = self.conn()?;
        if event.is_none() && !several {
            return rows(write(&mut conn).map_err(from_diesel)?);
        }
        conn.immediate_transaction(|conn| {
            let written = rows(write(conn)?).map_err(TxError::Dal)?;
            if let Some(event) = event {
                history::log(conn, &self.event_ids, event, &written, at)?;
            }
            Ok(written)
        })
        .map_err(|err| match err {
            TxError::Diesel(err) => from_diesel(err),
            TxError::Dal(err) => err,
        })
    }

    fn read<T>(&self, run: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>) -> Result<T> {
        let mut conn = self.conn()?;
        run(&mut conn).map_err(from_diesel)
    }

    /// A pooled connection, with no give-up of a busy handler left noted on this thread.
    fn conn(&self) -> Result<PooledConnection<ConnectionManager<SqliteConnection>>> {
        forget_busy();
        self.pool.get().map_err(from_pool)
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        // The gate guards no data: a panic while holding it leaves nothing to repair.
        self.write_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
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
}

/// The guarded write of task `id` (`apply_write!`).
fn apply_one(conn: &mut SqliteConnection, id: Uuid, plan: &Plan) -> QueryResult<Vec<Row>> {
    PreparedAs::<keys::Apply, _>::new(apply_write!(bind_id(id), plan)).get_results(conn)
}

/// `plan` applied to the tasks whose current claim is one of `leases` and whose status is in
/// the plan's guard.
fn apply_leased(
    conn: &mut SqliteConnection,
    leases: &[Lease],
    plan: &Plan,
) -> QueryResult<Vec<Row>> {
    PreparedAs::<keys::Leased, _>::new(
        diesel::update(tasks)
            .filter(held_by(leases))
            .filter(status_in(t::status, plan.guard.from))
            .set(plan_set!(&plan.effects))
            .returning(Row::as_returning()),
    )
    .get_results(conn)
}

/// The claim of the oldest due `Ready` tasks of `range`, each returned with its queue position.
/// One statement: SQLite runs it alone among writers, so no other claim can take the same rows
/// between the subquery and the update. A claim leaves the queue position as it was: returned,
/// it moves the floor.
fn claim_oldest(
    conn: &mut SqliteConnection,
    range: &ClaimRange,
    plan: &Plan,
) -> QueryResult<Vec<(Row, Option<DateTime<Utc>>)>> {
    let candidates = diesel::alias!(crate::schema::task_executions as candidates);
    let oldest_due = candidates
        .select(candidates.field(t::id))
        .filter(candidates.field(t::status).eq(ready()))
        .filter(
            candidates
                .field(t::due_at)
                .between(Some(range.from), Some(range.due_at)),
        )
        .order((candidates.field(t::due_at), candidates.field(t::id)));
    PreparedAs::<keys::Claim, _>::new(
        diesel::update(tasks)
            .filter(in_query(t::id, limited(oldest_due, range.limit)))
            .set(plan_set!(&plan.effects))
            .returning((Row::as_returning(), t::due_at)),
    )
    .get_results(conn)
}

impl Backend for SqliteBackend {
    const NAME: &'static str = "sqlite";

    type Pool = SqlitePool;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn insert(
        &self,
        rows_in: &[TaskExecution],
        event: Option<&EventSpec>,
    ) -> Result<Vec<TaskExecution>> {
        // The store's clock stamped the rows; an empty batch sends nothing.
        let Some(at) = rows_in.first().map(|row| row.created_at) else {
            return Ok(Vec::new());
        };
        let chunk = MAX_BINDS / NewRow::BINDS;
        // Without events, a batch of one chunk is one statement; more take a transaction.
        self.write_logged(event, rows_in.len() > chunk, at, |conn| {
            if let [one] = rows_in {
                // The single-row statement has fixed SQL text, so it is prepared once per
                // connection; up to 1,024 rows, a fixed shape (`shaped`); beyond, Diesel's
                // multi-row `VALUES`, whose text differs with its row count.
                return diesel::insert_into(tasks)
                    .values(NewRow::from(one))
                    .returning(Row::as_returning())
                    .get_results(conn);
            }
            if shaped::shaped(rows_in.len()) {
                return shaped::insert_returning(
                    conn,
                    rows_in.iter().map(TaskValues::from).collect(),
                );
            }
            let mut all = Vec::with_capacity(rows_in.len());
            for part in rows_in.chunks(chunk) {
                all.extend(
                    diesel::insert_into(tasks)
                        .values(part.iter().map(NewRow::from).collect::<Vec<_>>())
                        .returning(Row::as_returning())
                        .get_results(conn)?,
                );
            }
            Ok(all)
        })
    }

    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>> {
        let mut written = self.write_logged(
            plan.event.as_ref(),
            false,
            plan.effects.updated_at,
            |conn| apply_one(conn, id, plan),
        )?;
        Ok(written.pop())
    }

    fn claim(
        &self,
        due_at: DateTime<Utc>,
        from: DateTime<Utc>,
        limit: u32,
        plan: &Plan,
    ) -> Result<Vec<(TaskExecution, DateTime<Utc>)>> {
        let range = ClaimRange {
            due_at,
            from,
            limit,
        };
        let mut positions = Vec::new();
        let rows = self.write_logged(
            plan.event.as_ref(),
            false,
            plan.effects.updated_at,
            |conn| {
                let (rows, at) = claim_oldest(conn, &range, plan)?.into_iter().unzip();
                positions = at;
                Ok(rows)
            },
        )?;
        Ok(rows
            .into_iter()
            .zip(positions)
            .map(|(task, at)| (task, at.unwrap_or(due_at)))
            .collect())
    }

    fn apply_leased(&self, leases: &[Lease], plan: &Plan) -> Result<Vec<TaskExecution>> {
        self.write_logged(
            plan.event.as_ref(),
            false,
            plan.effects.updated_at,
            |conn| apply_leased(conn, leases, plan),
        )
    }

    fn cycle(&self, cycle: &CyclePlan<'_>) -> Result<Vec<(TaskExecution, DateTime<Utc>)>> {
        let _gate = self.gate();
        let mut conn = self.conn()?;
        let at = cycle.complete.effects.updated_at;
        // The writes in the order the PostgreSQL statement locks: the leased rows, then the
        // claim (then the retries, see below); then every row's event, in task id order.
        conn.immediate_transaction(|conn| {
            let mut written: Vec<(Row, Option<DateTime<Utc>>, &Plan)> = Vec::new();
            if !cycle.completed.is_empty() {
                let rows = apply_leased(conn, cycle.completed, &cycle.complete)?;
                written.extend(rows.into_iter().map(|row| (row, None, &cycle.complete)));
            }
            let failures: Vec<Plan> = (0..cycle.failed.len())
                .filter_map(|i| cycle.failure(i))
                .collect();
            for (failed, plan) in cycle.failed.iter().zip(&failures) {
                let rows = apply_one(conn, failed.lease.task_id, plan)?;
                written.extend(rows.into_iter().map(|row| (row, None, plan)));
            }
            if cycle.range.limit > 0 {
                let rows = claim_oldest(conn, &cycle.range, &cycle.claim)?;
                written.extend(rows.into_iter().map(|(row, at)| (row, at, &cycle.claim)));
            }
            // The retries after the claim, which would otherwise see a retry already due as
            // `Ready` (on PostgreSQL every write sees the statement's one snapshot). A retry's
            // guard is its failure's and an attempt left: when the retry does not
            // apply but the failure does, the task was on its last attempt.
            let retries: Vec<(Plan, Plan)> = (0..cycle.retried.len())
                .filter_map(|i| Some((cycle.retrial(i)?, cycle.exhausted(i)?)))
                .collect();
            for (retried, (retry, exhausted)) in cycle.retried.iter().zip(&retries) {
                let id = retried.lease.task_id;
                let rows = apply_one(conn, id, retry)?;
                if rows.is_empty() {
                    let rows = apply_one(conn, id, exhausted)?;
                    written.extend(rows.into_iter().map(|row| (row, None, exhausted)));
                } else {
                    written.extend(rows.into_iter().map(|row| (row, None, retry)));
                }
            }
            let mut changed = Vec::with_capacity(written.len());
            for (row, position, plan) in written {
                let task = TaskExecution::try_from(row).map_err(TxError::Dal)?;
                changed.push((task, position.unwrap_or(cycle.range.due_at), plan));
            }
            let events: Vec<(&EventSpec, &TaskExecution)> = changed
                .iter()
                .filter_map(|(task, _, plan)| plan.event.as_ref().map(|event| (event, task)))
                .collect();
            if !events.is_empty() {
                history::log_each(conn, &self.event_ids, events, at)?;
            }
            Ok(changed
                .into_iter()
                .map(|(task, position, _)| (task, position))
                .collect())
        })
        .map_err(|err| match err {
            TxError::Diesel(err) => from_diesel(err),
            TxError::Dal(err) => err,
        })
    }

    fn apply_stale(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>> {
        let (low, high) = stale.recovery_attempts;
        self.write_logged(
            plan.event.as_ref(),
            false,
            plan.effects.updated_at,
            |conn| {
                PreparedAs::<keys::Stale, _>::new(
                    diesel::update(tasks)
                        .filter(t::claimed_by.is_not_null())
                        .filter(t::heartbeat_at.lt(Some(stale.older_than)))
                        .filter(status_in(t::status, plan.guard.from))
                        .filter(t::recovery_attempts.between(low, high))
                        .set(plan_set!(&plan.effects))
                        .returning(Row::as_returning()),
                )
                .get_results(conn)
            },
        )
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

    dal_diesel::reads!(read);
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("pool", &self.pool.state())
            .finish_non_exhaustive()
    }
}
