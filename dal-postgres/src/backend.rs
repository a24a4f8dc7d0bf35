//! [`dal_core::Backend`] for PostgreSQL: every write is one statement, its events inserted by
//! the same statement (a data-modifying `WITH`), its rows locked in task id order or skipped
//! when another transaction holds them.

use std::sync::{OnceLock, Weak};

use chrono::{DateTime, Utc};
use dal_core::clock::Ids;
use dal_core::event::EventSpec;
use dal_core::plan::{CLAIMED, Claim, Plan, Stale};
use dal_core::wake::{Bell, WakeSource};
use dal_core::{
    Backend, DalError, ExecutionEvent, PruneCursor, Pruned, Result, RetryStats, TaskExecution,
    TaskStatus,
};
use dal_diesel::errors::{from_diesel, from_pool};
use dal_diesel::prepared::Prepared;
use dal_diesel::row::{RETURNING, Returning, Written, written};
use dal_diesel::write::{PLAN, Param, TASK, distinct, guard, inserted, params, set_list, task};
use diesel::connection::SimpleConnection;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::result::DatabaseErrorKind as Kind;
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use uuid::Uuid;

use crate::listen::Listen;

/// A written row's queue position (`due_at`), which the claim floor reads.
type Due = Option<DateTime<Utc>>;
/// The connection pool of a PostgreSQL store.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;

/// The PostgreSQL backend: a pool of connections, and the maker of the events' ids.
pub struct PgBackend {
    pool: PgPool,
    event_ids: Ids,
    listen: Listen,
}

impl PgBackend {
    pub(crate) fn new(pool: PgPool, listen: Listen) -> Self {
        PgBackend { pool, event_ids: Ids::default(), listen }
    }

    /// Runs `run` on a pooled connection. A connection found lost is retired, so that the pool
    /// opens a new one instead of handing the dead one out again.
    fn run<T>(&self, run: impl FnOnce(&mut PgConnection) -> QueryResult<T>) -> Result<T> {
        let mut conn = self.pool.get().map_err(from_pool)?;
        run(&mut conn).map_err(|err| {
            // An error the server did not report (no SQLSTATE) may be the connection's loss.
            let unreported = matches!(
                &err,
                diesel::result::Error::DatabaseError(Kind::Unknown, info) if info.sqlstate().is_none()
            );
            match from_diesel(err) {
                err @ DalError::Connection { .. } => {
                    retire(&mut conn);
                    err
                }
                DalError::Database { source, .. } if unreported && retire(&mut conn) => {
                    DalError::Connection { source }
                }
                err => err,
            }
        })
    }

    /// `sql` with the ids of up to `events` events at `at` bound as `$1`, their head as `$2`,
    /// and the channel and token of its notification as `$3` and `$4`.
    fn statement(
        &self,
        sql: &'static str,
        events: usize,
        at: DateTime<Utc>,
    ) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        // A claim's limit may be far more than it finds: the rows past the ids made get theirs
        // from the server.
        let ids: Vec<Uuid> = (0..events.min(4_096)).map(|_| self.event_ids.at(at)).collect();
        diesel::sql_query(sql)
            .into_boxed()
            .bind::<Array<SqlUuid>, _>(ids)
            .bind::<Text, _>(event_id_head(at))
            .bind::<Text, _>(self.listen.channel.clone())
            .bind::<Text, _>(self.listen.token.clone())
    }

    /// Runs a write kept prepared, and returns the rows it wrote.
    fn write(&self, query: BoxedSqlQuery<'_, Pg, SqlQuery>) -> Result<Vec<(TaskExecution, Due)>> {
        written(self.run(|conn| Prepared(Returning(query)).load::<Written>(conn))?)
    }
}

