//! The conformance suite against `dal-sqlite`, its own cases, and what each variant changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod factory;
mod opening;

use dal_tests::operations::Statements;
use dal_tests::suite::TestBackend;

fn main() {
    let own = dal_tests::own_cases!("opening", opening: a_store_that_cannot_be_opened_fails_at_once,
        verified_migrations_missing_fail_the_open);
    // With the history off a write of one statement runs without a transaction.
    let no_history = Statements {
        logged_write: 1,
        // The write that matched nothing, then one SELECT.
        rejected_write: 2,
        // BEGIN, four INSERTs of 2,048 rows at most, COMMIT.
        large_batch: 6,
        empty_claim: 1,
        // BEGIN IMMEDIATE, the claim, the completions, COMMIT.
        cycle: 4,
        sweep: 2,
        ..factory::Sqlite.traits().counts
    };
    // Without events, the INSERTs of events are not prepared.
    dal_tests::suite::main(dal_tests::variants::runs(&factory::Sqlite, own, (no_history, 27)));
}
