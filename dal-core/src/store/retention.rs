//! Retention: removing finished workflow executions, with their tasks and history.

use chrono::{DateTime, Utc};

use super::Store;
use crate::backend::Backend;
use crate::error::{Problem, Result, ValidationError};
use crate::{PruneCursor, Pruned, clock, validate};

/// The most finished tasks one `prune_finished` batch may scan.
pub const MAX_PRUNE_BATCH: u32 = 10_000;

/// Retention: finished work kept for a while, then dropped.
pub trait RetentionStore: Send + Sync {
    /// Deletes one bounded batch of finished workflow executions (every task terminal, none
    /// changed since `older_than`), each whole: tasks and events. A pass walks the tasks
    /// finished before `older_than` in (`completed_at`, id) order, `limit` (1 to
    /// [`MAX_PRUNE_BATCH`]) per call: start with `after = None` and pass each [`Pruned::next`]
    /// on until it is `None`. Atomic, the condition re-checked on the rows as locked in id
    /// order. PostgreSQL: one statement; SQLite: one or two reads, then one `BEGIN IMMEDIATE`
    /// transaction only when something is to go. Errors: [`crate::DalError::Validation`].
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
        self.traced(
            "prune_finished",
            self.retrying("prune_finished", || self.backend.prune(older_than, limit, after)).map(
                |mut pruned| {
                    pruned.workflows.sort_unstable();
                    pruned
                },
            ),
        )
    }
}
