//! The state machine as data: which statuses a write may start from, what it sets on every
//! column, and the event it leaves. Every rule is here, once; a backend turns a [`Plan`] into
//! a guarded `UPDATE ... RETURNING` and decides nothing.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::to_micros;
use crate::error::{DalError, ValidationError};
use crate::event::{EventSpec, EventType, time_value};
use crate::status::StatusSet;
use crate::{Lease, SubStatus, TaskExecution, TaskStatus, validate};

use Assign::{Clear, Set};
use TaskStatus::*;

/// A change of status asked of one task, with its arguments (`TaskStore::transition`).
///
/// Exhaustive on purpose: the reference model of the tests matches every variant, so a new
/// transition does not build until it is modelled.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// `NotStarted` -> `Ready`.
    MarkReady,
    /// `NotStarted | Ready` -> `Skipped`, keeping the reason in `error_details`.
    MarkSkipped {
        /// Why the task is skipped.
        reason: String,
    },
    /// `Ready` -> `Running`; sets `started_at`.
    MarkRunning,
    /// `Running` -> `Completed`; sets `completed_at`, clears the claim.
    MarkCompleted,
    /// `Ready | Running` -> `Failed`; keeps the error in `error_details` and `last_error`.
    MarkFailed {
        /// The error.
        error: String,
    },
    /// Any non-terminal status -> `Failed` with `abandoned_at` set: the engine gave up on it.
    MarkAbandoned {
        /// Why the task is abandoned.
        reason: String,
    },
    /// `Running | Failed` -> `Ready` with `attempt + 1`, only while `attempt < max_attempts`.
    ScheduleRetry {
        /// When the retry becomes due.
        retry_at: DateTime<Utc>,
    },
    /// `Running | Ready` -> `Ready` with `recovery_attempts + 1`, after its runner was presumed
    /// dead.
    ResetForRecovery,
    /// `Ready | Completed | Failed | Skipped` -> `Ready` with attempt 1 and the retry, error and
    /// timing fields cleared (a manual re-run).
    ResetRetryState,
}

impl Transition {
    /// The plan that carries the transition out at `now`: one arm per transition.
    pub fn plan(&self, now: DateTime<Utc>) -> Plan {
        let (operation, from, effects, event): (_, &[TaskStatus], _, _) = match self {
            Transition::MarkReady => (
                "mark_ready",
                &[NotStarted],
                Effects::keep(Ready, now),
                EventSpec::new(EventType::Ready),
            ),
            Transition::MarkSkipped { reason } => (
                "mark_skipped",
                &[NotStarted, Ready],
                Effects {
                    error_details: Set(reason.clone()),
                    completed_at: Set(now),
                    ..Effects::unclaimed(Skipped, now)
                },
                EventSpec::new(EventType::Skipped).with("reason", reason.as_str()),
            ),
            Transition::MarkRunning => (
                "mark_running",
                &[Ready],
                Effects { started_at: Set(now), ..Effects::keep(Running, now) },
                EventSpec::new(EventType::Started),
            ),
            Transition::MarkCompleted => (
                "mark_completed",
                &[Running],
                Effects { completed_at: Set(now), ..Effects::unclaimed(Completed, now) },
                EventSpec::new(EventType::Completed),
            ),
            Transition::MarkFailed { error } => (
                "mark_failed",
                &[Ready, Running],
                Effects::failed(error, now),
                EventSpec::new(EventType::Failed).with("error", error.as_str()),
            ),
            Transition::MarkAbandoned { reason } => (
                "mark_abandoned",
                &[NotStarted, Ready, Running],
                Effects { abandoned_at: Set(now), ..Effects::failed(reason, now) },
                EventSpec::new(EventType::Abandoned).with("reason", reason.as_str()),
            ),
            Transition::ScheduleRetry { retry_at } => {
                let plan = Plan::retry(*retry_at, now);
                return Plan {
                    operation: "schedule_retry",
                    guard: Guard::from(&[Running, Failed]).with_attempt_left(),
                    ..plan
                };
            }
            Transition::ResetForRecovery => (
                "reset_task_for_recovery",
                &[Running, Ready],
                Effects {
                    recovery_attempts: Counter::Increment,
                    last_recovery_at: Set(now),
                    started_at: Clear,
                    ..Effects::unclaimed(Ready, now)
                },
                EventSpec::new(EventType::Recovered),
            ),
            Transition::ResetRetryState => (
                "reset_retry_state",
                &[Ready, Completed, Failed, Skipped],
                Effects {
                    attempt: Counter::Reset,
                    retry_at: Clear,
                    error_details: Clear,
                    last_error: Clear,
                    started_at: Clear,
                    completed_at: Clear,
                    abandoned_at: Clear,
                    ..Effects::unclaimed(Ready, now)
                },
                EventSpec::new(EventType::Reset),
            ),
        };
        Plan::new(operation, Guard::from(from), effects, Some(event))
    }