/// Marks a lost connection as broken for the pool (Diesel does only when a statement
/// *executes*, not when one fails being *prepared*), and says whether it is lost: an empty batch
/// fails to be sent on it (on a live one, it is one round trip on an error path).
fn retire(conn: &mut PgConnection) -> bool {
    matches!(
        conn.batch_execute(""),
        Err(diesel::result::Error::DatabaseError(
            Kind::ClosedConnection | Kind::UnableToSendCommand,
            _
        ))
    )
}

/// The insert of each changed row's event (`changed`: the rows written, with the plan's
/// `event_type`, `event_data` and `event_runner`), in task id order, then the rows written
/// ([`RETURNING`] follows). The events' UUIDv7 ids are `$1`'s, made by the store, one per row
/// in task id order; a statement that writes more rows than the store could tell (a sweep)
/// makes the others from `$2`, the head of a UUIDv7 of their time ([`event_id_head`]), and a
/// random tail.
const LOGGED: &str = "logged AS (INSERT INTO execution_events (id, workflow_execution_id, \
    task_execution_id, event_type, event_data, runner_id, created_at) \
    SELECT coalesce($1[row_number() OVER (ORDER BY c.id)], \
    uuid($2 || right(gen_random_uuid()::text, 18))), c.workflow_execution_id, c.id, \
    c.event_type, c.event_data || jsonb_build_object('attempt', c.attempt, 'claim', \
    c.claim_count, 'recovery_attempts', c.recovery_attempts), c.event_runner, c.updated_at \
    FROM changed c WHERE c.event_type IS NOT NULL ORDER BY c.id), ";

/// The notification of the rows a statement left claimable (`Ready`, unclaimed), sent on `$3`
/// at commit: `$4` (the store's token), how many are due now, and the distinct later due times
/// (Unix microseconds), within the 8,000 bytes a payload may hold. At most one per statement,
/// none when no row became claimable; the final `SELECT` joins it, so that it runs.
const WOKE: &str = "woke AS (SELECT pg_notify($3, left($4 || ' ' || count(*) FILTER (WHERE \
    w.due_at <= w.updated_at) || coalesce(' ' || string_agg(DISTINCT (extract(epoch FROM \
    w.due_at) * 1000000)::bigint::text, ' ') FILTER (WHERE w.due_at > w.updated_at), ''), \
    7999)) FROM changed w WHERE w.status = 'ready' AND w.claimed_by IS NULL HAVING count(*) > 0)";

/// The end of every write after its `changed` rows: their events, their notification, and
/// the rows ([`RETURNING`]), joined with the notification so that it runs.
fn tail() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!("{LOGGED}{WOKE} SELECT {RETURNING} FROM changed LEFT JOIN woke ON true")
    })
}

/// `$from, ..., $from + n - 1`.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A guarded write of the plan of row source `p` (its values from `$from` on, after the row
/// sources `ctes`) to the rows `rows` (`FROM ... WHERE`) selects, with the events it leaves.
fn plan_write(ctes: &str, from: usize, rows: &str, lease: Option<&str>) -> String {
    format!(
        "WITH {ctes}p ({}) AS (VALUES ({})), changed AS (UPDATE task_executions AS t SET {} \
         FROM {rows} AND {} RETURNING t.*, p.event_type, p.event_data, p.event_runner), \
         {}",
        PLAN.join(", "),
        placeholders(from, PLAN.len()),
        set_list("p"),
        guard(lease, "p"),
        tail(),
    )
}

/// One guarded write: after the events' ids, the task's id and lease and the plan's values.
fn apply_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let l = format!("l ({}) AS (VALUES ({})), ", TASK.join(", "), placeholders(5, TASK.len()));
        plan_write(&l, 5 + TASK.len(), "l, p WHERE t.id = l.id", Some("l"))
    })
}

