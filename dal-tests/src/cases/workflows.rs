//! Workflow-level reads: known answers on hand-built workflows, empty inputs, unknown ids,
//! 20,000 ids in one call.

use std::collections::HashMap;

use dal_core::{NewTaskExecution, RetryStats, StatusCounts, TaskExecution, TaskStatus};
use uuid::Uuid;

use super::support::{task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(pending_tasks_are_the_not_started_tasks_of_the_workflows_asked_for),
    case!(task_statuses_answer_by_name),
    case!(statuses_for_workflows_nest_by_workflow_then_name),
    case!(a_workflow_is_complete_when_all_its_tasks_are_terminal),
    case!(an_abandoned_task_is_not_a_regular_failure),
    case!(retry_stats_are_aggregated_by_the_database),
    case!(count_by_status_counts_every_task_once),
    case!(empty_inputs_send_nothing),
    case!(twenty_thousand_ids_go_in_one_statement),
];

/// Builds a workflow with one task in each status of `statuses` (named after the status and
/// its position) and returns the tasks.
fn workflow_with(f: &Fixture, wf: Uuid, statuses: &[TaskStatus]) -> Vec<TaskExecution> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, status)| task_in(f.store(), wf, &format!("{status}-{i}"), *status, 3))
        .collect()
}

fn pending_tasks_are_the_not_started_tasks_of_the_workflows_asked_for(kind: Backend) {
    let f = Fixture::new(kind);
    let (a, b, c) = (workflow(), workflow(), workflow());
    let in_a = workflow_with(&f, a, &[NotStarted, Ready, NotStarted, Completed]);
    let in_b = workflow_with(&f, b, &[Running, NotStarted]);
    workflow_with(&f, c, &[NotStarted]);
    let pending = f.store.pending_tasks(&[a, b, workflow()]).unwrap();
    // Full rows, as `get` reads them, by id.
    let expected: Vec<TaskExecution> = [&in_a[0], &in_a[2], &in_b[1]]
        .into_iter()
        .map(|t| f.store.get(t.id).unwrap())
        .collect();
    assert_eq!(pending, expected);
    assert!(f.store.pending_tasks(&[workflow()]).unwrap().is_empty());
}

fn task_statuses_answer_by_name(kind: Backend) {
    let f = Fixture::new(kind);
    let (wf, other) = (workflow(), workflow());
    let tasks = workflow_with(
        &f,
        wf,
        &[NotStarted, Ready, Running, Completed, Failed, Skipped],
    );
    workflow_with(&f, other, &[Completed]); // "completed-0" exists in the other workflow too
    let names: Vec<&str> = tasks.iter().map(|t| t.task_name.as_str()).collect();
    let all = f.store.task_statuses(wf, &names).unwrap();
    let expected: HashMap<String, TaskStatus> = tasks
        .iter()
        .map(|t| (t.task_name.clone(), t.status))
        .collect();
    assert_eq!(all, expected);
    let some = f
        .store
        .task_statuses(wf, &["running-2", "no-such-task", "skipped-5"])
        .unwrap();
    assert_eq!(
        some,
        HashMap::from([
            ("running-2".to_owned(), Running),
            ("skipped-5".to_owned(), Skipped)
        ])
    );
    assert_eq!(
        f.store
            .task_statuses(other, &["completed-0", "failed-4"])
            .unwrap(),
        HashMap::from([("completed-0".to_owned(), Completed)])
    );
    assert!(
        f.store
            .task_statuses(workflow(), &["running-2"])
            .unwrap()
            .is_empty()
    );
}

fn statuses_for_workflows_nest_by_workflow_then_name(kind: Backend) {
    let f = Fixture::new(kind);
    let (a, b) = (workflow(), workflow());
    let in_a = workflow_with(&f, a, &[Completed, Running]);
    let in_b = workflow_with(&f, b, &[Failed]);
    let statuses = f.store.statuses_for_workflows(&[a, b, workflow()]).unwrap();
    let by_name = |tasks: &[TaskExecution]| -> HashMap<String, TaskStatus> {
        tasks
            .iter()
            .map(|t| (t.task_name.clone(), t.status))
            .collect()
    };
    assert_eq!(
        statuses,
        HashMap::from([(a, by_name(&in_a)), (b, by_name(&in_b))])
    );
}

