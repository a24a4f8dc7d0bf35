//! Statement counts: how many statements each operation sends, counted by Diesel's connection
//! instrumentation (every statement, `BEGIN`/`COMMIT` included), against the table that the
//! README shows.

use std::fmt::Write as _;

use dal_core::{
    NewTaskExecution, PruneCursor, Pruned, TaskExecution, TaskExecutionStore, TaskStatus, validate,
};
use uuid::Uuid;

use super::Case;
use super::create::BEYOND_ONE_CHUNK;
use super::support::{expect_err, ready_tasks, workflow};
use crate::case;
use crate::counter::Counts;
use crate::fixture::{BackendKind, Fixture, Setup};

/// The cases of this group.
pub const CASES: &[Case] = &[case!(every_operation_sends_the_documented_statements)];

/// How many statements an operation sends, per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The operation, as the README names it.
    pub operation: &'static str,
    /// Statements on PostgreSQL.
    pub postgres: usize,
    /// Statements on SQLite.
    pub sqlite: usize,
}

const fn same(operation: &'static str, n: usize) -> Expected {
    Expected {
        operation,
        postgres: n,
        sqlite: n,
    }
}

/// The statement table: asserted here, shown in the README (a suite case checks that the two
/// agree).
pub const EXPECTED: &[Expected] = &[
    // A write and its events: one statement on PostgreSQL (a data-modifying WITH); on SQLite,
    // BEGIN IMMEDIATE, the write, the INSERT of its events, COMMIT.
    logged("create"),
    logged("create_many (100 rows)"),
    // PostgreSQL binds each column as one array: one logged INSERT for any number of rows. SQLite
    // binds 2,730 task rows and 4,680 events a statement: BEGIN, three INSERTs of tasks, two of
    // events, COMMIT.
    Expected {
        operation: "create_many (7,000 rows)",
        postgres: 1,
        sqlite: 7,
    },
    same("create_many (no rows)", 0),
    same("get", 1),
    same("list_for_workflow", 1),
    logged("mark_ready"),
    logged("mark_running"),
    logged("mark_completed"),
    logged("reset_retry_state"),
    logged("mark_failed"),
    logged("schedule_retry"),
    logged("reset_task_for_recovery"),
    logged("mark_skipped"),
    logged("mark_abandoned"),
    // The write that matched nothing (and on SQLite its transaction), then one SELECT.
    Expected {
        operation: "rejected transition (not found, invalid, exhausted)",
        postgres: 2,
        sqlite: 4,
    },
    same("rejected input (validation)", 0),
    logged("claim_ready (1 task)"),
    logged("claim_ready (32 tasks)"),
    logged("claim_ready (1,000 tasks)"),
    same("claim_ready (limit 0)", 0),
    // On SQLite: BEGIN IMMEDIATE, the claim, COMMIT (no events to insert).
    Expected {
        operation: "claim_ready (none ready)",
        postgres: 1,
        sqlite: 3,
    },
    // Heartbeats are not history: one statement on both.
    same("heartbeat", 1),
    logged("complete"),
    logged("complete_many (30 tasks)"),
    logged("fail"),
    logged("release"),
    Expected {
        operation: "rejected lease (claim lost)",
        postgres: 2,
        sqlite: 4,
    },
    same("find_stale_claims", 1),
    // Abandon, then reset: two logged statements on PostgreSQL; on SQLite two transactions, the
    // first of which (nothing at the cap here) inserts no events.
    Expected {
        operation: "recover_stale_claims (1,000 stale tasks)",
        postgres: 2,
        sqlite: 7,
    },
    Expected {
        operation: "recover_stale_claims (1 stale task)",
        postgres: 2,
        sqlite: 7,
    },
    same("list_ready", 1),
    same("list_due_retries", 1),
    same("events_for_task", 1),
    same("events_for_workflow", 1),
    same("events_for_workflow (limit 0)", 0),
    same("pending_tasks", 1),
    same("task_statuses", 1),
    same("statuses_for_workflows", 1),
    same("is_workflow_complete", 1),
    same("complete_workflows", 1),
    same("has_abandoned_task", 1),
    same("retry_stats", 1),
    same("exhausted_tasks", 1),
    same("count_by_status", 1),
    same("workflow reads of no ids", 0),
    // A retention batch: one statement on PostgreSQL. SQLite: without the write lock, the scan
    // and the check of the scanned tasks' workflow executions; then, only when some look
    // finished, BEGIN IMMEDIATE, the check again, the DELETE of their tasks and of their events,
    // COMMIT. With nothing scanned there is no check.
    Expected {
        operation: "prune_finished (batch removing workflows)",
        postgres: 1,
        sqlite: 7,
    },
    Expected {
        operation: "prune_finished (none finished entirely)",
        postgres: 1,
        sqlite: 2,
    },
    Expected {
        operation: "prune_finished (nothing to remove)",
        postgres: 1,
        sqlite: 1,
    },
    same("prune_finished (rejected input)", 0),
];

