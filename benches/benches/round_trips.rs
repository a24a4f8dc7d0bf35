//! Round trips: each DAL operation against the pattern it replaces, on each backend, measured in
//! the same run (see `dal_benches::baseline` for the patterns and their statements).
//!
//! `cargo bench -p dal-benches --bench round_trips` runs everything; `-- sqlite/` one backend
//! (or `DAL_BENCH_BACKENDS=sqlite`); `-- --save-baseline main` and `-- --baseline main` compare
//! runs; `-- --test` runs each benchmark once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion};
use dal_benches::env::{BenchEnv, backends};
use dal_core::{Finished, Lease, NewTaskExecution, RetriedTask, TaskStatus};
use uuid::Uuid;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn name() -> String {
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `n` new tasks in `status`, with names unused so far.
fn news(n: usize, status: TaskStatus) -> Vec<NewTaskExecution> {
    let wf = Uuid::now_v7();
    (0..n).map(|_| NewTaskExecution::new(wf, name()).with_status(status)).collect()
}

fn create(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/create", env.kind));
    let wf = Uuid::now_v7();
    group.bench_function("dal", |b| {
        b.iter(|| env.store.create(&NewTaskExecution::new(wf, name())).unwrap())
    });
    group.bench_function("insert_then_select", |b| {
        b.iter(|| env.baseline.create_insert_then_select(wf, &name()))
    });
    group.bench_function("insert_with_event_transaction", |b| {
        b.iter(|| env.baseline.create_with_event_transaction(wf, &name()))
    });
    group.finish();
}

fn get(c: &mut Criterion, env: &BenchEnv) {
    let task = env.store.create(&NewTaskExecution::new(Uuid::now_v7(), name())).unwrap();
    let mut group = c.benchmark_group(format!("{}/get", env.kind));
    group.bench_function("dal", |b| b.iter(|| env.store.get(task.id).unwrap()));
    group.finish();
}

fn reset_and_transition(c: &mut Criterion, env: &BenchEnv) {
    let task = env.store.create_many(&news(1, TaskStatus::Ready)).unwrap().remove(0);
    let mut group = c.benchmark_group(format!("{}/reset_task_for_recovery", env.kind));
    group.bench_function("dal", |b| b.iter(|| env.store.reset_task_for_recovery(task.id).unwrap()));
    group.bench_function("select_then_update", |b| {
        b.iter(|| env.baseline.reset_select_then_update(task.id))
    });
    group.finish();
    let mut group = c.benchmark_group(format!("{}/transition_with_event", env.kind));
    group.bench_function("dal", |b| b.iter(|| env.store.reset_task_for_recovery(task.id).unwrap()));
    group.bench_function("read_update_insert", |b| {
        b.iter(|| env.baseline.reset_read_update_insert(task.id))
    });
    group.finish();
    // No Ready task may be left for the claims measured later.
    env.store.mark_skipped(task.id, "measured").unwrap();
}

fn create_many(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/create_many", env.kind));
    for n in [100, 1_000] {
        group.bench_function(BenchmarkId::new("dal", n), |b| {
            b.iter_batched(
                || news(n, TaskStatus::NotStarted),
                |batch| env.store.create_many(&batch).unwrap(),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("single_creates", n), |b| {
            b.iter_batched(
                || news(n, TaskStatus::NotStarted),
                |batch| {
                    for new in &batch {
                        env.store.create(new).unwrap();
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn claim(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/claim_32", env.kind));
    let runner = Uuid::now_v7();
    let ready = || {
        env.store.create_many(&news(32, TaskStatus::Ready)).unwrap();
    };
    group.bench_function("dal", |b| {
        b.iter_batched(
            ready,
            |()| assert_eq!(env.store.claim_ready(runner, 32).unwrap().len(), 32),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("scan_then_claim_each", |b| {
        b.iter_batched(
            ready,
            |()| assert_eq!(env.baseline.claim_scan_then_each(runner, 32).len(), 32),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// 32 tasks of `max_attempts` claimed by `runner` (their leases), and 32 more ready for the
/// next claim.
fn claimed_32(env: &BenchEnv, runner: Uuid, max_attempts: i32) -> Vec<Lease> {
    let tasks: Vec<NewTaskExecution> = news(32, TaskStatus::Ready)
        .into_iter()
        .map(|n| n.with_max_attempts(max_attempts))
        .collect();
    env.store.create_many(&tasks).unwrap();
    let leases: Vec<Lease> =
        env.store.claim_ready(runner, 32).unwrap().into_iter().map(|c| c.lease).collect();
    assert_eq!(leases.len(), 32);
    env.store.create_many(&news(32, TaskStatus::Ready)).unwrap();
    leases
}

/// A runner's turn: finish 32 claimed tasks and claim the next 32, as one `finish_and_claim`
/// or as `complete_many` then `claim_ready`.
fn runner_cycle(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/runner_cycle_32", env.kind));
    let runner = Uuid::now_v7();
    // 32 claimed by the runner, and 32 more ready.
    let held = || Finished {
        retried: Vec::new(),
        completed: claimed_32(env, runner, 1),
        failed: Vec::new(),
    };
    let finish = |next: Vec<Lease>| assert_eq!(env.store.complete_many(&next).unwrap().lost, []);
    group.bench_function("finish_and_claim", |b| {
        b.iter_batched(
            held,
            |finished| {
                let cycle = env.store.finish_and_claim(runner, &finished, 32).unwrap();
                assert_eq!((cycle.completed.len(), cycle.claimed.len()), (32, 32));
                cycle.claimed
            },
            BatchSize::PerIteration,
        )
    });
    finish_claimed(env, runner, &finish);
    group.bench_function("complete_many_then_claim_ready", |b| {
        b.iter_batched(
            held,
            |finished| {
                assert_eq!(
                    env.store.complete_many(&finished.completed).unwrap().completed.len(),
                    32
                );
                let claimed = env.store.claim_ready(runner, 32).unwrap();
                assert_eq!(claimed.len(), 32);
                claimed
            },
            BatchSize::PerIteration,
        )
    });
    finish_claimed(env, runner, &finish);
    group.finish();
}

/// A runner's turn with two of its 32 tasks failed and retried: one `finish_and_claim` that
/// completes 30, retries 2 and claims the next 32, against a `fail_and_retry` for each of the
/// two, then `finish_and_claim` of the 30 (the retries an hour away, so that no claim takes
/// them).
fn runner_cycle_retrying(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/runner_cycle_retrying", env.kind));
    let runner = Uuid::now_v7();
    let later = || chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let held = || {
        let mut leases = claimed_32(env, runner, 3);
        let retried = leases
            .split_off(30)
            .into_iter()
            .map(|lease| RetriedTask { lease, error: "e".into(), retry_at: later() })
            .collect();
        Finished { retried, completed: leases, failed: Vec::new() }
    };
    let finish = |next: Vec<Lease>| assert_eq!(env.store.complete_many(&next).unwrap().lost, []);
    group.bench_function("finish_and_claim", |b| {
        b.iter_batched(
            held,
            |finished| {
                let cycle = env.store.finish_and_claim(runner, &finished, 32).unwrap();
                assert_eq!(
                    (cycle.completed.len(), cycle.retried.len(), cycle.claimed.len()),
                    (30, 2, 32)
                );
                cycle.claimed
            },
            BatchSize::PerIteration,
        )
    });
    finish_claimed(env, runner, &finish);
    group.bench_function("fail_and_retry_each_then_finish_and_claim", |b| {
        b.iter_batched(
            held,
            |finished| {
                for r in &finished.retried {
                    let retried = env.store.fail_and_retry(&r.lease, &r.error, r.retry_at).unwrap();
                    assert_eq!(retried.attempt, 2);
                }
                let completed = Finished { retried: Vec::new(), ..finished };
                let cycle = env.store.finish_and_claim(runner, &completed, 32).unwrap();
                assert_eq!((cycle.completed.len(), cycle.claimed.len()), (30, 32));
                cycle.claimed
            },
            BatchSize::PerIteration,
        )
    });
    finish_claimed(env, runner, &finish);
    group.finish();
}

/// A failed attempt retried: one `fail_and_retry` against `fail` then `schedule_retry`, each on
/// a task claimed for it (its retry an hour away, so that no later claim takes it).
fn retry_after_failure(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/retry_after_failure", env.kind));
    let runner = Uuid::now_v7();
    let held = || {
        let new = NewTaskExecution::new(Uuid::now_v7(), name())
            .with_status(TaskStatus::Ready)
            .with_max_attempts(3);
        let task = env.store.create(&new).unwrap();
        env.store.claim_task(task.id, runner).unwrap().lease
    };
    let later = || chrono::Utc::now() + chrono::TimeDelta::hours(1);
    group.bench_function("fail_and_retry", |b| {
        b.iter_batched(
            held,
            |lease| {
                let retried = env.store.fail_and_retry(&lease, "e", later()).unwrap();
                assert_eq!(retried.attempt, 2);
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("fail_then_schedule_retry", |b| {
        b.iter_batched(
            held,
            |lease| {
                let failed = env.store.fail(&lease, "e").unwrap();
                let retried = env.store.schedule_retry(failed.id, later()).unwrap();
                assert_eq!(retried.attempt, 2);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Completes what the runner still holds, so that no claimed task is left for the next
/// group.
fn finish_claimed(env: &BenchEnv, runner: Uuid, finish: &dyn Fn(Vec<Lease>)) {
    let held: Vec<Lease> = env
        .store
        .find_stale_claims(chrono::Utc::now() + chrono::TimeDelta::days(1))
        .unwrap()
        .iter()
        .filter_map(|t| t.lease())
        .filter(|l| l.runner_id == runner)
        .collect();
    if !held.is_empty() {
        finish(held);
    }
}

/// Reading 32 tasks: the DAL's whole rows (21 columns, two JSON documents, decoded into
/// `TaskExecution`) against the ids alone, by the same scan.
fn read_rows(c: &mut Criterion, env: &BenchEnv) {
    let wf = Uuid::now_v7();
    let batch: Vec<NewTaskExecution> = (0..32).map(|_| NewTaskExecution::new(wf, name())).collect();
    env.store.create_many(&batch).unwrap();
    let mut group = c.benchmark_group(format!("{}/read_32", env.kind));
    group.bench_function("whole_rows", |b| {
        b.iter(|| assert_eq!(env.store.list_for_workflow(wf).unwrap().len(), 32))
    });
    group
        .bench_function("ids_only", |b| b.iter(|| assert_eq!(env.baseline.list_ids(wf).len(), 32)));
    group.finish();
}

fn task_life(c: &mut Criterion, env: &BenchEnv) {
    let mut group = c.benchmark_group(format!("{}/task_life", env.kind));
    let wf = Uuid::now_v7();
    let runner = Uuid::now_v7();
    group.bench_function("dal", |b| {
        b.iter(|| {
            let task = env.store.create(&NewTaskExecution::new(wf, name())).unwrap();
            env.store.mark_ready(task.id).unwrap();
            let claimed = env.store.claim_ready(runner, 1).unwrap().remove(0);
            assert_eq!(claimed.task.id, task.id);
            env.store.complete(&claimed.lease).unwrap()
        })
    });
    group.bench_function("old_patterns", |b| {
        b.iter(|| {
            let id = env.baseline.create_insert_then_select(wf, &name());
            env.baseline.transition_read_update_insert(id, "ready", "ready");
            assert_eq!(env.baseline.claim_scan_then_each(runner, 1), [id]);
            env.baseline.transition_read_update_insert(id, "completed", "completed");
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for kind in backends() {
        let env = BenchEnv::new(kind);
        create(&mut c, &env);
        get(&mut c, &env);
        reset_and_transition(&mut c, &env);
        create_many(&mut c, &env);
        claim(&mut c, &env);
        runner_cycle(&mut c, &env);
        runner_cycle_retrying(&mut c, &env);
        retry_after_failure(&mut c, &env);
        read_rows(&mut c, &env);
        task_life(&mut c, &env);
    }
    c.final_summary();
    dal_tests::provision::postgres::shutdown();
}