    /// The operation's name, as in traces.
    pub fn name(&self) -> &'static str {
        self.plan(DateTime::UNIX_EPOCH).operation
    }

    /// Checks the transition's arguments; rejected arguments write nothing.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Transition::MarkSkipped { reason } | Transition::MarkAbandoned { reason } => {
                validate::message("reason", reason)
            }
            Transition::MarkFailed { error } => validate::message("error", error),
            Transition::ScheduleRetry { retry_at } => validate::time("retry_at", *retry_at),
            _ => Ok(()),
        }
    }
}

/// The statuses a claimed task can be in: `Running`, or claimed and still `Ready`.
pub const CLAIMED: StatusSet = StatusSet::of(&[Running, Ready]);

/// One guarded write: which row it may touch, what it sets, and the event it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The operation's name, as in traces.
    pub operation: &'static str,
    /// The condition the row must meet, checked by the statement that writes.
    pub guard: Guard,
    /// What the statement sets.
    pub effects: Effects,
    /// The event written for each changed task in the same atomic unit; `None`: the change is
    /// not history (a heartbeat), or the store keeps none.
    pub event: Option<EventSpec>,
}

impl Plan {
    fn new(
        operation: &'static str,
        guard: Guard,
        effects: Effects,
        event: Option<EventSpec>,
    ) -> Plan {
        // Only a running task has a sub-status.
        let sub_status = match effects.status {
            Running => effects.sub_status,
            _ => Clear,
        };
        Plan { operation, guard, effects: Effects { sub_status, ..effects }, event }
    }

    /// The same plan, allowed only while `lease` is the task's current claim; its event names
    /// the lease's runner.
    pub fn leased(mut self, lease: Lease) -> Plan {
        self.guard.lease = Some(lease);
        if let Some(event) = &mut self.event {
            event.runner_id = Some(lease.runner_id);
        }
        self
    }

    /// The same plan without its event (the store keeps no history).
    pub fn unlogged(self) -> Plan {
        Plan { event: None, ..self }
    }

    /// Sets (or clears) the sub-status of a `Running` task; its event is `deferred` when the
    /// task is deferred, `resumed` otherwise, with the new `sub_status` (or null).
    pub fn sub_status(sub_status: Option<SubStatus>, now: DateTime<Utc>) -> Plan {
        let (event, value) = match sub_status {
            Some(SubStatus::Deferred) => (EventType::Deferred, "deferred".into()),
            Some(SubStatus::Active) => (EventType::Resumed, "active".into()),
            None => (EventType::Resumed, serde_json::Value::Null),
        };
        Plan::new(
            "set_sub_status",
            Guard::from(&[Running]),
            Effects { sub_status: sub_status.map_or(Clear, Set), ..Effects::keep(Running, now) },
            Some(EventSpec::new(event).with("sub_status", value)),
        )
    }

