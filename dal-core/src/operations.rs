//! Every operation of the store traits, listed once, for code generated per operation: the
//! async interface ([`crate::AsyncStore`]) and, in the conformance suite, a blocking store that
//! runs each call through it.
//!
//! `store_operations!(callback)` calls `callback!` with the list. A parameter is written with
//! its kind: `val T` (passed by value), `ref T` (passed as `&T`, owned by the async call as
//! `T::Owned`), `strs` (`&[&str]`, owned as `Vec<String>`).

/// Calls `$callback!` with every operation of the store traits, grouped by trait.
#[doc(hidden)]
#[macro_export]
macro_rules! store_operations {
    ($callback:ident) => {
        $callback! {
            TaskStore {
                create(new: ref NewTaskExecution) -> TaskExecution;
                create_many(news: ref [NewTaskExecution]) -> Vec<TaskExecution>;
                get(id: val Uuid) -> TaskExecution;
                list_for_workflow(workflow_execution_id: val Uuid) -> Vec<TaskExecution>;
                transition(id: val Uuid, transition: val Transition) -> TaskExecution;
                set_sub_status(id: val Uuid, sub_status: val Option<SubStatus>) -> TaskExecution;
                mark_ready(id: val Uuid) -> TaskExecution;
                mark_skipped(id: val Uuid, reason: ref str) -> TaskExecution;
                mark_running(id: val Uuid) -> TaskExecution;
                mark_completed(id: val Uuid) -> TaskExecution;
                mark_failed(id: val Uuid, error: ref str) -> TaskExecution;
                mark_abandoned(id: val Uuid, reason: ref str) -> TaskExecution;
                schedule_retry(id: val Uuid, retry_at: val DateTime<Utc>) -> TaskExecution;
                reset_task_for_recovery(id: val Uuid) -> TaskExecution;
                reset_retry_state(id: val Uuid) -> TaskExecution;
            }
            ClaimStore {
                claim_ready(runner_id: val Uuid, limit: val u32) -> Vec<Claimed>;
                claim_task(id: val Uuid, runner_id: val Uuid) -> Claimed;
                heartbeat(lease: ref Lease) -> TaskExecution;
                complete(lease: ref Lease) -> TaskExecution;
                fail(lease: ref Lease, error: ref str) -> TaskExecution;
                fail_and_retry(
                    lease: ref Lease,
                    error: ref str,
                    retry_at: val DateTime<Utc>
                ) -> TaskExecution;
                complete_many(leases: ref [Lease]) -> Completion;
                finish_and_claim(
                    runner_id: val Uuid,
                    finished: ref Finished,
                    limit: val u32
                ) -> Cycle;
                release(lease: ref Lease) -> TaskExecution;
                find_stale_claims(older_than: val DateTime<Utc>) -> Vec<TaskExecution>;
                recover_stale_claims(
                    older_than: val DateTime<Utc>,
                    max_recovery_attempts: val i32
                ) -> Recovery;
                list_ready(limit: val u32) -> Vec<TaskExecution>;
                list_due_retries(limit: val u32) -> Vec<TaskExecution>;
            }
            HistoryStore {
                events_for_task(task_execution_id: val Uuid) -> Vec<ExecutionEvent>;
                events_for_workflow(
                    workflow_execution_id: val Uuid,
                    after: val Option<i64>,
                    limit: val u32
                ) -> Vec<ExecutionEvent>;
            }
            WorkflowReads {
                pending_tasks(workflow_execution_ids: ref [Uuid]) -> Vec<TaskExecution>;
                task_statuses(
                    workflow_execution_id: val Uuid,
                    task_names: strs
                ) -> HashMap<String, TaskStatus>;
                statuses_for_workflows(
                    workflow_execution_ids: ref [Uuid]
                ) -> HashMap<Uuid, HashMap<String, TaskStatus>>;
                is_workflow_complete(workflow_execution_id: val Uuid) -> bool;
                complete_workflows(workflow_execution_ids: ref [Uuid]) -> Vec<Uuid>;
                has_abandoned_task(workflow_execution_id: val Uuid) -> bool;
                retry_stats(workflow_execution_id: val Uuid) -> RetryStats;
                exhausted_tasks(workflow_execution_id: val Uuid) -> Vec<TaskExecution>;
                count_by_status() -> StatusCounts;
                queue_lag() -> QueueLag;
                deferred_tasks(workflow_execution_ids: ref [Uuid]) -> Vec<TaskExecution>;
            }
            RetentionStore {
                prune_finished(
                    older_than: val DateTime<Utc>,
                    limit: val u32,
                    after: val Option<PruneCursor>
                ) -> Pruned;
            }
        }
    };
}

/// The type of a parameter of kind `$kind` in an operation's signature.
#[doc(hidden)]
#[macro_export]
macro_rules! operation_param {
    (val $t:ty) => {
        $t
    };
    (ref $t:ty) => {
        &$t
    };
    (strs) => {
        &[&str]
    };
}
