//! The Diesel schema of the PostgreSQL database (see `migrations/`).

diesel::table! {
    /// Task executions.
    task_executions (id) {
        /// UUIDv7.
        id -> Uuid,
        /// The workflow execution.
        workflow_execution_id -> Uuid,
        /// 1 to 255 characters.
        task_name -> Text,
        /// `TaskStatus::as_str`.
        status -> Text,
        /// 1 to `max_attempts`.
        attempt -> Integer,
        /// At least 1.
        max_attempts -> Integer,
        /// Trigger rules.
        trigger_rules -> Jsonb,
        /// Configuration.
        task_configuration -> Jsonb,
        /// Reason of the current outcome.
        error_details -> Nullable<Text>,
        /// Most recent error.
        last_error -> Nullable<Text>,
        /// When a retry is due.
        retry_at -> Nullable<Timestamptz>,
        /// When the current attempt started.
        started_at -> Nullable<Timestamptz>,
        /// When the task reached a terminal status.
        completed_at -> Nullable<Timestamptz>,
        /// Resets after a presumed runner death.
        recovery_attempts -> Integer,
        /// When last reset for recovery.
        last_recovery_at -> Nullable<Timestamptz>,
        /// The runner holding the claim.
        claimed_by -> Nullable<Uuid>,
        /// The claim's last heartbeat.
        heartbeat_at -> Nullable<Timestamptz>,
        /// When abandoned.
        abandoned_at -> Nullable<Timestamptz>,
        /// Creation time.
        created_at -> Timestamptz,
        /// Last change.
        updated_at -> Timestamptz,
        /// Claims so far; fences leases.
        claim_count -> Integer,
        /// A Ready task's queue position: when it becomes claimable (`dal_core::plan::due_at`).
        due_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// The execution history, append-only.
    execution_events (seq) {
        /// Position in the whole history.
        seq -> BigInt,
        /// UUIDv7.
        id -> Uuid,
        /// The task's workflow execution.
        workflow_execution_id -> Uuid,
        /// The task.
        task_execution_id -> Uuid,
        /// `EventType::as_str`.
        event_type -> Text,
        /// Arguments and counters.
        event_data -> Jsonb,
        /// The runner that made the change.
        runner_id -> Nullable<Uuid>,
        /// When.
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// Not a table: the name the logged statements give, in a `WITH`, to the task rows a write
    /// returned (the columns the event needs).
    changed (id) {
        /// The task.
        id -> Uuid,
        /// Its workflow execution.
        workflow_execution_id -> Uuid,
        /// Counters after the change.
        attempt -> Integer,
        /// Counters after the change.
        claim_count -> Integer,
        /// Counters after the change.
        recovery_attempts -> Integer,
    }
}

diesel::table! {
    /// Not a table: the name a multi-row write gives, in a `WITH`, to the ids of the rows it
    /// changes, selected and locked before it (see `history::Targets`).
    targets (id) {
        /// The task.
        id -> Uuid,
    }
}

diesel::allow_tables_to_appear_in_same_query!(task_executions, targets);
