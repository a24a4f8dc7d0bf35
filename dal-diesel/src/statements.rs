//! The statements both databases run alike, written once.
//!
//! With one schema and the dialect in expressions ([`crate::dialect`]), these statements have
//! the same source for both databases. They are macros, expanded in each backend's
//! `impl Backend`: Diesel checks a statement against a backend through trait bounds on its
//! concrete type, so a function generic over the backend would restate, for each statement,
//! the bounds of every clause it uses; an expansion is checked against its one backend
//! instead, by the compiler, like any other code of that crate.
//!
//! The writes whose shape differs (how a write and its events become one atomic unit, a
//! claim's locking, a batch insert's binds) stay in each backend and use [`plan_set!`](crate::plan_set) and
//! [`apply_write!`](crate::apply_write) from here.

/// What the read statements use, for the expansions of [`reads!`](crate::reads).
#[doc(hidden)]
pub mod prelude {
    pub use crate::bind::id as bind_id;
    pub use crate::dialect::{in_ids, in_texts, limited, status_in};
    pub use crate::prepared::PreparedAs;
    pub use crate::row::{EventRow, Row, events, tasks};
    pub use crate::schema::execution_events as e;
    pub use crate::schema::task_executions as t;
    pub use crate::types::IdValue;
    pub use chrono::{DateTime, Utc};
    pub use dal_core::{ExecutionEvent, Result, RetryStats, StatusSet, TaskExecution, TaskStatus};
    pub use diesel::dsl::{case_when, count_star, exists, max, min, sum};
    pub use diesel::prelude::*;
    pub use diesel::sql_types::{Bool, Integer, Nullable, Text};
    pub use uuid::Uuid;
}

/// The keys the read statements are kept prepared under (see [`crate::prepared::PreparedAs`]).
#[doc(hidden)]
pub mod keys {
    /// `list_ready`.
    pub struct ListReady;
    /// `list_ready` of retries only.
    pub struct ListRetries;
}

/// `col = CASE WHEN <keep> THEN col ELSE <value> END`, `$sql` the column's type.
#[doc(hidden)]
#[macro_export]
macro_rules! assign {
    ($col:expr, $assign:expr, $sql:ty) => {
        $col.eq($crate::__diesel::dsl::case_when(
            $assign
                .keeps()
                .into_sql::<$crate::__diesel::sql_types::Bool>(),
            $col,
        )
        .otherwise(
            $assign
                .value()
                .cloned()
                .into_sql::<$crate::__diesel::sql_types::Nullable<$sql>>(),
        ))
    };
}

