//! Multi-row `INSERT`s of fixed shapes, so that they stay prepared.
//!
//! SQLite compiles a statement again for every new text, and a multi-row `INSERT`'s text
//! changes with its row count: a write of 32 events compiled its `INSERT` each time (about
//! 50 µs, a third of its execution, on this project's machine). Here an `INSERT` of 2 to
//! [`SHAPED_UP_TO`] rows is written as
//!
//! ```sql
//! INSERT INTO <table> (<columns>) SELECT * FROM (VALUES (<row>), ..., (NULL, ...), ...)
//!     WHERE column1 IS NOT NULL [RETURNING <row>]
//! ```
//!
//! padded with rows of NULLs to the next power of two, which the `WHERE` leaves out (the first
//! column, an id, is never NULL). That gives ten shapes per table, each kept prepared under its
//! own key (`PreparedAs`) once a connection has used it. SQLite yields the `VALUES` rows in
//! their order, so the rows are inserted (and take their `seq`) in the order given, as with a
//! plain multi-row `VALUES`.
//! Larger `INSERT`s keep Diesel's multi-row `VALUES`, compiled at each use (in chunks of
//! SQLite's bind-parameter limit).

use chrono::{DateTime, Utc};
use dal_core::TaskExecution;
use dal_core::event::NewEvent;
use dal_diesel::prepared::PreparedAs;
use dal_diesel::row::Row;
use dal_diesel::types::{Id, Instant, Json};
use diesel::SqliteConnection;
use diesel::expression::Expression;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment};
use diesel::sql_types::{Integer, Nullable, Text};
use diesel::sqlite::Sqlite;

/// The most rows an `INSERT` of a fixed shape carries (1,024 task rows are 12,288 parameters,
/// well under SQLite's 32,766): a batch create of 1,000 tasks is a common large batch. The cost
/// is memory on each connection that has used a large shape: the tasks' and the events' shapes
/// of 1,024 rows hold about 1.8 MiB of compiled statement together, those of 512 rows 0.9 MiB
/// (`sqlite3_memory_used` around their first use).
pub(crate) const SHAPED_UP_TO: usize = 1024;

/// Whether `rows` rows are inserted in a fixed shape.
pub(crate) fn shaped(rows: usize) -> bool {
    (2..=SHAPED_UP_TO).contains(&rows)
}

/// The rows of the shape that carries `rows` rows: the next power of two, at least 2.
fn shape_of(rows: usize) -> usize {
    rows.next_power_of_two().max(2)
}

/// A row of a fixed-shape `INSERT`.
pub(crate) trait ShapedRow {
    /// `table (column, ...)`.
    const INTO: &'static str;
    /// Its parameters.
    const BINDS: usize;
    /// Binds the row's values, comma-separated, in the order of [`ShapedRow::INTO`].
    fn walk_binds<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()>;
}

/// The statement cache's key of the shape of `N` rows of table `K`.
struct Shape<K, const N: usize>(std::marker::PhantomData<K>);

/// The statement: its rows, its shape, and what it returns (`()`: nothing).
struct Shaped<R, Ret> {
    rows: Vec<R>,
    shape: usize,
    returning: Ret,
}

impl<R: ShapedRow, Ret> Shaped<R, Ret> {
    fn new(rows: Vec<R>, returning: Ret) -> Self {
        let shape = shape_of(rows.len());
        Shaped {
            rows,
            shape,
            returning,
        }
    }
}

/// Runs `$run` on the statement kept prepared under its shape's key (of table `$key`).
macro_rules! by_shape {
    ($statement:expr, $key:ty, $run:ident, $conn:expr) => {{
        let statement = $statement;
        match statement.shape {
            2 => PreparedAs::<Shape<$key, 2>, _>::new(statement).$run($conn),
            4 => PreparedAs::<Shape<$key, 4>, _>::new(statement).$run($conn),
            8 => PreparedAs::<Shape<$key, 8>, _>::new(statement).$run($conn),
            16 => PreparedAs::<Shape<$key, 16>, _>::new(statement).$run($conn),
            32 => PreparedAs::<Shape<$key, 32>, _>::new(statement).$run($conn),
            64 => PreparedAs::<Shape<$key, 64>, _>::new(statement).$run($conn),
            128 => PreparedAs::<Shape<$key, 128>, _>::new(statement).$run($conn),
            256 => PreparedAs::<Shape<$key, 256>, _>::new(statement).$run($conn),
            512 => PreparedAs::<Shape<$key, 512>, _>::new(statement).$run($conn),
            1024 => PreparedAs::<Shape<$key, 1024>, _>::new(statement).$run($conn),
            rows => Err(diesel::result::Error::QueryBuilderError(
                format!("no INSERT shape of {rows} rows").into(),
            )),
        }
    }};
}

/// Inserts the events `rows` (2 to [`SHAPED_UP_TO`]) in one fixed-shape statement.
pub(crate) fn insert_events(
    conn: &mut SqliteConnection,
    rows: Vec<EventValues<'_>>,
) -> QueryResult<usize> {
    by_shape!(Shaped::new(rows, ()), Events, execute, conn)
}

/// Inserts the tasks `rows` (2 to [`SHAPED_UP_TO`]) in one fixed-shape statement and returns
/// them as inserted. Each function has its own key: a key names one statement text.
pub(crate) fn insert_returning(
    conn: &mut SqliteConnection,
    rows: Vec<TaskValues<'_>>,
) -> QueryResult<Vec<Row>> {
    by_shape!(
        Shaped::new(rows, Returning(Row::as_returning())),
        Tasks,
        get_results,
        conn
    )
}

