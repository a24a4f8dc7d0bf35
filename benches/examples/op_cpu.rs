//! CPU time per operation, for comparisons that must hold on a machine busy with other work
//! (where criterion's wall-clock medians move by tens of percent from one run to the next).
//!
//! ```sh
//! cargo run --release -p dal-benches --example op_cpu -- sqlite 100
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p dal-benches --example op_cpu -- postgres 40
//! ```
//!
//! Each figure is the mean over the calls of the on-CPU time (`/proc/<tid>/schedstat`, in ns)
//! of the calling thread ("client": on SQLite the whole database work) and, on PostgreSQL, of
//! the server backend of the store's one connection ("server"), measured around each call
//! alone (the setup of the next call is outside). Build two revisions and alternate them.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use dal_core::{ClaimStore, NewTaskExecution, TaskStatus, TaskStore};
use dal_tests::provision::postgres::TempSchema;
use diesel::prelude::*;
use diesel::sql_types::Integer;

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The on-CPU nanoseconds of the task whose `schedstat` is at `path`.
fn on_cpu(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).expect("read schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat starts with the on-CPU nanoseconds")
}

fn this_thread() -> u64 {
    on_cpu("/proc/thread-self/schedstat")
}

fn news(n: usize, status: TaskStatus) -> Vec<NewTaskExecution> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let wf = uuid::Uuid::now_v7();
    (0..n)
        .map(|_| {
            NewTaskExecution::new(wf, format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed)))
                .with_status(status)
        })
        .collect()
}

/// Runs `calls` times `setup` then `op`, and prints the mean CPU of `op` on both sides.
fn measure<T>(
    label: &str,
    calls: usize,
    server: &dyn Fn() -> u64,
    mut setup: impl FnMut() -> T,
    mut op: impl FnMut(T),
) {
    let (mut client_ns, mut server_ns) = (0, 0);
    for _ in 0..calls {
        let input = setup();
        let (c0, s0) = (this_thread(), server());
        op(input);
        client_ns += this_thread() - c0;
        server_ns += server() - s0;
    }
    let per = |ns: u64| ns as f64 / calls as f64 / 1e3;
    println!("{label}: client {:.0} µs, server {:.0} µs", per(client_ns), per(server_ns));
}

fn run<S: TaskStore + ClaimStore>(name: &str, store: &S, server: &dyn Fn() -> u64, calls: usize) {
    let runner = uuid::Uuid::now_v7();
    for n in [100, 1000] {
        // Warm the statement cache.
        store.create_many(&news(n, TaskStatus::NotStarted)).unwrap();
        measure(
            &format!("{name} create_many({n})"),
            calls,
            server,
            || news(n, TaskStatus::NotStarted),
            |batch| {
                store.create_many(&batch).unwrap();
            },
        );
    }
    measure(
        &format!("{name} claim_ready(32)"),
        calls * 5,
        server,
        || store.create_many(&news(32, TaskStatus::Ready)).unwrap(),
        |_| assert_eq!(store.claim_ready(runner, 32).unwrap().len(), 32),
    );
    measure(
        &format!("{name} complete_many(32)"),
        calls * 5,
        server,
        || {
            store.create_many(&news(32, TaskStatus::Ready)).unwrap();
            let leases: Vec<_> =
                store.claim_ready(runner, 32).unwrap().iter().map(|c| c.lease).collect();
            leases
        },
        |leases| assert_eq!(store.complete_many(&leases).unwrap().completed.len(), 32),
    );
    measure(
        &format!("{name} finish_and_claim(32, 32)"),
        calls * 5,
        server,
        || {
            store.create_many(&news(64, TaskStatus::Ready)).unwrap();
            let leases: Vec<_> =
                store.claim_ready(runner, 32).unwrap().iter().map(|c| c.lease).collect();
            dal_core::Finished { completed: leases, ..Default::default() }
        },
        |finished| {
            assert_eq!(store.finish_and_claim(runner, &finished, 32).unwrap().claimed.len(), 32)
        },
    );
    measure(
        &format!("{name} mark_ready"),
        calls * 5,
        server,
        || store.create(&news(1, TaskStatus::NotStarted)[0]).unwrap(),
        |task| {
            store.mark_ready(task.id).unwrap();
        },
    );
}

fn main() {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".to_owned());
    let calls: usize = std::env::args().nth(2).map_or(50, |a| a.parse().unwrap());
    if backend == "sqlite" {
        let file = std::env::temp_dir().join(format!("dal-op-cpu-{}.db", std::process::id()));
        let store = dal_sqlite::SqliteOptions::new(file.to_string_lossy().into_owned())
            .pool_size(1)
            .open()
            .unwrap();
        run("sqlite", &store, &|| 0, calls);
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    } else {
        let schema = TempSchema::with_connections(1);
        let options = dal_postgres::PgOptions::new(schema.url()).pool_size(1);
        let store = options.connect().unwrap();
        let pid = {
            let mut conn = store.pool().get().unwrap();
            diesel::sql_query("SELECT pg_backend_pid() AS pid")
                .get_result::<Pid>(&mut conn)
                .unwrap()
                .pid
        };
        let path = format!("/proc/{pid}/schedstat");
        run("postgres", &store, &|| on_cpu(&path), calls);
    }
}