fn a_workflow_is_complete_when_all_its_tasks_are_terminal(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let done = workflow();
    workflow_with(&f, done, &[Completed, Failed, Skipped]);
    let running = workflow();
    workflow_with(&f, running, &[Completed, Running]);
    let waiting = workflow();
    workflow_with(&f, waiting, &[NotStarted]);
    let empty = workflow();
    assert!(s.is_workflow_complete(done).unwrap());
    assert!(!s.is_workflow_complete(running).unwrap());
    assert!(!s.is_workflow_complete(waiting).unwrap());
    assert!(
        !s.is_workflow_complete(empty).unwrap(),
        "no tasks: not complete"
    );
    let also_done = workflow();
    workflow_with(&f, also_done, &[Skipped]);
    let mut expected = vec![done, also_done];
    expected.sort_unstable();
    assert_eq!(
        s.complete_workflows(&[running, done, empty, waiting, also_done])
            .unwrap(),
        expected
    );
    // A retry makes a failed workflow incomplete again.
    let retried = workflow();
    let task = workflow_with(&f, retried, &[Failed]).remove(0);
    assert!(s.is_workflow_complete(retried).unwrap());
    s.schedule_retry(task.id, f.now()).unwrap();
    assert!(!s.is_workflow_complete(retried).unwrap());
}

fn an_abandoned_task_is_not_a_regular_failure(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let failed = workflow();
    workflow_with(&f, failed, &[Failed, Completed]);
    assert!(!s.has_abandoned_task(failed).unwrap());
    let abandoned = workflow();
    let tasks = workflow_with(&f, abandoned, &[Running, Completed]);
    s.mark_abandoned(tasks[0].id, "runner lost").unwrap();
    assert!(s.has_abandoned_task(abandoned).unwrap());
    assert!(
        s.exhausted_tasks(abandoned).unwrap().is_empty(),
        "abandoned is not exhausted"
    );
    // A manual re-run clears the abandonment.
    s.reset_retry_state(tasks[0].id).unwrap();
    assert!(!s.has_abandoned_task(abandoned).unwrap());
    assert!(!s.has_abandoned_task(workflow()).unwrap());
}

/// Runs task `name` of `wf` (with `max_attempts`) through `failures` failed attempts, each
/// followed by a retry while attempts are left, then completes it if `succeed`.
fn attempts(
    f: &Fixture,
    wf: Uuid,
    name: &str,
    max_attempts: i32,
    failures: i32,
    succeed: bool,
) -> TaskExecution {
    let s = f.store();
    let task = task_in(s, wf, name, Running, max_attempts);
    for _ in 0..failures {
        let failed = s.mark_failed(task.id, "boom").unwrap();
        if failed.attempt < max_attempts && (succeed || failed.attempt < failures) {
            s.schedule_retry(task.id, f.now()).unwrap();
            s.mark_running(task.id).unwrap();
        }
    }
    if succeed {
        s.mark_completed(task.id).unwrap();
    }
    s.get(task.id).unwrap()
}

