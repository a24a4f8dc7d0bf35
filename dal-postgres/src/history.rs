//! The execution history on PostgreSQL: every write and its events in ONE statement,
//!
//! ```sql
//! WITH [targets AS MATERIALIZED (<the rows to write, locked>),]
//!      changed AS (<the write> RETURNING <task columns>),
//!      logged AS (INSERT INTO execution_events (...) SELECT ... FROM changed)
//! SELECT * FROM changed
//! ```
//!
//! The write and the event insert are Diesel queries, type-checked against the schema;
//! [`Logged`] only joins them with `WITH`. The event's id and data are plain expressions of the
//! statement, not calls of SQL functions of the schema: a SQL function, even one the planner
//! inlines, has its body parsed and analysed again whenever a statement using it is planned,
//! and a statement is planned at every execution when it gets custom plans (see BENCHMARKS.md,
//! "Plan cache modes").
//!
//! - The id: a UUIDv7 whose first 8 bytes (the event's time and the version) are made here and
//!   bound as text (`event_id_head`), followed by the last 8 bytes (variant and 62 random bits)
//!   of the server's `gen_random_uuid()` for each row, so that the events of one statement get
//!   distinct ids.
//! - The data: the operation's arguments `||` the row's counters, as `EventSpec::data_for`
//!   builds them on SQLite.
//!
//! A batch create's events are the exception ([`logged_insert`]): their rows are known before
//! the statement runs, so their ids and columns are bound as arrays in task id order,
//! `logged AS (INSERT ... SELECT unnest(...), ...)`.

use chrono::{DateTime, Utc};
use dal_core::event::EventSpec;
use dal_core::ids::Ids;
use dal_core::{TaskExecution, TaskStatus};
use dal_diesel::bind::{instant, json};
use dal_diesel::schema::execution_events as e;
use dal_diesel::schema::{changed, targets};
use dal_diesel::types::{Id, Json};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text};
use uuid::Uuid;

use crate::statements::unnest;

diesel::define_sql_function! {
    /// A random (version 4) UUID, made by the server.
    fn gen_random_uuid() -> diesel::sql_types::Uuid;
}

diesel::define_sql_function! {
    /// The last `n` characters of `s`.
    fn right(s: Text, n: Integer) -> Text;
}

diesel::define_sql_function! {
    /// A JSON object of three keys and their integer values.
    fn jsonb_build_object(k1: Text, v1: Integer, k2: Text, v2: Integer, k3: Text, v3: Integer) -> dal_diesel::types::Json;
}

diesel::define_sql_function! {
    /// `{"error": <error>}`.
    #[sql_name = "jsonb_build_object"]
    fn json_of_error(key: Text, error: Nullable<Text>) -> dal_diesel::types::Json;
}

diesel::define_sql_function! {
    /// A text as a UUID (PostgreSQL's function-style cast).
    #[sql_name = "uuid"]
    fn uuid_of(text: Text) -> Id;
}

diesel::infix_operator!(Merged, " || ", Json, backend: Pg);

/// The length of the text of a UUID's last 8 bytes, `-xxxx-xxxxxxxxxxxx`.
const TAIL: i32 = 18;

/// The text of the first 8 bytes of the UUIDv7 ids of the events at `at`, `xxxxxxxx-xxxx-7xxx`:
/// the Unix millisecond (48 bits), the version 7 and, in the 12 bits RFC 9562 leaves to the
/// implementation, the fraction of the millisecond (its method 3), so that ids follow the time
/// below the millisecond too. Times before 1970 count as 1970, as on SQLite (`dal_core::ids`).
fn event_id_head(at: DateTime<Utc>) -> String {
    let (millis, fraction) = match u64::try_from(at.timestamp_millis()) {
        Ok(millis) => (
            millis,
            u64::from(at.timestamp_subsec_nanos() % 1_000_000) * 4096 / 1_000_000,
        ),
        Err(_) => (0, 0),
    };
    format!(
        "{:08x}-{:04x}-7{:03x}",
        (millis >> 16) & 0xffff_ffff,
        millis & 0xffff,
        fraction
    )
}

