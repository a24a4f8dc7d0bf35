//! Transitions as data: what each operation may start from and what it writes.
//!
//! Users need only [`Transition`] (for `TaskStore::transition`); [`Plan`], [`Guard`] and the
//! effects are **for backend authors**, who turn a plan into SQL.
//!
//! This module is the single place where the state machine lives. A backend never decides which
//! statuses an operation accepts or which columns it changes: it turns a [`Plan`] into one
//! guarded `UPDATE ... RETURNING` (see `dal_core::backend`). Both backends therefore apply the
//! same rules by construction, and the rules are read here, once.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::to_micros;
use crate::error::DalError;
use crate::event::{EventSpec, EventType, time_value};
use crate::status::StatusSet;
use crate::{Lease, SubStatus, TaskExecution, TaskStatus};

/// A change of status asked of one task, with its arguments.
///
/// Exhaustive on purpose: the reference model and the generated call sequences of `dal-tests`
/// match every variant, so a new transition does not build until it is modelled and generated
/// (and adding one is a breaking change of `dal-core`).
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
    /// timing fields cleared (a manual re-run). A `Running` task must be released or recovered
    /// first; a `NotStarted` one still waits for its dependencies.
    ResetRetryState,
}

impl Transition {
    /// The operation's name, as used in traces and documents.
    pub fn name(&self) -> &'static str {
        match self {
            Transition::MarkReady => "mark_ready",
            Transition::MarkSkipped { .. } => "mark_skipped",
            Transition::MarkRunning => "mark_running",
            Transition::MarkCompleted => "mark_completed",
            Transition::MarkFailed { .. } => "mark_failed",
            Transition::MarkAbandoned { .. } => "mark_abandoned",
            Transition::ScheduleRetry { .. } => "schedule_retry",
            Transition::ResetForRecovery => "reset_task_for_recovery",
            Transition::ResetRetryState => "reset_retry_state",
        }
    }

    /// The statuses the transition may start from.
    pub fn from(&self) -> StatusSet {
        use TaskStatus::*;
        match self {
            Transition::MarkReady => StatusSet::of(&[NotStarted]),
            Transition::MarkSkipped { .. } => StatusSet::of(&[NotStarted, Ready]),
            Transition::MarkRunning => StatusSet::of(&[Ready]),
            Transition::MarkCompleted => StatusSet::of(&[Running]),
            Transition::MarkFailed { .. } => StatusSet::of(&[Ready, Running]),
            Transition::MarkAbandoned { .. } => StatusSet::NON_TERMINAL,
            Transition::ScheduleRetry { .. } => StatusSet::of(&[Running, Failed]),
            Transition::ResetForRecovery => StatusSet::of(&[Running, Ready]),
            Transition::ResetRetryState => StatusSet::of(&[Ready, Completed, Failed, Skipped]),
        }
    }

    /// The status the transition leads to.
    pub fn to(&self) -> TaskStatus {
        match self {
            Transition::MarkReady
            | Transition::ScheduleRetry { .. }
            | Transition::ResetForRecovery
            | Transition::ResetRetryState => TaskStatus::Ready,
            Transition::MarkSkipped { .. } => TaskStatus::Skipped,
            Transition::MarkRunning => TaskStatus::Running,
            Transition::MarkCompleted => TaskStatus::Completed,
            Transition::MarkFailed { .. } | Transition::MarkAbandoned { .. } => TaskStatus::Failed,
        }
    }

    /// The event the transition writes.
    pub fn event(&self) -> EventSpec {
        match self {
            Transition::MarkReady => EventSpec::new(EventType::Ready),
            Transition::MarkSkipped { reason } => {
                EventSpec::new(EventType::Skipped).with("reason", reason.as_str())
            }
            Transition::MarkRunning => EventSpec::new(EventType::Started),
            Transition::MarkCompleted => EventSpec::new(EventType::Completed),
            Transition::MarkFailed { error } => {
                EventSpec::new(EventType::Failed).with("error", error.as_str())
            }
            Transition::MarkAbandoned { reason } => {
                EventSpec::new(EventType::Abandoned).with("reason", reason.as_str())
            }
            Transition::ScheduleRetry { retry_at } => EventSpec::new(EventType::RetryScheduled)
                .with("retry_at", time_value(to_micros(*retry_at))),
            Transition::ResetForRecovery => EventSpec::new(EventType::Recovered),
            Transition::ResetRetryState => EventSpec::new(EventType::Reset),
        }
    }

    /// Checks the transition's arguments; rejected arguments write nothing.
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        use crate::validate;
        match self {
            Transition::MarkSkipped { reason } | Transition::MarkAbandoned { reason } => {
                validate::message("reason", reason)
            }
            Transition::MarkFailed { error } => validate::message("error", error),
            Transition::ScheduleRetry { retry_at } => validate::time("retry_at", *retry_at),
            _ => Ok(()),
        }
    }

    /// The plan that carries the transition out at time `now`.
    pub fn plan(&self, now: DateTime<Utc>) -> Plan {
        let keep = Effects::keep(self.to(), now);
        let effects = match self {
            Transition::MarkReady => keep,
            Transition::MarkSkipped { reason } => Effects {
                error_details: Assign::Set(reason.clone()),
                completed_at: Assign::Set(now),
                ..keep.release_claim()
            },
            Transition::MarkRunning => Effects {
                started_at: Assign::Set(now),
                ..keep
            },
            Transition::MarkCompleted => Effects {
                completed_at: Assign::Set(now),
                ..keep.release_claim()
            },
            Transition::MarkFailed { error } => Effects {
                error_details: Assign::Set(error.clone()),
                last_error: Assign::Set(error.clone()),
                completed_at: Assign::Set(now),
                ..keep.release_claim()
            },
            Transition::MarkAbandoned { reason } => Effects {
                error_details: Assign::Set(reason.clone()),
                last_error: Assign::Set(reason.clone()),
                completed_at: Assign::Set(now),
                abandoned_at: Assign::Set(now),
                ..keep.release_claim()
            },
            Transition::ScheduleRetry { retry_at } => Effects {
                attempt: Counter::Increment,
                // Cut here, as every time the caller gives: both backends then store it exactly.
                retry_at: Assign::Set(to_micros(*retry_at)),
                error_details: Assign::Clear,
                started_at: Assign::Clear,
                completed_at: Assign::Clear,
                abandoned_at: Assign::Clear,
                ..keep.release_claim()
            },
            Transition::ResetForRecovery => Effects {
                recovery_attempts: Counter::Increment,
                last_recovery_at: Assign::Set(now),
                started_at: Assign::Clear,
                ..keep.release_claim()
            },
            Transition::ResetRetryState => Effects {
                attempt: Counter::Reset,
                retry_at: Assign::Clear,
                error_details: Assign::Clear,
                last_error: Assign::Clear,
                started_at: Assign::Clear,
                completed_at: Assign::Clear,
                abandoned_at: Assign::Clear,
                ..keep.release_claim()
            },
        };
        Plan {
            operation: self.name(),
            effects: effects.settled(),
            guard: Guard {
                from: self.from(),
                needs_attempt_left: matches!(self, Transition::ScheduleRetry { .. }),
                lease: None,
                unclaimed: false,
                due_by: None,
            },
            event: Some(self.event()),
        }
    }
}

