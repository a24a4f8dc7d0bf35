//! Retention: removing finished workflow executions, with their tasks and history.

use chrono::{DateTime, Utc};

use super::Store;
use crate::backend::Backend;
use crate::error::{Problem, Result, ValidationError};
use crate::{PruneCursor, Pruned, clock, validate};

/// The most finished tasks one `prune_finished` batch may scan.
pub const MAX_PRUNE_BATCH: u32 = 10_000;

/// Retention for engines that keep finished work for a while, then drop it (as River's job
/// cleaner and Oban's pruner do for their queues).
pub trait RetentionStore: Send + Sync {
    /// Deletes one bounded batch of finished workflow executions: those whose every task is
    /// finished (`Completed`, `Failed` or `Skipped`) and whose last change is before
    /// `older_than`, each with all its tasks and their events.
    ///
    /// A pass walks the finished tasks older than `older_than` in the order they finished
    /// (`completed_at`, then id), `limit` (1 to [`MAX_PRUNE_BATCH`]) per call: start with
    /// `after = None` and pass each call's [`Pruned::next`] to the next until it is `None`.
    /// A batch removes the workflow executions of the tasks it scanned that are finished
    /// entirely; one that still has unfinished tasks is passed over, and the next pass looks
    /// at it again. So each call scans at most `limit` finished tasks and removes at most
    /// `limit` workflow executions, however large the store.
    ///
    /// Atomic: a batch removes whole workflow executions or nothing. The condition is checked
    /// on the rows as the statement locks them (in id order, as every multi-row write does),
    /// so a task reset or retried meanwhile keeps its workflow execution, and no concurrent
    /// call can deadlock with it. PostgreSQL: one statement. SQLite: the batch is read and
    /// checked without the write lock (one or two reads); only when something looks finished,
    /// one `BEGIN IMMEDIATE` transaction checks those again and deletes them.
    ///
    /// Errors: [`crate::DalError::Validation`] for `older_than` out of range or `limit` out of
    /// 1 to [`MAX_PRUNE_BATCH`] (nothing sent).
    fn prune_finished(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned>;
}

impl<B: Backend> RetentionStore for Store<B> {
    fn prune_finished(
        &self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Result<Pruned> {
        validate::time("older_than", older_than)?;
        if !(1..=MAX_PRUNE_BATCH).contains(&limit) {
            return Err(ValidationError::new(
                "limit",
                Problem::OutOfRange {
                    min: 1,
                    max: i64::from(MAX_PRUNE_BATCH),
                    value: i64::from(limit),
                },
            )
            .into());
        }
        if let Some(cursor) = &after {
            validate::time("after.completed_at", cursor.completed_at)?;
        }
        let older_than = clock::to_micros(older_than);
        let after = after.map(|cursor| PruneCursor {
            completed_at: clock::to_micros(cursor.completed_at),
            ..cursor
        });
        let result = self
            .retrying("prune_finished", || self.backend.prune(older_than, limit, after))
            .map(|mut pruned| {
                pruned.workflows.sort_unstable();
                pruned
            });
        self.trace("prune_finished", None, &result, 1);
        result
    }
}
