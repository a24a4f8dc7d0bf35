//! Round trips: each DAL operation against the pattern it replaces (`dal_benches::baseline`) on
//! each backend. `-- sqlite/` (or `DAL_BENCH_BACKENDS=sqlite`): one backend; `-- --test`: once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{sync::atomic::AtomicU64, sync::atomic::Ordering, time::Duration};

use chrono::{TimeDelta, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion};
use dal_benches::baseline::{Backend, Baseline, BenchEnv};
use dal_core::{Finished, Lease, NewTaskExecution, RetriedTask, TaskExecutionStore, TaskStatus};
use uuid::Uuid;

/// A group's store and old patterns, a workflow execution of 32 tasks, a runner, and a task (in
/// the group's status).
struct Ctx<'a> {
    store: &'a dyn TaskExecutionStore,
    old: &'a Baseline,
    wf: Uuid,
    runner: Uuid,
    task: Uuid,
}

/// A benchmark's input, made before each call and not measured: new tasks, or leases held.
type Input = (Vec<NewTaskExecution>, Finished);
/// A benchmark: name, parameter (0: none), unmeasured setup before each call (or none), call.
type Bench = (&'static str, usize, Option<fn(&Ctx, usize) -> Input>, fn(&Ctx, Input));

/// Each DAL operation (`dal`, or the DAL's way first) against the old patterns, by group.
#[rustfmt::skip]
const GROUPS: &[(&str, TaskStatus, &[Bench])] = &[
    ("create", TaskStatus::NotStarted, &[
        ("dal", 0, None, |c, _| {
            c.store.create(&NewTaskExecution::new(c.wf, name())).unwrap();
        }),
        ("insert_then_select", 0, None, |c, _| _ = c.old.create(c.wf, &name(), false)),
        ("insert_with_event_transaction", 0, None, |c, _| _ = c.old.create(c.wf, &name(), true)),
    ]),
    ("get", TaskStatus::NotStarted, &[("dal", 0, None, |c, _| drop(c.store.get(c.task).unwrap()))]),
    ("reset_task_for_recovery", TaskStatus::Ready, &[
        ("dal", 0, None, |c, _| drop(c.store.reset_task_for_recovery(c.task).unwrap())),
        ("select_then_update", 0, None, |c, _| c.old.reset_select_then_update(c.task)),
    ]),
    ("transition_with_event", TaskStatus::Ready, &[
        ("dal", 0, None, |c, _| drop(c.store.reset_task_for_recovery(c.task).unwrap())),
        ("read_update_insert", 0, None, |c, _| c.old.reset_read_update_insert(c.task)),
    ]),
    ("create_many", TaskStatus::NotStarted, &[
        ("dal", 100, Some(news_of), |c, (news, _)| drop(c.store.create_many(&news).unwrap())),
        ("single_creates", 100, Some(news_of), single_creates),
        ("dal", 1_000, Some(news_of), |c, (news, _)| drop(c.store.create_many(&news).unwrap())),
        ("single_creates", 1_000, Some(news_of), single_creates),
    ]),
    ("claim_32", TaskStatus::NotStarted, &[
        ("dal", 0, Some(ready_32), |c, _| {
            assert_eq!(c.store.claim_ready(c.runner, 32).unwrap().len(), 32)
        }),
        ("scan_then_claim_each", 0, Some(ready_32), |c, _| {
            assert_eq!(c.old.claim_scan_then_each(c.runner, 32).len(), 32)
        }),
    ]),
    // A runner's turn: finish the 32 tasks it holds and claim the next 32, in one call or two.
    ("runner_cycle_32", TaskStatus::NotStarted, &[
        ("finish_and_claim", 0, Some(|c, _| held(c, 1)), |c, (_, held)| {
            let cycle = c.store.finish_and_claim(c.runner, &held, 32).unwrap();
            assert_eq!((cycle.completed.len(), cycle.claimed.len()), (32, 32));
        }),
        ("complete_many_then_claim_ready", 0, Some(|c, _| held(c, 1)), |c, (_, held)| {
            assert_eq!(c.store.complete_many(&held.completed).unwrap().completed.len(), 32);
            assert_eq!(c.store.claim_ready(c.runner, 32).unwrap().len(), 32);
        }),
    ]),
    // The same with two of the 32 failed and retried (an hour away, so that no claim takes
    // them): one `finish_and_claim`, or a `fail_and_retry` for each of the two, then one.
    ("runner_cycle_retrying", TaskStatus::NotStarted, &[
        ("finish_and_claim", 0, Some(held_30_2), |c, (_, held)| {
            let cycle = c.store.finish_and_claim(c.runner, &held, 32).unwrap();
            let counts = (cycle.completed.len(), cycle.retried.len(), cycle.claimed.len());
            assert_eq!(counts, (30, 2, 32));
        }),
        ("fail_and_retry_each_then_finish_and_claim", 0, Some(held_30_2), |c, (_, held)| {
            for r in &held.retried {
                let retried = c.store.fail_and_retry(&r.lease, &r.error, r.retry_at).unwrap();
                assert_eq!(retried.attempt, 2);
            }
            let completed = Finished { retried: Vec::new(), ..held };
            let cycle = c.store.finish_and_claim(c.runner, &completed, 32).unwrap();
            assert_eq!((cycle.completed.len(), cycle.claimed.len()), (30, 32));
        }),
    ]),
    // A failed attempt retried (an hour away), on a task claimed for it.
    ("retry_after_failure", TaskStatus::NotStarted, &[
        ("fail_and_retry", 0, Some(held_1), |c, (_, held)| {
            let retried = c.store.fail_and_retry(&held.completed[0], "e", later()).unwrap();
            assert_eq!(retried.attempt, 2);
        }),
        ("fail_then_schedule_retry", 0, Some(held_1), |c, (_, held)| {
            let failed = c.store.fail(&held.completed[0], "e").unwrap();
            assert_eq!(c.store.schedule_retry(failed.id, later()).unwrap().attempt, 2);
        }),
    ]),
    // The DAL's whole rows (21 columns, two JSON documents, decoded) against the ids alone.
    ("read_32", TaskStatus::NotStarted, &[
        ("whole_rows", 0, None, |c, _| {
            assert_eq!(c.store.list_for_workflow(c.wf).unwrap().len(), 32)
        }),
        ("ids_only", 0, None, |c, _| assert_eq!(c.old.list_ids(c.wf).len(), 32)),
    ]),
    ("task_life", TaskStatus::NotStarted, &[
        ("dal", 0, None, |c, _| {
            let task = c.store.create(&NewTaskExecution::new(c.wf, name())).unwrap();
            c.store.mark_ready(task.id).unwrap();
            let claimed = c.store.claim_ready(c.runner, 1).unwrap().remove(0);
            assert_eq!(claimed.task.id, task.id);
            c.store.complete(&claimed.lease).unwrap();
        }),
        ("old_patterns", 0, None, |c, _| {
            let id = c.old.create(c.wf, &name(), false);
            c.old.transition_read_update_insert(id, "ready", "ready");
            assert_eq!(c.old.claim_scan_then_each(c.runner, 1), [id]);
            c.old.transition_read_update_insert(id, "completed", "completed");
        }),
    ]),
];

fn name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn later() -> chrono::DateTime<Utc> {
    Utc::now() + TimeDelta::hours(1)
}

/// `n` new tasks in `status`, with names unused so far.
fn news(n: usize, status: TaskStatus) -> Vec<NewTaskExecution> {
    let wf = Uuid::now_v7();
    (0..n).map(|_| NewTaskExecution::new(wf, name()).with_status(status)).collect()
}

fn news_of(_: &Ctx, n: usize) -> Input {
    (news(n, TaskStatus::NotStarted), Finished::default())
}

fn single_creates(c: &Ctx, (news, _): Input) {
    news.iter().for_each(|new| drop(c.store.create(new).unwrap()));
}

fn ready_32(c: &Ctx, _: usize) -> Input {
    c.store.create_many(&news(32, TaskStatus::Ready)).unwrap();
    Input::default()
}

/// 32 tasks of `max_attempts` claimed by the runner, to complete, and 32 more ready.
fn held(c: &Ctx, max_attempts: i32) -> Input {
    let tasks = news(32, TaskStatus::Ready).into_iter().map(|n| n.with_max_attempts(max_attempts));
    c.store.create_many(&tasks.collect::<Vec<_>>()).unwrap();
    let claimed = c.store.claim_ready(c.runner, 32).unwrap();
    let completed: Vec<Lease> = claimed.into_iter().map(|c| c.lease).collect();
    assert_eq!(completed.len(), 32);
    c.store.create_many(&news(32, TaskStatus::Ready)).unwrap();
    (Vec::new(), Finished { completed, ..Finished::default() })
}

/// Of 3 attempts, the last 2 to retry.
fn held_30_2(c: &Ctx, _: usize) -> Input {
    let (news, mut held) = held(c, 3);
    let retry = |lease| RetriedTask { lease, error: "e".into(), retry_at: later() };
    held.retried = held.completed.split_off(30).into_iter().map(retry).collect();
    (news, held)
}

/// A task of 3 attempts claimed by the runner for it.
fn held_1(c: &Ctx, _: usize) -> Input {
    let new = NewTaskExecution::new(Uuid::now_v7(), name()).with_status(TaskStatus::Ready);
    let task = c.store.create(&new.with_max_attempts(3)).unwrap();
    let lease = c.store.claim_task(task.id, c.runner).unwrap().lease;
    (Vec::new(), Finished { completed: vec![lease], ..Finished::default() })
}

fn group(
    crit: &mut Criterion,
    env: &BenchEnv,
    (title, status, benches): &(&str, TaskStatus, &[Bench]),
) {
    let wf = Uuid::now_v7();
    let fixture =
        news(1, *status).into_iter().chain((0..32).map(|_| NewTaskExecution::new(wf, name())));
    let tasks = env.store.create_many(&fixture.collect::<Vec<_>>()).unwrap();
    let (store, old) = (&*env.store, &env.baseline);
    let c = &Ctx { store, old, wf, runner: Uuid::now_v7(), task: tasks[0].id };
    let mut group = crit.benchmark_group(format!("{}/{title}", env.kind.name()));
    for &(bench, n, setup, call) in *benches {
        let id =
            if n > 0 { BenchmarkId::new(bench, n) } else { BenchmarkId::from_parameter(bench) };
        group.bench_function(id, |b| match setup {
            Some(setup) => {
                b.iter_batched(|| setup(c, n), |input| call(c, input), BatchSize::PerIteration)
            }
            None => b.iter(|| call(c, Input::default())),
        });
        // Completes what the runner still holds, so that no claimed task is left for the next.
        let stale = env.store.find_stale_claims(Utc::now() + TimeDelta::days(1)).unwrap();
        let held: Vec<Lease> =
            stale.iter().filter_map(|t| t.lease()).filter(|l| l.runner_id == c.runner).collect();
        if !held.is_empty() {
            assert_eq!(env.store.complete_many(&held).unwrap().lost, []);
        }
    }
    group.finish();
    // No Ready task may be left for the claims measured later.
    if *status == TaskStatus::Ready {
        env.store.mark_skipped(c.task, "measured").unwrap();
    }
}

fn main() {
    let mut crit = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for kind in Backend::from_env() {
        let env = BenchEnv::new(kind, 4);
        GROUPS.iter().for_each(|g| group(&mut crit, &env, g));
    }
    crit.final_summary();
    dal_tests::provision::postgres::shutdown();
}
