//! The conformance suite against both backends of the workspace, called directly, through
//! the async interface, with the history off, PostgreSQL with a DML-only role, and PostgreSQL behind PgBouncer (each backend crate also runs it against its own, from its
//! `tests/conformance.rs`).

fn main() {
    let [postgres, sqlite] = dal_tests::backends::ALL;
    let [async_postgres, async_sqlite] = dal_tests::backends::ASYNC;
    let [postgres_no_history, sqlite_no_history] = dal_tests::backends::NO_HISTORY;
    dal_tests::suite::main(&[
        postgres,
        sqlite,
        async_postgres,
        async_sqlite,
        postgres_no_history,
        sqlite_no_history,
        &dal_tests::backends::POSTGRES_DML_ONLY,
        &dal_tests::backends::PGBOUNCER,
    ]);
}
