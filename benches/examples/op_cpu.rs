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

use clap::ValueEnum;
use dal_benches::baseline::{Backend, Baseline, BenchEnv};
use dal_core::{Finished, NewTaskExecution, TaskExecutionStore, TaskStatus};
use diesel::{QueryableByName, RunQueryDsl, sql_types::Integer};

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The on-CPU nanoseconds of the task whose `schedstat` is at `path`.
fn on_cpu(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).expect("read schedstat");
    stat.split_whitespace().next().and_then(|ns| ns.parse().ok()).expect("on-CPU nanoseconds")
}

fn news(n: usize, status: TaskStatus) -> Vec<NewTaskExecution> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (wf, next) = (uuid::Uuid::now_v7(), || NEXT.fetch_add(1, Ordering::Relaxed));
    (0..n).map(|_| NewTaskExecution::new(wf, format!("t{}", next())).with_status(status)).collect()
}

/// Runs `calls` times `setup` then `op`, and prints the mean CPU of `op` on both sides.
fn measure<T>(
    label: &str,
    calls: usize,
    server: &dyn Fn() -> u64,
    setup: impl Fn() -> T,
    op: impl Fn(T),
) {
    let (mut client_ns, mut server_ns) = (0, 0);
    for _ in 0..calls {
        let input = setup();
        let (c0, s0) = (on_cpu("/proc/thread-self/schedstat"), server());
        op(input);
        client_ns += on_cpu("/proc/thread-self/schedstat") - c0;
        server_ns += server() - s0;
    }
    let per = |ns: u64| ns as f64 / calls as f64 / 1e3;
    println!("{label}: client {:.0} µs, server {:.0} µs", per(client_ns), per(server_ns));
}

fn run(name: &str, store: &dyn TaskExecutionStore, server: &dyn Fn() -> u64, calls: usize) {
    let runner = uuid::Uuid::now_v7();
    let claim =
        |n| store.claim_ready(runner, n).unwrap().iter().map(|c| c.lease).collect::<Vec<_>>();
    for n in [100, 1000] {
        // Warm the statement cache.
        store.create_many(&news(n, TaskStatus::NotStarted)).unwrap();
        let (label, setup) =
            (format!("{name} create_many({n})"), || news(n, TaskStatus::NotStarted));
        measure(&label, calls, server, setup, |batch| drop(store.create_many(&batch).unwrap()));
    }
    let ready = |n| drop(store.create_many(&news(n, TaskStatus::Ready)).unwrap());
    measure(
        &format!("{name} claim_ready(32)"),
        calls * 5,
        server,
        || ready(32),
        |()| assert_eq!(claim(32).len(), 32),
    );
    let held = |more: usize| {
        ready(32 + more);
        claim(32)
    };
    measure(
        &format!("{name} complete_many(32)"),
        calls * 5,
        server,
        || held(0),
        |leases| assert_eq!(store.complete_many(&leases).unwrap().completed.len(), 32),
    );
    let finished = || Finished { completed: held(32), ..Default::default() };
    measure(&format!("{name} finish_and_claim(32, 32)"), calls * 5, server, finished, |f| {
        assert_eq!(store.finish_and_claim(runner, &f, 32).unwrap().claimed.len(), 32)
    });
    let created = || store.create(&news(1, TaskStatus::NotStarted)[0]).unwrap();
    measure(&format!("{name} mark_ready"), calls * 5, server, created, |task| {
        store.mark_ready(task.id).unwrap();
    });
}

fn main() {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".to_owned());
    let calls: usize = std::env::args().nth(2).map_or(50, |a| a.parse().unwrap());
    let env = BenchEnv::new(Backend::from_str(&backend, true).unwrap(), 1);
    let Baseline::Pg(pool) = &env.baseline else {
        return run("sqlite", &*env.store, &|| 0, calls);
    };
    let sql = diesel::sql_query("SELECT pg_backend_pid() AS pid");
    let pid = sql.get_result::<Pid>(&mut pool.get().unwrap()).unwrap().pid;
    let path = format!("/proc/{pid}/schedstat");
    run("postgres", &*env.store, &|| on_cpu(&path), calls);
}