fn retry_stats_are_aggregated_by_the_database(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let first_try = attempts(&f, wf, "first-try", 3, 0, true);
    let third_try = attempts(&f, wf, "third-try", 3, 2, true);
    let exhausted = attempts(&f, wf, "exhausted", 3, 3, false);
    let failed_once = attempts(&f, wf, "failed-once", 3, 1, false);
    assert_eq!((first_try.status, first_try.attempt), (Completed, 1));
    assert_eq!((third_try.status, third_try.attempt), (Completed, 3));
    assert_eq!(
        (exhausted.status, exhausted.attempt, exhausted.max_attempts),
        (Failed, 3, 3)
    );
    assert_eq!((failed_once.status, failed_once.attempt), (Failed, 1));
    assert_eq!(
        s.retry_stats(wf).unwrap(),
        RetryStats {
            tasks_retried: 2,
            total_retries: 4,
            max_attempt: 3,
            tasks_exhausted: 1
        }
    );
    assert_eq!(s.exhausted_tasks(wf).unwrap(), vec![exhausted.clone()]);
    // A regular failure with attempts left is not exhausted, and it is not abandoned.
    assert!(!s.has_abandoned_task(wf).unwrap());
    // An abandoned task on its last attempt is abandoned, not exhausted.
    let last = attempts(&f, wf, "abandoned", 2, 1, false);
    s.schedule_retry(last.id, f.now()).unwrap();
    s.mark_abandoned(last.id, "gave up").unwrap();
    assert_eq!(
        s.retry_stats(wf).unwrap(),
        RetryStats {
            tasks_retried: 3,
            total_retries: 5,
            max_attempt: 3,
            tasks_exhausted: 1
        }
    );
    assert_eq!(s.exhausted_tasks(wf).unwrap(), vec![exhausted]);
    assert_eq!(s.retry_stats(workflow()).unwrap(), RetryStats::default());
    assert!(s.exhausted_tasks(workflow()).unwrap().is_empty());
}

fn count_by_status_counts_every_task_once(kind: Backend) {
    let f = Fixture::new(kind);
    assert_eq!(f.store.count_by_status().unwrap(), StatusCounts::default());
    let wf = workflow();
    let plan = [
        (NotStarted, 4),
        (Ready, 3),
        (Running, 2),
        (Completed, 5),
        (Failed, 1),
        (Skipped, 2),
    ];
    for (status, n) in plan {
        for i in 0..n {
            task_in(f.store(), wf, &format!("{status}-{i}"), status, 1);
        }
    }
    let counts = f.store.count_by_status().unwrap();
    assert_eq!(
        counts,
        StatusCounts {
            not_started: 4,
            ready: 3,
            running: 2,
            completed: 5,
            failed: 1,
            skipped: 2
        }
    );
    assert_eq!(counts.total(), 17);
}

fn empty_inputs_send_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (_, counts) = f.log.measure(|| {
        assert!(s.pending_tasks(&[]).unwrap().is_empty());
        assert!(s.task_statuses(workflow(), &[]).unwrap().is_empty());
        assert!(s.statuses_for_workflows(&[]).unwrap().is_empty());
        assert!(s.complete_workflows(&[]).unwrap().is_empty());
    });
    assert_eq!(counts.statements, 0);
}

/// The number of ids in the large-input case.
pub const MANY_IDS: usize = 20_000;

fn twenty_thousand_ids_go_in_one_statement(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    // 100 real workflows among 20,000 ids, each with two pending tasks.
    let mut ids: Vec<Uuid> = (0..MANY_IDS).map(|_| Uuid::now_v7()).collect();
    let real: Vec<Uuid> = ids.iter().step_by(MANY_IDS / 100).copied().collect();
    let news: Vec<NewTaskExecution> = real
        .iter()
        .flat_map(|wf| {
            [
                NewTaskExecution::new(*wf, "pending"),
                NewTaskExecution::new(*wf, "done"),
            ]
        })
        .collect();
    s.create_many(&news).unwrap();
    ids.reverse();
    let (pending, counts) = f.log.measure(|| s.pending_tasks(&ids).unwrap());
    assert_eq!(pending.len(), 200);
    assert_eq!(counts.statements, 1);
    let (statuses, counts) = f.log.measure(|| s.statuses_for_workflows(&ids).unwrap());
    assert_eq!(statuses.len(), 100);
    assert!(statuses.values().all(|names| names.len() == 2));
    assert_eq!(counts.statements, 1);
    let (complete, counts) = f.log.measure(|| s.complete_workflows(&ids).unwrap());
    assert!(complete.is_empty());
    assert_eq!(counts.statements, 1);
    let names: Vec<String> = (0..MANY_IDS).map(|i| format!("t{i}")).collect();
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.push("done");
    let (found, counts) = f.log.measure(|| s.task_statuses(real[7], &names).unwrap());
    assert_eq!(found, HashMap::from([("done".to_owned(), NotStarted)]));
    assert_eq!(counts.statements, 1);
}
