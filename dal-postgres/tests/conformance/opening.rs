//! Opening where none can be opened, and the session a store checks.

use std::time::Instant;

use dal_core::DalError;
use dal_postgres::PgOptions;
use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;

use crate::factory::{applied, assert_settings_error, assert_writes, connect, select, versions};
use dal_tests::cases::opening::{AT_ONCE, TIMEOUT, failure};
use dal_tests::provision::postgres::{TempSchema, server_url, with_params};

/// A refused connection, an unknown database, an unknown role: `Connection`, at once.
pub fn a_store_that_cannot_be_opened_fails_at_once() {
    let unknown = |key, value| with_params(server_url(), &[(key, value)]);
    let urls = [
        "postgres://postgres@127.0.0.1:1/postgres".to_owned(),
        unknown("dbname", "dal_no_such_database"),
        unknown("user", "dal_no_such_role"),
    ];
    for url in urls {
        let options = PgOptions::new(url.clone()).connect_timeout(TIMEOUT);
        let (err, took) = failure(|| options.connect().map(drop));
        assert!(matches!(err, DalError::Connection { .. }), "{url}: {err:?}");
        assert!(took < AT_ONCE, "{url}: took {took:?}: {err}");
    }
}

/// A `search_path` of no existing schema: the connect says so before any migration runs.
pub fn a_search_path_of_no_existing_schema_fails_the_connect() {
    let url = with_params(server_url(), &[("options", "-csearch_path=dal_no_such_schema")]);
    let err = PgOptions::new(url).pool_size(1).connect().map(drop).unwrap_err();
    let expected = ["current_schema()", "a schema of search_path dal_no_such_schema", "none"];
    assert_settings_error(&err, expected, "create the schema");
}

/// Settings in the URL are compared as the server spells them (`5000` is `5s`).
pub fn settings_in_the_url_are_compared_as_the_server_spells_them() {
    let schema = TempSchema::with_connections(1);
    let url = schema.url_with_options("-c statement_timeout=5000 -c work_mem=8192");
    PgOptions::new(url).pool_size(1).connect().expect("the settings took effect");
}

/// An open with a short `lock_timeout` waits past it for the migrations' advisory lock another
/// session holds, opens once it is released, and the schema is migrated once.
pub fn a_migration_in_progress_is_waited_for_past_the_lock_timeout() {
    let schema = TempSchema::with_connections(1);
    let sql = dal_postgres::migrations_sql();
    let key = sql.split("pg_advisory_xact_lock(").nth(1).and_then(|rest| rest.split(')').next());
    let key = key.expect("the lock's key");
    let waited = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
         AND wait_event = 'advisory' AND clock_timestamp() - query_start > interval '250 ms'",
        schema.name()
    );
    let url = schema.url_with_options("-c lock_timeout=25");
    std::thread::scope(|scope| {
        // Owned here: a failure below drops it, releasing the lock, before the scope joins.
        let mut holder = connect(schema.url());
        let lock = format!("SELECT pg_advisory_lock({key})");
        holder.batch_execute(&lock).expect("take the migrations' lock");
        let opening = scope.spawn(|| PgOptions::new(url).pool_size(1).connect());
        let started = Instant::now();
        while select::<BigInt, i64>(&mut holder, &waited) == 0 {
            if opening.is_finished() {
                panic!("the open did not wait: {:?}", opening.join().map(|r| r.map(drop)));
            }
            assert!(started.elapsed() < TIMEOUT, "the open never waited");
        }
        let unlock = format!("SELECT pg_advisory_unlock({key})");
        holder.batch_execute(&unlock).expect("release the lock");
        let store = opening.join().unwrap().expect("opens once the lock is released");
        assert_writes(&store);
    });
    assert_eq!(applied(schema.url()), versions().len());
}
