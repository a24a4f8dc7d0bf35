//! PostgreSQL's error codes, provoked for real: 40001, 40P01, 57014 (55P03 and 57P01: `faults`).

use dal_core::{DalError, DatabaseErrorKind, TaskExecution, TaskStore};
use diesel::PgConnection;
use diesel::connection::SimpleConnection;

use crate::factory::{Postgres, connect, execute, schema_of};
use dal_tests::cases::support::{assert_unchanged, expect_err, ready_tasks, workflow};
use dal_tests::provision::postgres::reserve_connections;
use dal_tests::suite::{Fixture, Setup};

fn with_tasks(pool_size: u32, tasks: usize) -> (Fixture, Vec<TaskExecution>) {
    let setup = Setup { pool_size, ..Setup::default() };
    let f = Fixture::with(&Postgres::Owner, setup);
    let tasks = ready_tasks(f.store(), workflow(), tasks, 1);
    (f, tasks)
}

/// The next `failures` updates of tasks fail with `code` (a sequence survives the rollback).
fn inject_failures(f: &Fixture, failures: u32, code: &str) {
    let sql = format!(
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
    );
    execute(schema_of(f).url(), &sql).expect("install the injected failures");
}

/// `err` is a database error of `kind`, and a retryable conflict if `conflict`, else neither.
fn assert_database_error(err: &DalError, kind: DatabaseErrorKind, conflict: bool) {
    assert!(matches!(err, DalError::Database { kind: found, .. } if *found == kind), "{err:?}");
    assert_eq!([err.is_conflict(), err.is_retryable()], [conflict; 2], "{err:?}");
}

/// Resets `task` through retried failures: `statements` attempts, the last writing it all.
fn assert_reset_after_retries(f: &Fixture, task: &TaskExecution, statements: usize) {
    let now = f.tick();
    let (reset, counts) = f.log.measure(|| f.store.reset_task_for_recovery(task.id));
    assert_eq!(counts.statements, statements);
    let (last_recovery_at, updated_at) = (Some(now), now);
    let expected =
        TaskExecution { recovery_attempts: 1, last_recovery_at, updated_at, ..task.clone() };
    assert_eq!(reset.expect("reset"), expected);
    assert_eq!(f.store.events_for_task(task.id).expect("events").len(), 2);
}

/// A lasting serialization failure: four tries, then returned, nothing changed. Two: retried.
pub fn a_serialization_failure_is_retried_and_a_lasting_one_returned() {
    let (f, tasks) = with_tasks(8, 1);
    inject_failures(&f, 4 + 2, "40001");
    let (result, counts) = f.log.measure(|| f.store.reset_task_for_recovery(tasks[0].id));
    let err = expect_err(result);
    assert_database_error(&err, DatabaseErrorKind::SerializationFailure, true);
    assert_eq!(counts.statements, 4);
    assert_unchanged(f.store(), &tasks[0]);
    assert_eq!(f.store.events_for_task(tasks[0].id).unwrap().len(), 1);
    assert_reset_after_retries(&f, &tasks[0], 3);
}

/// Two connections locking two rows in opposite orders: one gets `Deadlock`, a retryable
/// conflict; one the store's statement meets (injected) the store retries.
pub fn a_deadlock_is_typed_by_its_code_and_retried_by_the_store() {
    let (f, tasks) = with_tasks(8, 2);
    let _permit = reserve_connections(2);
    let (first, second) = (tasks[0].id, tasks[1].id);
    let lock = |conn: &mut PgConnection, id| {
        conn.batch_execute(&format!(
            "UPDATE task_executions SET attempt = attempt WHERE id = '{id}'"
        ))
    };
    let [mut a, mut b] = [first, second].map(|id| {
        let mut conn = connect(schema_of(&f).url());
        conn.batch_execute("SET deadlock_timeout = '50ms'; BEGIN").unwrap();
        lock(&mut conn, id).expect("lock a row");
        conn
    });
    let waiting = std::thread::spawn(move || (lock(&mut a, second), a));
    let b_result = lock(&mut b, first);
    let (a_result, a) = waiting.join().expect("the waiting connection");
    let err = match (a_result, b_result) {
        (Err(err), Ok(())) | (Ok(()), Err(err)) => dal_diesel::errors::from_diesel(err),
        other => panic!("expected one deadlock victim, got {other:?}"),
    };
    assert_database_error(&err, DatabaseErrorKind::Deadlock, true);
    drop((a, b));

    inject_failures(&f, 1, "40P01");
    assert_reset_after_retries(&f, &tasks[0], 2);
}

/// A statement timeout cancels it, changes nothing, is not retryable; the connection still
/// works. (The store with the timeout opens on a migrated schema: migrating could time out.)
pub fn a_statement_cancelled_by_its_timeout_changes_nothing() {
    let (f, tasks) = with_tasks(2, 1);
    let task = &tasks[0];
    let _permit = reserve_connections(2);
    let url = schema_of(&f).url_with_options("-c statement_timeout=500");
    let options = dal_postgres::PgOptions::new(url).pool_size(2);
    let timed = options.clock(f.clock.clone()).connect().expect("connect");
    let events = f.store.events_for_task(task.id).unwrap();
    let held = f.hold_lock_on(task.id);
    let err = expect_err(timed.reset_task_for_recovery(task.id));
    assert_database_error(&err, DatabaseErrorKind::QueryCanceled, false);
    drop(held);
    assert_unchanged(f.store(), task);
    assert_eq!(f.store.events_for_task(task.id).unwrap(), events);
    let reset = timed.reset_task_for_recovery(task.id).unwrap();
    assert_eq!(reset.recovery_attempts, 1);
}
