//! Reading the execution history.

use uuid::Uuid;

use super::Store;
use crate::ExecutionEvent;
use crate::backend::Backend;
use crate::error::Result;

/// The execution history: every change to a task leaves one event, written in the same atomic
/// unit as the change (heartbeats excepted); a rejected or rolled-back call leaves none.
pub trait HistoryStore: Send + Sync {
    /// The events of one task, oldest first (one `SELECT`). An unknown id has no events.
    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>>;

    /// Up to `limit` events of a workflow execution, oldest first, starting after the event
    /// whose `seq` is `after` (keyset pagination: pass the last `seq` of a page to get the
    /// next; `None` starts at the beginning). One `SELECT`; a `limit` of 0 returns nothing
    /// without a round trip.
    ///
    /// `seq` is allocated when an event is written, which on PostgreSQL is not quite commit
    /// order: a reader paging through a workflow that is changing at that moment may see a
    /// later page skip an event committed just after it read. Page again from an earlier
    /// `seq` to be sure, or read a workflow's history once it has finished.
    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>>;
}

impl<B: Backend> HistoryStore for Store<B> {
    fn events_for_task(&self, task_execution_id: Uuid) -> Result<Vec<ExecutionEvent>> {
        let result = self.backend.events_for_task(task_execution_id);
        self.trace("events_for_task", Some(task_execution_id), &result, 1);
        result
    }

    fn events_for_workflow(
        &self,
        workflow_execution_id: Uuid,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ExecutionEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let result = self.backend.events_for_workflow(
            workflow_execution_id,
            after.unwrap_or(i64::MIN),
            limit,
        );
        self.trace("events_for_workflow", None, &result, 1);
        result
    }
}
