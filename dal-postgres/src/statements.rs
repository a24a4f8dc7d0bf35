//! The statements: [`dal_core::Backend`] for PostgreSQL.

use chrono::{DateTime, Utc};
use dal_core::event::EventSpec;
use dal_core::ids::Ids;
use dal_core::plan::{ClaimRange, CyclePlan, Plan, Stale};
use dal_core::{Backend, DalError, Lease, PruneCursor, Pruned, Result, StatusSet, TaskExecution};
use dal_diesel::errors::{from_diesel, from_pool};
use dal_diesel::prepared::{PreparedAs, Unprepared};
use dal_diesel::row::{NewRow, Row, tasks as rows};
use dal_diesel::schema::task_executions::{self as t, table as tasks};
use dal_diesel::statements::ready;
use dal_diesel::types::{Id, Instant, Json};
use dal_diesel::{apply_write, plan_set};
use diesel::PgConnection;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::result::DatabaseErrorKind as Kind;
use diesel::sql_types::{Array, Integer, Nullable, Text};
use uuid::Uuid;

use crate::history::{
    Cycle, NoPrelude, Plain, Targets, cycle_log, logged, logged_insert, target_ids,
};
use crate::leases::{held_by, held_for_cycle};

diesel::define_sql_function! {
    /// The elements of an array, a row each; several `unnest`s in one select list run in step.
    fn unnest<ST: diesel::sql_types::SingleValue>(array: Array<ST>) -> ST;
}

diesel::define_sql_function! {
    /// The ids of the stale claims, locked (defined by the migration `queue_at_scale`).
    fn dal_stale_claims(
        older_than: Instant,
        statuses: Array<Text>,
        fewest: Integer,
        most: Integer,
    ) -> Id;
}

/// The connection pool of a PostgreSQL store.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;

/// The PostgreSQL backend: a pool of connections, and the generator of a batch create's event
/// ids.
pub struct PgBackend {
    pool: PgPool,
    event_ids: Ids,
}

impl PgBackend {
    pub(crate) fn new(pool: PgPool) -> Self {
        PgBackend {
            pool,
            event_ids: Ids::new(),
        }
    }

