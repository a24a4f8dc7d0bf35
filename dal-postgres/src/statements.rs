//! The statements: [`dal_core::Backend`] for PostgreSQL.

use chrono::{DateTime, Utc};
use dal_core::event::EventSpec;
use dal_core::plan::{Plan, Stale};
use dal_core::sql::{PreparedAs, Unprepared};
use dal_core::{
    Backend, DalError, ExecutionEvent, Lease, PruneCursor, Pruned, Result, RetryStats, StatusSet,
    TaskExecution, TaskStatus,
};
use diesel::PgConnection;
use diesel::connection::SimpleConnection;
use diesel::dsl::{case_when, count_star, exists, max, min, sum};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::result::DatabaseErrorKind as Kind;
use diesel::sql_types::{
    Array, Bool, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use crate::errors::{from_diesel, from_pool};
use crate::history::{EventRow, NoPrelude, Plain, Targets, logged, target_ids};
use crate::leases::held_by;
use crate::row::{NewRow, Row};
use crate::schema::execution_events as e;
use crate::schema::task_executions::{self as t, table as tasks};

diesel::define_sql_function! {
    /// The elements of an array, a row each; several `unnest`s in one select list run in step.
    fn unnest<ST: diesel::sql_types::SingleValue>(array: Array<ST>) -> ST;
}

diesel::define_sql_function! {
    /// The ids of the stale claims, locked (defined by the migration `queue_at_scale`).
    fn dal_stale_claims(
        older_than: Timestamptz,
        statuses: Array<Text>,
        fewest: Integer,
        most: Integer,
    ) -> SqlUuid;
}

diesel::define_sql_function! {
    /// The larger of two times; a NULL first argument is ignored.
    fn greatest(a: Nullable<Timestamptz>, b: Timestamptz) -> Nullable<Timestamptz>;
}

/// The connection pool of a PostgreSQL store.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;

/// The PostgreSQL backend: a pool of connections.
pub struct PgBackend {
    pool: PgPool,
}

impl PgBackend {
    pub(crate) fn new(pool: PgPool) -> Self {
        PgBackend { pool }
    }

    /// The store's connection pool, for statements of your own (reports, extensions,
    /// benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `run` on a pooled connection. When the connection turns out to be lost, it is
    /// retired so that the pool opens a new one instead of handing the dead one out again.
    fn run<T>(&self, run: impl FnOnce(&mut PgConnection) -> QueryResult<T>) -> Result<T> {
        let mut conn = self.pool.get().map_err(from_pool)?;
        run(&mut conn).map_err(|err| {
            let without_kind =
                matches!(err, diesel::result::Error::DatabaseError(Kind::Unknown, _));
            match from_diesel(err) {
                // A lost connection: retired, so that the pool opens a new one.
                err @ DalError::Connection { .. } => {
                    retire(&mut conn);
                    err
                }
                // An error without a kind may be the connection's loss, which Diesel does not
                // always see (libpq reports it before it marks the connection bad, as after a
                // server's crash); the connection's state tells, and the probe retires it.
                DalError::Database { source, .. } if without_kind && retire(&mut conn) => {
                    DalError::Connection { source }
                }
                err => err,
            }
        })
    }
}

/// Marks a lost connection as broken for the pool, and says whether it is lost.
///
/// Diesel marks a connection broken (and the pool then drops it) only when a statement
/// *executes* on it; a statement that fails while being *prepared* leaves the connection
/// looking healthy, and the pool would hand the dead connection out again and again. An
/// empty batch on a lost connection never reaches a server: it fails to be sent or finds the
/// connection closed, and that failure makes Diesel read libpq's connection state and mark the
/// connection broken. On a live connection it is one round trip (on an error path only) and
/// comes back as an empty query.
fn retire(conn: &mut PgConnection) -> bool {
    matches!(
        conn.batch_execute(""),
        Err(diesel::result::Error::DatabaseError(
            Kind::ClosedConnection | Kind::UnableToSendCommand,
            _
        ))
    )
}

fn rows(rows: Vec<Row>) -> Result<Vec<TaskExecution>> {
    rows.into_iter().map(TaskExecution::try_from).collect()
}

/// Runs `$write` (a statement returning task rows) after `$prelude` (the CTE of the rows it
/// targets, or none), with the insert of `$event` for each row in the same statement when
/// there is one, and returns the rows. Both forms have fixed text and stay prepared.
macro_rules! write_logged {
    (unprepared: $conn:expr, $prelude:expr, $write:expr, $event:expr, $at:expr) => {
        match $event {
            Some(event) => {
                Unprepared(logged($prelude, $write, event, $at)).get_results::<Row>($conn)
            }
            None => Unprepared(Plain {
                prelude: $prelude,
                write: $write,
            })
            .get_results::<Row>($conn),
        }
    };
    ($conn:expr, $key:ty, $prelude:expr, $write:expr, $event:expr, $at:expr) => {
        write_logged!($conn, $key, $prelude, $write, $event, $at, Row)
    };
    ($conn:expr, $key:ty, $prelude:expr, $write:expr, $event:expr, $at:expr, $row:ty) => {
        match $event {
            Some(event) => {
                PreparedAs::<($key, keys::Logged), _>::new(logged($prelude, $write, event, $at))
                    .get_results::<$row>($conn)
            }
            None => PreparedAs::<($key, keys::Plain), _>::new(Plain {
                prelude: $prelude,
                write: $write,
            })
            .get_results::<$row>($conn),
        }
    };
}

/// The names under which the fixed statements are kept prepared (see `PreparedAs`).
mod keys {
    pub(super) struct InsertOne;
    pub(super) struct InsertMany;
    pub(super) struct Apply;
    pub(super) struct Claim;
    pub(super) struct Leased;
    pub(super) struct Logged;
    pub(super) struct Plain;
    pub(super) struct ListReady;
    pub(super) struct ListRetries;
}

/// A status set as one array parameter (`status = ANY($n)`): the SQL text is the same for
/// every set, so each connection prepares it once.
fn statuses(set: StatusSet) -> Vec<&'static str> {
    set.iter().map(|s| s.as_str()).collect()
}

