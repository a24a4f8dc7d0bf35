//! The correctness checks of a finished run, made on what the database holds and, for the
//! workflow executions retention removed during the run, on what the run recorded of them.
//!
//! Each workflow execution is read back on its own (its tasks, then its history), checked, and
//! dropped, so the checks hold one workflow execution in memory at a time. One that a
//! `prune_finished` batch reported removed is not read: its rows are gone, and what is known of
//! it is in the [`Ledger`]. It counts as checked only through what the checks below require of
//! pruned work; every figure in a check's detail says how much of it was pruned.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use dal_core::{
    DalError, EventType, ExecutionEvent, TaskExecution, TaskExecutionStore, TaskStatus,
};
use serde::Serialize;
use uuid::Uuid;

use super::ledger::{Counted, Ledger};
use super::metrics::Outcomes;
use super::plan::history;

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

/// The checks a run with the history off keeps: those the rows answer. The others read the
/// execution history, which such a store does not write.
pub const ROW_CHECKS: [&str; 2] = [
    "every task reached a terminal status",
    "the outcomes counted are the database's",
];

/// The problems one check found: how many, and the first.
#[derive(Debug, Default)]
struct Problems {
    count: usize,
    first: Option<String>,
}

impl Problems {
    /// Adds a problem, described only if it is the first.
    fn add(&mut self, describe: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(describe());
        }
        self.count += 1;
    }

    fn check(self, name: &'static str, ok: String) -> Check {
        match self.first {
            None => Check {
                name,
                passed: true,
                detail: ok,
            },
            Some(first) => Check {
                name,
                passed: false,
                detail: format!("{} problems; first: {first}", self.count),
            },
        }
    }
}

/// Tasks by status, as the database holds them or as the run counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Finishes {
    completed: u64,
    exhausted: u64,
    abandoned: u64,
}

impl Finishes {
    fn of_rows(tasks: &[TaskExecution]) -> Self {
        let mut finishes = Finishes::default();
        for task in tasks {
            match task.status {
                TaskStatus::Completed => finishes.completed += 1,
                TaskStatus::Failed if task.is_abandoned() => finishes.abandoned += 1,
                TaskStatus::Failed => finishes.exhausted += 1,
                _ => {}
            }
        }
        finishes
    }

    fn counted(counted: &Counted) -> Self {
        Finishes {
            completed: counted.completed,
            exhausted: counted.exhausted,
            abandoned: counted.abandoned,
        }
    }

    fn add(&mut self, other: Finishes) {
        self.completed += other.completed;
        self.exhausted += other.exhausted;
        self.abandoned += other.abandoned;
    }
}

/// The checks' state while the workflow executions are read one by one.
#[derive(Debug, Default)]
struct Checker {
    tasks_per_workflow: u64,
    terminal: Problems,
    outcomes: Problems,
    overlapping: Problems,
    fencing: Problems,
    replay: Problems,
    events: Problems,
    pruning: Problems,
    /// Tasks and events read back from the database.
    stored_tasks: u64,
    stored_events: u64,
    stored: Finishes,
    /// What the run counted of the workflow executions retention removed.
    pruned_workflows: u64,
    pruned: Finishes,
    /// Workflow executions retention removed before a resumed run started.
    pruned_before: u64,
    claims: u64,
    fenced: u64,
}

