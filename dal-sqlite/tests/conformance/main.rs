//! The conformance suite (`dal-tests`) against `dal-sqlite`: every case on SQLite, its own
//! cases (opening), and what each variant changes: the history off, the async interface.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod factory;
mod opening;

use dal_tests::cases;
use dal_tests::operations::Statements;
use dal_tests::suite::{Backend, OwnCase, Run};
use dal_tests::variants::{ASYNC, Async, Unlogged};
use factory::Sqlite;

/// SQLite with the history off: a write of one statement runs without a transaction.
static NO_HISTORY: Unlogged = Unlogged {
    inner: &Sqlite,
    name: "sqlite_no_history",
    title: "SQLite, history off",
    counts: Statements {
        logged_write: 1,
        // The write that matched nothing, then one SELECT.
        rejected_write: 2,
        // BEGIN, four INSERTs of 2,048 rows at most, COMMIT.
        large_batch: 6,
        empty_claim: 1,
        // BEGIN IMMEDIATE, the claim, the completions, COMMIT.
        cycle: 4,
        cycle_per_failure: 1,
        sweep: 2,
        prune_removing: 7,
        prune_none_finished: 2,
        prune_nothing: 1,
    },
    // Without events, the INSERTs of events are not prepared.
    prepared: 27,
};

/// SQLite through the async interface.
static ASYNC_SQLITE: Async = Async { inner: &Sqlite, name: "async_sqlite" };

fn main() {
    let run = |backend: Backend, groups, own| Run {
        backend,
        groups,
        own,
        unavailable: None,
        in_readme: true,
    };
    let own = [
        (
            "a_store_that_cannot_be_opened_fails_at_once",
            opening::a_store_that_cannot_be_opened_fails_at_once as fn(),
        ),
        (
            "verified_migrations_missing_fail_the_open",
            opening::verified_migrations_missing_fail_the_open,
        ),
    ];
    let own = own.map(|(name, run)| OwnCase { group: "opening", name, run });
    let mut with_async = cases::calls();
    with_async.push(("async", ASYNC));
    dal_tests::suite::main(vec![
        run(&Sqlite, cases::all(), own.to_vec()),
        run(&NO_HISTORY, cases::without_history(), Vec::new()),
        run(&ASYNC_SQLITE, with_async, Vec::new()),
    ]);
}
