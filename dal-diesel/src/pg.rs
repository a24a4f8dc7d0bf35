//! PostgreSQL's side of the shared types and expressions (feature `postgres`): the schema's
//! types are PostgreSQL's native `uuid`, `timestamptz` and `jsonb`, encoded as Diesel encodes
//! those; lists are arrays (`= ANY($1)`).

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{self, Array, BigInt, HasSqlType, Text};
use serde_json::Value;
use uuid::Uuid;

use crate::dialect::{IdList, InList, Limited, List, StatusIn, TextList};
use crate::types::{Id, Instant, Json};

/// `ToSql`/`FromSql` of a shared type as those of Diesel's native PostgreSQL type.
macro_rules! native {
    ($shared:ty, $native:ty, $rust:ty) => {
        impl ToSql<$shared, Pg> for $rust {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <$rust as ToSql<$native, Pg>>::to_sql(self, out)
            }
        }
        impl FromSql<$shared, Pg> for $rust {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                <$rust as FromSql<$native, Pg>>::from_sql(value)
            }
        }
    };
}

native!(Id, sql_types::Uuid, Uuid);
native!(Instant, sql_types::Timestamptz, DateTime<Utc>);
native!(Json, sql_types::Jsonb, Value);

impl ToSql<Array<Id>, Pg> for IdList<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <[Uuid] as ToSql<Array<Id>, Pg>>::to_sql(self.0, out)
    }
}

impl ToSql<Array<Text>, Pg> for TextList<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <[&str] as ToSql<Array<Text>, Pg>>::to_sql(self.0, out)
    }
}

/// `<expr> = ANY($1)`, the list one array parameter.
impl<E, L> QueryFragment<Pg> for InList<E, L>
where
    E: QueryFragment<Pg>,
    L: List + ToSql<Array<L::Element>, Pg>,
    Pg: HasSqlType<L::Element>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.expr.walk_ast(out.reborrow())?;
        out.push_sql(" = ANY(");
        out.push_bind_param::<Array<L::Element>, _>(&self.list)?;
        out.push_sql(")");
        Ok(())
    }
}

/// `<expr> = ANY($1)`, the set's statuses one array parameter: one text for every set.
impl<E: QueryFragment<Pg>> QueryFragment<Pg> for StatusIn<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.expr.walk_ast(out.reborrow())?;
        out.push_sql(" = ANY(");
        out.push_bind_param::<Array<Text>, _>(self.present())?;
        out.push_sql(")");
        Ok(())
    }
}

/// `<query> LIMIT $n`.
impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Limited<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(" LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}