/// Reads every stored workflow execution and its history back and checks the run.
///
/// The checks, and what each requires of the workflow executions retention removed ("pruned"):
///
/// 1. Every task reached a terminal status. Stored: each workflow execution holds its
///    `tasks_per_workflow` tasks, every one terminal. Pruned: the run saw each of its tasks
///    finish (completed, exhausted or abandoned, as the calls returned them). In all: the tasks
///    stored plus the tasks the batches reported deleted are the tasks created, and the store
///    holds no task outside the workflow executions read (`count_by_status`).
/// 2. The outcomes counted are the database's. Stored: per workflow execution, the completed,
///    exhausted and abandoned tasks are the ones the run counted. Pruned: only the run's counts
///    exist; they enter the totals, which must be the report's outcomes.
/// 3. No task was claimed twice at the same time; 4. every completion and failure came from the
///    current claim; 5. every history replays to its task's row. Stored only: a pruned
///    history is gone (the detail says how many tasks' histories were).
/// 6. Every change left exactly one event. Stored: per workflow execution, the events in the
///    database are the changes the run's calls returned. Pruned: each batch deleted exactly the
///    events the run wrote to the workflow executions it reported, so none is left and none
///    went missing before.
/// 7. Retention removed whole workflow executions of this run, each once: every workflow
///    execution a batch reported is one the run created and no other batch reported it, and
///    each batch deleted `tasks_per_workflow` tasks per workflow execution it reported.
///
/// A resumed run's ledger counts what the dead process left (see [`super::plan`]), so the
/// checks cover the whole run, both processes. What retention removed before the resume is
/// gone with its counts: those workflow executions enter check 1 by their number of tasks, and
/// each detail says how many there were.
pub fn run_checks(
    store: &dyn TaskExecutionStore,
    ledger: &Ledger,
    outcomes: &Outcomes,
) -> Result<Vec<Check>, DalError> {
    let mut checker = Checker {
        tasks_per_workflow: u64::from(ledger.tasks_per_workflow()),
        ..Checker::default()
    };
    for &workflow in ledger.workflows() {
        let counted = ledger.counted(workflow).unwrap_or_default();
        if counted.pruned_before {
            checker.pruned_before += 1;
        } else if counted.pruned > 0 {
            checker.pruned_workflow(workflow, &counted);
        } else {
            let tasks = store.list_for_workflow(workflow)?;
            let histories = history(store, workflow)?;
            checker.stored_workflow(workflow, &counted, &tasks, &histories);
        }
    }
    let in_store = u64::try_from(store.count_by_status()?.total()).unwrap_or_default();
    Ok(checker.finish(ledger, outcomes, in_store))
}

impl Checker {
    fn pruned_workflow(&mut self, workflow: Uuid, counted: &Counted) {
        self.pruned_workflows += 1;
        self.pruned.add(Finishes::counted(counted));
        if counted.finished() != self.tasks_per_workflow {
            self.terminal.add(|| {
                format!(
                    "workflow execution {workflow} was pruned with {} of its {} tasks seen \
                     finishing",
                    counted.finished(),
                    self.tasks_per_workflow
                )
            });
        }
    }