    /// A claim by `runner_id`: `Ready` -> `Running` with `claimed_by`, `heartbeat_at` and
    /// `started_at` set and `claim_count + 1`.
    pub fn claim(runner_id: Uuid, now: DateTime<Utc>) -> Plan {
        let mut event = EventSpec::new(EventType::Claimed);
        event.runner_id = Some(runner_id);
        Plan::new(
            "claim_ready",
            Guard::from(&[Ready]),
            Effects {
                claimed_by: Set(runner_id),
                heartbeat_at: Set(now),
                started_at: Set(now),
                claim_count: Counter::Increment,
                ..Effects::keep(Running, now)
            },
            Some(event),
        )
    }

    /// The claim of one given task: a claim, allowed only while the task is unclaimed and due.
    pub fn claim_task(runner_id: Uuid, now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::claim(runner_id, now);
        plan.operation = "claim_task";
        plan.guard.unclaimed = true;
        plan.guard.due_by = Some(now);
        plan
    }

    /// A heartbeat: `heartbeat_at = now`. Not history: no event.
    pub fn heartbeat(now: DateTime<Utc>) -> Plan {
        let effects = Effects { heartbeat_at: Set(now), ..Effects::keep(Running, now) };
        Plan::new("heartbeat", Guard::from(&[Running]), effects, None)
    }

    /// Gives a claimed task back: -> `Ready`, claim and `started_at` cleared, no attempt
    /// counted.
    pub fn release(now: DateTime<Utc>) -> Plan {
        Plan::new(
            "release",
            Guard { from: CLAIMED, ..Guard::default() },
            Effects { started_at: Clear, ..Effects::unclaimed(Ready, now) },
            Some(EventSpec::new(EventType::Released)),
        )
    }

    /// `Ready` again for the next attempt at `retry_at` (cut to microseconds): `attempt + 1`,
    /// the claim, `error_details` and the attempt's times cleared; event `retry_scheduled`.
    /// The guard is the caller's.
    fn retry(retry_at: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
        let retry_at = to_micros(retry_at);
        Plan::new(
            "schedule_retry",
            Guard::default(),
            Effects {
                attempt: Counter::Increment,
                retry_at: Set(retry_at),
                error_details: Clear,
                started_at: Clear,
                completed_at: Clear,
                abandoned_at: Clear,
                ..Effects::unclaimed(Ready, now)
            },
            Some(EventSpec::new(EventType::RetryScheduled).with("retry_at", time_value(retry_at))),
        )
    }

    /// A failed attempt retried at once: `Running` -> `Ready` as `schedule_retry` leaves it,
    /// with `last_error = error`, only while an attempt is left; one `retry_scheduled` event
    /// with `retry_at` and `error`.
    pub fn fail_and_retry(error: &str, retry_at: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::retry(retry_at, now);
        plan.operation = "fail_and_retry";
        plan.guard = Guard::from(&[Running]).with_attempt_left();
        plan.effects.last_error = Set(error.to_owned());
        plan.event = plan.event.map(|event| event.with("error", error));
        plan
    }

    /// `MarkFailed` from `Running`, the failure of a runner cycle: with `attempt_left`
    /// `Some(false)`, what a retried attempt becomes on its last attempt.
    pub fn fail_running(error: &str, now: DateTime<Utc>, attempt_left: Option<bool>) -> Plan {
        let mut plan = Transition::MarkFailed { error: error.to_owned() }.plan(now);
        plan.guard = Guard { attempt_left, ..Guard::from(&[Running]) };
        plan
    }

    /// The reset of a claim whose heartbeat is older than `stale_before`: as
    /// `reset_task_for_recovery`, from a claimed status.
    pub fn recover_stale(stale_before: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
        let mut plan = Transition::ResetForRecovery.plan(now);
        plan.operation = "recover_stale_claims";
        plan.guard.from = CLAIMED;
        plan.event = plan.event.map(|event| event.with("stale_before", time_value(stale_before)));
        plan
    }

    /// The abandonment of a stale claim that reached the recovery cap: as `mark_abandoned`.
    pub fn abandon_stale(max_recovery_attempts: i32, now: DateTime<Utc>) -> Plan {
        let reason = format!(
            "abandoned: its runner stopped heart-beating and the task was already recovered \
             {max_recovery_attempts} times"
        );
        let mut plan = Transition::MarkAbandoned { reason }.plan(now);
        plan.operation = "recover_stale_claims";
        plan.guard.from = CLAIMED;
        plan
    }
}

