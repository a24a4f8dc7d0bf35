//! The conformance suite against `dal-postgres`, its own cases, and what each variant changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dml_only;
mod errors;
mod factory;
mod listening;
mod opening;
mod pooled;
mod restarts;

use dal_tests::cases::{self, model_based};
use dal_tests::own_cases;
use dal_tests::suite::{self, Run};
use factory::{PREPARED, Postgres, STATEMENTS};

fn main() {
    let own = [
        own_cases!("opening", opening: a_store_that_cannot_be_opened_fails_at_once,
            a_search_path_of_no_existing_schema_fails_the_connect,
            settings_in_the_url_are_compared_as_the_server_spells_them,
            a_migration_in_progress_is_waited_for_past_the_lock_timeout),
        own_cases!("errors", errors: a_serialization_failure_is_retried_and_a_lasting_one_returned,
            a_deadlock_is_typed_by_its_code_and_retried_by_the_store,
            a_statement_cancelled_by_its_timeout_changes_nothing),
        own_cases!("restarts", restarts:
            calls_across_server_restarts_are_all_or_nothing_and_the_pool_recovers,
            a_waiting_runner_claims_what_is_written_after_a_server_restart),
        own_cases!("listening", listening:
            a_killed_listening_connection_is_replaced_and_no_task_is_missed,
            behind_a_transaction_pooler_waiters_wake_at_the_stated_interval),
    ];
    let migration_step = own_cases!("migration_step", dml_only:
        verified_migrations_missing_fail_the_connect_and_nothing_is_written,
        the_migration_step_applies_each_migration_once, the_dml_only_role_cannot_migrate,
        the_printed_sql_migrates_a_schema_the_store_verifies,
        skipped_migrations_are_neither_applied_nor_checked);
    let pooler = own_cases!("pooler", pooled:
        options_the_pooler_drops_fail_the_connect_and_nothing_is_written,
        planner_settings_missing_on_the_server_fail_the_connect,
        processes_connecting_at_once_migrate_once);
    let mut runs =
        dal_tests::variants::runs(&Postgres::Owner, own.concat(), (STATEMENTS, PREPARED));
    runs.push(Run(&Postgres::DmlOnly, vec![("model", model_based::CASES)], migration_step, None));
    let unavailable = dal_tests::provision::pooler::unavailable();
    runs.push(Run(&Postgres::Pooled, cases::calls(), pooler, unavailable));
    suite::main(runs);
}