    fn stored_workflow(
        &mut self,
        workflow: Uuid,
        counted: &Counted,
        tasks: &[TaskExecution],
        histories: &BTreeMap<Uuid, Vec<ExecutionEvent>>,
    ) {
        self.stored_tasks += tasks.len() as u64;
        // 1.
        if tasks.len() as u64 != self.tasks_per_workflow {
            self.terminal.add(|| {
                format!(
                    "workflow execution {workflow} holds {} tasks, {} created (and it was not \
                     reported pruned)",
                    tasks.len(),
                    self.tasks_per_workflow
                )
            });
        }
        for task in tasks.iter().filter(|t| !t.status.is_terminal()) {
            self.terminal
                .add(|| format!("task {} is {}", task.id, task.status));
        }
        // 2.
        let stored = Finishes::of_rows(tasks);
        self.stored.add(stored);
        if stored != Finishes::counted(counted) {
            self.outcomes.add(|| {
                format!(
                    "workflow execution {workflow}: {stored:?} in the database, {:?} counted",
                    Finishes::counted(counted)
                )
            });
        }
        // 6.
        let events = histories.values().map(|h| h.len() as u64).sum::<u64>();
        self.stored_events += events;
        if events != counted.events {
            self.events.add(|| {
                format!(
                    "workflow execution {workflow}: {events} events in the database, {} \
                     changes made",
                    counted.events
                )
            });
        }
        for (task, events) in histories {
            self.claims_of(*task, events);
            self.fencing_of(*task, events);
        }
        // 5.
        for task in tasks {
            let events = histories
                .get(&task.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Err(problem) = dal_tests::model::replay(task, events) {
                self.replay.add(|| format!("task {}: {problem}", task.id));
            }
        }
    }

    /// Check 3: in a history, a claim ends (completed, failed, retried, released, recovered,
    /// abandoned) before the next begins.
    fn claims_of(&mut self, task: Uuid, events: &[ExecutionEvent]) {
        let mut open = false;
        for event in events {
            match event.event_type {
                EventType::Claimed => {
                    self.claims += 1;
                    if open {
                        self.overlapping.add(|| {
                            format!(
                                "task {task} claimed again (seq {}) while claimed",
                                event.seq
                            )
                        });
                    }
                    open = true;
                }
                EventType::Completed
                | EventType::Failed
                | EventType::RetryScheduled
                | EventType::Released
                | EventType::Recovered
                | EventType::Abandoned => open = false,
                _ => {}
            }
        }
    }

    /// Check 4: the runner that finishes a task is the one whose claim came last.
    fn fencing_of(&mut self, task: Uuid, events: &[ExecutionEvent]) {
        let mut holder = None;
        for event in events {
            match event.event_type {
                EventType::Claimed => holder = event.runner_id,
                // A retry under a lease (`fail_and_retry`) finishes the attempt too; one by
                // id (`schedule_retry`) follows a failure and names no runner.
                EventType::RetryScheduled if event.runner_id.is_none() => {}
                EventType::Completed | EventType::Failed | EventType::RetryScheduled => {
                    if event.runner_id != holder {
                        self.fencing.add(|| {
                            format!(
                                "task {task}: finished by {:?}, claimed by {holder:?}",
                                event.runner_id
                            )
                        });
                    }
                    self.fenced += 1;
                    holder = None;
                }
                EventType::Recovered | EventType::Abandoned | EventType::Released => holder = None,
                _ => {}
            }
        }
    }

    /// The checks over all workflow executions, and the report's list. `in_store`: the tasks
    /// the store holds.
    fn finish(mut self, ledger: &Ledger, outcomes: &Outcomes, in_store: u64) -> Vec<Check> {
        let batches = ledger.batches();
        let expected = ledger.tasks();
        let pruned_tasks: u64 = batches.iter().map(|b| b.tasks).sum();
        let pruned_events: u64 = batches.iter().map(|b| b.events).sum();
        let pruned_tasks_counted = self.pruned_workflows * self.tasks_per_workflow;
        let pruned_before_tasks = self.pruned_before * self.tasks_per_workflow;

        // 1. In all.
        if self.stored_tasks + pruned_tasks + pruned_before_tasks != expected {
            self.terminal.add(|| {
                format!(
                    "{} tasks in the database, {pruned_tasks} pruned and {pruned_before_tasks} \
                     pruned before the run resumed, {expected} created",
                    self.stored_tasks
                )
            });
        }
        if in_store != self.stored_tasks {
            self.terminal.add(|| {
                format!(
                    "the store holds {in_store} tasks besides those from before the run, {} in \
                     the workflow executions not pruned",
                    self.stored_tasks
                )
            });
        }
        if ledger.strays() > 0 {
            self.terminal.add(|| {
                format!(
                    "{} rows returned for workflow executions the run did not create",
                    ledger.strays()
                )
            });
        }

        // 2. In all.
        let mut total = self.stored;
        total.add(self.pruned);
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut reported = Finishes::counted(&ledger.finished_before());
        reported.add(Finishes {
            completed: get(&outcomes.completed),
            exhausted: get(&outcomes.exhausted),
            abandoned: get(&outcomes.abandoned),
        });
        if total != reported {
            self.outcomes.add(|| {
                format!(
                    "{total:?} in the database and pruned, {reported:?} in the outcomes (and \
                     finished before the run resumed)"
                )
            });
        }

        // 6 and 7, per batch.
        let mut seen: BTreeMap<Uuid, usize> = BTreeMap::new();
        for (number, batch) in batches.iter().enumerate() {
            let mut written = 0;
            for workflow in &batch.workflows {
                *seen.entry(*workflow).or_default() += 1;
                match ledger.counted(*workflow) {
                    Some(counted) => written += counted.events,
                    None => self.pruning.add(|| {
                        format!(
                            "batch {number} reported {workflow}, not a workflow execution of \
                             this run"
                        )
                    }),
                }
            }
            if batch.events != written {
                self.events.add(|| {
                    format!(
                        "batch {number} deleted {} events of {} workflow executions, to which \
                         the run wrote {written}",
                        batch.events,
                        batch.workflows.len()
                    )
                });
            }
            if batch.tasks != batch.workflows.len() as u64 * self.tasks_per_workflow {
                self.pruning.add(|| {
                    format!(
                        "batch {number} deleted {} tasks of {} workflow executions of {} tasks",
                        batch.tasks,
                        batch.workflows.len(),
                        self.tasks_per_workflow
                    )
                });
            }
        }
        for (workflow, times) in seen.iter().filter(|(_, times)| **times > 1) {
            self.pruning
                .add(|| format!("workflow execution {workflow} reported by {times} batches"));
        }

        let pruned_note = |what: &str| {
            let mut note = String::new();
            if self.pruned_workflows > 0 {
                note += &format!("; {pruned_tasks_counted} pruned tasks' {what} gone");
            }
            if self.pruned_before > 0 {
                note +=
                    &format!("; {pruned_before_tasks} tasks' {what} pruned before the run resumed");
            }
            note
        };
        let mut outcomes_ok = format!(
            "{} completed, {} exhausted, {} abandoned",
            total.completed, total.exhausted, total.abandoned
        );
        if self.pruned_workflows > 0 {
            outcomes_ok += &format!(
                " (of which in pruned workflow executions, as counted: {} completed, {} \
                 exhausted, {} abandoned)",
                self.pruned.completed, self.pruned.exhausted, self.pruned.abandoned
            );
        }
        let overlapping_ok = format!(
            "{} claims, 0 overlapping{}",
            self.claims,
            pruned_note("histories")
        );
        let fencing_ok = format!(
            "{} completions and failures{}",
            self.fenced,
            pruned_note("histories")
        );
        let replay_ok = format!(
            "{} events over {} tasks{}",
            self.stored_events,
            self.stored_tasks,
            pruned_note("histories")
        );
        let pruning_ok = if ledger.workflows().is_empty() || batches.is_empty() {
            "nothing pruned".to_owned()
        } else {
            format!(
                "{} workflow executions in {} batches, {pruned_tasks} tasks, {pruned_events} \
                 events",
                self.pruned_workflows,
                batches.len()
            )
        };
        vec![
            self.terminal.check(
                "every task reached a terminal status",
                format!(
                    "{} in the database, {pruned_tasks} pruned (each seen finishing){}, of \
                     {expected}",
                    self.stored_tasks,
                    if self.pruned_before > 0 {
                        format!(", {pruned_before_tasks} pruned before the run resumed")
                    } else {
                        String::new()
                    }
                ),
            ),
            self.outcomes
                .check("the outcomes counted are the database's", outcomes_ok),
            self.overlapping
                .check("no task was claimed twice at the same time", overlapping_ok),
            self.fencing.check(
                "every completion and failure came from the current claim",
                fencing_ok,
            ),
            self.replay
                .check("every history replays to its task's row", replay_ok),
            self.events.check(
                "every change left exactly one event",
                format!(
                    "{} events in the database, {pruned_events} pruned, as many as changes made",
                    self.stored_events
                ),
            ),
            self.pruning.check(
                "retention removed whole workflow executions of this run, each once",
                pruning_ok,
            ),
        ]
    }
}