/// The statuses a claimed task can be in: `Running`, or claimed and still `Ready`.
pub const CLAIMED: StatusSet = StatusSet::of(&[TaskStatus::Running, TaskStatus::Ready]);

impl Plan {
    fn new(
        operation: &'static str,
        from: StatusSet,
        effects: Effects,
        event: Option<EventSpec>,
    ) -> Plan {
        Plan {
            operation,
            guard: Guard {
                from,
                needs_attempt_left: false,
                lease: None,
                unclaimed: false,
                due_by: None,
            },
            effects: effects.settled(),
            event,
        }
    }

    /// Sets (or clears) the sub-status of a `Running` task; its event is `deferred` when the
    /// task is deferred, `resumed` otherwise, with the new `sub_status` (or null).
    pub fn sub_status(sub_status: Option<SubStatus>, now: DateTime<Utc>) -> Plan {
        let event = match sub_status {
            Some(SubStatus::Deferred) => EventType::Deferred,
            Some(SubStatus::Active) | None => EventType::Resumed,
        };
        Plan::new(
            "set_sub_status",
            StatusSet::of(&[TaskStatus::Running]),
            Effects {
                sub_status: sub_status.map_or(Assign::Clear, Assign::Set),
                ..Effects::keep(TaskStatus::Running, now)
            },
            Some(EventSpec::new(event).with(
                "sub_status",
                sub_status.map_or(serde_json::Value::Null, |s| s.as_str().into()),
            )),
        )
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

    /// Claim by `runner_id`: `Ready` -> `Running` with `claimed_by`, `heartbeat_at` and
    /// `started_at` set and `claim_count + 1`.
    pub fn claim(runner_id: Uuid, now: DateTime<Utc>) -> Plan {
        Plan::new(
            "claim_ready",
            StatusSet::of(&[TaskStatus::Ready]),
            Effects {
                claimed_by: Assign::Set(runner_id),
                heartbeat_at: Assign::Set(now),
                started_at: Assign::Set(now),
                claim_count: Counter::Increment,
                ..Effects::keep(TaskStatus::Running, now)
            },
            Some(EventSpec {
                runner_id: Some(runner_id),
                ..EventSpec::new(EventType::Claimed)
            }),
        )
    }

    /// The targeted claim of one task by `runner_id`: the claim's effects and event, allowed
    /// only while the task is `Ready`, unclaimed and due (`retry_at` unset or not after `now`).
    pub fn claim_task(runner_id: Uuid, now: DateTime<Utc>) -> Plan {
        let mut plan = Plan::claim(runner_id, now);
        plan.operation = "claim_task";
        plan.guard.unclaimed = true;
        plan.guard.due_by = Some(now);
        plan
    }

    /// A heartbeat: `heartbeat_at = now`, nothing else but `updated_at`. Heartbeats are not
    /// history: no event.
    pub fn heartbeat(now: DateTime<Utc>) -> Plan {
        Plan::new(
            "heartbeat",
            StatusSet::of(&[TaskStatus::Running]),
            Effects {
                heartbeat_at: Assign::Set(now),
                ..Effects::keep(TaskStatus::Running, now)
            },
            None,
        )
    }

    /// Gives a claimed task back: -> `Ready`, claim and `started_at` cleared, no attempt
    /// counted.
    pub fn release(now: DateTime<Utc>) -> Plan {
        Plan::new(
            "release",
            CLAIMED,
            Effects {
                started_at: Assign::Clear,
                ..Effects::keep(TaskStatus::Ready, now).release_claim()
            },
            Some(EventSpec::new(EventType::Released)),
        )
    }

    /// A failed attempt whose next attempt is queued at once: `Running` -> `Ready` with the
    /// effects of [`Transition::ScheduleRetry`] (`attempt + 1`, `retry_at` set, the claim and
    /// the attempt's times cleared), `last_error` set to `error`, only while
    /// `attempt < max_attempts`. One change, so one event: `retry_scheduled` with `retry_at`
    /// and `error`. The row it leaves is the row `mark_failed` then `schedule_retry` leave.
    pub fn fail_and_retry(error: &str, retry_at: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
        let retry = Transition::ScheduleRetry { retry_at };
        let mut plan = Plan::new(
            "fail_and_retry",
            StatusSet::of(&[TaskStatus::Running]),
            Effects {
                last_error: Assign::Set(error.to_owned()),
                ..retry.plan(now).effects
            },
            Some(retry.event().with("error", error)),
        );
        plan.guard.needs_attempt_left = true;
        plan
    }

    /// The reset of a claim whose heartbeat is older than `stale_before`: as
    /// `reset_task_for_recovery`.
    pub fn recover_stale(stale_before: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
        let reset = Transition::ResetForRecovery;
        Plan::new(
            "recover_stale_claims",
            CLAIMED,
            reset.plan(now).effects,
            Some(reset.event().with("stale_before", time_value(stale_before))),
        )
    }

    /// The abandonment of a stale claim that reached the recovery cap: as `mark_abandoned`.
    pub fn abandon_stale(max_recovery_attempts: i32, now: DateTime<Utc>) -> Plan {
        let reason = format!(
            "abandoned: its runner stopped heart-beating and the task was already recovered \
             {max_recovery_attempts} times"
        );
        let abandon = Transition::MarkAbandoned { reason };
        Plan::new(
            "recover_stale_claims",
            CLAIMED,
            abandon.plan(now).effects,
            Some(abandon.event()),
        )
    }
}

/// The queue position of a task: when a `Ready` task becomes claimable, `None` for a task in
/// any other status.
///
/// It is the later of the task's `retry_at` and `entered`, the time the task (last) entered
/// `Ready`, so that `due_at <= now` holds exactly when the task is claimable now. Claims and
/// `list_ready` take the smallest `(due_at, id)` first: the tasks in the order they became due.
/// Each backend stores it in a column of its own (not part of [`crate::TaskExecution`]),
/// sets it in the statement of every write that moves a task into `Ready`, with this rule
/// written in SQL, and leaves it as it is otherwise; a partial index on `(due_at, id)` of the
/// `Ready` tasks is the claim's path.
pub fn due_at(
    status: TaskStatus,
    retry_at: Option<DateTime<Utc>>,
    entered: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    (status == TaskStatus::Ready).then(|| retry_at.map_or(entered, |at| at.max(entered)))
}

/// Which claimed tasks a sweep touches: claimed (`claimed_by` set), in [`CLAIMED`] statuses,
/// last heartbeat before `older_than`, and `recovery_attempts` within `recovery_attempts`
/// (inclusive). The statement that writes checks all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// Heartbeats before this time are stale.
    pub older_than: DateTime<Utc>,
    /// The inclusive range of `recovery_attempts`.
    pub recovery_attempts: (i32, i32),
}