/// A batch of leased writes, a claim, or both in one statement (a runner cycle): `$1` to `$4`
/// the events' ids and the notification's channel and token. The batch: its distinct plans as one array per value (`p`, a row each,
/// numbered), then its tasks (`l`: id, runner, claim, plan number), their rows locked in that
/// order and written. The claim: its plan's values (`c`), then the range (`from`, `to`,
/// `limit`) of `Ready` tasks it claims, oldest due first, skipping locked rows. All writes
/// see one snapshot: the claim cannot take a task the batch makes `Ready`.
fn batch_sql(finished: bool, claim: bool) -> String {
    let mut next = 5;
    let mut take = |n: usize| {
        let list = placeholders(next, n);
        next += n;
        list
    };
    let mut ctes = Vec::new();
    let mut parts = Vec::new();
    if finished {
        ctes.push(format!(
            "p ({}, plan_no) AS (SELECT * FROM unnest({}) WITH ORDINALITY), \
             l (id, runner, claim, plan_no) AS (SELECT * FROM unnest({})), \
             held AS MATERIALIZED (SELECT l.id, l.plan_no FROM l CROSS JOIN LATERAL (SELECT 1 \
             FROM task_executions t, p WHERE t.id = l.id AND p.plan_no = l.plan_no AND {} \
             FOR UPDATE OF t) AS locked), \
             finished AS (UPDATE task_executions AS t SET {} FROM held h JOIN p ON p.plan_no = \
             h.plan_no WHERE t.id = h.id RETURNING t.*, p.event_type, p.event_data, \
             p.event_runner)",
            PLAN.join(", "),
            take(PLAN.len()),
            take(4),
            guard(Some("l"), "p"),
            set_list("p"),
        ));
        parts.push("SELECT * FROM finished");
    }
    if claim {
        let plan = take(PLAN.len());
        let (from, due_at, limit) = (take(1), take(1), take(1));
        ctes.push(format!(
            "c ({}) AS (VALUES ({plan})), \
             fresh AS MATERIALIZED (SELECT id FROM task_executions WHERE status = 'ready' AND \
             due_at BETWEEN {from} AND {due_at} ORDER BY due_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE task_executions AS t SET {} FROM c WHERE t.id = ANY(ARRAY(\
             SELECT id FROM fresh)) AND {} RETURNING t.*, c.event_type, c.event_data, \
             c.event_runner)",
            PLAN.join(", "),
            set_list("c"),
            guard(None, "c"),
        ));
        parts.push("SELECT * FROM claimed");
    }
    format!("WITH {}, changed AS ({}), {}", ctes.join(", "), parts.join(" UNION ALL "), tail())
}

/// The batch statements, built once: leased writes, a claim, a cycle.
fn batch(finished: bool, claim: bool) -> &'static str {
    static SQL: OnceLock<[String; 3]> = OnceLock::new();
    let [leased, claims, cycle] =
        SQL.get_or_init(|| [batch_sql(true, false), batch_sql(false, true), batch_sql(true, true)]);
    match (finished, claim) {
        (true, false) => leased,
        (false, true) => claims,
        _ => cycle,
    }
}

/// A sweep: the plan on the stale claims `dal_stale_claims` selects and locks (in id order,
/// skipping locked rows: a function of the migration `queue_at_scale`).
fn sweep_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let n = 5 + PLAN.len();
        let (a, b, c) = (n + 1, n + 2, n + 3);
        let stale =
            format!("p WHERE t.id = ANY(ARRAY(SELECT dal_stale_claims(${n}, ${a}, ${b}, ${c})))");
        plan_write("", 5, &stale, None)
    })
}

/// An insert of rows bound as one array per column, with an event per row when `$17` (its
/// type) is not null.
const INSERT: &str = "WITH changed AS (INSERT INTO task_executions (id, workflow_execution_id, \
    task_name, status, attempt, max_attempts, trigger_rules, task_configuration, retry_at, \
    created_at, updated_at, due_at) \
    SELECT * FROM unnest($5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
    RETURNING task_executions.*, $17::text AS event_type, $18::jsonb AS event_data, \
    NULL::uuid AS event_runner), ";