/// `ARRAY(SELECT id FROM targets)`: the ids of the [`Targets`] as one array, for the write's
/// `WHERE id = ANY(...)`. PostgreSQL runs it once, as an init plan, and the write becomes a
/// primary-key scan of the array's ids (in id order). Planning it costs less than the join that
/// `id = ANY(SELECT ...)` or `UPDATE ... FROM targets` asks the planner to weigh, and planning
/// is paid at every execution wherever statements get custom plans.
pub(crate) fn target_ids() -> TargetIds {
    diesel::dsl::array(targets::table.select(targets::id))
}

/// The type of [`target_ids`].
pub(crate) type TargetIds =
    diesel::dsl::array<Id, diesel::dsl::Select<targets::table, targets::id>>;

/// What comes before a write in its `WITH`: nothing, or the CTE of the rows it targets.
pub(crate) trait Prelude {
    /// Writes `before`, `targets AS MATERIALIZED (...)` and `after`, or nothing.
    fn walk_prelude<'b>(
        &'b self,
        out: AstPass<'_, 'b, Pg>,
        before: &'static str,
        after: &'static str,
    ) -> QueryResult<()>;
}

/// No prelude: the write finds its rows itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoPrelude;

impl Prelude for NoPrelude {
    fn walk_prelude<'b>(
        &'b self,
        _out: AstPass<'_, 'b, Pg>,
        _before: &'static str,
        _after: &'static str,
    ) -> QueryResult<()> {
        Ok(())
    }
}

/// `targets (id) AS MATERIALIZED (<query>)`: the ids of the rows a multi-row write changes, selected and
/// locked once, before the write, by a query of their own. Materialized, the CTE runs exactly
/// once whatever plan the write gets, so its `LIMIT` and its lock order hold (a subquery in
/// the write's `WHERE` could be planned as the inner side of a join and run again per row).
/// The write refers to it with [`target_ids`].
#[derive(Debug)]
pub(crate) struct Targets<Q>(pub(crate) Q);

impl<Q: QueryFragment<Pg>> Prelude for Targets<Q> {
    fn walk_prelude<'b>(
        &'b self,
        mut out: AstPass<'_, 'b, Pg>,
        before: &'static str,
        after: &'static str,
    ) -> QueryResult<()> {
        out.push_sql(before);
        // The column list names the query's one column `id`, whatever the query calls it.
        out.push_sql("targets (id) AS MATERIALIZED (");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(")");
        out.push_sql(after);
        Ok(())
    }
}

/// A write that returns task rows, and the insert of its events, as one statement.
#[derive(Debug)]
pub(crate) struct Logged<P, W, L> {
    prelude: P,
    write: W,
    log: L,
}

impl<P, W: Query, L> Query for Logged<P, W, L> {
    type SqlType = W::SqlType;
}

impl<P, W, L> QueryFragment<Pg> for Logged<P, W, L>
where
    P: Prelude,
    W: QueryFragment<Pg>,
    L: QueryFragment<Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        self.prelude.walk_prelude(out.reborrow(), "", ", ")?;
        out.push_sql("changed AS (");
        self.write.walk_ast(out.reborrow())?;
        out.push_sql("), logged AS (");
        self.log.walk_ast(out.reborrow())?;
        // The CTE's columns are the write's RETURNING list, in order.
        out.push_sql(") SELECT * FROM changed");
        Ok(())
    }
}

impl<P, W, L> QueryId for Logged<P, W, L> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<P, W, L, Conn> RunQueryDsl<Conn> for Logged<P, W, L> {}

/// A write without events, after its prelude: `[WITH targets AS MATERIALIZED (...)] <write>`.
#[derive(Debug)]
pub(crate) struct Plain<P, W> {
    pub(crate) prelude: P,
    pub(crate) write: W,
}

