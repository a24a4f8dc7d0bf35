//! The Diesel schema of the SQLite database (see `migrations/`).

diesel::table! {
    /// Task executions: ids as 16-byte BLOBs, times as microseconds since the Unix epoch.
    task_executions (id) {
        /// UUIDv7, 16 bytes.
        id -> Binary,
        /// UUID, 16 bytes.
        workflow_execution_id -> Binary,
        /// 1 to 255 characters.
        task_name -> Text,
        /// `TaskStatus::as_str`.
        status -> Text,
        /// 1 to `max_attempts`.
        attempt -> Integer,
        /// At least 1.
        max_attempts -> Integer,
        /// JSON text.
        trigger_rules -> Text,
        /// JSON text.
        task_configuration -> Text,
        /// Reason of the current outcome.
        error_details -> Nullable<Text>,
        /// Most recent error.
        last_error -> Nullable<Text>,
        /// Microseconds.
        retry_at -> Nullable<BigInt>,
        /// Microseconds.
        started_at -> Nullable<BigInt>,
        /// Microseconds.
        completed_at -> Nullable<BigInt>,
        /// Resets after a presumed runner death.
        recovery_attempts -> Integer,
        /// Microseconds.
        last_recovery_at -> Nullable<BigInt>,
        /// Runner UUID, 16 bytes.
        claimed_by -> Nullable<Binary>,
        /// Microseconds.
        heartbeat_at -> Nullable<BigInt>,
        /// Microseconds.
        abandoned_at -> Nullable<BigInt>,
        /// Microseconds.
        created_at -> BigInt,
        /// Microseconds.
        updated_at -> BigInt,
        /// Claims so far; fences leases.
        claim_count -> Integer,
        /// A Ready task's queue position in microseconds (`dal_core::plan::due_at`).
        due_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The execution history, append-only.
    execution_events (seq) {
        /// Position in the whole history (the rowid).
        seq -> BigInt,
        /// UUIDv7, 16 bytes.
        id -> Binary,
        /// UUID, 16 bytes.
        workflow_execution_id -> Binary,
        /// UUID, 16 bytes.
        task_execution_id -> Binary,
        /// `EventType::as_str`.
        event_type -> Text,
        /// JSON text.
        event_data -> Text,
        /// Runner UUID, 16 bytes.
        runner_id -> Nullable<Binary>,
        /// Microseconds.
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(task_executions, execution_events);
