//! A plan as SQL, for both databases: the values a guarded write binds, and the text of its
//! `SET` list and guard. A statement names a plan's values as the columns of a row source (on
//! PostgreSQL one row per distinct plan of a batch, on SQLite one row of parameters), and the
//! task's id and lease as the columns of another (one row per task), so that both databases
//! write the same text and any plan runs as one fixed statement.

use chrono::{DateTime, Utc};
use dal_core::plan::{Assign, Plan};
use dal_core::{Lease, TaskExecution};
use serde_json::Value;
use uuid::Uuid;

/// One value a write binds.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// An id (`uuid`; a 16-byte BLOB).
    Id(Option<Uuid>),
    /// A time (`timestamptz`; microseconds).
    Time(Option<DateTime<Utc>>),
    /// A text.
    Text(Option<String>),
    /// An integer.
    Int(Option<i32>),
    /// A boolean.
    Bool(Option<bool>),
    /// A JSON document.
    Json(Option<Value>),
}

/// The columns of a task's row source: its id and its lease (`NULL`s without one).
pub const TASK: [&str; 3] = ["id", "runner", "claim"];

/// The columns of a plan's row source, in the order of [`params`]: the guard, the effects (a
/// kept column has its `keep_` flag set; a counter is `col * m + a`), and the event
/// (`event_type` `NULL`: none).
pub const PLAN: [&str; 35] = [
    "from_statuses",
    "attempt_left",
    "unclaimed",
    "due_by",
    "status",
    "attempt_m",
    "attempt_a",
    "recovery_m",
    "recovery_a",
    "claims_m",
    "claims_a",
    "keep_error_details",
    "error_details",
    "keep_last_error",
    "last_error",
    "keep_retry_at",
    "retry_at",
    "keep_started_at",
    "started_at",
    "keep_completed_at",
    "completed_at",
    "keep_last_recovery_at",
    "last_recovery_at",
    "keep_claimed_by",
    "claimed_by",
    "keep_heartbeat_at",
    "heartbeat_at",
    "keep_abandoned_at",
    "abandoned_at",
    "keep_sub_status",
    "sub_status",
    "updated_at",
    "event_type",
    "event_data",
    "event_runner",
];

/// The values an insert writes of a new task's row: `id`, `workflow_execution_id`,
/// `task_name`, `status`, `attempt`, `max_attempts`, `trigger_rules`, `task_configuration`,
/// `retry_at`, `created_at`, `updated_at`, `due_at`, in that order.
pub fn inserted(r: &TaskExecution) -> Vec<Param> {
    vec![
        Param::Id(Some(r.id)),
        Param::Id(Some(r.workflow_execution_id)),
        Param::Text(Some(r.task_name.clone())),
        Param::Text(Some(r.status.as_str().to_owned())),
        Param::Int(Some(r.attempt)),
        Param::Int(Some(r.max_attempts)),
        Param::Json(Some(r.trigger_rules.clone())),
        Param::Json(Some(r.task_configuration.clone())),
        Param::Time(r.retry_at),
        Param::Time(Some(r.created_at)),
        Param::Time(Some(r.updated_at)),
        Param::Time(dal_core::plan::due_at(r.status, r.retry_at, r.created_at)),
    ]
}

/// The values of task `id` and `lease`, in the order of [`TASK`].
pub fn task(id: Uuid, lease: Option<Lease>) -> [Param; 3] {
    [Param::Id(Some(id)), Param::Id(lease.map(|l| l.runner_id)), Param::Int(lease.map(|l| l.claim))]
}

/// The values of `plan` but its lease, in the order of [`PLAN`].
pub fn params(plan: &Plan) -> Vec<Param> {
    use Param::*;
    let (guard, e) = (&plan.guard, &plan.effects);
    let (attempt_m, attempt_a) = e.attempt.coefficients(1);
    let (recovery_m, recovery_a) = e.recovery_attempts.coefficients(0);
    let (claims_m, claims_a) = e.claim_count.coefficients(0);
    let time = |a: &Assign<DateTime<Utc>>| [Bool(Some(a.keeps())), Time(a.value().copied())];
    let text = |a: &Assign<String>| [Bool(Some(a.keeps())), Text(a.value().cloned())];
    let mut params = vec![
        Text(Some(guard.from.to_sql_list())),
        Bool(guard.attempt_left),
        Bool(Some(guard.unclaimed)),
        Time(guard.due_by),
        Text(Some(e.status.as_str().to_owned())),
        Int(Some(attempt_m)),
        Int(Some(attempt_a)),
        Int(Some(recovery_m)),
        Int(Some(recovery_a)),
        Int(Some(claims_m)),
        Int(Some(claims_a)),
    ];
    params.extend(text(&e.error_details));
    params.extend(text(&e.last_error));
    params.extend(time(&e.retry_at));
    params.extend(time(&e.started_at));
    params.extend(time(&e.completed_at));
    params.extend(time(&e.last_recovery_at));
    params.extend([Bool(Some(e.claimed_by.keeps())), Id(e.claimed_by.value().copied())]);
    params.extend(time(&e.heartbeat_at));
    params.extend(time(&e.abandoned_at));
    params.extend([
        Bool(Some(e.sub_status.keeps())),
        Text(e.sub_status.value().map(|s| s.as_str().to_owned())),
        Time(Some(e.updated_at)),
        Text(plan.event.as_ref().map(|ev| ev.event_type.as_str().to_owned())),
        Json(plan.event.as_ref().map(|ev| ev.data_value())),
        Id(plan.event.as_ref().and_then(|ev| ev.runner_id)),
    ]);
    params
}

