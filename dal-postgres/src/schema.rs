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
    }
}
