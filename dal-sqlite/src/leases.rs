//! `(id, claimed_by, claim_count) IN (<leases>)`: a batch of leases as one JSON parameter.

use dal_core::Lease;
use diesel::QueryResult;
use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Text};
use diesel::sqlite::Sqlite;

use dal_diesel::schema::task_executions;

/// The rows whose current claim is one of the leases.
#[derive(Debug, Clone)]
pub(crate) struct HeldBy {
    json: String,
}

/// The rows of `task_executions` whose current claim is one of `leases`: the leases travel as
/// `[[task hex, runner hex, claim], ...]`.
pub(crate) fn held_by(leases: &[Lease]) -> HeldBy {
    let rows: Vec<serde_json::Value> = leases
        .iter()
        .map(|l| {
            serde_json::json!([
                l.task_id.simple().to_string(),
                l.runner_id.simple().to_string(),
                l.claim
            ])
        })
        .collect();
    HeldBy {
        json: serde_json::Value::from(rows).to_string(),
    }
}

impl Expression for HeldBy {
    type SqlType = Bool;
}

impl QueryFragment<Sqlite> for HeldBy {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "(\"task_executions\".\"id\", \"task_executions\".\"claimed_by\", \
             \"task_executions\".\"claim_count\") IN (SELECT unhex(value ->> 0), \
             unhex(value ->> 1), value ->> 2 FROM json_each(",
        );
        out.push_bind_param::<Text, _>(&self.json)?;
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
