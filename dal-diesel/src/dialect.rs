//! The expressions whose SQL differs between the databases, built the same way on both: a
//! statement that uses them has one Rust type and one shape, and each database writes them in
//! its own dialect (`pg.rs`, `sqlite.rs`). Every one has a fixed SQL text for any value, so
//! a statement that uses it is kept prepared.

use dal_core::{StatusSet, TaskStatus};
use diesel::RunQueryDsl;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{Query, QueryId};
use diesel::sql_types::Bool;
use uuid::Uuid;

/// A list of ids bound whole as one parameter: an array on PostgreSQL, a JSON array of hex
/// texts on SQLite.
#[derive(Debug, Clone, Copy)]
pub struct IdList<'a>(pub &'a [Uuid]);

/// A list of texts bound whole as one parameter: an array on PostgreSQL, a JSON array on SQLite.
#[derive(Debug, Clone, Copy)]
pub struct TextList<'a>(pub &'a [&'a str]);

/// `<expr> IN <list>`, the list one parameter of any length: `= ANY($1)` on PostgreSQL, `IN
/// (SELECT ... FROM json_each(?))` on SQLite.
#[derive(Debug, Clone, Copy)]
pub struct InList<E, L> {
    pub(crate) expr: E,
    pub(crate) list: L,
}

/// `expr IN ids`.
pub fn in_ids<E>(expr: E, ids: &[Uuid]) -> InList<E, IdList<'_>> {
    InList { expr, list: IdList(ids) }
}

/// `expr IN texts`.
pub fn in_texts<'a, E>(expr: E, texts: &'a [&'a str]) -> InList<E, TextList<'a>> {
    InList { expr, list: TextList(texts) }
}

/// Ids as one JSON array of hex texts, for SQLite's `IN (SELECT unhex(value) FROM
/// json_each(?))`.
pub fn hex_json(ids: &[Uuid]) -> String {
    let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    serde_json::Value::from(hex).to_string()
}

/// `<expr> IN <statuses>`, `expr` a status column: `= ANY($1)` on PostgreSQL; on SQLite one
/// `= ?` per [`TaskStatus`], the slots the set leaves unused bound to NULL.
#[derive(Debug, Clone, Copy)]
pub struct StatusIn<E> {
    pub(crate) expr: E,
    /// The set's statuses first, then `None` (SQLite's slots).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) slots: [Option<&'static str>; TaskStatus::ALL.len()],
    /// The set's statuses first, then `""` (PostgreSQL's array, up to `len`).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    names: [&'static str; TaskStatus::ALL.len()],
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    len: usize,
}

/// `expr IN set`.
pub fn status_in<E>(expr: E, set: StatusSet) -> StatusIn<E> {
    let mut slots = [None; TaskStatus::ALL.len()];
    let mut names = [""; TaskStatus::ALL.len()];
    let mut len = 0;
    for ((slot, name), status) in slots.iter_mut().zip(names.iter_mut()).zip(set.iter()) {
        *slot = Some(status.as_str());
        *name = status.as_str();
        len += 1;
    }
    StatusIn { expr, slots, names, len }
}

impl<E> StatusIn<E> {
    /// The set's statuses.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn present(&self) -> &[&'static str] {
        &self.names[..self.len]
    }
}

/// `<query> LIMIT <n>`, `n` one parameter: ` LIMIT $n` on PostgreSQL, ` LIMIT +?` on SQLite,
/// where a bound `LIMIT ?` makes SQLite prepare the statement again at every execution and the
/// expression `+?` does not.
#[derive(Debug, Clone, Copy)]
pub struct Limited<Q> {
    pub(crate) query: Q,
    pub(crate) limit: i64,
}

/// `query LIMIT limit` (the query without a `LIMIT` of its own).
pub fn limited<Q>(query: Q, limit: u32) -> Limited<Q> {
    Limited { query, limit: i64::from(limit) }
}

impl<Q: Query> Query for Limited<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryId> QueryId for Limited<Q> {
    type QueryId = Limited<Q::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q, Conn> RunQueryDsl<Conn> for Limited<Q> {}

/// A list bound whole as one parameter: what [`InList`] needs to know of it on each database.
pub trait List {
    /// The `'static` key the list contributes to a statement's [`QueryId`].
    type Key: 'static;
    /// The SQL type of an element (PostgreSQL binds the list as an array of it).
    type Element: diesel::sql_types::SqlType + 'static;
    /// An element of SQLite's `json_each` (`value`) as the column's value.
    const JSON_ELEMENT: &'static str;
}

impl List for IdList<'_> {
    type Key = IdList<'static>;
    type Element = crate::types::Id;
    const JSON_ELEMENT: &'static str = "unhex(value)";
}

impl List for TextList<'_> {
    type Key = TextList<'static>;
    type Element = diesel::sql_types::Text;
    const JSON_ELEMENT: &'static str = "value";
}

impl<E: Expression, L> Expression for InList<E, L> {
    type SqlType = Bool;
}

impl<E: QueryId, L: List> QueryId for InList<E, L> {
    type QueryId = InList<E::QueryId, L::Key>;
    const HAS_STATIC_QUERY_ID: bool = E::HAS_STATIC_QUERY_ID;
}

impl<E: AppearsOnTable<QS>, L, QS> AppearsOnTable<QS> for InList<E, L> {}

impl<E: SelectableExpression<QS>, L, QS> SelectableExpression<QS> for InList<E, L> {}

impl<E: ValidGrouping<G>, L, G> ValidGrouping<G> for InList<E, L> {
    type IsAggregate = E::IsAggregate;
}

impl<E: Expression> Expression for StatusIn<E> {
    type SqlType = Bool;
}

impl<E: QueryId> QueryId for StatusIn<E> {
    type QueryId = StatusIn<E::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = E::HAS_STATIC_QUERY_ID;
}

impl<E: AppearsOnTable<QS>, QS> AppearsOnTable<QS> for StatusIn<E> {}

impl<E: SelectableExpression<QS>, QS> SelectableExpression<QS> for StatusIn<E> {}

impl<E: ValidGrouping<G>, G> ValidGrouping<G> for StatusIn<E> {
    type IsAggregate = E::IsAggregate;
}