/// Which `Ready` tasks a claim takes: those whose queue position ([`due_at`]) is from `from`
/// to `due_at`, smallest `(due_at, id)` first, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRange {
    /// The latest queue position claimed (the store's now).
    pub due_at: DateTime<Utc>,
    /// The earliest queue position claimed (the store's queue floor).
    pub from: DateTime<Utc>,
    /// At most this many tasks (0: none).
    pub limit: u32,
}

/// The plans of one runner cycle (`ClaimStore::finish_and_claim`), formed by the store: the
/// completions (one plan for all leases), the failures and the retries (one plan per task,
/// which differ only in the error and the retry time: [`CyclePlan::failure`],
/// [`CyclePlan::retrial`]) and the claim.
#[derive(Debug, Clone, PartialEq)]
pub struct CyclePlan<'a> {
    /// The leases of the tasks to complete.
    pub completed: &'a [Lease],
    /// `MarkCompleted`, with the runner's event.
    pub complete: Plan,
    /// The failed tasks, each with its lease and error.
    pub failed: &'a [crate::FailedTask],
    /// `MarkFailed` from `Running` (a cycle fails the tasks its runner runs) with an empty
    /// error, with the runner's event: what every failure's plan is, but for its error, which
    /// goes in `error_details`, `last_error` and the event's `error` (for a backend that binds
    /// the errors as data of one statement). A retried task on its last attempt gets it too.
    pub fail: Plan,
    /// The tasks whose failed attempt is retried, each with its lease, error and retry time.
    pub retried: &'a [crate::RetriedTask],
    /// [`Plan::fail_and_retry`] with an empty error and the cycle's time as the retry time,
    /// with the runner's event: what every retry's plan is, but for its error (`last_error`)
    /// and its retry time (`retry_at`, the queue position), and its event's data, which
    /// [`CyclePlan::retrial`] gives.
    pub retry: Plan,
    /// The tasks to claim.
    pub range: ClaimRange,
    /// The claim, as [`Plan::claim`].
    pub claim: Plan,
}