/// `col = CASE WHEN <keep> THEN col ELSE <value> END`.
macro_rules! assign {
    ($col:expr, $assign:expr, $sql:ty) => {
        $col.eq(case_when($assign.keeps().into_sql::<Bool>(), $col)
            .otherwise($assign.value().cloned().into_sql::<Nullable<$sql>>()))
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
            assign!(t::error_details, e.error_details, Text),
            assign!(t::last_error, e.last_error, Text),
            assign!(t::retry_at, e.retry_at, Timestamptz),
            assign!(t::started_at, e.started_at, Timestamptz),
            assign!(t::completed_at, e.completed_at, Timestamptz),
            assign!(t::last_recovery_at, e.last_recovery_at, Timestamptz),
            assign!(t::claimed_by, e.claimed_by, diesel::sql_types::Uuid),
            assign!(t::heartbeat_at, e.heartbeat_at, Timestamptz),
            assign!(t::abandoned_at, e.abandoned_at, Timestamptz),
            t::updated_at.eq(e.updated_at),
            // The queue position, set when the task enters Ready (`dal_core::plan::due_at`):
            // the later of its retry time as written and now; kept otherwise.
            t::due_at.eq(case_when(
                (e.status == TaskStatus::Ready).into_sql::<Bool>(),
                greatest(
                    case_when(e.retry_at.keeps().into_sql::<Bool>(), t::retry_at).otherwise(
                        e.retry_at
                            .value()
                            .cloned()
                            .into_sql::<Nullable<Timestamptz>>(),
                    ),
                    e.updated_at,
                ),
            )
            .otherwise(t::due_at)),
        )
    }};
}

/// `'ready'` as a literal in the statement's text, not a parameter: the partial indexes of
/// Ready tasks say `WHERE status = 'ready'`, and only a literal lets a prepared statement's
/// generic plan (the one PostgreSQL keeps after five executions) use them.
fn ready() -> diesel::expression::SqlLiteral<Text> {
    diesel::dsl::sql::<Text>("'ready'")
}

impl Backend for PgBackend {
    const NAME: &'static str = "postgres";

