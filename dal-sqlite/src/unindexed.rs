//! `+expr`: SQLite's way to keep one term of a `WHERE` clause from choosing the index.
//!
//! The stale-claim sweep has a narrow index of its own (claimed tasks by heartbeat); its
//! status check would otherwise lead SQLite, without statistics, to scan the status index
//! instead (every running task) and sort.

use diesel::QueryResult;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sqlite::Sqlite;

/// `+<expr>`: the same value, not usable by an index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unindexed<E>(pub(crate) E);

impl<E: Expression> Expression for Unindexed<E> {
    type SqlType = E::SqlType;
}

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Unindexed<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("+");
        self.0.walk_ast(out.reborrow())
    }
}

impl<E: QueryId> QueryId for Unindexed<E> {
    type QueryId = Unindexed<E::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = E::HAS_STATIC_QUERY_ID;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for Unindexed<E> {}

impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for Unindexed<E> {}

impl<E: ValidGrouping<G>, G> ValidGrouping<G> for Unindexed<E> {
    type IsAggregate = E::IsAggregate;
}
