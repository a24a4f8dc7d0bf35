//! A batch of leases as three array parameters (six for a runner cycle), and the rows they
//! hold, locked in id order.

use chrono::{DateTime, Utc};
use dal_core::plan::CyclePlan;
use dal_core::{Lease, StatusSet};
use dal_diesel::types::{Id, Instant, Json};
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text};
use serde_json::Value;
use uuid::Uuid;

/// ```sql
/// SELECT held.id FROM unnest($ids, $runners, $claims) AS lease (id, runner, claim)
/// CROSS JOIN LATERAL (
///     SELECT id FROM task_executions
///     WHERE id = lease.id AND claimed_by = lease.runner AND claim_count = lease.claim
///       AND status = ANY($statuses)
///     FOR UPDATE) AS held
/// ```
///
/// The ids of the rows whose current claim is one of the leases and whose status is in the
/// set, locked. The lateral subquery holds a lock clause, so PostgreSQL cannot fold it into a
/// join: it runs once per lease, in the order of the arrays, as a primary-key lookup. That
/// plan does not depend on the table's statistics (a generic plan made on an empty table is
/// still right at millions of rows), and the rows are locked in the order of the leases,
/// which [`held_by`] sorts by task id: the global order every multi-row write locks in.
#[derive(Debug, Clone)]
pub(crate) struct HeldBy {
    ids: Vec<Uuid>,
    runners: Vec<Uuid>,
    claims: Vec<i32>,
    statuses: Vec<&'static str>,
    /// A runner cycle's leases carry what each task finishes with; the query then returns it
    /// as three more columns, `error`, `retry_at` and `data`.
    outcomes: Option<Outcomes>,
}

/// What each of a runner cycle's finished tasks finishes with, in the order of the leases.
#[derive(Debug, Clone)]
struct Outcomes {
    /// The error of a failure or a retry (`None`: the task completes).
    errors: Vec<Option<String>>,
    /// The retry time of a retry.
    retry_at: Vec<Option<DateTime<Utc>>>,
    /// The event arguments of a retry.
    data: Vec<Option<Value>>,
}

/// The rows of `task_executions` whose current claim is one of `leases` and whose status is in
/// `from`, locked in task id order.
pub(crate) fn held_by(leases: &[Lease], from: StatusSet) -> HeldBy {
    let mut sorted = leases.to_vec();
    sorted.sort_unstable_by_key(|l| (l.task_id, l.runner_id, l.claim));
    of_sorted(&sorted, from)
}

/// [`held_by`] of leases already in its order.
fn of_sorted(sorted: &[Lease], from: StatusSet) -> HeldBy {
    HeldBy {
        ids: sorted.iter().map(|l| l.task_id).collect(),
        runners: sorted.iter().map(|l| l.runner_id).collect(),
        claims: sorted.iter().map(|l| l.claim).collect(),
        statuses: from.iter().map(|s| s.as_str()).collect(),
        outcomes: None,
    }
}

/// How a runner cycle's task finishes, as bound: its error (none: it completes), and for a
/// retry its plan's retry time and event arguments.
type Outcome = (Option<String>, Option<DateTime<Utc>>, Option<Value>);

/// A runner cycle's finished tasks (completed, failed and retried), whose status is in `from`,
/// as [`held_by`] locks them (in task id order, all lists together), each with its outcome:
///
/// ```sql
/// SELECT held.id, lease.error, CASE WHEN held.attempt_left THEN lease.retry_at END, lease.data
/// FROM unnest($ids, $runners, $claims, $errors, $retry_at, $data)
///     AS lease (id, runner, claim, error, retry_at, data)
/// CROSS JOIN LATERAL (
///     SELECT id, attempt < max_attempts AS attempt_left FROM task_executions
///     WHERE <the lease is the current claim, the status in $statuses> FOR UPDATE) AS held
/// ```
///
/// A retry's `retry_at` is returned only when its task has an attempt left, as locked: a
/// retried task on its last attempt is one to fail.
pub(crate) fn held_for_cycle(cycle: &CyclePlan<'_>, from: StatusSet) -> HeldBy {
    let mut sorted: Vec<(Lease, Outcome)> = cycle
        .completed
        .iter()
        .map(|l| (*l, (None, None, None)))
        .chain(
            cycle
                .failed
                .iter()
                .map(|f| (f.lease, (Some(f.error.clone()), None, None))),
        )
        .chain(cycle.retried.iter().enumerate().map(|(i, r)| {
            let plan = cycle.retrial(i);
            let retry_at = plan
                .as_ref()
                .and_then(|p| p.effects.retry_at.value().copied());
            let data = plan.and_then(|p| p.event.map(|e| e.data_value()));
            (r.lease, (Some(r.error.clone()), retry_at, data))
        }))
        .collect();
    sorted.sort_unstable_by_key(|(l, _)| (l.task_id, l.runner_id, l.claim));
    let mut outcomes = Outcomes {
        errors: Vec::with_capacity(sorted.len()),
        retry_at: Vec::with_capacity(sorted.len()),
        data: Vec::with_capacity(sorted.len()),
    };
    let mut leases = Vec::with_capacity(sorted.len());
    for (lease, (error, retry_at, data)) in sorted {
        leases.push(lease);
        outcomes.errors.push(error);
        outcomes.retry_at.push(retry_at);
        outcomes.data.push(data);
    }
    HeldBy {
        outcomes: Some(outcomes),
        ..of_sorted(&leases, from)
    }
}

impl Query for HeldBy {
    type SqlType = Id;
}

impl QueryFragment<Pg> for HeldBy {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(match self.outcomes {
            None => "SELECT held.id FROM unnest(",
            Some(_) => {
                "SELECT held.id, lease.error, CASE WHEN held.attempt_left THEN lease.retry_at \
                 END, lease.data FROM unnest("
            }
        });
        out.push_bind_param::<Array<Id>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Id>, _>(&self.runners)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.claims)?;
        if let Some(outcomes) = &self.outcomes {
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&outcomes.errors)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Instant>>, _>(&outcomes.retry_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Json>>, _>(&outcomes.data)?;
            out.push_sql(
                ") AS lease (id, runner, claim, error, retry_at, data) CROSS JOIN LATERAL \
                 (SELECT \"id\", \"attempt\" < \"max_attempts\" AS attempt_left",
            );
        } else {
            out.push_sql(") AS lease (id, runner, claim) CROSS JOIN LATERAL (SELECT \"id\"");
        }
        out.push_sql(
            " FROM \"task_executions\" WHERE \"id\" = lease.id AND \"claimed_by\" = \
             lease.runner AND \"claim_count\" = lease.claim AND \"status\" = ANY(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.statuses)?;
        out.push_sql(") FOR UPDATE) AS held");
        Ok(())
    }
}

impl QueryId for HeldBy {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}
