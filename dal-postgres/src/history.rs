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
//! [`Logged`] only joins them with `WITH`. The event's data is built by the SQL function
//! `dal_event_data` (see the migration), which mirrors `EventSpec::data_for`.

use chrono::{DateTime, Utc};
use dal_core::event::EventSpec;
use dal_core::{DalError, ExecutionEvent, Result};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;
use uuid::Uuid;

use crate::schema::{changed, execution_events as e};

diesel::define_sql_function! {
    /// A UUIDv7 for a time (defined by the migration).
    fn dal_uuid_v7(at: Timestamptz) -> diesel::sql_types::Uuid;
}

diesel::define_sql_function! {
    /// An event's data: arguments and counters (defined by the migration).
    fn dal_event_data(
        arguments: Jsonb,
        attempt: diesel::sql_types::Integer,
        claim: diesel::sql_types::Integer,
        recovery_attempts: diesel::sql_types::Integer,
    ) -> Jsonb;
}

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
/// The write refers to it as the pseudo-table [`crate::schema::targets`].
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

/// `write` with one `event` per row it returns, written by the same statement at time `at`.
pub(crate) fn logged<P, W>(
    prelude: P,
    write: W,
    event: &EventSpec,
    at: DateTime<Utc>,
) -> Logged<P, W, impl QueryFragment<Pg> + use<P, W>> {
    let log = changed::table
        .select((
            dal_uuid_v7(at),
            changed::workflow_execution_id,
            changed::id,
            event.event_type.as_str().into_sql::<Text>(),
            dal_event_data(
                event.data_value(),
                changed::attempt,
                changed::claim_count,
                changed::recovery_attempts,
            ),
            event
                .runner_id
                .into_sql::<Nullable<diesel::sql_types::Uuid>>(),
            at.into_sql::<Timestamptz>(),
        ))
        // The events of one statement take their `seq` in task id order, as on SQLite.
        .order(changed::id)
        .insert_into(e::table)
        .into_columns((
            e::id,
            e::workflow_execution_id,
            e::task_execution_id,
            e::event_type,
            e::event_data,
            e::runner_id,
            e::created_at,
        ));
    Logged {
        prelude,
        write,
        log,
    }
}

/// An `execution_events` row as read.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = e, check_for_backend(Pg))]
pub(crate) struct EventRow {
    seq: i64,
    id: Uuid,
    workflow_execution_id: Uuid,
    task_execution_id: Uuid,
    event_type: String,
    event_data: Value,
    runner_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for ExecutionEvent {
    type Error = DalError;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(ExecutionEvent {
            seq: row.seq,
            id: row.id,
            workflow_execution_id: row.workflow_execution_id,
            task_execution_id: row.task_execution_id,
            event_type: row.event_type.parse()?,
            event_data: row.event_data,
            runner_id: row.runner_id,
            created_at: row.created_at,
        })
    }
}
