//! What PostgreSQL's error codes become: serialization failures (SQLSTATE 40001) retried by
//! the store, and a statement cancelled by its timeout (57014), which changes nothing.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use dal_core::{TaskExecution, TaskStore};

use crate::backends::POSTGRES;
use crate::cases::faults::assert_untyped;
use crate::cases::support::{assert_unchanged, expect_err, ready_tasks, workflow};
use crate::fixture::{Fixture, Setup};
use crate::provision::postgres::reserve_connections;

/// The serialization-failure cases, as `postgres::locking::<name>`.
pub const SERIALIZATION: &[(&str, fn())] = &[
    (
        "a_serialization_failure_is_retried_by_the_store",
        a_serialization_failure_is_retried_by_the_store,
    ),
    (
        "a_lasting_serialization_failure_is_returned_after_the_retries",
        a_lasting_serialization_failure_is_returned_after_the_retries,
    ),
];

/// The statement-timeout case, as `postgres::faults::<name>`.
pub const TIMEOUTS: &[(&str, fn())] = &[(
    "a_statement_cancelled_by_its_timeout_changes_nothing",
    a_statement_cancelled_by_its_timeout_changes_nothing,
)];

/// Makes the next `failures` updates of `task_executions` in the fixture's schema fail with
/// SQLSTATE 40001, as a serializable transaction's conflict would. A sequence counts them, so
/// the count survives the rollback of the failed statement.
fn inject_serialization_failures(f: &Fixture, failures: u32) {
    let schema = super::schema_of(f);
    let mut conn = PgConnection::establish(schema.url()).expect("connect");
    conn.batch_execute(&format!(
        "CREATE SEQUENCE injected_failures;
         CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('injected_failures') <= {failures} THEN
                 RAISE EXCEPTION 'injected conflict' USING ERRCODE = '40001';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER inject_failure BEFORE UPDATE ON task_executions
             FOR EACH ROW EXECUTE FUNCTION inject_failure();"
    ))
    .expect("install the injected failures");
}

fn a_serialization_failure_is_retried_by_the_store() {
    let f = Fixture::new(&POSTGRES);
    let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
    inject_serialization_failures(&f, 2);
    let now = f.tick();
    let (reset, counts) = f
        .log
        .measure(|| f.store.reset_task_for_recovery(task.id).expect("reset"));
    // Two rolled-back attempts, then the one that wrote.
    assert_eq!(counts.statements, 3);
    assert_eq!(
        reset,
        TaskExecution {
            recovery_attempts: 1,
            last_recovery_at: Some(now),
            updated_at: now,
            ..task.clone()
        }
    );
    let events = f.store.events_for_task(task.id).expect("events");
    assert_eq!(
        events.len(),
        2,
        "one event for the one change that happened"
    );
}

fn a_lasting_serialization_failure_is_returned_after_the_retries() {
    let f = Fixture::new(&POSTGRES);
    let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
    inject_serialization_failures(&f, 100);
    let (result, counts) = f.log.measure(|| f.store.reset_task_for_recovery(task.id));
    let err = result.expect_err("every attempt fails");
    assert!(
        matches!(
            err,
            dal_core::DalError::Database {
                kind: dal_core::DatabaseErrorKind::SerializationFailure,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_conflict() && err.is_retryable());
    assert_eq!(counts.statements, 4, "the store tries four times in all");
    assert_eq!(f.store.get(task.id).expect("get"), task);
    assert_eq!(f.store.events_for_task(task.id).expect("events").len(), 1);
}

/// A statement timeout cancels the statement and changes nothing, and the
/// connection it ran on still works. The store with the timeout opens on the migrated schema:
/// migrating under a short timeout could itself time out on a loaded machine.
fn a_statement_cancelled_by_its_timeout_changes_nothing() {
    let f = Fixture::with(
        &POSTGRES,
        Setup {
            pool_size: 2,
            ..Setup::default()
        },
    );
    let schema = super::schema_of(&f);
    let _permit = reserve_connections(2);
    let timed = dal_postgres::Options::new(schema.url_with_options("-c statement_timeout=500"))
        .pool_size(2)
        .clock(f.clock.clone())
        .connect()
        .expect("connect a store with a statement timeout");
    let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
    let events = f.store.events_for_task(task.id).unwrap();
    let held = f.hold_lock_on(task.id);
    let err = expect_err(timed.reset_task_for_recovery(task.id));
    assert_untyped(&err);
    drop(held);
    assert_unchanged(f.store(), &task);
    assert_eq!(f.store.events_for_task(task.id).unwrap(), events);
    assert_eq!(
        timed
            .reset_task_for_recovery(task.id)
            .unwrap()
            .recovery_attempts,
        1
    );
}