/// The text of the first 8 bytes of the UUIDv7 ids of the events at `at`, `xxxxxxxx-xxxx-7xxx`:
/// the Unix millisecond, the version, and the fraction of the millisecond in the 12 bits RFC
/// 9562 leaves to the implementation (its method 3). Times before 1970 count as 1970.
fn event_id_head(at: DateTime<Utc>) -> String {
    let (millis, fraction) = match u64::try_from(at.timestamp_millis()) {
        Ok(millis) => {
            (millis, u64::from(at.timestamp_subsec_nanos() % 1_000_000) * 4096 / 1_000_000)
        }
        Err(_) => (0, 0),
    };
    let (high, low) = ((millis >> 16) & 0xffff_ffff, millis & 0xffff);
    format!("{high:08x}-{low:04x}-7{fraction:03x}")
}

/// `query` with `param` bound.
fn bind(q: BoxedSqlQuery<'_, Pg, SqlQuery>, param: Param) -> BoxedSqlQuery<'_, Pg, SqlQuery> {
    match param {
        Param::Id(v) => q.bind::<Nullable<SqlUuid>, _>(v),
        Param::Time(v) => q.bind::<Nullable<Timestamptz>, _>(v),
        Param::Text(v) => q.bind::<Nullable<Text>, _>(v),
        Param::Int(v) => q.bind::<Nullable<Integer>, _>(v),
        Param::Bool(v) => q.bind::<Nullable<Bool>, _>(v),
        Param::Json(v) => q.bind::<Nullable<Jsonb>, _>(v),
    }
}

/// `query` with the next value of each of `rows` bound as one array, its type that of
/// `template`.
fn bind_column<'a>(
    q: BoxedSqlQuery<'a, Pg, SqlQuery>,
    template: &Param,
    rows: &mut [std::vec::IntoIter<Param>],
) -> BoxedSqlQuery<'a, Pg, SqlQuery> {
    macro_rules! column {
        ($variant:ident, $sql:ty) => {{
            let values: Vec<_> = rows
                .iter_mut()
                .map(|row| match row.next() {
                    Some(Param::$variant(v)) => v,
                    _ => None,
                })
                .collect();
            q.bind::<Array<Nullable<$sql>>, _>(values)
        }};
    }
    match template {
        Param::Id(_) => column!(Id, SqlUuid),
        Param::Time(_) => column!(Time, Timestamptz),
        Param::Text(_) => column!(Text, Text),
        Param::Int(_) => column!(Int, Integer),
        Param::Bool(_) => column!(Bool, Bool),
        Param::Json(_) => column!(Json, Jsonb),
    }
}

impl Backend for PgBackend {
    const NAME: &'static str = "postgres";

    type Pool = PgPool;

    fn pool(&self) -> &PgPool {
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
        let events = event.map_or(0, |_| rows.len());
        let mut query = self.statement(INSERT, events, first.created_at);
        let mut values: Vec<_> = rows.iter().map(|row| inserted(row).into_iter()).collect();
        for template in inserted(first) {
            query = bind_column(query, &template, &mut values);
        }
        let query = query
            .bind::<Nullable<Text>, _>(event.map(|e| e.event_type.as_str()))
            .bind::<Nullable<Jsonb>, _>(event.map(EventSpec::data_value))
            .sql(tail());
        Ok(self.write(query)?.into_iter().map(|(row, _)| row).collect())
    }

    fn apply(&self, id: Uuid, plan: &Plan) -> Result<Option<TaskExecution>> {
        let query = task(id, plan.guard.lease).into_iter().chain(params(plan)).fold(
            self.statement(
                apply_sql(),
                plan.event.as_ref().map_or(0, |_| 1),
                plan.effects.updated_at,
            ),
            bind,
        );
        Ok(self.write(query)?.pop().map(|(row, _)| row))
    }

