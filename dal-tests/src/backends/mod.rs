//! The two backends of this workspace as the suite tests them. Each backend crate's
//! `tests/conformance.rs` runs the suite with its own; `cargo test -p dal-tests` runs it with
//! both ([`ALL`]) and with both through the async interface ([`ASYNC`]).

pub mod asynchronous;
pub mod postgres;
pub mod sqlite;

use crate::backend::Backend;

/// `dal-postgres`.
pub static POSTGRES: postgres::Postgres = postgres::Postgres;

/// `dal-sqlite`.
pub static SQLITE: sqlite::Sqlite = sqlite::Sqlite;

/// Both backends, in the order of the README's columns.
pub const ALL: [Backend; 2] = [&POSTGRES, &SQLITE];

/// `dal-postgres` through the async interface (`AsyncStore`).
pub static ASYNC_POSTGRES: asynchronous::Async = asynchronous::Async {
    inner: &POSTGRES,
    name: "async_postgres",
};

/// `dal-sqlite` through the async interface (`AsyncStore`).
pub static ASYNC_SQLITE: asynchronous::Async = asynchronous::Async {
    inner: &SQLITE,
    name: "async_sqlite",
};

/// Both backends through the async interface.
pub const ASYNC: [Backend; 2] = [&ASYNC_POSTGRES, &ASYNC_SQLITE];
