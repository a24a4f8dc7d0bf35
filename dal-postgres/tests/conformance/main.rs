//! The conformance suite (`dal-tests`) against `dal-postgres`: every case on PostgreSQL, its
//! own cases (opening, error codes, server restarts), and what each variant changes: the
//! history off, the async interface, a DML-only role with migrations as a step of their own,
//! and PgBouncer in transaction pooling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dml_only;
mod errors;
mod factory;
mod opening;
mod pooled;
mod restarts;

use dal_tests::cases::{self, model_based};
use dal_tests::provision::pooler;
use dal_tests::suite::{Backend, OwnCase, Run};
use dal_tests::variants::{ASYNC, Async, Unlogged};
use factory::{Postgres, STATEMENTS};

/// PostgreSQL with the history off: the same statements, with no event.
static NO_HISTORY: Unlogged = Unlogged {
    inner: &Postgres::Owner,
    name: "postgres_no_history",
    title: "PostgreSQL, history off",
    counts: STATEMENTS,
    prepared: 20,
};

/// PostgreSQL through the async interface.
static ASYNC_POSTGRES: Async = Async { inner: &Postgres::Owner, name: "async_postgres" };

/// The own cases of `group`: the functions `cases` of `module`, named as they are.
macro_rules! own {
    ($group:literal, $module:ident: $($case:ident),+) => {
        vec![$(OwnCase { group: $group, name: stringify!($case), run: $module::$case }),+]
    };
}

fn main() {
    let run = |backend: Backend, groups, own| Run {
        backend,
        groups,
        own,
        unavailable: None,
        in_readme: true,
    };
    let own = [
        own!("opening", opening: a_store_that_cannot_be_opened_fails_at_once,
            a_search_path_of_no_existing_schema_fails_the_connect,
            settings_in_the_url_are_compared_as_the_server_spells_them),
        own!("errors", errors: a_serialization_failure_is_retried_and_a_lasting_one_returned,
            a_deadlock_is_typed_by_its_code_and_retried_by_the_store,
            a_statement_cancelled_by_its_timeout_changes_nothing),
        own!("restarts", restarts:
            calls_across_server_restarts_are_all_or_nothing_and_the_pool_recovers),
    ];
    let migration_step = own!("migration_step", dml_only:
        verified_migrations_missing_fail_the_connect_and_nothing_is_written,
        the_migration_step_applies_each_migration_once, the_dml_only_role_cannot_migrate,
        the_printed_sql_migrates_a_schema_the_store_verifies,
        skipped_migrations_are_neither_applied_nor_checked);
    let pooler_cases = own!("pooler", pooled:
        options_the_pooler_drops_fail_the_connect_and_nothing_is_written,
        planner_settings_missing_on_the_server_fail_the_connect,
        processes_connecting_at_once_migrate_once);
    let mut with_async = cases::calls();
    with_async.push(("async", ASYNC));
    let model = vec![("model", model_based::CASES)];
    dal_tests::suite::main(vec![
        run(&Postgres::Owner, cases::all(), own.concat()),
        run(&NO_HISTORY, cases::without_history(), Vec::new()),
        run(&ASYNC_POSTGRES, with_async, Vec::new()),
        run(&Postgres::DmlOnly, model, migration_step),
        Run {
            unavailable: pooler::unavailable(),
            ..run(&Postgres::Pooled, cases::calls(), pooler_cases)
        },
    ]);
}