/// The distinct plans of a batch, each with its [`params`].
pub type Distinct<'a> = Vec<(&'a Plan, Vec<Param>)>;

/// A batch of leased plans as its distinct plans and, in the batch's order, each task's lease
/// with the index of its plan among them.
pub fn distinct(plans: &[Plan]) -> (Distinct<'_>, Vec<(Lease, usize)>) {
    let mut distinct: Vec<(&Plan, Vec<Param>)> = Vec::new();
    let mut tasks = Vec::with_capacity(plans.len());
    for plan in plans {
        let Some(lease) = plan.guard.lease else {
            continue;
        };
        let values = params(plan);
        let at = match distinct.iter().position(|(_, p)| *p == values) {
            Some(at) => at,
            None => {
                distinct.push((plan, values));
                distinct.len() - 1
            }
        };
        tasks.push((lease, at));
    }
    (distinct, tasks)
}

/// The `SET` list of a write of the plan in row source `p` to `task_executions AS t`: every
/// column a plan may touch. A write that leaves the task `Ready` sets its queue position to the
/// later of its retry time (as written) and the write's time (`dal_core::plan::due_at`).
pub fn set_list(p: &str) -> String {
    let assign =
        |col: &str| format!("{col} = CASE WHEN {p}.keep_{col} THEN t.{col} ELSE {p}.{col} END");
    let retry = format!("CASE WHEN {p}.keep_retry_at THEN t.retry_at ELSE {p}.retry_at END");
    let mut set = vec![
        format!("status = {p}.status"),
        format!("attempt = t.attempt * {p}.attempt_m + {p}.attempt_a"),
        format!("recovery_attempts = t.recovery_attempts * {p}.recovery_m + {p}.recovery_a"),
        format!("claim_count = t.claim_count * {p}.claims_m + {p}.claims_a"),
    ];
    set.extend(
        [
            "error_details",
            "last_error",
            "retry_at",
            "started_at",
            "completed_at",
            "last_recovery_at",
            "claimed_by",
            "heartbeat_at",
            "abandoned_at",
            "sub_status",
        ]
        .map(assign),
    );
    set.push(format!("updated_at = {p}.updated_at"));
    set.push(format!(
        "due_at = CASE WHEN {p}.status = 'ready' THEN CASE WHEN {retry} > {p}.updated_at \
         THEN {retry} ELSE {p}.updated_at END ELSE t.due_at END"
    ));
    set.join(", ")
}

/// The guard of the plan in row source `p` on the row `t`, with the lease of row source `l`
/// when there is one (the row's id is the statement's to match).
pub fn guard(l: Option<&str>, p: &str) -> String {
    let lease = l.map_or(String::new(), |l| {
        format!(
            " AND ({l}.runner IS NULL OR (t.claimed_by = {l}.runner AND t.claim_count = {l}.claim))"
        )
    });
    format!(
        "{p}.from_statuses LIKE '%,' || t.status || ',%' \
         AND ({p}.attempt_left IS NULL OR (t.attempt < t.max_attempts) = {p}.attempt_left) \
         AND (NOT {p}.unclaimed OR t.claimed_by IS NULL) \
         AND ({p}.due_by IS NULL OR t.retry_at IS NULL OR t.retry_at <= {p}.due_by){lease}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dal_core::plan::Transition;

    #[test]
    fn a_batch_binds_each_distinct_plan_once() {
        let at = DateTime::UNIX_EPOCH;
        let lease =
            |n| Lease { task_id: Uuid::from_u128(n), runner_id: Uuid::from_u128(9), claim: 1 };
        let done = Transition::MarkCompleted.plan(at);
        let failed = Transition::MarkFailed { error: "e".into() }.plan(at);
        let plans = [done.clone().leased(lease(1)), failed.leased(lease(2)), done.leased(lease(3))];
        let (distinct, tasks) = distinct(&plans);
        assert_eq!(distinct.len(), 2);
        assert_eq!(tasks, [(lease(1), 0), (lease(2), 1), (lease(3), 0)]);
        let value = |name| distinct[1].1[PLAN.iter().position(|c| *c == name).unwrap_or(0)].clone();
        assert_eq!(distinct[1].1.len(), PLAN.len());
        assert_eq!(value("from_statuses"), Param::Text(Some(",ready,running,".into())));
        assert_eq!(value("error_details"), Param::Text(Some("e".into())));
        assert_eq!(value("keep_retry_at"), Param::Bool(Some(true)));
        assert_eq!(value("event_runner"), Param::Id(Some(Uuid::from_u128(9))));
    }
}
