//! `(id, claimed_by, claim_count) IN (<leases>)`: a batch of leases as three array parameters.

use dal_core::Lease;
use diesel::QueryResult;
use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate,
};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Bool, Integer};
use uuid::Uuid;

use crate::schema::task_executions;

/// The rows whose current claim is one of the leases.
#[derive(Debug, Clone)]
pub(crate) struct HeldBy {
    ids: Vec<Uuid>,
    runners: Vec<Uuid>,
    claims: Vec<i32>,
}

/// The rows of `task_executions` whose current claim is one of `leases`.
pub(crate) fn held_by(leases: &[Lease]) -> HeldBy {
    HeldBy {
        ids: leases.iter().map(|l| l.task_id).collect(),
        runners: leases.iter().map(|l| l.runner_id).collect(),
        claims: leases.iter().map(|l| l.claim).collect(),
    }
}

impl Expression for HeldBy {
    type SqlType = Bool;
}

impl QueryFragment<Pg> for HeldBy {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "(\"task_executions\".\"id\", \"task_executions\".\"claimed_by\", \
             \"task_executions\".\"claim_count\") IN (SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<diesel::sql_types::Uuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<diesel::sql_types::Uuid>, _>(&self.runners)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.claims)?;
        out.push_sql("))");
        Ok(())
    }
}

impl QueryId for HeldBy {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl AppearsOnTable<task_executions::table> for HeldBy {}

impl SelectableExpression<task_executions::table> for HeldBy {}

impl ValidGrouping<()> for HeldBy {
    type IsAggregate = is_aggregate::No;
}