impl CyclePlan<'_> {
    /// The plan of failure `i`: `MarkFailed` with its error, leased, with an event when
    /// [`CyclePlan::fail`] has one.
    pub fn failure(&self, i: usize) -> Option<Plan> {
        let failed = self.failed.get(i)?;
        Some(self.failing(failed.lease, &failed.error))
    }

    /// The plan of retry `i`: [`Plan::fail_and_retry`] with its error and retry time, leased,
    /// with an event when [`CyclePlan::retry`] has one.
    pub fn retrial(&self, i: usize) -> Option<Plan> {
        let retried = self.retried.get(i)?;
        let mut plan = Plan::fail_and_retry(
            &retried.error,
            retried.retry_at,
            self.retry.effects.updated_at,
        )
        .leased(retried.lease);
        if self.retry.event.is_none() {
            plan.event = None;
        }
        Some(plan)
    }

    /// The plan of retry `i` when its task is on its last attempt: the failure it becomes,
    /// `MarkFailed` with its error, as [`CyclePlan::failure`].
    pub fn exhausted(&self, i: usize) -> Option<Plan> {
        let retried = self.retried.get(i)?;
        Some(self.failing(retried.lease, &retried.error))
    }

    fn failing(&self, lease: Lease, error: &str) -> Plan {
        let transition = Transition::MarkFailed {
            error: error.to_owned(),
        };
        let mut plan = transition.plan(self.fail.effects.updated_at).leased(lease);
        plan.guard.from = self.fail.guard.from;
        if self.fail.event.is_none() {
            plan.event = None;
        }
        plan
    }
}