/// The `SET` list of a plan's [`dal_core::plan::Effects`]: every column a plan may touch, in
/// one fixed text, so that the statement is the same for every plan and stays prepared.
#[macro_export]
macro_rules! plan_set {
    ($effects:expr) => {
        $crate::plan_set!(@set $effects, |e| (
            $crate::assign!(t::error_details, e.error_details, Text),
            $crate::assign!(t::last_error, e.last_error, Text),
            $crate::assign!(t::retry_at, e.retry_at, Instant),
            $crate::plan_set!(@retry_at e),
        ))
    };
    // A batch of failures with an error each: `error_details` and `last_error` both set to
    // `$error`, an expression of the row (the plan's own error value is not used).
    ($effects:expr, error = $error:expr) => {
        $crate::plan_set!(@set $effects, |e| (
            t::error_details.eq($error),
            t::last_error.eq($error),
            $crate::assign!(t::retry_at, e.retry_at, Instant),
            $crate::plan_set!(@retry_at e),
        ))
    };
    // A batch of retries with an error and a retry time each: `last_error` set to `$error`,
    // `retry_at` (and the queue position) to `$retry_at`, expressions of the row (the plan's
    // own values are not used).
    ($effects:expr, last_error = $error:expr, retry_at = $retry_at:expr) => {
        $crate::plan_set!(@set $effects, |e| (
            $crate::assign!(t::error_details, e.error_details, Text),
            t::last_error.eq($error),
            t::retry_at.eq($retry_at),
            $retry_at,
        ))
    };
    // The retry time as written: the row's own when the plan keeps it, or the plan's.
    (@retry_at $e:ident) => {
        case_when($e.retry_at.keeps().into_sql::<Bool>(), t::retry_at)
            .otherwise($e.retry_at.value().cloned().into_sql::<Nullable<Instant>>())
    };
    (@set $effects:expr, |$e:ident| (
        $error_details:expr, $last_error:expr, $retry_at:expr, $retry_value:expr,
    )) => {{
        use $crate::__diesel::dsl::case_when;
        use $crate::__diesel::prelude::*;
        use $crate::__diesel::sql_types::{Bool, Nullable, Text};
        use $crate::schema::task_executions as t;
        use $crate::types::{Id, Instant};
        let $e = $effects;
        let e = $e;
        let (attempt_m, attempt_a) = e.attempt.coefficients(1);
        let (recovery_m, recovery_a) = e.recovery_attempts.coefficients(0);
        let (claims_m, claims_a) = e.claim_count.coefficients(0);
        (
            t::status.eq(e.status.as_str()),
            t::attempt.eq(t::attempt * attempt_m + attempt_a),
            t::recovery_attempts.eq(t::recovery_attempts * recovery_m + recovery_a),
            t::claim_count.eq(t::claim_count * claims_m + claims_a),
            $error_details,
            $last_error,
            $retry_at,
            $crate::assign!(t::started_at, e.started_at, Instant),
            $crate::assign!(t::completed_at, e.completed_at, Instant),
            $crate::assign!(t::last_recovery_at, e.last_recovery_at, Instant),
            $crate::assign!(t::claimed_by, e.claimed_by, Id),
            $crate::assign!(t::heartbeat_at, e.heartbeat_at, Instant),
            $crate::assign!(t::abandoned_at, e.abandoned_at, Instant),
            t::sub_status.eq(
                case_when(e.sub_status.keeps().into_sql::<Bool>(), t::sub_status).otherwise(
                    e.sub_status
                        .value()
                        .map(|s| s.as_str())
                        .into_sql::<Nullable<Text>>(),
                ),
            ),
            t::updated_at.eq($crate::bind::instant(e.updated_at)),
            // The queue position, set when the task enters Ready (`dal_core::plan::due_at`):
            // the later of its retry time as written and now; kept otherwise.
            t::due_at.eq(case_when(
                (e.status == $crate::__core::TaskStatus::Ready).into_sql::<Bool>(),
                $crate::dialect::later($retry_value, $crate::bind::instant(e.updated_at)),
            )
            .otherwise(t::due_at)),
        )
    }};
}

/// `UPDATE task_executions SET <plan_set!> WHERE id = $id AND status IN <from> AND <attempt
/// left, if the plan needs one> AND <the lease is the current claim, if the plan has one>
/// RETURNING <Row>`: one task's guarded write, `$plan` a [`dal_core::plan::Plan`].
#[macro_export]
macro_rules! apply_write {
    ($id:expr, $plan:expr) => {{
        use $crate::__diesel::prelude::*;
        use $crate::__diesel::sql_types::Bool;
        use $crate::schema::task_executions as t;
        let plan = $plan;
        let lease = plan.guard.lease;
        let lease_guard = lease.is_none().into_sql::<Bool>().or(t::claimed_by
            .eq(lease.map(|l| l.runner_id))
            .and(t::claim_count.eq(lease.map_or(0, |l| l.claim))));
        let attempt_guard = t::attempt.lt(t::max_attempts).or(plan
            .guard
            .needs_attempt_left
            .into_sql::<Bool>()
            .eq(false));
        let claim_guard = plan
            .guard
            .unclaimed
            .into_sql::<Bool>()
            .eq(false)
            .or(t::claimed_by.is_null());
        let due_by = plan.guard.due_by;
        let due_guard = due_by
            .is_none()
            .into_sql::<Bool>()
            .or(t::retry_at.is_null())
            .or(t::retry_at.le(due_by));
        $crate::__diesel::update(t::table)
            .filter(t::id.eq($id))
            .filter($crate::dialect::status_in(t::status, plan.guard.from))
            .filter(attempt_guard)
            .filter(lease_guard)
            .filter(claim_guard)
            .filter(due_guard)
            .set($crate::plan_set!(&plan.effects))
            .returning($crate::row::Row::as_returning())
    }};
}

