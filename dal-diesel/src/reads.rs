//! The reads, written once for both databases with one schema and the dialect in expressions
//! ([`crate::dialect`]). A macro, expanded in each backend's `impl Backend`: Diesel checks a
//! statement against a backend through trait bounds on its concrete type, which a function
//! generic over the backend would restate for every clause; an expansion is checked against
//! its one backend.

/// What the read statements use, for the expansions of [`reads!`](crate::reads!).
#[doc(hidden)]
pub mod prelude {
    pub use crate::bind::id as bind_id;
    pub use crate::dialect::{in_ids, in_texts, limited, status_in};
    pub use crate::prepared::Prepared;
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

/// The read primitives of [`dal_core::Backend`], each one `SELECT`, as methods of the
/// backend's `impl Backend`; `$read` names the backend's method that runs a closure on a pooled
/// connection and maps its error; `$in_tasks` how the database writes "among the ids this
/// subquery selects" (open, close) so that it probes an index per id whatever the statistics:
/// PostgreSQL `= ANY(ARRAY(...))`, SQLite `IN (...)`. The signatures name `Uuid`, `DateTime`, `Utc` and `Result`,
/// `TaskExecution`, `ExecutionEvent`, `TaskStatus`, `RetryStats` of `dal_core` as the
/// expansion's module has them in scope.
#[macro_export]
macro_rules! reads {
    ($read:ident, $in_tasks:tt) => {
        fn get(&self, id: Uuid) -> Result<Option<TaskExecution>> {
            use $crate::__p::*;
            // By primary key: at most one row, so no LIMIT (`get_result` adds none).
            self.$read(|conn| {
                t::table.find(bind_id(id)).select(Row::as_select()).get_result(conn).optional()
            })?
            .map(TaskExecution::try_from)
            .transpose()
        }

        fn list_for_workflow(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
            use $crate::__p::*;
            tasks(self.$read(|conn| {
                t::table
                    .filter(t::workflow_execution_id.eq(bind_id(workflow_execution_id)))
                    .order((t::created_at, t::id))
                    .select(Row::as_select())
                    .load(conn)
            })?)
        }

        fn find_stale(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>> {
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
            due_at: DateTime<Utc>,
            limit: u32,
            retries_only: bool,
        ) -> Result<Vec<TaskExecution>> {
            use $crate::__p::*;
            let due = t::table
                .filter(t::status.eq($crate::reads::ready()))
                .filter(t::due_at.le(Some(due_at)))
                .order((t::due_at, t::id))
                .select(Row::as_select());
            tasks(self.$read(|conn| {
                if retries_only {
                    // Its own statement, on the retries' own partial index.
                    Prepared(limited(due.filter(t::retry_at.is_not_null()), limit)).load(conn)
                } else {
                    Prepared(limited(due, limit)).load(conn)
                }
            })?)
        }

        fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>> {
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
            workflow_execution_id: Uuid,
            after: i64,
            limit: u32,
        ) -> Result<Vec<ExecutionEvent>> {
            use $crate::__p::*;
            events(self.$read(|conn| {
                let (open, close) = $in_tasks;
                // Through the workflow's tasks: events are keyed by task.
                let tasks = diesel::dsl::sql::<Bool>("execution_events.task_execution_id ")
                    .sql(open)
                    .sql("SELECT id FROM task_executions WHERE workflow_execution_id = ")
                    .bind::<$crate::types::Id, _>(bind_id(workflow_execution_id))
                    .sql(close);
                Prepared(limited(
                    e::table
                        .filter(tasks)
                        .filter(e::seq.gt(after))
                        .order(e::seq)
                        .select(EventRow::as_select()),
                    limit,
                ))
                .load(conn)
            })?)
        }

        fn deferred_tasks(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<TaskExecution>> {
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
            workflow_execution_ids: &[Uuid],
            status: TaskStatus,
        ) -> Result<Vec<TaskExecution>> {
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
            workflow_execution_ids: &[Uuid],
            task_names: Option<&[&str]>,
        ) -> Result<Vec<(Uuid, String, TaskStatus)>> {
            use $crate::__p::*;
            let every_name = task_names.is_none();
            let names = task_names.unwrap_or_default();
            let found: Vec<(IdValue, String, String)> = self.$read(|conn| {
                t::table
                    .filter(in_ids(t::workflow_execution_id, workflow_execution_ids))
                    .filter(every_name.into_sql::<Bool>().or(in_texts(t::task_name, names)))
                    .select((t::workflow_execution_id, t::task_name, t::status))
                    .load(conn)
            })?;
            found
                .into_iter()
                .map(|(workflow, name, status)| Ok((workflow.0, name, status.parse()?)))
                .collect()
        }

        fn complete_workflows(&self, workflow_execution_ids: &[Uuid]) -> Result<Vec<Uuid>> {
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

        fn has_abandoned(&self, workflow_execution_id: Uuid) -> Result<bool> {
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

        fn retry_stats(&self, workflow_execution_id: Uuid) -> Result<RetryStats> {
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

        fn exhausted_tasks(&self, workflow_execution_id: Uuid) -> Result<Vec<TaskExecution>> {
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

        fn count_by_status(&self) -> Result<Vec<(TaskStatus, i64)>> {
            use $crate::__p::*;
            let counts: Vec<(String, i64)> = self.$read(|conn| {
                t::table.group_by(t::status).select((t::status, count_star())).load(conn)
            })?;
            counts.into_iter().map(|(status, count)| Ok((status.parse()?, count))).collect()
        }

        fn queue_lag(&self, now: DateTime<Utc>) -> Result<(i64, Option<DateTime<Utc>>, i64)> {
            use $crate::__p::*;
            let due = || {
                t::table
                    .filter(t::status.eq($crate::reads::ready()))
                    .filter(t::due_at.le(Some(now)))
            };
            let running = TaskStatus::Running.as_str();
            let (due, oldest, running) = self.$read(|conn| {
                diesel::select((
                    due().count().single_value(),
                    due().select(t::due_at).order(t::due_at).limit(1).single_value(),
                    t::table.filter(t::status.eq(running)).count().single_value(),
                ))
                .get_result::<(Option<i64>, Option<DateTime<Utc>>, Option<i64>)>(conn)
            })?;
            Ok((due.unwrap_or(0), oldest, running.unwrap_or(0)))
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