impl<P, W: Query> Query for Plain<P, W> {
    type SqlType = W::SqlType;
}

impl<P: Prelude, W: QueryFragment<Pg>> QueryFragment<Pg> for Plain<P, W> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.prelude.walk_prelude(out.reborrow(), "WITH ", " ")?;
        self.write.walk_ast(out.reborrow())
    }
}

impl<P, W> QueryId for Plain<P, W> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<P, W, Conn> RunQueryDsl<Conn> for Plain<P, W> {}

/// The id of an event at `$at`: [`event_id_head`], then a random tail per row.
macro_rules! event_id {
    ($at:expr) => {
        uuid_of(
            event_id_head($at)
                .into_sql::<Text>()
                .concat(right(gen_random_uuid().cast::<Text>(), TAIL)),
        )
    };
}

/// The counters every event's data ends with, from the row as written.
fn counters() -> jsonb_build_object<
    &'static str,
    changed::attempt,
    &'static str,
    changed::claim_count,
    &'static str,
    changed::recovery_attempts,
> {
    jsonb_build_object(
        "attempt",
        changed::attempt,
        "claim",
        changed::claim_count,
        "recovery_attempts",
        changed::recovery_attempts,
    )
}

/// `write` with one `event` per row it returns, written by the same statement at time `at`.
pub(crate) fn logged<P, W>(
    prelude: P,
    write: W,
    event: &EventSpec,
    at: DateTime<Utc>,
) -> Logged<P, W, impl QueryFragment<Pg> + use<P, W>> {
    let log = changed::table
        .select((
            event_id!(at),
            changed::workflow_execution_id,
            changed::id,
            event.event_type.as_str().into_sql::<Text>(),
            Merged::new(json(event.data_value()), counters()),
            event.runner_id.into_sql::<Nullable<Id>>(),
            instant(at),
        ))
        // The events of one statement take their `seq` in task id order, as on SQLite.
        .order(changed::id)
        .insert_into(e::table)
        .into_columns(EVENT_COLUMNS);
    Logged {
        prelude,
        write,
        log,
    }
}

/// `write`, an `INSERT` of `rows` (`RETURNING` them), with one `event` per row, at time `at`,
/// in the same statement, the events' ids and rows bound rather than made from `changed`.
///
/// An insert writes exactly the rows it is given, or fails whole, so the rows its events are
/// for are known before it runs: their ids (from `ids`, as on SQLite), task ids, workflow
/// execution ids and counters are bound as arrays in task id order, and the data is built as
/// for every other write (the arguments `||` the counters). The server then neither sorts
/// `changed` nor makes a random UUID and its text for each event (BENCHMARKS.md, "Batch
/// creates on PostgreSQL").
pub(crate) fn logged_insert<W>(
    write: W,
    event: &EventSpec,
    rows: &[TaskExecution],
    ids: &Ids,
    at: DateTime<Utc>,
) -> Logged<NoPrelude, W, impl QueryFragment<Pg> + use<W>> {
    let mut sorted: Vec<&TaskExecution> = rows.iter().collect();
    sorted.sort_unstable_by_key(|row| row.id);
    let column = |value: fn(&TaskExecution) -> Uuid| -> Vec<Uuid> {
        sorted.iter().map(|row| value(row)).collect()
    };
    let counter = |value: fn(&TaskExecution) -> i32| -> Vec<i32> {
        sorted.iter().map(|row| value(row)).collect()
    };
    let event_ids: Vec<Uuid> = sorted.iter().map(|_| ids.at(at)).collect();
    let log = diesel::select((
        unnest(event_ids.into_sql::<Array<Id>>()),
        unnest(column(|row| row.workflow_execution_id).into_sql::<Array<Id>>()),
        unnest(column(|row| row.id).into_sql::<Array<Id>>()),
        event.event_type.as_str().into_sql::<Text>(),
        Merged::new(
            json(event.data_value()),
            jsonb_build_object(
                "attempt",
                unnest(counter(|row| row.attempt).into_sql::<Array<Integer>>()),
                "claim",
                unnest(counter(|row| row.claim_count).into_sql::<Array<Integer>>()),
                "recovery_attempts",
                unnest(counter(|row| row.recovery_attempts).into_sql::<Array<Integer>>()),
            ),
        ),
        event.runner_id.into_sql::<Nullable<Id>>(),
        instant(at),
    ))
    .insert_into(e::table)
    .into_columns(EVENT_COLUMNS);
    Logged {
        prelude: NoPrelude,
        write,
        log,
    }
}

