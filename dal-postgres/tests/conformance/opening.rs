//! Opening a PostgreSQL store where none can be opened.

use dal_core::DalError;

use dal_tests::cases::opening::{AT_ONCE, TIMEOUT, failure};
use dal_tests::provision::postgres::server_url_with;

/// This backend's cases of opening a store.
pub const CASES: &[(&str, fn())] = &[
    (
        "a_store_that_cannot_be_opened_fails_at_once",
        a_store_that_cannot_be_opened_fails_at_once,
    ),
    (
        "a_search_path_of_no_existing_schema_fails_the_connect",
        a_search_path_of_no_existing_schema_fails_the_connect,
    ),
    (
        "settings_in_the_url_are_compared_as_the_server_spells_them",
        settings_in_the_url_are_compared_as_the_server_spells_them,
    ),
];

/// PostgreSQL: a refused connection, an unknown database, an unknown role.
pub fn a_store_that_cannot_be_opened_fails_at_once() {
    // A refused connection (nothing listens on port 1), an unknown database, an
    // unknown role. (A refused password needs a server that asks for one; the test
    // servers trust their clients.)
    let urls = [
        "postgres://postgres@127.0.0.1:1/postgres".to_owned(),
        server_url_with(&[("dbname", "dal_no_such_database")]),
        server_url_with(&[("user", "dal_no_such_role")]),
    ];
    for url in urls {
        let (err, took) = failure(|| {
            dal_postgres::PgOptions::new(url.clone())
                .connect_timeout(TIMEOUT)
                .connect()
                .map(drop)
        });
        assert!(matches!(err, DalError::Connection { .. }), "{url}: {err:?}");
        assert!(took < AT_ONCE, "{url}: took {took:?}: {err}");
    }
}

/// Asserts that `err` is [`DalError::Settings`] with these fields (`hint` containing
/// `hint_has`), and not retryable.
pub fn assert_settings_error(
    err: &DalError,
    (setting, requested, actual): (&str, &str, &str),
    hint_has: &str,
) {
    match err {
        DalError::Settings {
            setting: found_setting,
            requested: found_requested,
            actual: found_actual,
            hint,
        } => {
            assert_eq!(found_setting, setting);
            assert_eq!(found_requested, requested);
            assert_eq!(found_actual, actual);
            assert!(hint.contains(hint_has), "{hint}");
        }
        other => panic!("expected DalError::Settings, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

/// A `search_path` that names no existing schema: the session has no schema to create the
/// tables in, and the connect says so before any migration runs.
pub fn a_search_path_of_no_existing_schema_fails_the_connect() {
    let url = server_url_with(&[("options", "-csearch_path=dal_no_such_schema")]);
    let err = dal_postgres::PgOptions::new(url)
        .pool_size(1)
        .connect()
        .map(drop)
        .expect_err("no schema to work in");
    assert_settings_error(
        &err,
        (
            "current_schema()",
            "a schema of search_path dal_no_such_schema",
            "none",
        ),
        "create the schema",
    );
}

/// Settings the URL asks for are compared as the server spells them: `5000` (milliseconds)
/// is the `5s` the session shows, and the store opens.
pub fn settings_in_the_url_are_compared_as_the_server_spells_them() {
    let schema = dal_tests::provision::postgres::TempSchema::with_connections(1);
    let url = schema.url_with_options("-c statement_timeout=5000 -c work_mem=8192");
    let store = dal_postgres::PgOptions::new(url)
        .pool_size(1)
        .connect()
        .expect("the settings took effect");
    drop(store);
}
