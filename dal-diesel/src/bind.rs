//! Values of other crates (`uuid`, `chrono`, `serde_json`) as parameters of the schema's own
//! SQL types ([`crate::types`]). Only Diesel may implement `AsExpression` for another crate's
//! type, so a value goes in wrapped as a [`Bind`]: `t::id.eq(id(task))`.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, TypedExpressionType, ValidGrouping,
    is_aggregate,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, SqlType};

use crate::types::{Id, Instant, Json};

/// `value` bound as a parameter of SQL type `ST`.
#[derive(Debug, Clone, Copy)]
pub struct Bind<ST, T> {
    value: T,
    sql_type: PhantomData<ST>,
}

impl<ST, T> Bind<ST, T> {
    /// `value`, bound as `ST`.
    pub fn new(value: T) -> Self {
        Bind { value, sql_type: PhantomData }
    }
}

impl<ST: SqlType + TypedExpressionType, T> Expression for Bind<ST, T> {
    type SqlType = ST;
}

impl<ST, T, DB> QueryFragment<DB> for Bind<ST, T>
where
    DB: Backend + HasSqlType<ST>,
    T: ToSql<ST, DB>,
{
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        pass.push_bind_param(&self.value)
    }
}

impl<ST: QueryId, T> QueryId for Bind<ST, T> {
    type QueryId = Bind<ST::QueryId, ()>;
    const HAS_STATIC_QUERY_ID: bool = ST::HAS_STATIC_QUERY_ID;
}

impl<ST, T, QS> AppearsOnTable<QS> for Bind<ST, T> where Self: Expression {}

impl<ST, T, QS> SelectableExpression<QS> for Bind<ST, T> where Self: Expression {}

impl<ST, T, G> ValidGrouping<G> for Bind<ST, T> {
    type IsAggregate = is_aggregate::Never;
}

impl<ST, T> From<T> for Bind<ST, T> {
    fn from(value: T) -> Self {
        Bind::new(value)
    }
}

/// An id as a parameter.
pub fn id<T>(value: T) -> Bind<Id, T> {
    Bind::new(value)
}

/// A time as a parameter.
pub fn instant<T>(value: T) -> Bind<Instant, T> {
    Bind::new(value)
}

/// A JSON document as a parameter.
pub fn json<T>(value: T) -> Bind<Json, T> {
    Bind::new(value)
}
