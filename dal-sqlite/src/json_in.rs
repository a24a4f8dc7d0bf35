//! Large `IN` lists on SQLite as one JSON parameter.
//!
//! SQLite binds at most 32,766 parameters a statement, and Diesel's `IN (?, ?, ...)` changes its
//! text with the length of the list. `<expr> IN (SELECT ... FROM json_each(?))` binds the whole
//! list as one JSON array: any length, one fixed text, kept prepared.

use diesel::QueryResult;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Text};
use diesel::sqlite::Sqlite;
use uuid::Uuid;

/// `<expr> IN (SELECT <element> FROM json_each(<json>))`.
#[derive(Debug, Clone)]
pub(crate) struct InJson<E> {
    expr: E,
    json: String,
    element: &'static str,
}

/// `expr IN ids`, `expr` being a 16-byte BLOB column: the ids travel as hex text.
pub(crate) fn in_ids<E>(expr: E, ids: &[Uuid]) -> InJson<E> {
    InJson {
        expr,
        json: ids_json(ids),
        element: "unhex(value)",
    }
}

/// Ids as one JSON array of hex texts, for `IN (SELECT unhex(value) FROM json_each(?))`.
pub(crate) fn ids_json(ids: &[Uuid]) -> String {
    let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    serde_json::Value::from(hex).to_string()
}

/// `expr IN texts`.
pub(crate) fn in_texts<E>(expr: E, texts: &[&str]) -> InJson<E> {
    InJson {
        expr,
        json: serde_json::Value::from(texts.to_vec()).to_string(),
        element: "value",
    }
}

impl<E: Expression> Expression for InJson<E> {
    type SqlType = Bool;
}

impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for InJson<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.expr.walk_ast(out.reborrow())?;
        out.push_sql(" IN (SELECT ");
        out.push_sql(self.element);
        out.push_sql(" FROM json_each(");
        out.push_bind_param::<Text, _>(&self.json)?;
        out.push_sql("))");
        Ok(())
    }
}

impl<E> QueryId for InJson<E> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for InJson<E> {}

impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for InJson<E> {}

impl<E: ValidGrouping<G>, G> ValidGrouping<G> for InJson<E> {
    type IsAggregate = E::IsAggregate;
}
