//! The execution history: one event per change of a task, written atomically with it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::TaskExecution;

crate::status::text_enum! {
    /// What happened to a task. The text form ([`EventType::as_str`]) is stored by both backends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum EventType / UnknownEventType {
        /// `create` / `create_many`.
        Created = "created",
        /// `mark_ready`.
        Ready = "ready",
        /// `mark_running` (a start without a claim).
        Started = "started",
        /// `claim_ready`; the event's runner is the claimer.
        Claimed = "claimed",
        /// `mark_completed` / `complete`.
        Completed = "completed",
        /// `mark_failed` / `fail`; data: `error`.
        Failed = "failed",
        /// `mark_skipped`; data: `reason`.
        Skipped = "skipped",
        /// `mark_abandoned`, or a sweep at the recovery cap; data: `reason`.
        Abandoned = "abandoned",
        /// `schedule_retry`; data: `retry_at`. Or `fail_and_retry` (a failed attempt retried
        /// under its lease, one change); data: `retry_at` and `error`.
        RetryScheduled = "retry_scheduled",
        /// `reset_task_for_recovery`, or a sweep; data from a sweep: `stale_before`.
        Recovered = "recovered",
        /// `reset_retry_state`.
        Reset = "reset",
        /// `release`.
        Released = "released",
        /// `set_sub_status(Some(Deferred))`; data: `sub_status`.
        Deferred = "deferred",
        /// `set_sub_status` to `Active` or to none; data: `sub_status` (`"active"` or null).
        Resumed = "resumed",
    }
}

/// An event type text that no [`EventType`] has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

/// One event of the history, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionEvent {
    /// The event's position in the whole history: increasing in the order the events were
    /// written; the cursor of `events_for_workflow`.
    pub seq: i64,
    /// A UUIDv7 carrying the event's time.
    pub id: Uuid,
    /// The task's workflow execution.
    pub workflow_execution_id: Uuid,
    /// The task.
    pub task_execution_id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// The details: the operation's arguments (`reason`, `error`, `retry_at`, `stale_before`)
    /// and the task's counters after the change (`attempt`, `claim`, `recovery_attempts`).
    pub event_data: Value,
    /// The runner that made the change (claims and lease-guarded calls), if any.
    pub runner_id: Option<Uuid>,
    /// When it happened (the store's clock).
    pub created_at: DateTime<Utc>,
}

/// The event an operation writes for each task it changes, less what depends on the row.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    /// What happened.
    pub event_type: EventType,
    /// The operation's arguments, as a JSON object; the row's counters are added to it.
    pub data: Map<String, Value>,
    /// The runner that makes the change, if any.
    pub runner_id: Option<Uuid>,
}

impl EventSpec {
    /// An event of `event_type` with no arguments and no runner.
    pub fn new(event_type: EventType) -> Self {
        EventSpec { event_type, data: Map::new(), runner_id: None }
    }

    /// The same event with one more argument.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// The arguments as one JSON value, for backends that add the counters in SQL.
    pub fn data_value(&self) -> Value {
        Value::Object(self.data.clone())
    }

    /// The complete data of the event for `row` (the row as the change left it): the
    /// arguments, then the counters `attempt`, `claim` and `recovery_attempts`. A backend that
    /// builds the data in SQL must produce exactly this.
    pub fn data_for(&self, row: &TaskExecution) -> Value {
        let mut data = self.data.clone();
        data.insert("attempt".into(), row.attempt.into());
        data.insert("claim".into(), row.claim_count.into());
        data.insert("recovery_attempts".into(), row.recovery_attempts.into());
        Value::Object(data)
    }
}

/// A time as event data: RFC 3339 in UTC with microseconds.
pub fn time_value(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(SecondsFormat::Micros, true))
}
