//! The two backends of this workspace as the suite tests them. Each backend crate's
//! `tests/conformance.rs` runs the suite with its own; `cargo test -p dal-tests` runs it with
//! both ([`ALL`]) and with both through the async interface ([`ASYNC`]).

pub mod asynchronous;
pub mod postgres;
pub mod sqlite;
pub mod unlogged;

use crate::backend::Backend;
use crate::operations::Statements;

/// `dal-postgres`.
pub static POSTGRES: postgres::Postgres = postgres::Postgres;

/// `dal-sqlite`.
pub static SQLITE: sqlite::Sqlite = sqlite::Sqlite;

/// `dal-postgres` behind PgBouncer in transaction pooling (its cases are ignored unless
/// `DAL_TEST_POOLER` names one; see [`crate::provision::pooler`]).
pub static PGBOUNCER: postgres::pooled::Pooled = postgres::pooled::Pooled;

/// `dal-postgres` as a deployment with a separate migration step runs it: the stores connect
/// as a role with only DML rights, and verify the migrations.
pub static POSTGRES_DML_ONLY: postgres::dml_only::DmlOnly = postgres::dml_only::DmlOnly;

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

/// `dal-postgres` with the history off: every write is the same one statement, without its
/// event insert.
pub static POSTGRES_NO_HISTORY: unlogged::Unlogged = unlogged::Unlogged {
    inner: &POSTGRES,
    name: "postgres_no_history",
    title: "PostgreSQL, history off",
    counts: Statements {
        logged_write: 1,
        rejected_write: 2,
        large_batch: 1,
        empty_claim: 1,
        cycle: 1,
        cycle_per_failure: 0,
        sweep: 2,
        prune_removing: 1,
        prune_none_finished: 1,
        prune_nothing: 1,
    },
    // Measured: the same statements as with the history kept.
    prepared: 20,
};

/// `dal-sqlite` with the history off: a write of one statement runs without a transaction.
pub static SQLITE_NO_HISTORY: unlogged::Unlogged = unlogged::Unlogged {
    inner: &SQLITE,
    name: "sqlite_no_history",
    title: "SQLite, history off",
    counts: Statements {
        logged_write: 1,
        // The write that matched nothing, then one SELECT.
        rejected_write: 2,
        // BEGIN, three INSERTs of 2,730 rows at most, COMMIT.
        large_batch: 6,
        empty_claim: 1,
        // BEGIN IMMEDIATE, the completions, the claim, COMMIT.
        cycle: 4,
        cycle_per_failure: 1,
        sweep: 2,
        prune_removing: 7,
        prune_none_finished: 2,
        prune_nothing: 1,
    },
    // Measured: without events, the INSERTs of events are not prepared.
    prepared: 27,
};

/// Both backends with the history off, in the order of the README's columns.
pub const NO_HISTORY: [Backend; 2] = [&POSTGRES_NO_HISTORY, &SQLITE_NO_HISTORY];