/// The columns an event insert writes, in the order of its `SELECT`.
const EVENT_COLUMNS: (
    e::id,
    e::workflow_execution_id,
    e::task_execution_id,
    e::event_type,
    e::event_data,
    e::runner_id,
    e::created_at,
) = (
    e::id,
    e::workflow_execution_id,
    e::task_execution_id,
    e::event_type,
    e::event_data,
    e::runner_id,
    e::created_at,
);

/// The events of a runner cycle (see [`Cycle`]), for each row of `changed` by its status as
/// written: `completed` rows get `complete`, `failed` rows `fail` with the row's error as its
/// `error` (each failure's plan puts its error in `error_details` and in its event's `error`),
/// `ready` rows (retried) `retry` with the arguments its target carries (each retry's plan's
/// own, made by the store), `running` rows (claimed) get `claim`; all of the cycle's runner, at
/// `at`.
pub(crate) fn cycle_log(
    complete: &EventSpec,
    fail: &EventSpec,
    retry: &EventSpec,
    claim: &EventSpec,
    at: DateTime<Utc>,
) -> impl QueryFragment<Pg> + use<> {
    use diesel::dsl::case_when;
    let completed = || changed::status.eq(TaskStatus::Completed.as_str());
    let failed = || changed::status.eq(TaskStatus::Failed.as_str());
    let retried = || changed::status.eq(TaskStatus::Ready.as_str());
    let event_type = case_when(completed(), complete.event_type.as_str().into_sql::<Text>())
        .when(failed(), fail.event_type.as_str().into_sql::<Text>())
        .when(retried(), retry.event_type.as_str().into_sql::<Text>())
        .otherwise(claim.event_type.as_str().into_sql::<Text>());
    let arguments = case_when(completed(), json(complete.data_value()))
        .when(
            failed(),
            Merged::new(
                json(fail.data_value()),
                json_of_error("error", changed::error_details),
            ),
        )
        .when(
            retried(),
            targets::table
                .filter(targets::id.eq(changed::id))
                .select(targets::data)
                .single_value()
                .assume_not_null(),
        )
        .otherwise(json(claim.data_value()));
    changed::table
        .select((
            event_id!(at),
            changed::workflow_execution_id,
            changed::id,
            event_type,
            Merged::new(arguments, counters()),
            claim.runner_id.into_sql::<Nullable<Id>>(),
            instant(at),
        ))
        .order(changed::id)
        .insert_into(e::table)
        .into_columns(EVENT_COLUMNS)
}

