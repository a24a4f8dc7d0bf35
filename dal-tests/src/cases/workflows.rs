//! Workflow-level reads: known answers on hand-built workflows, unknown ids, 20,000 ids in
//! one call.

use super::model_based::{Op::*, scenario, spec};
use super::support::{task_in, workflow};
use crate::case;
use crate::suite::{Backend, Case, Fixture};
use TaskStatus::*;
use dal_core::{NewTaskExecution, TaskExecution, TaskStatus};
use std::collections::HashMap;
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(workflow_reads_answer_for_the_workflows_asked_for),
    case!(retries_and_abandonments_are_aggregated_by_the_database),
    case!(twenty_thousand_ids_go_in_one_statement),
];

/// One task of `wf` in each of `statuses`, named after the status and its position.
fn workflow_with(f: &Fixture, wf: Uuid, statuses: &[TaskStatus]) -> Vec<TaskExecution> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, status)| task_in(f.store(), wf, &format!("{status}-{i}"), *status, 3))
        .collect()
}

/// The statuses of `tasks` by name.
fn by_name(tasks: &[TaskExecution]) -> HashMap<String, TaskStatus> {
    tasks.iter().map(|t| (t.task_name.clone(), t.status)).collect()
}

/// Counts by status, the workflows' `NotStarted` rows, their statuses by workflow and name,
/// which are complete (a retry undoes it), as the model answers; statuses by name of the
/// workflow asked for only; a workflow without tasks is not complete.
fn workflow_reads_answer_for_the_workflows_asked_for(kind: Backend) {
    // wf 0: a task in each status; wf 1: completed, failed, skipped; wf 2: running, not started.
    let wfs = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2];
    let names = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1];
    let news = wfs.iter().zip(names).map(|(&wf, name)| spec(wf, name, false, 3));
    let mut ops = vec![Read(12, 0), CreateMany(news.collect())];
    for (task, kinds) in [(1, &[0][..]), (2, &[0, 2]), (3, &[0, 2, 3]), (4, &[0, 2, 4]), (5, &[1])]
    {
        ops.extend(kinds.iter().map(|&k| Transition(task, k, 1, 0)));
    }
    for task in 6..14 {
        let kinds: &[u8] = [&[0, 2, 3][..], &[0, 2, 4], &[0, 1]][task % 3];
        ops.extend(kinds.iter().map(|&k| Transition(task, k, 1, 0)));
    }
    ops.extend([Transition(14, 0, 0, 0), Transition(14, 2, 0, 0), Read(12, 0)]);
    ops.extend((0..3).flat_map(|wf| [Read(2, wf), Read(3, wf), Read(4, wf)]));
    scenario(kind, &[ops, vec![Transition(7, 6, 0, 0), Read(4, 1), Read(4, 0)]].concat());
    let f = Fixture::new(kind);
    let s = f.store();
    let [all, done, empty] = [(); 3].map(|()| workflow());
    let in_all = workflow_with(&f, all, &[NotStarted, Ready, Running, Completed, Failed, Skipped]);
    let in_done = workflow_with(&f, done, &[Completed, Failed, Skipped]);
    let names: Vec<&str> = in_all.iter().map(|t| t.task_name.as_str()).collect();
    assert_eq!(s.task_statuses(all, &names).unwrap(), by_name(&in_all));
    let some = s.task_statuses(all, &["running-2", "no-such-task", "skipped-5"]);
    let expected = [("running-2", Running), ("skipped-5", Skipped)];
    assert_eq!(some.unwrap(), HashMap::from(expected.map(|(n, s)| (n.into(), s))));
    let theirs = s.task_statuses(done, &["completed-0", "ready-1"]).unwrap();
    assert_eq!(theirs, HashMap::from([("completed-0".into(), Completed)]));
    assert!(s.task_statuses(workflow(), &["running-2"]).unwrap().is_empty());
    let complete = |wfs: [Uuid; 3]| wfs.map(|wf| s.is_workflow_complete(wf).unwrap());
    assert_eq!(complete([all, done, empty]), [false, true, false]);
    s.schedule_retry(in_done[1].id, f.now()).unwrap();
    assert_eq!(complete([all, done, empty]), [false; 3]);
}

/// Retries, exhaustion, abandonment aggregated: done at once, on the third try, exhausted,
/// failed once; abandoned on its last attempt (not exhausted), re-run; a workflow without tasks.
fn retries_and_abandonments_are_aggregated_by_the_database(kind: Backend) {
    let chains: [&[u8]; 4] =
        [&[2, 3], &[2, 4, 6, 2, 4, 6, 2, 3], &[2, 4, 6, 2, 4, 6, 2, 4], &[2, 4]];
    let mut ops = vec![CreateMany((0..4).map(|i| spec(0, i, true, 3)).collect())];
    for (task, chain) in chains.iter().enumerate() {
        ops.extend(chain.iter().map(|&t| Transition(task, t, 1, 0)));
    }
    let reads = || [5, 6, 7].map(|r| Read(r, 0));
    ops.extend(reads().into_iter().chain([Create(spec(0, 4, true, 2))]));
    ops.extend([2, 4, 6, 5].map(|t| Transition(4, t, 1, 0)).into_iter().chain(reads()));
    ops.extend([Transition(4, 8, 0, 0)].into_iter().chain(reads()));
    scenario(kind, &[ops, [5, 6, 7].map(|r| Read(r, 1)).into()].concat());
}

const MANY_IDS: usize = 20_000;

fn twenty_thousand_ids_go_in_one_statement(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    // 100 real workflows among 20,000 ids, each with two pending tasks.
    let mut ids: Vec<Uuid> = (0..MANY_IDS).map(|_| Uuid::now_v7()).collect();
    let real: Vec<Uuid> = ids.iter().step_by(MANY_IDS / 100).copied().collect();
    let news =
        real.iter().flat_map(|&wf| ["pending", "done"].map(|n| NewTaskExecution::new(wf, n)));
    s.create_many(&news.collect::<Vec<_>>()).unwrap();
    ids.reverse();
    let (pending, counts) = f.log.measure(|| s.pending_tasks(&ids).unwrap());
    assert_eq!((pending.len(), counts.statements), (200, 1));
    let (statuses, counts) = f.log.measure(|| s.statuses_for_workflows(&ids).unwrap());
    assert_eq!((statuses.len(), counts.statements), (100, 1));
    assert!(statuses.values().all(|names| names.len() == 2));
    let (complete, counts) = f.log.measure(|| s.complete_workflows(&ids).unwrap());
    assert_eq!((complete, counts.statements), (vec![], 1));
    let names: Vec<String> =
        (0..MANY_IDS).map(|i| format!("t{i}")).chain(["done".into()]).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (found, counts) = f.log.measure(|| s.task_statuses(real[7], &names).unwrap());
    assert_eq!((found, counts.statements), (HashMap::from([("done".to_owned(), NotStarted)]), 1));
}
