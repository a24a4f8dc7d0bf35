//! The conformance suite (`dal-tests`) against `dal-postgres`: every case on PostgreSQL, its
//! own cases (opening, error codes, server restarts), and what each variant changes: the
//! history off, the async interface, a DML-only role with migrations as a step of their own,
//! and PgBouncer in transaction pooling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod factory;
mod dml_only;
mod errors;
mod opening;
mod pooled;
mod restarts;

use dal_tests::cases::{self, model_based};
use dal_tests::operations::Statements;
use dal_tests::provision::pooler;
use dal_tests::suite::{OwnCase, Run};
use dal_tests::variants::{ASYNC, Async, Unlogged};
use factory::POSTGRES;

/// PostgreSQL with the history off: every write is the same one statement, with no event.
static NO_HISTORY: Unlogged = Unlogged {
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
    // The same statements as with the history kept.
    prepared: 20,
};

/// PostgreSQL through the async interface.
static ASYNC_POSTGRES: Async = Async {
    inner: &POSTGRES,
    name: "async_postgres",
};

/// `list` as the own cases of `group`.
fn own(group: &'static str, list: &[(&'static str, fn())]) -> Vec<OwnCase> {
    list.iter()
        .map(|&(name, run)| OwnCase { group, name, run })
        .collect()
}

fn main() {
    let run = |backend, groups, own: Vec<OwnCase>| Run {
        backend,
        groups,
        own,
        unavailable: None,
        in_readme: true,
    };
    let postgres_own = [
        own("opening", opening::CASES),
        own("errors", errors::CASES),
        own("restarts", restarts::CASES),
    ]
    .concat();
    let mut with_async = cases::calls();
    with_async.push(("async", ASYNC));
    dal_tests::suite::main(vec![
        run(&POSTGRES, cases::all(), postgres_own),
        run(&NO_HISTORY, cases::without_history(), Vec::new()),
        run(&ASYNC_POSTGRES, with_async, Vec::new()),
        run(
            &dml_only::DmlOnly,
            vec![("model", model_based::CASES)],
            own("migration_step", dml_only::CASES),
        ),
        Run {
            unavailable: pooler::unavailable(),
            ..run(
                &pooled::Pooled,
                cases::calls(),
                own("pooler", pooled::CASES),
            )
        },
    ]);
}
