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

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::Id;

    /// Not a table (PostgreSQL): the name the logged statements give, in a `WITH`, to the task rows a write
    /// returned (the columns the event needs).
    changed (id) {
        /// The task.
        id -> Id,
        /// Its workflow execution.
        workflow_execution_id -> Id,
        /// Counters after the change.
        attempt -> Integer,
        /// Counters after the change.
        claim_count -> Integer,
        /// Counters after the change.
        recovery_attempts -> Integer,
        /// The status after the change (a runner cycle's events depend on it).
        status -> Text,
        /// The error after the change (a runner cycle's `failed` events carry it).
        error_details -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{Id, Instant, Json};

    /// Not a table (PostgreSQL): the name a multi-row write gives, in a `WITH`, to the ids of the rows it
    /// changes, selected and locked before it (see the PostgreSQL backend's `history::Targets`).
    targets (id) {
        /// The task.
        id -> Id,
        /// A runner cycle's failure or retry: the error the attempt failed with (`NULL`: the
        /// task completes).
        error -> Nullable<Text>,
        /// A runner cycle's retry: when the next attempt is due (`NULL`: no retry, or none
        /// left, and the task fails).
        retry_at -> Nullable<Instant>,
        /// A runner cycle's retry: its event's arguments, as the store made them.
        data -> Nullable<Json>,
    }
}

diesel::table! {
    use crate::types::Id;

    /// Not a table (PostgreSQL): the name a runner cycle gives, in a `WITH`, to the ids of the
    /// tasks it claims, selected and locked (`SKIP LOCKED`) before it claims them.
    fresh (id) {
        /// The task.
        id -> Id,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    task_executions,
    execution_events,
    targets,
    fresh,
    changed
);