const fn logged(operation: &'static str) -> Expected {
    Expected {
        operation,
        postgres: 1,
        sqlite: 4,
    }
}

/// How many statements a connection keeps prepared after running every operation once: every
/// statement with a fixed text. PostgreSQL: the logged single-row and many-row INSERTs, the
/// logged guarded UPDATE and the plain one (heartbeats), the logged claim and batch completion,
/// and the SELECTs; not the sweep and the retention batch, which are planned anew each time
/// (`dal_core::sql::Unprepared`). SQLite (whose multi-row INSERTs change with their row count):
/// the single-row INSERTs of a task and of an event, the guarded UPDATE, the claim, the batch
/// completion, the sweep, 13 SELECTs, and the scan, the check and the two DELETEs of a retention
/// batch.
pub fn prepared_per_connection(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Postgres => 20,
        BackendKind::Sqlite => 24,
    }
}

/// The statements `operation` (a row of [`EXPECTED`]) sends on `kind`.
pub fn statements_of(operation: &str, kind: BackendKind) -> usize {
    EXPECTED
        .iter()
        .find(|e| e.operation == operation)
        .map(|e| e.on(kind))
        .unwrap_or_else(|| panic!("no row {operation:?} in EXPECTED"))
}

/// The statements a rejected transition sends on `kind`: the guarded write and the read that
/// explains it (and, on SQLite, the transaction around the write).
pub fn rejected_transition(kind: BackendKind) -> usize {
    statements_of("rejected transition (not found, invalid, exhausted)", kind)
}

impl Expected {
    /// The count for `kind`.
    pub fn on(&self, kind: BackendKind) -> usize {
        match kind {
            BackendKind::Postgres => self.postgres,
            BackendKind::Sqlite => self.sqlite,
        }
    }
}