/// One guarded write: which rows it may touch and what it sets on them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The operation's name.
    pub operation: &'static str,
    /// The condition a row must meet, checked in the statement that writes.
    pub guard: Guard,
    /// What the statement writes.
    pub effects: Effects,
    /// The event written for each changed task, in the same atomic unit (`None`: the change is
    /// not history, e.g. a heartbeat).
    pub event: Option<EventSpec>,
}

/// The condition of a guarded write, checked by the database in the `WHERE` clause of the
/// statement that writes, so no read comes before the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// The statuses the row may be in.
    pub from: StatusSet,
    /// Whether `attempt < max_attempts` must hold.
    pub needs_attempt_left: bool,
    /// When set, the row's claim must be this lease: `claimed_by = runner_id AND
    /// claim_count = claim`.
    pub lease: Option<Lease>,
    /// Whether the row must be unclaimed: `claimed_by IS NULL`.
    pub unclaimed: bool,
    /// When set, the row must be due by this time: `retry_at IS NULL OR retry_at <= due_by`.
    pub due_by: Option<DateTime<Utc>>,
}

impl Guard {
    /// Whether `row` meets the guard: [`Guard::rejection`] finds nothing against it.
    pub fn admits(&self, row: &TaskExecution) -> bool {
        self.rejection(row.id, row.status, Some(row)).is_none()
    }

    fn holds_lease(&self, row: &TaskExecution) -> bool {
        self.lease.is_none_or(|lease| {
            row.claimed_by == Some(lease.runner_id) && row.claim_count == lease.claim
        })
    }

    /// Why the guarded write of `plan` did not touch task `id`, given the row as read after it
    /// (`None`: no such row). Returns `None` when the row now meets the guard: it changed between
    /// the write and the read, and the write may be tried again.
    pub fn rejection(
        &self,
        id: Uuid,
        to: TaskStatus,
        row: Option<&TaskExecution>,
    ) -> Option<DalError> {
        let Some(row) = row else {
            return Some(DalError::NotFound { id });
        };
        if !self.holds_lease(row) {
            return Some(DalError::ClaimLost { id });
        }
        if let (true, Some(runner_id)) = (self.unclaimed, row.claimed_by) {
            return Some(DalError::AlreadyClaimed { id, runner_id });
        }
        if !self.from.contains(row.status) {
            return Some(DalError::InvalidTransition {
                id,
                from: row.status,
                to,
            });
        }
        if self.needs_attempt_left && row.attempt >= row.max_attempts {
            return Some(DalError::RetriesExhausted {
                id,
                attempt: row.attempt,
                max_attempts: row.max_attempts,
            });
        }
        if let (Some(due_by), Some(retry_at)) = (self.due_by, row.retry_at)
            && retry_at > due_by
        {
            return Some(DalError::NotDue { id, retry_at });
        }
        None
    }
}