/// A runner cycle as one statement:
///
/// ```sql
/// WITH targets (id, error, retry_at, data) AS MATERIALIZED (<the finished tasks, locked in
///                                                           id order>),
///      done AS (<complete those without an error> RETURNING <row>, due_at),
///      failed AS (<fail those with one and no retry> RETURNING <row>, due_at),
///      retried AS (<retry those with a retry time> RETURNING <row>, due_at),
///      fresh (id) AS MATERIALIZED (<the oldest due Ready tasks, SKIP LOCKED>),
///      claimed AS (<claim them> RETURNING <row>, due_at),
///      changed AS (SELECT * FROM done UNION ALL SELECT * FROM failed
///                  UNION ALL SELECT * FROM retried UNION ALL SELECT * FROM claimed),
///      logged AS (<insert the events of changed, in task id order>)  -- with history
/// SELECT * FROM changed
/// ```
///
/// The four writes change disjoint rows (the finished tasks are claimed ones, split by their
/// outcome; the claimed were `Ready`) and all see the statement's one snapshot, so the claim
/// cannot take a task this statement finishes or retries; a row's status as written says which
/// write returned it.
#[derive(Debug)]
pub(crate) struct Cycle<H, D, F, R, C, W, L> {
    pub(crate) held: H,
    pub(crate) done: D,
    pub(crate) failed: F,
    pub(crate) retried: R,
    pub(crate) fresh: C,
    pub(crate) claimed: W,
    /// The event insert; none with the history off.
    pub(crate) log: Option<L>,
}

impl<H, D: Query, F, R, C, W, L> Query for Cycle<H, D, F, R, C, W, L> {
    type SqlType = D::SqlType;
}

impl<H, D, F, R, C, W, L> QueryFragment<Pg> for Cycle<H, D, F, R, C, W, L>
where
    H: QueryFragment<Pg>,
    D: QueryFragment<Pg>,
    F: QueryFragment<Pg>,
    R: QueryFragment<Pg>,
    C: QueryFragment<Pg>,
    W: QueryFragment<Pg>,
    L: QueryFragment<Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH targets (id, error, retry_at, data) AS MATERIALIZED (");
        self.held.walk_ast(out.reborrow())?;
        out.push_sql("), done AS (");
        self.done.walk_ast(out.reborrow())?;
        out.push_sql("), failed AS (");
        self.failed.walk_ast(out.reborrow())?;
        out.push_sql("), retried AS (");
        self.retried.walk_ast(out.reborrow())?;
        out.push_sql("), fresh (id) AS MATERIALIZED (");
        self.fresh.walk_ast(out.reborrow())?;
        out.push_sql("), claimed AS (");
        self.claimed.walk_ast(out.reborrow())?;
        out.push_sql(
            "), changed AS (SELECT * FROM done UNION ALL SELECT * FROM failed \
             UNION ALL SELECT * FROM retried UNION ALL SELECT * FROM claimed)",
        );
        if let Some(log) = &self.log {
            out.push_sql(", logged AS (");
            log.walk_ast(out.reborrow())?;
            out.push_sql(")");
        }
        out.push_sql(" SELECT * FROM changed");
        Ok(())
    }
}

impl<H, D, F, R, C, W, L> QueryId for Cycle<H, D, F, R, C, W, L> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<H, D, F, R, C, W, L, Conn> RunQueryDsl<Conn> for Cycle<H, D, F, R, C, W, L> {}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn an_event_id_head_is_the_time_and_the_version() {
        // 2026-01-01T00:00:00.123456789Z: 1,767,225,600,123 ms, and .456789 of the next.
        let at = DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap();
        let head = event_id_head(at);
        let millis = 1_767_225_600_123u64;
        let fraction = 456_789 * 4096 / 1_000_000;
        assert_eq!(
            head,
            format!(
                "{:08x}-{:04x}-7{fraction:03x}",
                millis >> 16,
                millis & 0xffff
            )
        );
        let id = Uuid::parse_str(&format!("{head}-8000-000000000000")).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(
            id.get_timestamp().map(|t| t.to_unix()),
            Some((1_767_225_600, 123_000_000))
        );
        // The fraction orders the heads of one millisecond.
        let later = DateTime::from_timestamp(1_767_225_600, 123_999_000).unwrap();
        assert!(event_id_head(later) > head);
        let before_1970 = DateTime::UNIX_EPOCH - chrono::TimeDelta::days(1);
        assert_eq!(event_id_head(before_1970), "00000000-0000-7000");
    }
}
