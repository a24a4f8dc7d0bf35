//! A batch of leases as three array parameters, and the rows they hold, locked in id order.

use dal_core::{FailedTask, Lease, StatusSet};
use dal_diesel::types::Id;
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text};
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
    /// A runner cycle's leases carry the error of each failure (`None`: the task completes);
    /// the query then returns it as a second column, `error`.
    errors: Option<Vec<Option<String>>>,
}

/// The rows of `task_executions` whose current claim is one of `leases` and whose status is in
/// `from`, locked in task id order.
pub(crate) fn held_by(leases: &[Lease], from: StatusSet) -> HeldBy {
    let mut sorted = leases.to_vec();
    sorted.sort_unstable_by_key(|l| (l.task_id, l.runner_id, l.claim));
    HeldBy {
        ids: sorted.iter().map(|l| l.task_id).collect(),
        runners: sorted.iter().map(|l| l.runner_id).collect(),
        claims: sorted.iter().map(|l| l.claim).collect(),
        statuses: from.iter().map(|s| s.as_str()).collect(),
        errors: None,
    }
}

/// A runner cycle's finished tasks (`completed`, and `failed` with their errors), whose status
/// is in `from`, as [`held_by`] locks them (in task id order, completed and failed together),
/// each with its error (`NULL` for a completed one).
pub(crate) fn held_for_cycle(
    completed: &[Lease],
    failed: &[FailedTask],
    from: StatusSet,
) -> HeldBy {
    let mut sorted: Vec<(Lease, Option<String>)> = completed
        .iter()
        .map(|l| (*l, None))
        .chain(failed.iter().map(|f| (f.lease, Some(f.error.clone()))))
        .collect();
    sorted.sort_unstable_by_key(|(l, _)| (l.task_id, l.runner_id, l.claim));
    HeldBy {
        ids: sorted.iter().map(|(l, _)| l.task_id).collect(),
        runners: sorted.iter().map(|(l, _)| l.runner_id).collect(),
        claims: sorted.iter().map(|(l, _)| l.claim).collect(),
        statuses: from.iter().map(|s| s.as_str()).collect(),
        errors: Some(sorted.into_iter().map(|(_, error)| error).collect()),
    }
}

impl Query for HeldBy {
    type SqlType = Id;
}

impl QueryFragment<Pg> for HeldBy {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(match self.errors {
            None => "SELECT held.id FROM unnest(",
            Some(_) => "SELECT held.id, lease.error FROM unnest(",
        });
        out.push_bind_param::<Array<Id>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Id>, _>(&self.runners)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.claims)?;
        if let Some(errors) = &self.errors {
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(errors)?;
            out.push_sql(") AS lease (id, runner, claim, error");
        } else {
            out.push_sql(") AS lease (id, runner, claim");
        }
        out.push_sql(
            ") CROSS JOIN LATERAL (SELECT \"id\" FROM \
             \"task_executions\" WHERE \"id\" = lease.id AND \"claimed_by\" = lease.runner \
             AND \"claim_count\" = lease.claim AND \"status\" = ANY(",
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