/// ` RETURNING <expr>`.
struct Returning<E>(E);

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Returning<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(" RETURNING ");
        self.0.walk_ast(out)
    }
}

impl<R, E: Expression> Query for Shaped<R, Returning<E>> {
    type SqlType = E::SqlType;
}

impl<R: ShapedRow, Ret: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Shaped<R, Ret> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("INSERT INTO ");
        out.push_sql(R::INTO);
        out.push_sql(" SELECT * FROM (VALUES ");
        for slot in 0..self.shape {
            out.push_sql(if slot == 0 { "(" } else { ", (" });
            match self.rows.get(slot) {
                Some(row) => row.walk_binds(out.reborrow())?,
                None => {
                    for column in 0..R::BINDS {
                        if column > 0 {
                            out.push_sql(", ");
                        }
                        out.push_bind_param::<Nullable<Text>, Option<&str>>(&None)?;
                    }
                }
            }
            out.push_sql(")");
        }
        out.push_sql(") WHERE column1 IS NOT NULL");
        self.returning.walk_ast(out)
    }
}

/// Binds each value as its SQL type, comma-separated.
macro_rules! binds {
    ($out:ident; $first_type:ty => $first:expr, $($sql_type:ty => $value:expr,)*) => {{
        $out.push_bind_param::<$first_type, _>($first)?;
        $(
            $out.push_sql(", ");
            $out.push_bind_param::<$sql_type, _>($value)?;
        )*
        Ok(())
    }};
}

/// A new task's row (the columns of `dal_diesel::row::NewRow`).
pub(crate) struct TaskValues<'a> {
    task: &'a TaskExecution,
    status: &'static str,
    due_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a TaskExecution> for TaskValues<'a> {
    fn from(task: &'a TaskExecution) -> Self {
        TaskValues {
            task,
            status: task.status.as_str(),
            due_at: dal_core::plan::due_at(task.status, task.retry_at, task.created_at),
        }
    }
}

/// The statement cache's name of the tasks' shapes (with `RETURNING`).
struct Tasks;

impl ShapedRow for TaskValues<'_> {
    const INTO: &'static str = "task_executions (id, workflow_execution_id, task_name, status, \
        attempt, max_attempts, trigger_rules, task_configuration, retry_at, created_at, \
        updated_at, due_at)";
    const BINDS: usize = dal_diesel::row::NewRow::BINDS;

    fn walk_binds<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let task = self.task;
        binds!(out;
            Id => &task.id,
            Id => &task.workflow_execution_id,
            Text => &task.task_name,
            Text => &self.status,
            Integer => &task.attempt,
            Integer => &task.max_attempts,
            Json => &task.trigger_rules,
            Json => &task.task_configuration,
            Nullable<Instant> => &task.retry_at,
            Instant => &task.created_at,
            Instant => &task.updated_at,
            Nullable<Instant> => &self.due_at,
        )
    }
}

/// An event's row (the columns of `dal_diesel::row::NewEventRow`).
pub(crate) struct EventValues<'a> {
    event: &'a NewEvent,
    event_type: &'static str,
}

impl<'a> From<&'a NewEvent> for EventValues<'a> {
    fn from(event: &'a NewEvent) -> Self {
        EventValues {
            event,
            event_type: event.event_type.as_str(),
        }
    }
}

/// The statement cache's name of the events' shapes.
struct Events;

impl ShapedRow for EventValues<'_> {
    const INTO: &'static str = "execution_events (id, workflow_execution_id, task_execution_id, \
        event_type, event_data, runner_id, created_at)";
    const BINDS: usize = dal_diesel::row::NewEventRow::BINDS;

    fn walk_binds<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let event = self.event;
        binds!(out;
            Id => &event.id,
            Id => &event.workflow_execution_id,
            Id => &event.task_execution_id,
            Text => &self.event_type,
            Json => &event.event_data,
            Nullable<Id> => &event.runner_id,
            Instant => &event.created_at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row type names one column per parameter it binds (the suite checks the values).
    #[test]
    fn each_row_names_one_column_per_parameter() {
        for (into, binds) in [
            (TaskValues::INTO, TaskValues::BINDS),
            (EventValues::INTO, EventValues::BINDS),
        ] {
            let columns = into
                .split_once('(')
                .map(|(_, list)| list.trim_end_matches(')').split(',').count());
            assert_eq!(columns, Some(binds), "{into}");
        }
    }

    /// Shapes are powers of two from 2 to the limit, and only batches of 2 to 1,024 rows use one.
    #[test]
    fn shapes() {
        let used: Vec<bool> = [0, 1, 2, 256, 257, 1024, 1025]
            .into_iter()
            .map(shaped)
            .collect();
        assert_eq!(used, [false, false, true, true, true, true, false]);
        let shapes: Vec<usize> = [2, 3, 4, 5, 31, 32, 33, 129, 255, 256, 257, 513, 1000, 1024]
            .into_iter()
            .map(shape_of)
            .collect();
        assert_eq!(
            shapes,
            [2, 4, 4, 8, 32, 32, 64, 256, 256, 256, 512, 1024, 1024, 1024]
        );
    }
}
