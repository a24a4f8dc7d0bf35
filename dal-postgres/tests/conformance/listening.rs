//! The listening connection: killed, it is replaced and no task is missed; behind a transaction
//! pooler there is none, and waiters wake at the stated interval.

use std::thread;
use std::time::{Duration, Instant};

use dal_core::{NewTaskExecution, TaskExecutionStore, TaskStatus, Wake, WakeSource, WakeStore};
use dal_postgres::{PgOptions, WAKE_INTERVAL};
use diesel::sql_types::BigInt;
use uuid::Uuid;

use crate::factory::{Postgres, connect, schema_of, select};
use dal_tests::cases::support::workflow;
use dal_tests::provision::postgres::{reserve_connections, server_url};
use dal_tests::suite::{Fixture, Plans, Setup};

const LONG: Duration = Duration::from_secs(30);

/// Waits until a wait times out: the wake-up a listener's (re)connect gives is taken.
pub fn settled(s: &dyn WakeStore) {
    while s.wait_for_work(Duration::from_millis(300)).expect("a wait") == Wake::Work {}
}

/// Claims one task, waiting for work between claims (a `Connection` error: claimed again);
/// the task and how long it took.
pub fn claim_one(s: &dyn TaskExecutionStore) -> (String, Duration) {
    let (started, runner) = (Instant::now(), Uuid::now_v7());
    while started.elapsed() < LONG {
        match s.claim_ready(runner, 1) {
            Ok(claimed) if !claimed.is_empty() => {
                return (claimed[0].task.task_name.clone(), started.elapsed());
            }
            Ok(_) => drop(s.wait_for_work(LONG).expect("a wait")),
            Err(err) if err.is_retryable() => thread::sleep(Duration::from_millis(10)),
            Err(err) => panic!("claim: {err:?}"),
        }
    }
    panic!("nothing claimed in {LONG:?}");
}

pub fn ready(name: &str) -> NewTaskExecution {
    NewTaskExecution::new(workflow(), name).with_status(TaskStatus::Ready)
}

/// The listening connection killed while a runner waits and another store writes: the listener
/// connects again, every waiter claims once, and later writes are heard again.
pub fn a_killed_listening_connection_is_replaced_and_no_task_is_missed() {
    let f = Fixture::with(&Postgres::Owner, Setup { pool_size: 2, lock_timeout: None });
    let (s, other) = (f.store(), f.other_store(2, Plans::Default));
    assert_eq!(s.wakeups().source(), WakeSource::Notifications { fallback: WAKE_INTERVAL });
    settled(s);
    let listening = format!(
        "FROM pg_stat_activity WHERE application_name = '{}' AND query LIKE 'LISTEN %'",
        schema_of(&f).name()
    );
    let mut admin = connect(server_url());
    let pids =
        |admin: &mut _| select::<BigInt, i64>(admin, &format!("SELECT count(*) {listening}"));
    assert_eq!(pids(&mut admin), 1);
    thread::scope(|scope| {
        let waiter = scope.spawn(|| claim_one(s));
        while s.wakeups().waiting() == 0 {
            thread::yield_now();
        }
        let kill = format!("SELECT count(pg_terminate_backend(pid)) {listening}");
        assert_eq!(select::<BigInt, i64>(&mut admin, &kill), 1);
        other.create(&ready("while down")).expect("create");
        let (claimed, took) = waiter.join().expect("the waiter");
        assert_eq!(claimed, "while down");
        eprintln!("claimed {took:?} after the listening connection was killed");
    });
    let started = Instant::now();
    while pids(&mut admin) != 1 {
        assert!(started.elapsed() < LONG, "no listening connection again");
        thread::sleep(Duration::from_millis(5));
    }
    settled(s);
    thread::scope(|scope| {
        let waiter = scope.spawn(|| claim_one(s));
        while s.wakeups().waiting() == 0 {
            thread::yield_now();
        }
        other.create(&ready("heard")).expect("create");
        assert_eq!(waiter.join().expect("the waiter").0, "heard");
    });
}

/// Behind a transaction pooler the store says it polls, opens no listening connection, and a
/// waiter wakes at the stated interval with nothing written.
pub fn behind_a_transaction_pooler_waiters_wake_at_the_stated_interval() {
    let f = Fixture::with(&Postgres::Owner, Setup { pool_size: 1, lock_timeout: None });
    let _permit = reserve_connections(1);
    let every = Duration::from_millis(100);
    let options = PgOptions::new(schema_of(&f).url()).transaction_pooling(true).index_plans(false);
    let store = options.pool_size(1).wake_interval(every).connect().expect("connect");
    assert_eq!(store.wakeups().source(), WakeSource::Polling { every });
    let started = Instant::now();
    assert_eq!(store.wait_for_work(LONG).expect("a wait"), Wake::Work);
    let waited = started.elapsed();
    assert!(waited >= every && waited < LONG, "{waited:?}");
    let listening = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
         AND query LIKE 'LISTEN %'",
        schema_of(&f).name()
    );
    assert_eq!(select::<BigInt, i64>(&mut connect(server_url()), &listening), 0);
}