    fn insert(&self, rows_in: &[TaskExecution], event: &EventSpec) -> Result<Vec<TaskExecution>> {
        // The store's clock stamped the rows; an empty batch sends nothing.
        let Some(at) = rows_in.first().map(|row| row.created_at) else {
            return Ok(Vec::new());
        };
        let stored = self.run(|conn| {
            if let [one] = rows_in {
                let write = diesel::insert_into(tasks)
                    .values(NewRow::from(one))
                    .returning(Row::as_returning());
                return write_logged!(conn, keys::InsertOne, NoPrelude, write, Some(event), at);
            }
            // Many rows: each column bound as one array and unnested, in step, by the SELECT:
            // one fixed statement (kept prepared) for any number of rows, and no limit on binds.
            let column = |f: fn(&TaskExecution) -> Uuid| rows_in.iter().map(f).collect::<Vec<_>>();
            let write = diesel::select((
                unnest(column(|r| r.id).into_sql::<Array<SqlUuid>>()),
                unnest(column(|r| r.workflow_execution_id).into_sql::<Array<SqlUuid>>()),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.task_name.as_str())
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Text>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.status.as_str())
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Text>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.attempt)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Integer>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.max_attempts)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Integer>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| &r.trigger_rules)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Jsonb>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| &r.task_configuration)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Jsonb>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.retry_at)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Nullable<Timestamptz>>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.created_at)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Timestamptz>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| r.updated_at)
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Timestamptz>>(),
                ),
                unnest(
                    rows_in
                        .iter()
                        .map(|r| dal_core::plan::due_at(r.status, r.retry_at, r.created_at))
                        .collect::<Vec<_>>()
                        .into_sql::<Array<Nullable<Timestamptz>>>(),
                ),
            ))
            .insert_into(tasks)
            .into_columns((
                t::id,
                t::workflow_execution_id,
                t::task_name,
                t::status,
                t::attempt,
                t::max_attempts,
                t::trigger_rules,
                t::task_configuration,
                t::retry_at,
                t::created_at,
                t::updated_at,
                t::due_at,
            ))
            .returning(Row::as_returning());
            write_logged!(conn, keys::InsertMany, NoPrelude, write, Some(event), at)
        })?;
        rows(stored)
    }

    fn get(&self, id: Uuid) -> Result<Option<TaskExecution>> {
        self.run(|conn| {
            tasks
                .find(id)
                .select(Row::as_select())
                // By primary key: at most one row, so no LIMIT.
                .get_result(conn)
                .optional()
        })?
        .map(TaskExecution::try_from)
        .transpose()
    }

    fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
        rows(self.run(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq(workflow_execution_id))
                .order((t::created_at, t::id))
                .select(Row::as_select())
                .load(conn)
        })?)
    }

    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>> {
        let lease = plan.guard.lease;
        let lease_guard = lease.is_none().into_sql::<Bool>().or(t::claimed_by
            .eq(lease.map(|l| l.runner_id))
            .and(t::claim_count.eq(lease.map_or(0, |l| l.claim))));
        let attempt_guard = t::attempt.lt(t::max_attempts).or(plan
            .guard
            .needs_attempt_left
            .into_sql::<Bool>()
            .eq(false));
        let written = self.run(|conn| {
            let write = diesel::update(tasks)
                .filter(t::id.eq(id))
                .filter(t::status.eq_any(statuses(plan.guard.from)))
                .filter(attempt_guard)
                .filter(lease_guard)
                .set(plan_set!(&plan.effects))
                .returning(Row::as_returning());
            write_logged!(
                conn,
                keys::Apply,
                NoPrelude,
                write,
                &plan.event,
                plan.effects.updated_at
            )
        })?;
        Ok(rows(written)?.pop())
    }

    fn claim(
        &self,
        due_at: DateTime<Utc>,
        from: DateTime<Utc>,
        limit: u32,
        plan: &Plan,
    ) -> Result<Vec<(TaskExecution, DateTime<Utc>)>> {
        // The oldest due Ready tasks from `from` on that no other claim has locked, read from
        // the Ready tasks' partial index in its order, stopping at the limit: concurrent
        // claimers skip each other's rows instead of waiting for them.
        let oldest_due = Targets(
            tasks
                .select(t::id)
                .filter(t::status.eq(ready()))
                .filter(t::due_at.between(from, due_at))
                .order((t::due_at, t::id))
                .limit(i64::from(limit))
                .for_update()
                .skip_locked(),
        );
        let claimed: Vec<(Row, Option<DateTime<Utc>>)> = self.run(|conn| {
            // A claim leaves the queue position as it was: returned, it moves the floor.
            let write = diesel::update(tasks)
                .filter(t::id.eq_any(target_ids()))
                .set(plan_set!(&plan.effects))
                .returning((Row::as_returning(), t::due_at));
            write_logged!(
                conn,
                keys::Claim,
                oldest_due,
                write,
                &plan.event,
                plan.effects.updated_at,
                (Row, Option<DateTime<Utc>>)
            )
        })?;
        claimed
            .into_iter()
            .map(|(row, at)| Ok((TaskExecution::try_from(row)?, at.unwrap_or(due_at))))
            .collect()
    }

    fn apply_leased(&self, leases: &[Lease], plan: &Plan) -> Result<Vec<TaskExecution>> {
        // The leased rows, locked in id order before the write: two batches that share rows
        // lock them in the same order and cannot deadlock.
        let held = Targets(held_by(leases, plan.guard.from));
        rows(self.run(|conn| {
            let write = diesel::update(tasks)
                .filter(t::id.eq_any(target_ids()))
                .set(plan_set!(&plan.effects))
                .returning(Row::as_returning());
            write_logged!(
                conn,
                keys::Leased,
                held,
                write,
                &plan.event,
                plan.effects.updated_at
            )
        })?)
    }

    fn apply_stale(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>> {
        let (low, high) = stale.recovery_attempts;
        // The stale claims, from the claimed tasks' partial index in id order, skipping rows
        // another transaction is writing (a runner finishing or heart-beating them): the SQL
        // function `dal_stale_claims` (see the migration `queue_at_scale`).
        let stale_claims = Targets(diesel::select(dal_stale_claims(
            stale.older_than,
            statuses(plan.guard.from),
            low,
            high,
        )));
        rows(self.run(|conn| {
            let write = diesel::update(tasks)
                .filter(t::id.eq_any(target_ids()))
                .set(plan_set!(&plan.effects))
                .returning(Row::as_returning());
            // Not kept prepared: planned for each sweep with the table as it is now (see
            // `Unprepared`); sweeps are rare.
            write_logged!(
                unprepared: conn,
                stale_claims,
                write,
                &plan.event,
                plan.effects.updated_at
            )
        })?)
    }

    fn find_stale(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>> {
        rows(self.run(|conn| {
            tasks
                .filter(t::claimed_by.is_not_null())
                .filter(t::heartbeat_at.lt(older_than))
                .filter(t::status.eq_any(statuses(dal_core::plan::CLAIMED)))
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
            .filter(t::due_at.le(due_at))
            .order((t::due_at, t::id))
            .limit(i64::from(limit))
            .select(Row::as_select());
        rows(self.run(|conn| {
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
        events(self.run(|conn| {
            e::table
                .filter(e::task_execution_id.eq(task_execution_id))
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
        events(self.run(|conn| {
            e::table
                .filter(e::workflow_execution_id.eq(workflow_execution_id))
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
        rows(self.run(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq_any(workflow_execution_ids))
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
        let found: Vec<(Uuid, String, String)> = self.run(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq_any(workflow_execution_ids))
                .filter(every_name.into_sql::<Bool>().or(t::task_name.eq_any(names)))
                .select((t::workflow_execution_id, t::task_name, t::status))
                .load(conn)
        })?;
        found
            .into_iter()
            .map(|(workflow, name, status)| Ok((workflow, name, status.parse()?)))
            .collect()
    }

    fn complete_workflows(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let terminal = statuses(StatusSet::TERMINAL);
        self.run(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq_any(workflow_execution_ids))
                .group_by(t::workflow_execution_id)
                .having(
                    min(
                        case_when(t::status.eq_any(terminal), 1.into_sql::<Integer>())
                            .otherwise(0.into_sql::<Integer>()),
                    )
                    .eq(1),
                )
                .select(t::workflow_execution_id)
                .load(conn)
        })
    }

    fn has_abandoned(&self, workflow_execution_id: Uuid) -> Result<bool> {
        self.run(|conn| {
            diesel::select(exists(
                tasks
                    .filter(t::workflow_execution_id.eq(workflow_execution_id))
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
        ) = self.run(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq(workflow_execution_id))
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
        rows(self.run(|conn| {
            tasks
                .filter(t::workflow_execution_id.eq(workflow_execution_id))
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
        self.run(|conn| crate::retention::prune(conn, older_than, limit, after))
    }

    fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>> {
        let counts: Vec<(String, i64)> = self.run(|conn| {
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

fn events(rows: Vec<EventRow>) -> Result<Vec<ExecutionEvent>> {
    rows.into_iter().map(ExecutionEvent::try_from).collect()
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("pool", &self.pool.state())
            .finish_non_exhaustive()
    }
}