    /// Runs `run` on a pooled connection. When the connection turns out to be lost, it is
    /// retired so that the pool opens a new one instead of handing the dead one out again.
    fn run<T>(&self, run: impl FnOnce(&mut PgConnection) -> QueryResult<T>) -> Result<T> {
        let mut conn = self.pool.get().map_err(from_pool)?;
        run(&mut conn).map_err(|err| {
            // An error the server did not report (no SQLSTATE) may be the connection's loss.
            let unreported = matches!(
                &err,
                diesel::result::Error::DatabaseError(Kind::Unknown, info) if info.sqlstate().is_none()
            );
            match from_diesel(err) {
                // A lost connection: retired, so that the pool opens a new one.
                err @ DalError::Connection { .. } => {
                    retire(&mut conn);
                    err
                }
                // Diesel does not always see a connection's loss (libpq reports it before it
                // marks the connection bad, as after a server's crash); the connection's state
                // tells, and the probe retires it.
                DalError::Database { source, .. } if unreported && retire(&mut conn) => {
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

/// The ids of the oldest due `Ready` tasks of `$range` (a [`ClaimRange`]) that no other
/// transaction has locked, locked: read from the Ready tasks' partial index in its order,
/// stopping at the limit, so concurrent claimers skip each other's rows instead of waiting.
macro_rules! oldest_due {
    ($range:expr) => {{
        let range: ClaimRange = $range;
        tasks
            .select(t::id)
            .filter(t::status.eq(ready()))
            .filter(t::due_at.between(Some(range.from), Some(range.due_at)))
            .order((t::due_at, t::id))
            .limit(i64::from(range.limit))
            .for_update()
            .skip_locked()
    }};
}

/// The names under which the fixed statements are kept prepared (see `PreparedAs`).
mod keys {
    pub(super) struct Cycle;
    pub(super) struct InsertOne;
    pub(super) struct InsertMany;
    pub(super) struct Apply;
    pub(super) struct Claim;
    pub(super) struct Leased;
    pub(super) struct Logged;
    pub(super) struct Plain;
}

/// One column of a batch of rows, for its array parameter.
fn column<'a, T>(rows: &'a [TaskExecution], value: impl Fn(&'a TaskExecution) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

impl Backend for PgBackend {
    const NAME: &'static str = "postgres";

    type Pool = PgPool;

    fn pool(&self) -> &PgPool {
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
        let stored = self.run(|conn| {
            if let [one] = rows_in {
                let write = diesel::insert_into(tasks)
                    .values(NewRow::from(one))
                    .returning(Row::as_returning());
                return write_logged!(conn, keys::InsertOne, NoPrelude, write, event, at);
            }
            // Many rows: each column bound as one array and unnested, in step, by the SELECT:
            // one fixed statement (kept prepared) for any number of rows, and no limit on binds.
            let write = diesel::select((
                unnest(column(rows_in, |r| r.id).into_sql::<Array<Id>>()),
                unnest(column(rows_in, |r| r.workflow_execution_id).into_sql::<Array<Id>>()),
                unnest(column(rows_in, |r| r.task_name.as_str()).into_sql::<Array<Text>>()),
                unnest(column(rows_in, |r| r.status.as_str()).into_sql::<Array<Text>>()),
                unnest(column(rows_in, |r| r.attempt).into_sql::<Array<Integer>>()),
                unnest(column(rows_in, |r| r.max_attempts).into_sql::<Array<Integer>>()),
                unnest(column(rows_in, |r| &r.trigger_rules).into_sql::<Array<Json>>()),
                unnest(column(rows_in, |r| &r.task_configuration).into_sql::<Array<Json>>()),
                unnest(column(rows_in, |r| r.retry_at).into_sql::<Array<Nullable<Instant>>>()),
                unnest(column(rows_in, |r| r.created_at).into_sql::<Array<Instant>>()),
                unnest(column(rows_in, |r| r.updated_at).into_sql::<Array<Instant>>()),
                unnest(
                    column(rows_in, |r| {
                        dal_core::plan::due_at(r.status, r.retry_at, r.created_at)
                    })
                    .into_sql::<Array<Nullable<Instant>>>(),
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
            match event {
                Some(event) => PreparedAs::<(keys::InsertMany, keys::Logged), _>::new(
                    logged_insert(write, event, rows_in, &self.event_ids, at),
                )
                .get_results::<Row>(conn),
                None => write_logged!(conn, keys::InsertMany, NoPrelude, write, event, at),
            }
        })?;
        rows(stored)
    }

    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>> {
        let written = self.run(|conn| {
            let write = apply_write!(dal_diesel::bind::id(id), plan);
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
        let oldest_due = Targets(oldest_due!(ClaimRange {
            due_at,
            from,
            limit
        }));
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

    fn cycle(&self, cycle: &CyclePlan<'_>) -> Result<Vec<(TaskExecution, DateTime<Utc>)>> {
        use dal_diesel::schema::{fresh, targets};
        use diesel::dsl::array;
        let (complete, fail, retry, claim) =
            (&cycle.complete, &cycle.fail, &cycle.retry, &cycle.claim);
        // The plans come from one store: all with their events, or none (history off).
        let events = match (&complete.event, &fail.event, &retry.event, &claim.event) {
            (Some(complete), Some(fail), Some(retry), Some(claim)) => {
                Some((complete, fail, retry, claim))
            }
            _ => None,
        };
        let from = StatusSet::of(
            &complete
                .guard
                .from
                .iter()
                .chain(fail.guard.from.iter())
                .chain(retry.guard.from.iter())
                .collect::<Vec<_>>(),
        );
        let statuses = |set: StatusSet| set.iter().map(|s| s.as_str()).collect::<Vec<_>>();
        let of_target = || targets::table.filter(targets::id.eq(t::id));
        let statement = Cycle {
            // Completed, failed and retried tasks locked together, in id order.
            held: held_for_cycle(cycle, from),
            done: diesel::update(tasks)
                .filter(
                    t::id.eq_any(array(
                        targets::table
                            .filter(targets::error.is_null())
                            .select(targets::id),
                    )),
                )
                .filter(t::status.eq_any(statuses(complete.guard.from)))
                .set(plan_set!(&complete.effects))
                .returning((Row::as_returning(), t::due_at)),
            // Failures, and retries without an attempt left (their `retry_at` is not returned).
            failed: diesel::update(tasks)
                .filter(
                    t::id.eq_any(array(
                        targets::table
                            .filter(targets::error.is_not_null())
                            .filter(targets::retry_at.is_null())
                            .select(targets::id),
                    )),
                )
                .filter(t::status.eq_any(statuses(fail.guard.from)))
                .set(plan_set!(
                    &fail.effects,
                    error = of_target().select(targets::error).single_value()
                ))
                .returning((Row::as_returning(), t::due_at)),
            retried: diesel::update(tasks)
                .filter(
                    t::id.eq_any(array(
                        targets::table
                            .filter(targets::retry_at.is_not_null())
                            .select(targets::id),
                    )),
                )
                .filter(t::status.eq_any(statuses(retry.guard.from)))
                .filter(t::attempt.lt(t::max_attempts))
                .set(plan_set!(
                    &retry.effects,
                    last_error = of_target().select(targets::error).single_value(),
                    retry_at = of_target().select(targets::retry_at).single_value()
                ))
                .returning((Row::as_returning(), t::due_at)),
            fresh: oldest_due!(cycle.range),
            claimed: diesel::update(tasks)
                .filter(t::id.eq_any(array(fresh::table.select(fresh::id))))
                .set(plan_set!(&claim.effects))
                .returning((Row::as_returning(), t::due_at)),
            log: events.map(|(complete_event, fail_event, retry_event, claim_event)| {
                cycle_log(
                    complete_event,
                    fail_event,
                    retry_event,
                    claim_event,
                    complete.effects.updated_at,
                )
            }),
        };
        let logged = events.is_some();
        let written: Vec<(Row, Option<DateTime<Utc>>)> = self.run(|conn| {
            if logged {
                PreparedAs::<(keys::Cycle, keys::Logged), _>::new(statement).get_results(conn)
            } else {
                PreparedAs::<(keys::Cycle, keys::Plain), _>::new(statement).get_results(conn)
            }
        })?;
        written
            .into_iter()
            .map(|(row, at)| {
                Ok((
                    TaskExecution::try_from(row)?,
                    at.unwrap_or(cycle.range.due_at),
                ))
            })
            .collect()
    }

    fn apply_stale(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>> {
        let (low, high) = stale.recovery_attempts;
        // The stale claims, from the claimed tasks' partial index in id order, skipping rows
        // another transaction is writing (a runner finishing or heart-beating them): the SQL
        // function `dal_stale_claims` (see the migration `queue_at_scale`).
        let stale_claims = Targets(diesel::select(dal_stale_claims(
            dal_diesel::bind::instant(stale.older_than),
            plan.guard
                .from
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
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

    fn prune(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned> {
        self.run(|conn| crate::retention::prune(conn, older_than, limit, after))
    }

    dal_diesel::reads!(run);
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("pool", &self.pool.state())
            .finish_non_exhaustive()
    }
}
