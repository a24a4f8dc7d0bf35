//! The Diesel schema, one for both databases (their `migrations/` create the same tables in
//! each database's types; see [`crate::types`] for how each stores ids, times and JSON).

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{Id, Json, Instant};

    /// Task executions.
    task_executions (id) {
        /// UUIDv7.
        id -> Id,
        /// The workflow execution.
        workflow_execution_id -> Id,
        /// 1 to 255 characters.
        task_name -> Text,
        /// `TaskStatus::as_str`.
        status -> Text,
        /// 1 to `max_attempts`.
        attempt -> Integer,
        /// At least 1.
        max_attempts -> Integer,
        /// Trigger rules.
        trigger_rules -> Json,
        /// Configuration.
        task_configuration -> Json,
        /// Reason of the current outcome.
        error_details -> Nullable<Text>,
        /// Most recent error.
        last_error -> Nullable<Text>,
        /// When a retry is due.
        retry_at -> Nullable<Instant>,
        /// When the current attempt started.
        started_at -> Nullable<Instant>,
        /// When the task reached a terminal status.
        completed_at -> Nullable<Instant>,
        /// Resets after a presumed runner death.
        recovery_attempts -> Integer,
        /// When last reset for recovery.
        last_recovery_at -> Nullable<Instant>,
        /// The runner holding the claim.
        claimed_by -> Nullable<Id>,
        /// The claim's last heartbeat.
        heartbeat_at -> Nullable<Instant>,
        /// When abandoned.
        abandoned_at -> Nullable<Instant>,
        /// Creation time.
        created_at -> Instant,
        /// Last change.
        updated_at -> Instant,
        /// Claims so far; fences leases.
        claim_count -> Integer,
        /// A Ready task's queue position: when it becomes claimable (`dal_core::plan::due_at`).
        due_at -> Nullable<Instant>,
        /// `SubStatus::as_str` of a Running task.
        sub_status -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{Id, Json, Instant};

    /// The execution history, append-only.
    execution_events (seq) {
        /// Position in the whole history.
        seq -> BigInt,
        /// UUIDv7.
        id -> Id,
        /// The task's workflow execution.
        workflow_execution_id -> Id,
        /// The task.
        task_execution_id -> Id,
        /// `EventType::as_str`.
        event_type -> Text,
        /// Arguments and counters.
        event_data -> Json,
        /// The runner that made the change.
        runner_id -> Nullable<Id>,
        /// When.
        created_at -> Instant,
    }
}

diesel::allow_tables_to_appear_in_same_query!(task_executions, execution_events);
