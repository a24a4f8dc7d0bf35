//! The Diesel schema, one for both databases (their `migrations/` create the same tables in
//! each database's types; see [`crate::types`] for how each stores ids, times and JSON). The
//! columns are the fields of `dal_core::TaskExecution` and `dal_core::ExecutionEvent`.
#![allow(missing_docs)]

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{Id, Json, Instant};

    /// Task executions.
    task_executions (id) {
        id -> Id,
        workflow_execution_id -> Id,
        task_name -> Text,
        status -> Text,
        attempt -> Integer,
        max_attempts -> Integer,
        trigger_rules -> Json,
        task_configuration -> Json,
        error_details -> Nullable<Text>,
        last_error -> Nullable<Text>,
        retry_at -> Nullable<Instant>,
        started_at -> Nullable<Instant>,
        completed_at -> Nullable<Instant>,
        recovery_attempts -> Integer,
        last_recovery_at -> Nullable<Instant>,
        claimed_by -> Nullable<Id>,
        heartbeat_at -> Nullable<Instant>,
        abandoned_at -> Nullable<Instant>,
        created_at -> Instant,
        updated_at -> Instant,
        claim_count -> Integer,
        /// A Ready task's queue position: when it becomes claimable (`dal_core::plan::due_at`).
        due_at -> Nullable<Instant>,
        sub_status -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{Id, Json, Instant};

    /// The execution history, append-only.
    execution_events (seq) {
        seq -> BigInt,
        id -> Id,
        workflow_execution_id -> Id,
        task_execution_id -> Id,
        event_type -> Text,
        event_data -> Json,
        runner_id -> Nullable<Id>,
        created_at -> Instant,
    }
}

diesel::allow_tables_to_appear_in_same_query!(task_executions, execution_events);