/// What a guarded write sets. Every column a transition may touch is listed, so a backend
/// writes one fixed statement for every plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    /// The new status.
    pub status: TaskStatus,
    /// `attempt`: kept, `+ 1`, or back to 1.
    pub attempt: Counter,
    /// `recovery_attempts`: kept or `+ 1`.
    pub recovery_attempts: Counter,
    /// `claim_count`: kept or `+ 1` (by a claim).
    pub claim_count: Counter,
    /// `error_details`.
    pub error_details: Assign<String>,
    /// `last_error`.
    pub last_error: Assign<String>,
    /// `retry_at`.
    pub retry_at: Assign<DateTime<Utc>>,
    /// `started_at`.
    pub started_at: Assign<DateTime<Utc>>,
    /// `completed_at`.
    pub completed_at: Assign<DateTime<Utc>>,
    /// `last_recovery_at`.
    pub last_recovery_at: Assign<DateTime<Utc>>,
    /// `claimed_by`.
    pub claimed_by: Assign<Uuid>,
    /// `heartbeat_at`.
    pub heartbeat_at: Assign<DateTime<Utc>>,
    /// `abandoned_at`.
    pub abandoned_at: Assign<DateTime<Utc>>,
    /// `sub_status`: cleared by every write whose status is not `Running`.
    pub sub_status: Assign<SubStatus>,
    /// `updated_at`, always written.
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

    /// The same effects, with the sub-status cleared when the status is not `Running`: only a
    /// running task has one.
    fn settled(self) -> Self {
        if self.status == TaskStatus::Running {
            self
        } else {
            Effects {
                sub_status: Assign::Clear,
                ..self
            }
        }
    }

    /// The same effects, also clearing the claim (`claimed_by`, `heartbeat_at`).
    pub fn release_claim(self) -> Self {
        Effects {
            claimed_by: Assign::Clear,
            heartbeat_at: Assign::Clear,
            ..self
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
    /// Whether the stored value is left as it is. A backend writes
    /// `col = CASE WHEN <keeps> THEN col ELSE <value> END`.
    pub fn keeps(&self) -> bool {
        matches!(self, Assign::Keep)
    }

    /// The value to store when the column is not kept (`None` stores `NULL`).
    pub fn value(&self) -> Option<&T> {
        match self {
            Assign::Set(value) => Some(value),
            Assign::Keep | Assign::Clear => None,
        }
    }
}

/// What a write does to a counter column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Leave it.
    Keep,
    /// Add one, computed by the database (`col = col + 1`): concurrent writers never lose a
    /// count.
    Increment,
    /// Back to its first value (1 for `attempt`, 0 for `recovery_attempts`).
    Reset,
}

