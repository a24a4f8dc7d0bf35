//! SQLite's side of the shared types and expressions (feature `sqlite`): SQLite has no UUID,
//! timestamp or JSON types, so ids are 16-byte BLOBs, times microseconds since the Unix epoch,
//! JSON text; a list is one JSON array parameter (`IN (SELECT ... FROM json_each(?))`).
//!
//! SQLite binds at most 32,766 parameters a statement, and Diesel's `IN (?, ?, ...)` changes its
//! text with the length of the list; one JSON parameter has any length and one fixed text,
//! kept prepared.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::deserialize::{self, FromSql};
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::sqlite::{Sqlite, SqliteValue};
use serde_json::Value;
use uuid::Uuid;

use crate::dialect::{IdList, InList, Limited, List, StatusIn, TextList};
use crate::types::{Id, Instant, Json, undecodable};

impl ToSql<Id, Sqlite> for Uuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.as_bytes().as_slice());
        Ok(IsNull::No)
    }
}

impl FromSql<Id, Sqlite> for Uuid {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let bytes = <Vec<u8> as FromSql<Binary, Sqlite>>::from_sql(value)?;
        Uuid::from_slice(&bytes).map_err(|e| undecodable(format!("stored id is not a UUID: {e}")))
    }
}

impl ToSql<Instant, Sqlite> for DateTime<Utc> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.timestamp_micros());
        Ok(IsNull::No)
    }
}

impl FromSql<Instant, Sqlite> for DateTime<Utc> {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let micros = <i64 as FromSql<BigInt, Sqlite>>::from_sql(value)?;
        DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| undecodable(format!("time {micros} µs is out of range")))
    }
}

impl ToSql<Json, Sqlite> for Value {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.to_string());
        Ok(IsNull::No)
    }
}

impl FromSql<Json, Sqlite> for Value {
    fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Sqlite>>::from_sql(value)?;
        serde_json::from_str(&text)
            .map_err(|e| undecodable(format!("stored JSON does not parse: {e}")))
    }
}

/// The ids as one JSON array of hex texts.
impl ToSql<Text, Sqlite> for IdList<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(crate::dialect::hex_json(self.0));
        Ok(IsNull::No)
    }
}

/// The texts as one JSON array.
impl ToSql<Text, Sqlite> for TextList<'_> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(Value::from(self.0.to_vec()).to_string());
        Ok(IsNull::No)
    }
}

/// `<expr> IN (SELECT <element> FROM json_each(?))`, the list one JSON parameter.
impl<E, L> QueryFragment<Sqlite> for InList<E, L>
where
    E: QueryFragment<Sqlite>,
    L: List + ToSql<Text, Sqlite>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.expr.walk_ast(out.reborrow())?;
        out.push_sql(" IN (SELECT ");
        out.push_sql(L::JSON_ELEMENT);
        out.push_sql(" FROM json_each(");
        out.push_bind_param::<Text, _>(&self.list)?;
        out.push_sql("))");
        Ok(())
    }
}

/// `(<expr> = ? OR <expr> = ? ...)`, one slot per status, the unused ones NULL (which matches
/// nothing): one text for every set, and a plain comparison SQLite evaluates without a
/// subquery.
impl<E: QueryFragment<Sqlite>> QueryFragment<Sqlite> for StatusIn<E> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("(");
        for (i, slot) in self.slots.iter().enumerate() {
            if i > 0 {
                out.push_sql(" OR ");
            }
            self.expr.walk_ast(out.reborrow())?;
            out.push_sql(" = ");
            out.push_bind_param::<Nullable<Text>, _>(slot)?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// `<query> LIMIT +?`: an expression SQLite evaluates when the statement runs, so that binding
/// a new limit does not make it prepare the statement again (see [`Limited`]).
impl<Q: QueryFragment<Sqlite>> QueryFragment<Sqlite> for Limited<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(" LIMIT +");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        Ok(())
    }
}