/// The read primitives of [`dal_core::Backend`], each one `SELECT`, as methods of the
/// backend's `impl Backend`; `$read` names the backend's method that runs a closure on a pooled
/// connection and maps its error.
#[macro_export]
macro_rules! reads {
    ($read:ident) => {
        fn get(
            &self,
            id: $crate::__p::Uuid,
        ) -> $crate::__p::Result<Option<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            // By primary key: at most one row, so no LIMIT (`get_result` adds none).
            self.$read(|conn| {
                t::table
                    .find(bind_id(id))
                    .select(Row::as_select())
                    .get_result(conn)
                    .optional()
            })?
            .map(TaskExecution::try_from)
            .transpose()
        }

        fn list_for_workflow(
            &self,
            workflow_execution_id: $crate::__p::Uuid,
        ) -> $crate::__p::Result<Vec<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            tasks(self.$read(|conn| {
                t::table
                    .filter(t::workflow_execution_id.eq(bind_id(workflow_execution_id)))
                    .order((t::created_at, t::id))
                    .select(Row::as_select())
                    .load(conn)
            })?)
        }

        fn find_stale(
            &self,
            older_than: $crate::__p::DateTime<$crate::__p::Utc>,
        ) -> $crate::__p::Result<Vec<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            tasks(self.$read(|conn| {
                t::table
                    .filter(t::claimed_by.is_not_null())
                    .filter(t::heartbeat_at.lt(Some(older_than)))
                    .filter(status_in(t::status, dal_core::plan::CLAIMED))
                    .order(t::id)
                    .select(Row::as_select())
                    .load(conn)
            })?)
        }

        fn list_ready(
            &self,
            due_at: $crate::__p::DateTime<$crate::__p::Utc>,
            limit: u32,
            retries_only: bool,
        ) -> $crate::__p::Result<Vec<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            use $crate::statements::keys;
            let due = t::table
                .filter(t::status.eq($crate::statements::ready()))
                .filter(t::due_at.le(Some(due_at)))
                .order((t::due_at, t::id))
                .select(Row::as_select());
            tasks(self.$read(|conn| {
                if retries_only {
                    // Its own statement, on the retries' own partial index.
                    PreparedAs::<keys::ListRetries, _>::new(limited(
                        due.filter(t::retry_at.is_not_null()),
                        limit,
                    ))
                    .load(conn)
                } else {
                    PreparedAs::<keys::ListReady, _>::new(limited(due, limit)).load(conn)
                }
            })?)
        }

        fn events_for_task(
            &self,
            task_execution_id: $crate::__p::Uuid,
        ) -> $crate::__p::Result<Vec<$crate::__p::ExecutionEvent>> {
            use $crate::__p::*;
            events(self.$read(|conn| {
                e::table
                    .filter(e::task_execution_id.eq(bind_id(task_execution_id)))
                    .order(e::seq)
                    .select(EventRow::as_select())
                    .load(conn)
            })?)
        }

        fn events_for_workflow(
            &self,
            workflow_execution_id: $crate::__p::Uuid,
            after: i64,
            limit: u32,
        ) -> $crate::__p::Result<Vec<$crate::__p::ExecutionEvent>> {
            use $crate::__p::*;
            events(self.$read(|conn| {
                limited(
                    e::table
                        .filter(e::workflow_execution_id.eq(bind_id(workflow_execution_id)))
                        .filter(e::seq.gt(after))
                        .order(e::seq)
                        .select(EventRow::as_select()),
                    limit,
                )
                .load(conn)
            })?)
        }

        fn deferred_tasks(
            &self,
            workflow_execution_ids: &[$crate::__p::Uuid],
        ) -> $crate::__p::Result<Vec<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            tasks(self.$read(|conn| {
                t::table
                    .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                    .filter(t::status.eq(TaskStatus::Running.as_str()))
                    .filter(t::sub_status.eq($crate::__core::SubStatus::Deferred.as_str()))
                    .order(t::id)
                    .select(Row::as_select())
                    .load(conn)
            })?)
        }

        fn tasks_with_status(
            &self,
            workflow_execution_ids: &[$crate::__p::Uuid],
            status: $crate::__p::TaskStatus,
        ) -> $crate::__p::Result<Vec<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            tasks(self.$read(|conn| {
                t::table
                    .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                    .filter(t::status.eq(status.as_str()))
                    .order(t::id)
                    .select(Row::as_select())
                    .load(conn)
            })?)
        }

        fn task_statuses(
            &self,
            workflow_execution_ids: &[$crate::__p::Uuid],
            task_names: Option<&[&str]>,
        ) -> $crate::__p::Result<Vec<($crate::__p::Uuid, String, $crate::__p::TaskStatus)>> {
            use $crate::__p::*;
            let every_name = task_names.is_none();
            let names = task_names.unwrap_or_default();
            let found: Vec<(IdValue, String, String)> = self.$read(|conn| {
                t::table
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
                .map(|(workflow, name, status)| Ok((workflow.0, name, status.parse()?)))
                .collect()
        }

        fn complete_workflows(
            &self,
            workflow_execution_ids: &[$crate::__p::Uuid],
        ) -> $crate::__p::Result<Vec<$crate::__p::Uuid>> {
            use $crate::__p::*;
            let complete: Vec<IdValue> = self.$read(|conn| {
                t::table
                    .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                    .group_by(t::workflow_execution_id)
                    .having(
                        min(case_when(
                            status_in(t::status, StatusSet::TERMINAL),
                            1.into_sql::<Integer>(),
                        )
                        .otherwise(0.into_sql::<Integer>()))
                        .eq(1),
                    )
                    .select(t::workflow_execution_id)
                    .load(conn)
            })?;
            Ok(complete.into_iter().map(Uuid::from).collect())
        }

        fn has_abandoned(
            &self,
            workflow_execution_id: $crate::__p::Uuid,
        ) -> $crate::__p::Result<bool> {
            use $crate::__p::*;
            self.$read(|conn| {
                $crate::__diesel::select(exists(
                    t::table
                        .filter(t::workflow_execution_id.eq(bind_id(workflow_execution_id)))
                        .filter(t::abandoned_at.is_not_null()),
                ))
                .get_result(conn)
            })
        }

        fn retry_stats(
            &self,
            workflow_execution_id: $crate::__p::Uuid,
        ) -> $crate::__p::Result<$crate::__p::RetryStats> {
            use $crate::__p::*;
            let (retried, retries, highest, exhausted): (
                Option<i64>,
                Option<i64>,
                Option<i32>,
                Option<i64>,
            ) = self.$read(|conn| {
                t::table
                    .filter(t::workflow_execution_id.eq(bind_id(workflow_execution_id)))
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

        fn exhausted_tasks(
            &self,
            workflow_execution_id: $crate::__p::Uuid,
        ) -> $crate::__p::Result<Vec<$crate::__p::TaskExecution>> {
            use $crate::__p::*;
            tasks(self.$read(|conn| {
                t::table
                    .filter(t::workflow_execution_id.eq(bind_id(workflow_execution_id)))
                    .filter(t::status.eq(TaskStatus::Failed.as_str()))
                    .filter(t::attempt.ge(t::max_attempts))
                    .filter(t::abandoned_at.is_null())
                    .order(t::id)
                    .select(Row::as_select())
                    .load(conn)
            })?)
        }

        fn count_by_status(&self) -> $crate::__p::Result<Vec<($crate::__p::TaskStatus, i64)>> {
            use $crate::__p::*;
            let counts: Vec<(String, i64)> = self.$read(|conn| {
                t::table
                    .group_by(t::status)
                    .select((t::status, count_star()))
                    .load(conn)
            })?;
            counts
                .into_iter()
                .map(|(status, count)| Ok((status.parse()?, count)))
                .collect()
        }
    };
}

/// `'ready'` as a literal in the statement's text, not a parameter: the partial indexes of
/// Ready tasks say `WHERE status = 'ready'`. SQLite uses a partial index only when the query's
/// `WHERE` implies the index's, and a parameter implies nothing; PostgreSQL's generic plan (the
/// one it keeps for a prepared statement after five executions) uses one only for a literal.
pub fn ready() -> diesel::expression::SqlLiteral<diesel::sql_types::Text> {
    diesel::dsl::sql::<diesel::sql_types::Text>("'ready'")
}