impl Counter {
    /// The coefficients `(m, a)` of the backend's expression `col = col * m + a`, given the
    /// counter's first value.
    pub fn coefficients(self, first: i32) -> (i32, i32) {
        match self {
            Counter::Keep => (1, 0),
            Counter::Increment => (1, 1),
            Counter::Reset => (0, first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn all() -> Vec<Transition> {
        vec![
            Transition::MarkReady,
            Transition::MarkSkipped { reason: "r".into() },
            Transition::MarkRunning,
            Transition::MarkCompleted,
            Transition::MarkFailed { error: "e".into() },
            Transition::MarkAbandoned { reason: "r".into() },
            Transition::ScheduleRetry { retry_at: at(5) },
            Transition::ResetForRecovery,
            Transition::ResetRetryState,
        ]
    }

    #[test]
    fn the_state_machine_is_the_documented_one() {
        let table: Vec<(&str, Vec<TaskStatus>, TaskStatus)> = all()
            .iter()
            .map(|t| (t.name(), t.from().iter().collect(), t.to()))
            .collect();
        assert_eq!(
            table,
            vec![
                ("mark_ready", vec![NotStarted], Ready),
                ("mark_skipped", vec![NotStarted, Ready], Skipped),
                ("mark_running", vec![Ready], Running),
                ("mark_completed", vec![Running], Completed),
                ("mark_failed", vec![Ready, Running], Failed),
                ("mark_abandoned", vec![NotStarted, Ready, Running], Failed),
                ("schedule_retry", vec![Running, Failed], Ready),
                ("reset_task_for_recovery", vec![Ready, Running], Ready),
                (
                    "reset_retry_state",
                    vec![Ready, Completed, Failed, Skipped],
                    Ready
                ),
            ]
        );
    }

    #[test]
    fn every_plan_writes_its_status_and_time() {
        for transition in all() {
            let plan = transition.plan(at(7));
            assert_eq!(plan.effects.status, transition.to());
            assert_eq!(plan.effects.updated_at, at(7));
            assert_eq!(plan.operation, transition.name());
            assert_eq!(plan.guard.from, transition.from());
        }
    }

    #[test]
    fn only_mark_ready_and_mark_running_keep_the_claim() {
        for transition in all() {
            let plan = transition.plan(at(1));
            let keeps = matches!(transition, Transition::MarkReady | Transition::MarkRunning);
            assert_eq!(
                plan.effects.claimed_by.keeps(),
                keeps,
                "{}",
                transition.name()
            );
            assert_eq!(
                plan.effects.heartbeat_at.keeps(),
                keeps,
                "{}",
                transition.name()
            );
        }
    }

    #[test]
    fn a_task_is_due_when_it_enters_ready_or_at_its_retry_time_whichever_is_later() {
        assert_eq!(due_at(Ready, None, at(5)), Some(at(5)));
        assert_eq!(due_at(Ready, Some(at(9)), at(5)), Some(at(9)));
        assert_eq!(due_at(Ready, Some(at(2)), at(5)), Some(at(5)));
        assert_eq!(due_at(NotStarted, Some(at(9)), at(5)), None);
        assert_eq!(due_at(Running, None, at(5)), None);
    }

    #[test]
    fn counters_are_linear() {
        assert_eq!(Counter::Keep.coefficients(1), (1, 0));
        assert_eq!(Counter::Increment.coefficients(1), (1, 1));
        assert_eq!(Counter::Reset.coefficients(1), (0, 1));
        assert_eq!(
            (Assign::Set(3).keeps(), Assign::Set(3).value()),
            (false, Some(&3))
        );
        assert_eq!(
            (Assign::<i32>::Clear.keeps(), Assign::<i32>::Clear.value()),
            (false, None)
        );
        assert_eq!(
            (Assign::<i32>::Keep.keeps(), Assign::<i32>::Keep.value()),
            (true, None)
        );
    }

    fn row(status: TaskStatus, attempt: i32, max_attempts: i32) -> TaskExecution {
        crate::model::sample_row(status, attempt, max_attempts)
    }

    #[test]
    fn a_lease_admits_only_its_own_claim() {
        let runner = Uuid::from_u128(7);
        let mut claimed = row(Running, 1, 1);
        claimed.claimed_by = Some(runner);
        claimed.claim_count = 2;
        let lease = claimed.lease().unwrap_or_else(|| unreachable!());
        let guard = Plan::heartbeat(at(1)).leased(lease).guard;
        assert!(guard.admits(&claimed));
        let reclaimed = TaskExecution {
            claim_count: 3,
            ..claimed.clone()
        };
        assert!(!guard.admits(&reclaimed));
        assert!(matches!(
            guard.rejection(claimed.id, Running, Some(&reclaimed)),
            Some(DalError::ClaimLost { .. })
        ));
        let released = TaskExecution {
            claimed_by: None,
            status: Ready,
            ..claimed.clone()
        };
        assert!(matches!(
            guard.rejection(claimed.id, Running, Some(&released)),
            Some(DalError::ClaimLost { .. })
        ));
    }

    #[test]
    fn claims_count_and_sweeps_reuse_the_transitions() {
        let runner = Uuid::from_u128(9);
        let claim = Plan::claim(runner, at(3));
        assert_eq!(claim.guard.from, StatusSet::of(&[Ready]));
        assert_eq!(claim.effects.claim_count, Counter::Increment);
        assert_eq!(claim.effects.claimed_by, Assign::Set(runner));
        assert_eq!(claim.effects.status, Running);
        assert_eq!(
            Plan::recover_stale(at(2), at(3)).effects,
            Transition::ResetForRecovery.plan(at(3)).effects
        );
        assert_eq!(Plan::abandon_stale(5, at(3)).effects.status, Failed);
        assert_eq!(
            Plan::abandon_stale(5, at(3)).effects.abandoned_at,
            Assign::Set(at(3))
        );
        assert_eq!(Plan::release(at(3)).effects.attempt, Counter::Keep);
    }

    #[test]
    fn rejections_say_why() {
        let id = Uuid::nil();
        let guard = Transition::ScheduleRetry { retry_at: at(1) }
            .plan(at(1))
            .guard;
        assert!(matches!(
            guard.rejection(id, Ready, None),
            Some(DalError::NotFound { id: found }) if found == id
        ));
        assert!(matches!(
            guard.rejection(id, Ready, Some(&row(Completed, 1, 3))),
            Some(DalError::InvalidTransition {
                from: Completed,
                to: Ready,
                ..
            })
        ));
        assert!(matches!(
            guard.rejection(id, Ready, Some(&row(Failed, 3, 3))),
            Some(DalError::RetriesExhausted {
                attempt: 3,
                max_attempts: 3,
                ..
            })
        ));
        assert!(
            guard
                .rejection(id, Ready, Some(&row(Failed, 2, 3)))
                .is_none()
        );
        assert!(guard.admits(&row(Failed, 2, 3)));
        assert!(!guard.admits(&row(Failed, 3, 3)));
        assert!(!guard.admits(&row(Ready, 1, 3)));
    }
}
