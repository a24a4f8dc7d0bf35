//! The schema's own SQL types: one per kind of value the two databases store differently.
//!
//! | Type | Rust | PostgreSQL | SQLite |
//! |---|---|---|---|
//! | [`Id`] | `uuid::Uuid` | `uuid` | 16-byte `BLOB` |
//! | [`Instant`] | `chrono::DateTime<Utc>` | `timestamptz` | `INTEGER` microseconds since the Unix epoch |
//! | [`Json`] | `serde_json::Value` | `jsonb` | `TEXT` |
//!
//! With these, one schema and one row type serve both databases. Each backend's encoding is a
//! `ToSql`/`FromSql` pair in `pg.rs` or `sqlite.rs`; PostgreSQL's types are named by their fixed
//! OIDs, so no connection ever looks a type up.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::query_builder::QueryId;
use diesel::sql_types::{Nullable, SqlType};

/// A UUID.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[diesel(postgres_type(oid = 2950, array_oid = 2951))]
#[diesel(sqlite_type(name = "Binary"))]
pub struct Id;

/// A point in time, to the microsecond.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[diesel(postgres_type(oid = 1184, array_oid = 1185))]
#[diesel(sqlite_type(name = "Long"))]
pub struct Instant;

/// A JSON document.
#[derive(Debug, Clone, Copy, Default, SqlType, QueryId)]
#[diesel(postgres_type(oid = 3802, array_oid = 3807))]
#[diesel(sqlite_type(name = "Text"))]
pub struct Json;

/// A stored value that does not decode (the schema should not let it in).
#[cfg(feature = "sqlite")]
pub(crate) fn undecodable(what: String) -> Box<dyn std::error::Error + Send + Sync> {
    what.into()
}

/// An id as read. Diesel reads a [`uuid::Uuid`] from a row only where it has a UUID type of its
/// own (PostgreSQL), so the rows read ids through this (and [`MaybeId`]) on every database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub struct IdValue(pub uuid::Uuid);

/// A nullable id as read (see [`IdValue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub struct MaybeId(pub Option<uuid::Uuid>);

impl From<IdValue> for uuid::Uuid {
    fn from(id: IdValue) -> Self {
        id.0
    }
}

impl From<MaybeId> for Option<uuid::Uuid> {
    fn from(id: MaybeId) -> Self {
        id.0
    }
}

impl<DB: Backend> FromSql<Id, DB> for IdValue
where
    uuid::Uuid: FromSql<Id, DB>,
{
    fn from_sql(value: DB::RawValue<'_>) -> deserialize::Result<Self> {
        uuid::Uuid::from_sql(value).map(IdValue)
    }
}

impl<DB: Backend> FromSql<Nullable<Id>, DB> for MaybeId
where
    uuid::Uuid: FromSql<Id, DB>,
{
    fn from_sql(value: DB::RawValue<'_>) -> deserialize::Result<Self> {
        uuid::Uuid::from_sql(value).map(|id| MaybeId(Some(id)))
    }

    fn from_nullable_sql(value: Option<DB::RawValue<'_>>) -> deserialize::Result<Self> {
        value.map_or(Ok(MaybeId(None)), Self::from_sql)
    }
}
