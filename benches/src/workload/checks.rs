//! The checks of a finished run: on the database, each workflow execution read back on its own,
//! and on the ledger for those removed (before a resume, known only by their number of tasks).

use std::collections::BTreeSet;

use dal_core::{DalError, EventType, TaskExecutionStore};
use uuid::Uuid;

use super::ledger::{Counted, Ledger, read_workflow};
use super::report::{Check, Metrics, Outcome};

/// The checks, in order; the first [`ROW_CHECKS`] read only the rows (all `--history off` keeps).
pub const CHECKS: [&str; 7] = [
    // Stored: every task there and terminal; removed: every task seen finishing first.
    "every task reached a terminal status",
    "the outcomes counted are the database's",
    // In each history a claim ends before the next begins.
    "no task was claimed twice at the same time",
    "every completion and failure came from the current claim",
    "every history replays to its task's row",
    // Stored: as many events as changes; removed: each batch deleted the events written.
    "every change left exactly one event",
    "retention removed whole workflow executions of this run, each once",
];

/// See [`CHECKS`].
pub const ROW_CHECKS: usize = 2;

/// Reads every stored workflow execution back and checks the run.
pub fn run_checks(
    store: &dyn TaskExecutionStore,
    ledger: &Ledger,
    metrics: &Metrics,
) -> Result<Vec<Check>, DalError> {
    let per_workflow = u64::from(ledger.tasks_per_workflow);
    let [terminal, outcomes, overlapping, fencing, replay, events, pruning] = [0, 1, 2, 3, 4, 5, 6];
    // Per check: how many problems, and the first.
    let mut problems: [(u64, Option<String>); 7] = Default::default();
    let mut flag = |check: usize, problem: String| {
        problems[check].0 += 1;
        problems[check].1.get_or_insert(problem);
    };
    let (mut stored, mut removed) = (Counted::default(), Counted::default());
    let (mut stored_tasks, mut removed_before, mut claims, mut fenced) = (0, 0, 0, 0);
    for workflow in ledger.workflows() {
        let counted = ledger.counted(workflow).unwrap_or_default();
        if counted.pruned_before {
            removed_before += per_workflow;
            continue;
        } else if counted.pruned > 0 {
            removed.add(&counted);
            if counted.finished() != per_workflow {
                flag(terminal, format!("{workflow} was removed unfinished"));
            }
            continue;
        }
        let (tasks, histories) = read_workflow(store, workflow)?;
        let found = Counted::of(&tasks, &histories);
        stored.add(&found);
        stored_tasks += tasks.len() as u64;
        if tasks.len() as u64 != per_workflow {
            flag(terminal, format!("{workflow} holds {} tasks", tasks.len()));
        }
        if found.outcomes != counted.outcomes {
            let (db, run) = (describe(&found), describe(&counted));
            flag(outcomes, format!("{workflow}: {db}, {run} counted"));
        }
        if let (stored, changes) = (found.events, counted.events)
            && stored != changes
        {
            flag(events, format!("{workflow}: {stored} events, {changes} changes"));
        }
        for task in &tasks {
            let id = task.id;
            if !task.status.is_terminal() {
                flag(terminal, format!("task {id} is {}", task.status));
            }
            let history = histories.get(&id).map(Vec::as_slice).unwrap_or_default();
            // The runner of the claim open, while one is.
            let mut holder: Option<Option<Uuid>> = None;
            for event in history {
                let (seq, by) = (event.seq, event.runner_id);
                match event.event_type {
                    EventType::Claimed => {
                        if holder.is_some() {
                            flag(overlapping, format!("task {id} claimed twice, {seq}"));
                        }
                        (claims, holder) = (claims + 1, Some(by));
                    }
                    EventType::Completed | EventType::Failed | EventType::RetryScheduled => {
                        if holder != Some(by) {
                            flag(fencing, format!("{id}: {by:?} ended {holder:?}'s claim"));
                        }
                        (fenced, holder) = (fenced + 1, None);
                    }
                    EventType::Released | EventType::Recovered | EventType::Abandoned => {
                        holder = None
                    }
                    _ => {}
                }
            }
            if let Err(problem) = dal_tests::model::replay(task, history) {
                flag(replay, format!("task {id}: {problem}"));
            }
        }
    }

    let batches = ledger.batches_pruned();
    let expected = ledger.workflows().count() as u64 * per_workflow;
    let removed_tasks: u64 = batches.iter().map(|b| b.tasks).sum();
    let all = stored_tasks + removed_tasks + removed_before;
    if all != expected {
        flag(terminal, format!("{all} tasks, {expected} created"));
    }
    let in_store = u64::try_from(store.count_by_status()?.total()).unwrap_or_default();
    if in_store != stored_tasks {
        flag(terminal, format!("{in_store} tasks stored, {stored_tasks} ours"));
    }
    let (mut total, mut reported) = (stored, ledger.before);
    total.add(&removed);
    let how = [Outcome::Completed, Outcome::Exhausted, Outcome::Abandoned];
    (0..3).for_each(|i| reported.outcomes[i] += metrics.get(how[i]));
    if total.outcomes != reported.outcomes {
        let (db, run) = (describe(&total), describe(&reported));
        flag(outcomes, format!("{db} stored or removed, {run} reported"));
    }
    let mut seen = BTreeSet::new();
    for (n, batch) in batches.iter().enumerate() {
        let mut written = 0;
        for workflow in &batch.workflows {
            match ledger.counted(*workflow) {
                _ if !seen.insert(workflow) => flag(pruning, format!("{workflow} removed twice")),
                Some(counted) => written += counted.events,
                None => flag(pruning, format!("batch {n}: {workflow} not of the run")),
            }
        }
        if batch.events != written {
            flag(events, format!("batch {n}: {} events of {written}", batch.events));
        }
        if batch.tasks != batch.workflows.len() as u64 * per_workflow {
            flag(pruning, format!("batch {n} deleted {} tasks", batch.tasks));
        }
    }

    let gone = match removed_tasks + removed_before {
        0 => String::new(),
        tasks => format!("; {tasks} removed tasks' histories gone"),
    };
    let removed_events: u64 = batches.iter().map(|b| b.events).sum();
    let pruned: usize = batches.iter().map(|b| b.workflows.len()).sum();
    let (total, removed, events) = (describe(&total), describe(&removed), stored.events);
    let oks = [
        format!("{stored_tasks} stored, {removed_tasks} removed, {removed_before} before"),
        format!("{total}, of which removed: {removed}"),
        format!("{claims} claims{gone}"),
        format!("{fenced} completions and failures{gone}"),
        format!("{events} events over {stored_tasks} tasks{gone}"),
        format!("{events} events stored, {removed_events} removed"),
        format!("{pruned} workflow executions in {} batches", batches.len()),
    ];
    let checks = problems.into_iter().zip(CHECKS).zip(oks).map(|(((count, first), name), ok)| {
        let detail = first.as_ref().map_or(ok, |first| format!("{count} problems; first: {first}"));
        Check { name, passed: first.is_none(), detail }
    });
    Ok(checks.collect())
}

fn describe(c: &Counted) -> String {
    let [completed, exhausted, abandoned] = c.outcomes;
    format!("{completed} completed, {exhausted} exhausted, {abandoned} abandoned")
}
