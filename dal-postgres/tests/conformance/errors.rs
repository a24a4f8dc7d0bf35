//! What PostgreSQL's error codes become, each provoked for real: serialization failures
//! (SQLSTATE 40001) and deadlocks (40P01) retried by the store, a deadlock between two raw
//! connections typed by its code, and a statement cancelled by its timeout (57014), which
//! changes nothing. (A lock not granted in time, 55P03, is a case of the suite's `faults`; a
//! session the server ends, 57P01, of its faults and restarts.)

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use dal_core::{TaskExecution, TaskStore};

use crate::factory::POSTGRES;
use dal_tests::cases::support::{assert_unchanged, expect_err, ready_tasks, workflow};
use dal_tests::provision::postgres::reserve_connections;
use dal_tests::suite::{Fixture, Setup};

/// The cases of error codes, as `postgres::errors::<name>`.
pub const CASES: &[(&str, fn())] = &[
    (
        "a_serialization_failure_is_retried_by_the_store",
        a_serialization_failure_is_retried_by_the_store,
    ),
    (
        "a_deadlock_is_typed_by_its_code_and_retried_by_the_store",
        a_deadlock_is_typed_by_its_code_and_retried_by_the_store,
    ),
    (
        "a_lasting_serialization_failure_is_returned_after_the_retries",
        a_lasting_serialization_failure_is_returned_after_the_retries,
    ),
    (
        "a_statement_cancelled_by_its_timeout_changes_nothing",
        a_statement_cancelled_by_its_timeout_changes_nothing,
    ),
];

/// Makes the next `failures` updates of `task_executions` in the fixture's schema fail with
/// SQLSTATE 40001, as a serializable transaction's conflict would.
fn inject_serialization_failures(f: &Fixture, failures: u32) {
    inject_failures(f, failures, "40001");
}

/// Makes the next `failures` updates of `task_executions` in the fixture's schema fail with
/// SQLSTATE `code`. A sequence counts them, so the count survives the rollback of the failed
/// statement.
fn inject_failures(f: &Fixture, failures: u32, code: &str) {
    let schema = crate::factory::schema_of(f);
    let mut conn = PgConnection::establish(schema.url()).expect("connect");
    conn.batch_execute(&format!(
        "CREATE SEQUENCE injected_failures;
         CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('injected_failures') <= {failures} THEN
                 RAISE EXCEPTION 'injected conflict' USING ERRCODE = '{code}';
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

/// Two raw connections that lock two rows in opposite orders: the server breaks the deadlock by
/// failing one of them with 40P01, which is `Deadlock`, a retryable conflict. A deadlock the
/// store's statement meets (injected here with the same code) is retried by the store, and the
/// call succeeds with one change and one event.
fn a_deadlock_is_typed_by_its_code_and_retried_by_the_store() {
    let f = Fixture::new(&POSTGRES);
    let tasks = ready_tasks(f.store(), workflow(), 2, 1);
    let schema = crate::factory::schema_of(&f);
    let _permit = reserve_connections(2);
    let connect = || {
        let mut conn = PgConnection::establish(schema.url()).expect("connect");
        conn.batch_execute("SET deadlock_timeout = '50ms'; BEGIN")
            .expect("begin");
        conn
    };
    let lock = |conn: &mut PgConnection, id: uuid::Uuid| {
        conn.batch_execute(&format!(
            "UPDATE task_executions SET attempt = attempt WHERE id = '{id}'"
        ))
    };
    let (mut a, mut b) = (connect(), connect());
    lock(&mut a, tasks[0].id).expect("a locks the first");
    lock(&mut b, tasks[1].id).expect("b locks the second");
    let (first, second) = (tasks[0].id, tasks[1].id);
    let waiting = std::thread::spawn(move || {
        let result = lock(&mut a, second);
        (a, result)
    });
    let b_result = lock(&mut b, first);
    let (_a, a_result) = waiting.join().expect("the waiting connection");
    let err = match (a_result, b_result) {
        (Err(err), Ok(())) | (Ok(()), Err(err)) => dal_diesel::errors::from_diesel(err),
        other => panic!("expected one deadlock victim, got {other:?}"),
    };
    assert!(
        matches!(
            err,
            dal_core::DalError::Database {
                kind: dal_core::DatabaseErrorKind::Deadlock,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_conflict() && err.is_retryable());
    drop((_a, b));

    inject_failures(&f, 1, "40P01");
    let now = f.tick();
    let (reset, counts) = f
        .log
        .measure(|| f.store.reset_task_for_recovery(tasks[0].id).expect("reset"));
    assert_eq!(
        counts.statements, 2,
        "the deadlocked attempt, then the one that wrote"
    );
    assert_eq!(
        reset,
        TaskExecution {
            recovery_attempts: 1,
            last_recovery_at: Some(now),
            updated_at: now,
            ..tasks[0].clone()
        }
    );
    assert_eq!(
        f.store.events_for_task(tasks[0].id).expect("events").len(),
        2
    );
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
    let schema = crate::factory::schema_of(&f);
    let _permit = reserve_connections(2);
    let timed = dal_postgres::PgOptions::new(schema.url_with_options("-c statement_timeout=500"))
        .pool_size(2)
        .clock(f.clock.clone())
        .connect()
        .expect("connect a store with a statement timeout");
    let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
    let events = f.store.events_for_task(task.id).unwrap();
    let held = f.hold_lock_on(task.id);
    let err = expect_err(timed.reset_task_for_recovery(task.id));
    assert!(
        matches!(
            err,
            dal_core::DalError::Database {
                kind: dal_core::DatabaseErrorKind::QueryCanceled,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !err.is_retryable(),
        "the same statement would meet the same limit"
    );
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