/// The condition of a guarded write, checked in the `WHERE` clause of the statement that
/// writes, so no read comes before the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Guard {
    /// The statuses the row may be in.
    pub from: StatusSet,
    /// `Some(true)`: `attempt < max_attempts` must hold; `Some(false)`: it must not.
    pub attempt_left: Option<bool>,
    /// When set, the row's claim must be this lease (`claimed_by`, `claim_count`); its task is
    /// the row written.
    pub lease: Option<Lease>,
    /// Whether the row must be unclaimed (`claimed_by IS NULL`).
    pub unclaimed: bool,
    /// When set, the row must be due by this time (`retry_at` unset or not after it).
    pub due_by: Option<DateTime<Utc>>,
}

impl Guard {
    fn from(statuses: &[TaskStatus]) -> Guard {
        Guard { from: StatusSet::of(statuses), ..Guard::default() }
    }

    fn with_attempt_left(self) -> Guard {
        Guard { attempt_left: Some(true), ..self }
    }

    /// Why a write guarded so did not touch task `id`, given the row as read after it (`None`:
    /// no such row); `to` is the status the write was to leave. `None` when the row meets the
    /// guard: it changed between the write and the read, and the write may be tried again.
    pub fn rejection(
        &self,
        id: Uuid,
        to: TaskStatus,
        row: Option<&TaskExecution>,
    ) -> Option<DalError> {
        let Some(row) = row else {
            return Some(DalError::NotFound { id });
        };
        if self.lease.is_some() && self.lease != row.lease() {
            return Some(DalError::ClaimLost { id });
        }
        if let (true, Some(runner_id)) = (self.unclaimed, row.claimed_by) {
            return Some(DalError::AlreadyClaimed { id, runner_id });
        }
        let attempt_left = row.attempt < row.max_attempts;
        if !self.from.contains(row.status) || self.attempt_left == Some(false) && attempt_left {
            return Some(DalError::InvalidTransition { id, from: row.status, to });
        }
        if self.attempt_left == Some(true) && !attempt_left {
            return Some(DalError::RetriesExhausted {
                id,
                attempt: row.attempt,
                max_attempts: row.max_attempts,
            });
        }
        match (self.due_by, row.retry_at) {
            (Some(due_by), Some(retry_at)) if retry_at > due_by => {
                Some(DalError::NotDue { id, retry_at })
            }
            _ => None,
        }
    }
}

/// What a guarded write sets. Every column a write may touch is listed (each field is the
/// column of its name), so that a backend writes one fixed statement for every plan.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Effects {
    /// The new status. A write that leaves the task `Ready` (re)queues it: its queue position
    /// becomes [`due_at`] of the retry time as written and `updated_at`.
    pub status: TaskStatus,
    /// `attempt`: kept, `+ 1`, or back to 1.
    pub attempt: Counter,
    /// `recovery_attempts`: kept or `+ 1`.
    pub recovery_attempts: Counter,
    /// `claim_count`: kept or `+ 1` (by a claim).
    pub claim_count: Counter,
    pub error_details: Assign<String>,
    pub last_error: Assign<String>,
    pub retry_at: Assign<DateTime<Utc>>,
    pub started_at: Assign<DateTime<Utc>>,
    pub completed_at: Assign<DateTime<Utc>>,
    pub last_recovery_at: Assign<DateTime<Utc>>,
    pub claimed_by: Assign<Uuid>,
    pub heartbeat_at: Assign<DateTime<Utc>>,
    pub abandoned_at: Assign<DateTime<Utc>>,
    /// `sub_status`: cleared by every write whose status is not `Running`.
    pub sub_status: Assign<SubStatus>,
    /// `updated_at`, always written: the write's time.
    pub updated_at: DateTime<Utc>,
}