/// Runs every operation of [`EXPECTED`] once on a fresh task and returns what each sent.
fn run_all(f: &Fixture, pass: usize) -> Vec<(&'static str, Counts)> {
    let s: &dyn TaskExecutionStore = f.store();
    let mut out = Vec::new();
    let mut measure =
        |name: &'static str, op: &mut dyn FnMut()| out.push((name, f.log.measure(op).1));
    let wf = workflow();
    let new = |name: &str| NewTaskExecution::new(wf, format!("{name}-{pass}")).with_max_attempts(3);
    let many = |n: usize, tag: &str| -> Vec<NewTaskExecution> {
        (0..n)
            .map(|i| NewTaskExecution::new(wf, format!("{tag}-{pass}-{i}")))
            .collect()
    };
    let mut task: Option<TaskExecution> = None;
    measure("create", &mut || task = Some(s.create(&new("t")).unwrap()));
    let id = task.unwrap().id;
    let batch = many(100, "hundred");
    measure("create_many (100 rows)", &mut || {
        assert_eq!(s.create_many(&batch).unwrap().len(), 100)
    });
    let big = many(BEYOND_ONE_CHUNK, "big");
    measure("create_many (7,000 rows)", &mut || {
        assert_eq!(s.create_many(&big).unwrap().len(), BEYOND_ONE_CHUNK)
    });
    measure("create_many (no rows)", &mut || {
        assert!(s.create_many(&[]).unwrap().is_empty())
    });
    measure("get", &mut || assert_eq!(s.get(id).unwrap().id, id));
    measure("list_for_workflow", &mut || {
        assert!(!s.list_for_workflow(wf).unwrap().is_empty())
    });
    let now = f.now();
    // Made without a transition, so that mark_ready below is the first UPDATE of the pass.
    let other = s.create(&new("other")).unwrap().id;
    let steps: [(&'static str, &dyn Fn() -> TaskExecution, TaskStatus); 9] = [
        (
            "mark_ready",
            &|| s.mark_ready(id).unwrap(),
            TaskStatus::Ready,
        ),
        (
            "mark_running",
            &|| s.mark_running(id).unwrap(),
            TaskStatus::Running,
        ),
        (
            "mark_completed",
            &|| s.mark_completed(id).unwrap(),
            TaskStatus::Completed,
        ),
        (
            "reset_retry_state",
            &|| s.reset_retry_state(id).unwrap(),
            TaskStatus::Ready,
        ),
        (
            "mark_failed",
            &|| s.mark_failed(id, "e").unwrap(),
            TaskStatus::Failed,
        ),
        (
            "schedule_retry",
            &|| s.schedule_retry(id, now).unwrap(),
            TaskStatus::Ready,
        ),
        (
            "reset_task_for_recovery",
            &|| s.reset_task_for_recovery(id).unwrap(),
            TaskStatus::Ready,
        ),
        (
            "mark_skipped",
            &|| s.mark_skipped(id, "r").unwrap(),
            TaskStatus::Skipped,
        ),
        (
            "mark_abandoned",
            &|| s.mark_abandoned(other, "r").unwrap(),
            TaskStatus::Failed,
        ),
    ];
    for (name, step, status) in steps {
        measure(name, &mut || assert_eq!(step().status, status));
    }
    measure(
        "rejected transition (not found, invalid, exhausted)",
        &mut || {
            expect_err(s.mark_completed(id));
        },
    );
    measure("rejected input (validation)", &mut || {
        expect_err(s.create(&NewTaskExecution {
            max_attempts: 0,
            ..new("bad")
        }));
    });
    run_claims(f, pass, &mut measure);
    measure("events_for_task", &mut || {
        assert!(!s.events_for_task(id).unwrap().is_empty())
    });
    measure("events_for_workflow", &mut || {
        assert!(!s.events_for_workflow(wf, None, 100).unwrap().is_empty())
    });
    measure("events_for_workflow (limit 0)", &mut || {
        assert!(s.events_for_workflow(wf, None, 0).unwrap().is_empty())
    });
    let wfs = [wf, workflow()];
    measure("pending_tasks", &mut || {
        drop(s.pending_tasks(&wfs).unwrap())
    });
    measure("task_statuses", &mut || {
        drop(s.task_statuses(wf, &["a", "b"]).unwrap())
    });
    measure("statuses_for_workflows", &mut || {
        drop(s.statuses_for_workflows(&wfs).unwrap())
    });
    measure("is_workflow_complete", &mut || {
        assert!(!s.is_workflow_complete(wf).unwrap())
    });
    measure("complete_workflows", &mut || {
        drop(s.complete_workflows(&wfs).unwrap())
    });
    measure("has_abandoned_task", &mut || {
        assert!(s.has_abandoned_task(wf).unwrap())
    });
    measure("retry_stats", &mut || {
        assert!(s.retry_stats(wf).unwrap().max_attempt >= 1)
    });
    measure("exhausted_tasks", &mut || {
        drop(s.exhausted_tasks(wf).unwrap())
    });
    measure("count_by_status", &mut || {
        assert!(s.count_by_status().unwrap().total() > 0)
    });
    measure("workflow reads of no ids", &mut || {
        assert!(s.pending_tasks(&[]).unwrap().is_empty());
        assert!(s.statuses_for_workflows(&[]).unwrap().is_empty());
        assert!(s.complete_workflows(&[]).unwrap().is_empty());
        assert!(s.task_statuses(wf, &[]).unwrap().is_empty());
    });
    run_prune(f, &mut measure);
    out
}

/// Retention's part of [`run_all`], on workflow executions of its own: each batch starts from a
/// cursor just before the tasks it is meant to scan, whatever else the pass left finished.
fn run_prune(f: &Fixture, measure: &mut dyn FnMut(&'static str, &mut dyn FnMut())) {
    let s: &dyn TaskExecutionStore = f.store();
    let finish = |wf: Uuid, name: &str| {
        let id = s.create(&NewTaskExecution::new(wf, name)).unwrap().id;
        s.mark_skipped(id, "r").unwrap()
    };
    // Finished alone at its time: a task of a workflow execution that has an unfinished one.
    let busy = workflow();
    s.create(&NewTaskExecution::new(busy, "open")).unwrap();
    f.tick();
    let scanned = finish(busy, "done");
    // Two finished tasks, alone at their time, of one workflow execution.
    let gone = workflow();
    f.tick();
    let doomed = [finish(gone, "a"), finish(gone, "b")];
    let older_than = f.tick();
    let from = |task: &TaskExecution| {
        Some(PruneCursor {
            completed_at: task.completed_at.unwrap(),
            task_id: Uuid::nil(),
        })
    };
    measure("prune_finished (batch removing workflows)", &mut || {
        let pruned = s.prune_finished(older_than, 2, from(&doomed[0])).unwrap();
        assert_eq!(
            (pruned.workflows.as_slice(), pruned.tasks),
            (&[gone][..], 2)
        );
    });
    measure("prune_finished (none finished entirely)", &mut || {
        let pruned = s.prune_finished(older_than, 1, from(&scanned)).unwrap();
        assert_eq!(
            (pruned.workflows.len(), pruned.next.map(|c| c.task_id)),
            (0, Some(scanned.id))
        );
    });
    measure("prune_finished (nothing to remove)", &mut || {
        assert_eq!(
            s.prune_finished(validate::earliest_time(), 10, None)
                .unwrap(),
            Pruned::default()
        )
    });
    measure("prune_finished (rejected input)", &mut || {
        expect_err(s.prune_finished(older_than, 0, None));
    });
}

/// The runner protocol's part of [`run_all`].
fn run_claims(f: &Fixture, pass: usize, measure: &mut dyn FnMut(&'static str, &mut dyn FnMut())) {
    let s: &dyn TaskExecutionStore = f.store();
    let runner = uuid::Uuid::now_v7();
    ready_tasks(s, workflow(), 1 + 32 + 1_000, 1);
    let mut one = Vec::new();
    let mut some = Vec::new();
    let mut many = Vec::new();
    measure("claim_ready (1 task)", &mut || {
        one = s.claim_ready(runner, 1).unwrap()
    });
    measure("claim_ready (32 tasks)", &mut || {
        some = s.claim_ready(runner, 32).unwrap()
    });
    measure("claim_ready (1,000 tasks)", &mut || {
        many = s.claim_ready(runner, 1_000).unwrap()
    });
    assert_eq!(
        (one.len(), some.len(), many.len()),
        (1, 32, 1_000),
        "pass {pass}"
    );
    measure("claim_ready (limit 0)", &mut || {
        assert!(s.claim_ready(runner, 0).unwrap().is_empty())
    });
    let lease = one[0].lease;
    measure("heartbeat", &mut || {
        assert_eq!(s.heartbeat(&lease).unwrap().status, TaskStatus::Running)
    });
    measure("complete", &mut || {
        assert_eq!(s.complete(&lease).unwrap().status, TaskStatus::Completed)
    });
    measure("fail", &mut || {
        assert_eq!(
            s.fail(&some[0].lease, "e").unwrap().status,
            TaskStatus::Failed
        )
    });
    measure("release", &mut || {
        assert_eq!(s.release(&some[1].lease).unwrap().status, TaskStatus::Ready)
    });
    measure("rejected lease (claim lost)", &mut || {
        expect_err(s.complete(&lease));
    });
    let batch: Vec<dal_core::Lease> = some[2..].iter().map(|c| c.lease).collect();
    measure("complete_many (30 tasks)", &mut || {
        assert_eq!(s.complete_many(&batch).unwrap().completed.len(), 30)
    });
    // Only the 1,000 are claimed now; they go stale.
    f.clock.advance(chrono::TimeDelta::minutes(1));
    let threshold = f.now() - chrono::TimeDelta::seconds(30);
    measure("find_stale_claims", &mut || {
        assert_eq!(s.find_stale_claims(threshold).unwrap().len(), 1_000)
    });
    measure("recover_stale_claims (1,000 stale tasks)", &mut || {
        assert_eq!(
            s.recover_stale_claims(threshold, 5).unwrap().reset.len(),
            1_000
        )
    });
    s.claim_ready(runner, 1).unwrap();
    f.clock.advance(chrono::TimeDelta::minutes(1));
    let threshold = f.now() - chrono::TimeDelta::seconds(30);
    measure("recover_stale_claims (1 stale task)", &mut || {
        assert_eq!(s.recover_stale_claims(threshold, 5).unwrap().reset.len(), 1)
    });
    measure("list_ready", &mut || {
        assert!(!s.list_ready(10).unwrap().is_empty())
    });
    loop {
        let rest = s.claim_ready(runner, 1_000).unwrap();
        if rest.is_empty() {
            break;
        }
        for claim in rest {
            s.complete(&claim.lease).unwrap();
        }
    }
    measure("claim_ready (none ready)", &mut || {
        assert!(s.claim_ready(runner, 10).unwrap().is_empty())
    });
    measure("list_due_retries", &mut || {
        assert!(s.list_due_retries(10).unwrap().is_empty())
    });
}

fn every_operation_sends_the_documented_statements(kind: BackendKind) {
    // One connection, so "first use" is first use of the whole store.
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: 1,
            ..Default::default()
        },
    );
    let first = run_all(&f, 1);
    let second = run_all(&f, 2);
    let mut report = format!("{kind}: operation | statements | prepared on first use\n");
    for ((name, cold), (_, warm)) in first.iter().zip(&second) {
        writeln!(report, "{name} | {} | {}", warm.statements, cold.prepares).unwrap();
    }
    if std::env::var_os("DAL_PRINT_STATEMENTS").is_some() {
        eprintln!("{report}");
    }
    let mut measured: Vec<&str> = first.iter().map(|(name, _)| *name).collect();
    let mut documented: Vec<&str> = EXPECTED.iter().map(|e| e.operation).collect();
    measured.sort_unstable();
    documented.sort_unstable();
    assert_eq!(
        measured, documented,
        "the operations measured are the ones documented"
    );
    for ((name, cold), (_, warm)) in first.iter().zip(&second) {
        let expected = statements_of(name, kind);
        assert_eq!(
            cold.statements, expected,
            "{kind} {name} (first use): {:#?}",
            cold.sql
        );
        assert_eq!(warm.statements, expected, "{kind} {name}: {:#?}", warm.sql);
        // Once a statement is prepared on a connection it is not prepared again.
        assert_eq!(
            warm.prepares, 0,
            "{kind} {name} prepared again: {:#?}",
            warm.sql
        );
        if expected == 1 {
            assert_eq!(warm.transactions, 0, "{kind} {name}");
            let verb = warm.sql[0]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            assert!(
                ["INSERT", "UPDATE", "SELECT", "WITH"].contains(&verb.as_str()),
                "{kind} {name}: {}",
                warm.sql[0]
            );
        }
    }
    // Every statement with a fixed text is prepared once per connection, on its first use (on
    // PostgreSQL one more round trip, once); multi-row INSERTs vary with their row count and
    // are never kept.
    let prepared: usize = first.iter().map(|(_, c)| c.prepares).sum();
    assert_eq!(
        prepared,
        prepared_per_connection(kind),
        "{kind}: {first:#?}"
    );
}

/// Checks that the README's statement table is [`EXPECTED`], row for row.
pub fn readme_table_matches(readme: &str) -> Result<(), String> {
    let table = readme
        .split("<!-- statements:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- statements:end -->").next())
        .ok_or("the README has no <!-- statements:begin --> ... <!-- statements:end --> table")?;
    let rows: Vec<Expected> = table
        .lines()
        .filter(|line| line.starts_with('|') && !line.contains("---"))
        .skip(1) // the header
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let number = |cell: Option<&&str>| {
                cell.and_then(|c| c.parse::<usize>().ok())
                    .unwrap_or(usize::MAX)
            };
            let operation = cells
                .first()
                .map(|c| c.replace('`', ""))
                .unwrap_or_default();
            let known = EXPECTED
                .iter()
                .find(|e| e.operation == operation)
                .map(|e| e.operation)
                .unwrap_or("?");
            Expected {
                operation: known,
                postgres: number(cells.get(1)),
                sqlite: number(cells.get(2)),
            }
        })
        .collect();
    if rows == EXPECTED {
        Ok(())
    } else {
        Err(format!(
            "README table {rows:#?}\n differs from the suite's {EXPECTED:#?}"
        ))
    }
}
