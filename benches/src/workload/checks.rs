//! The correctness checks of a finished run, made on what the database holds.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use dal_core::{EventType, ExecutionEvent, TaskExecution, TaskExecutionStore, TaskStatus};
use serde::Serialize;
use uuid::Uuid;

use super::metrics::Outcomes;

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// Figures, or the first counterexample.
    pub detail: String,
}

fn check(name: &'static str, problems: Vec<String>, ok: String) -> Check {
    match problems.first() {
        None => Check {
            name,
            passed: true,
            detail: ok,
        },
        Some(first) => Check {
            name,
            passed: false,
            detail: format!("{} problems; first: {first}", problems.len()),
        },
    }
}

/// Reads every task and its history back and checks the run.
pub fn run_checks(
    store: &dyn TaskExecutionStore,
    workflows: &[Uuid],
    expected_tasks: u64,
    outcomes: &Outcomes,
) -> Result<Vec<Check>, dal_core::DalError> {
    let mut tasks: Vec<TaskExecution> = Vec::new();
    let mut histories: BTreeMap<Uuid, Vec<ExecutionEvent>> = BTreeMap::new();
    for wf in workflows {
        tasks.extend(store.list_for_workflow(*wf)?);
        let mut after = None;
        loop {
            let page = store.events_for_workflow(*wf, after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for event in page {
                histories
                    .entry(event.task_execution_id)
                    .or_default()
                    .push(event);
            }
        }
    }
    let mut checks = Vec::new();

    // 1. Every task reached a terminal status.
    let not_terminal: Vec<String> = tasks
        .iter()
        .filter(|t| !t.status.is_terminal())
        .map(|t| format!("task {} is {}", t.id, t.status))
        .collect();
    let mut problems = not_terminal;
    if tasks.len() as u64 != expected_tasks {
        problems.insert(
            0,
            format!("{} tasks found, {expected_tasks} created", tasks.len()),
        );
    }
    checks.push(check(
        "every task reached a terminal status",
        problems,
        format!("{} of {expected_tasks}", tasks.len()),
    ));

    // 2. What the runners counted is what the database holds.
    let count = |status: TaskStatus| tasks.iter().filter(|t| t.status == status).count() as u64;
    let abandoned = tasks.iter().filter(|t| t.is_abandoned()).count() as u64;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut problems = Vec::new();
    if count(TaskStatus::Completed) != get(&outcomes.completed) {
        problems.push(format!(
            "{} completed in the database, {} counted",
            count(TaskStatus::Completed),
            get(&outcomes.completed)
        ));
    }
    if abandoned != get(&outcomes.abandoned) {
        problems.push(format!(
            "{abandoned} abandoned in the database, {} counted",
            get(&outcomes.abandoned)
        ));
    }
    if count(TaskStatus::Failed) - abandoned != get(&outcomes.exhausted) {
        problems.push(format!(
            "{} failed on their last attempt in the database, {} counted",
            count(TaskStatus::Failed) - abandoned,
            get(&outcomes.exhausted)
        ));
    }
    checks.push(check(
        "the outcomes counted are the database's",
        problems,
        format!(
            "{} completed, {} exhausted, {abandoned} abandoned",
            count(TaskStatus::Completed),
            count(TaskStatus::Failed) - abandoned
        ),
    ));

    // 3. No task was claimed twice at the same time: in every history a claim ends (completed,
    // failed, released, recovered, abandoned) before the next begins.
    let mut problems = Vec::new();
    let mut claims = 0;
    for (task, events) in &histories {
        let mut open = false;
        for event in events {
            match event.event_type {
                EventType::Claimed => {
                    claims += 1;
                    if open {
                        problems.push(format!(
                            "task {task} claimed again (seq {}) while claimed",
                            event.seq
                        ));
                    }
                    open = true;
                }
                EventType::Completed
                | EventType::Failed
                | EventType::Released
                | EventType::Recovered
                | EventType::Abandoned => open = false,
                _ => {}
            }
        }
    }
    checks.push(check(
        "no task was claimed twice at the same time",
        problems,
        format!("{claims} claims, 0 overlapping"),
    ));

    // 4. Completions and failures were made with the current claim: the runner that finishes
    // a task is the one whose claim came last.
    let mut problems = Vec::new();
    let mut fenced = 0;
    for (task, events) in &histories {
        let mut holder = None;
        for event in events {
            match event.event_type {
                EventType::Claimed => holder = event.runner_id,
                EventType::Completed | EventType::Failed => {
                    if event.runner_id != holder {
                        problems.push(format!(
                            "task {task}: finished by {:?}, claimed by {holder:?}",
                            event.runner_id
                        ));
                    }
                    fenced += 1;
                    holder = None;
                }
                EventType::Recovered | EventType::Abandoned | EventType::Released => holder = None,
                _ => {}
            }
        }
    }
    checks.push(check(
        "every completion and failure came from the current claim",
        problems,
        format!("{fenced} completions and failures"),
    ));

    // 5. The history replays to the row: each event is a legal step from the state before it,
    // its counters are the replayed ones, and the last state is the row.
    let mut problems = Vec::new();
    let mut replayed_events = 0;
    for task in &tasks {
        let events = histories
            .get(&task.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        replayed_events += events.len();
        if let Err(problem) = dal_tests::model::replay(task, events) {
            problems.push(format!("task {}: {problem}", task.id));
        }
    }
    checks.push(check(
        "every history replays to its task's row",
        problems,
        format!("{replayed_events} events over {} tasks", tasks.len()),
    ));
    Ok(checks)
}