impl Effects {
    /// Sets `status` and `updated_at`, keeps everything else.
    pub fn keep(status: TaskStatus, now: DateTime<Utc>) -> Self {
        Effects {
            status,
            attempt: Counter::Keep,
            recovery_attempts: Counter::Keep,
            claim_count: Counter::Keep,
            error_details: Assign::Keep,
            last_error: Assign::Keep,
            retry_at: Assign::Keep,
            started_at: Assign::Keep,
            completed_at: Assign::Keep,
            last_recovery_at: Assign::Keep,
            claimed_by: Assign::Keep,
            heartbeat_at: Assign::Keep,
            abandoned_at: Assign::Keep,
            sub_status: Assign::Keep,
            updated_at: now,
        }
    }

    /// As [`Effects::keep`], and the claim (`claimed_by`, `heartbeat_at`) cleared.
    fn unclaimed(status: TaskStatus, now: DateTime<Utc>) -> Self {
        Effects { claimed_by: Clear, heartbeat_at: Clear, ..Effects::keep(status, now) }
    }

    /// `Failed` with `message` as the error, at `now`.
    fn failed(message: &str, now: DateTime<Utc>) -> Self {
        Effects {
            error_details: Set(message.to_owned()),
            last_error: Set(message.to_owned()),
            completed_at: Set(now),
            ..Effects::unclaimed(Failed, now)
        }
    }
}

/// What a write does to a nullable column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assign<T> {
    /// Leave the stored value.
    Keep,
    /// Store this value.
    Set(T),
    /// Store `NULL`.
    Clear,
}

impl<T> Assign<T> {
    /// Whether the stored value is kept: `col = CASE WHEN <keeps> THEN col ELSE <value> END`.
    pub fn keeps(&self) -> bool {
        matches!(self, Assign::Keep)
    }

    /// The value stored when the column is not kept (`None`: `NULL`).
    pub fn value(&self) -> Option<&T> {
        match self {
            Assign::Set(value) => Some(value),
            Assign::Keep | Assign::Clear => None,
        }
    }
}

/// What a write does to a counter column, computed by the database (`col = col * m + a`), so
/// concurrent writers never lose a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Leave it.
    Keep,
    /// Add one.
    Increment,
    /// Back to its first value (1 for `attempt`).
    Reset,
}

impl Counter {
    /// `(m, a)` of `col = col * m + a`, given the counter's first value.
    pub fn coefficients(self, first: i32) -> (i32, i32) {
        match self {
            Counter::Keep => (1, 0),
            Counter::Increment => (1, 1),
            Counter::Reset => (0, first),
        }
    }
}

/// The queue position of a task: the time a `Ready` task becomes claimable, `None` in any
/// other status. The later of its `retry_at` and `entered`, the time it (last) entered `Ready`,
/// so that `due_at <= now` holds exactly when it is claimable. Claims take the smallest
/// `(due_at, id)` first. Each backend keeps it in a column of its own, set with this rule by
/// every write that leaves a task `Ready` and kept by every other, and reads the `Ready` tasks
/// in that order from a partial index.
pub fn due_at(
    status: TaskStatus,
    retry_at: Option<DateTime<Utc>>,
    entered: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    (status == Ready).then(|| retry_at.map_or(entered, |at| at.max(entered)))
}

/// Which claimed tasks a sweep touches: claimed (`claimed_by` set), in [`CLAIMED`] statuses,
/// last heartbeat before `older_than`, `recovery_attempts` within `recovery_attempts`
/// (inclusive). The statement that writes checks all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// Heartbeats before this time are stale.
    pub older_than: DateTime<Utc>,
    /// The inclusive range of `recovery_attempts`.
    pub recovery_attempts: (i32, i32),
}

/// A claim: up to `limit` `Ready` tasks whose queue position ([`due_at`]) is from `from` to
/// `due_at`, smallest `(due_at, id)` first, each written with `plan`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The latest queue position claimed: the store's now.
    pub due_at: DateTime<Utc>,
    /// The earliest queue position claimed.
    pub from: DateTime<Utc>,
    /// At most this many tasks (0: none).
    pub limit: u32,
    /// What a claimed task is written with ([`Plan::claim`]).
    pub plan: Plan,
}