    fn cycle(&self, finished: &[Plan], claim: &Claim) -> Result<Vec<(TaskExecution, Due)>> {
        let (finishing, claiming) = (!finished.is_empty(), claim.limit > 0);
        if !finishing && !claiming {
            return Ok(Vec::new());
        }
        let at = claim.plan.effects.updated_at;
        // The store's plans all have their events, or none (the history off).
        let events = claim.plan.event.as_ref().map_or(0, |_| finished.len() + claim.limit as usize);
        let mut query = self.statement(batch(finishing, claiming), events, at);
        if finishing {
            let (plans, tasks) = distinct(finished);
            let mut rows: Vec<_> = plans.into_iter().map(|(_, p)| p.into_iter()).collect();
            for template in params(&claim.plan) {
                query = bind_column(query, &template, &mut rows);
            }
            query = query
                .bind::<Array<SqlUuid>, _>(tasks.iter().map(|(l, _)| l.task_id).collect::<Vec<_>>())
                .bind::<Array<SqlUuid>, _>(
                    tasks.iter().map(|(l, _)| l.runner_id).collect::<Vec<_>>(),
                )
                .bind::<Array<Integer>, _>(tasks.iter().map(|(l, _)| l.claim).collect::<Vec<_>>())
                .bind::<Array<BigInt>, _>(
                    tasks.iter().map(|(_, plan)| *plan as i64 + 1).collect::<Vec<_>>(),
                );
        }
        if claiming {
            query = params(&claim.plan)
                .into_iter()
                .fold(query, bind)
                .bind::<Timestamptz, _>(claim.from)
                .bind::<Timestamptz, _>(claim.due_at)
                .bind::<BigInt, _>(i64::from(claim.limit));
        }
        self.write(query)
    }

    fn sweep(&self, stale: &Stale, plan: &Plan) -> Result<Vec<TaskExecution>> {
        let statuses: Vec<&str> = CLAIMED.iter().map(|s| s.as_str()).collect();
        let query = params(plan)
            .into_iter()
            .fold(self.statement(sweep_sql(), 0, plan.effects.updated_at), bind)
            .bind::<Timestamptz, _>(stale.older_than)
            .bind::<Array<Text>, _>(statuses)
            .bind::<Integer, _>(stale.recovery_attempts.0)
            .bind::<Integer, _>(stale.recovery_attempts.1);
        // Not kept prepared: planned for each sweep with the table as it is then.
        let rows = written(self.run(|conn| Returning(query).load::<Written>(conn))?)?;
        Ok(rows.into_iter().map(|(row, _)| row).collect())
    }

    fn prune(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned> {
        self.run(|conn| crate::retention::prune(conn, older_than, limit, after))
    }

    dal_diesel::reads!(run, ("= ANY(ARRAY(", "))"));

    fn wake_source(&self) -> WakeSource {
        self.listen.source()
    }

    fn watch(&self, bell: Weak<Bell>) {
        crate::listen::spawn(self.listen.clone(), bell);
    }
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend").field("pool", &self.pool.state()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_head_is_the_time_and_the_version() {
        // 2026-01-01T00:00:00.123456789Z: 1,767,225,600,123 ms, and .456789 of the next.
        let at = DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap_or_default();
        let head = event_id_head(at);
        let millis = 1_767_225_600_123u64;
        let fraction = 456_789 * 4096 / 1_000_000;
        let expected = format!("{:08x}-{:04x}-7{fraction:03x}", millis >> 16, millis & 0xffff);
        assert_eq!(head, expected);
        let id = Uuid::parse_str(&format!("{head}-8000-000000000000")).unwrap_or_default();
        assert_eq!(id.get_timestamp().map(|t| t.to_unix()), Some((1_767_225_600, 123_000_000)));
        let later = DateTime::from_timestamp(1_767_225_600, 123_999_000).unwrap_or_default();
        assert!(event_id_head(later) > head);
        let before_1970 = DateTime::UNIX_EPOCH - chrono::TimeDelta::days(1);
        assert_eq!(event_id_head(before_1970), "00000000-0000-7000");
    }
}
