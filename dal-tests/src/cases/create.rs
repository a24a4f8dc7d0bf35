//! `create`, `create_many`, `get`, `list_for_workflow`.

use chrono::TimeDelta;
use dal_core::Clock;
use dal_core::clock::to_micros;
use dal_core::{DalError, NewTaskExecution, Problem, TaskExecution, TaskStatus};
use serde_json::json;

use super::support::{BEYOND_ONE_CHUNK, expect_err, new_row, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(create_returns_every_field_and_get_reads_the_same),
    case!(create_applies_the_defaults),
    case!(create_rejects_a_taken_name_and_keeps_the_original),
    case!(create_many_returns_rows_in_input_order),
    case!(create_many_rejects_the_whole_batch_for_one_invalid_item),
    case!(create_many_rejects_the_whole_batch_for_one_taken_name),
    case!(create_many_beyond_one_chunk_is_all_or_nothing),
    case!(create_many_of_nothing_returns_nothing),
    case!(invalid_input_is_rejected_before_anything_is_written),
    case!(get_of_an_unknown_id_is_not_found),
    case!(list_for_workflow_orders_by_creation),
];

fn create_returns_every_field_and_get_reads_the_same(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let retry_at = f.clock.now() + TimeDelta::seconds(90) + TimeDelta::nanoseconds(987);
    let new = NewTaskExecution {
        workflow_execution_id: wf,
        task_name: "extract ✓ 🦀".into(),
        status: TaskStatus::Ready,
        attempt: 2,
        max_attempts: 5,
        trigger_rules: json!({"type": "All", "of": ["a", "b"]}),
        task_configuration: json!({
            "timeout_s": 30,
            "ratio": 0.1,
            "big": 9_007_199_254_740_993_u64,
            "nested": {"list": [1, null, true, "x", -2.5e-8]},
        }),
        retry_at: Some(retry_at),
    };
    let created = f.store.create(&new).unwrap();
    assert_eq!(
        created,
        TaskExecution {
            id: created.id,
            workflow_execution_id: wf,
            task_name: "extract ✓ 🦀".into(),
            status: TaskStatus::Ready,
            attempt: 2,
            max_attempts: 5,
            trigger_rules: new.trigger_rules.clone(),
            task_configuration: new.task_configuration.clone(),
            error_details: None,
            last_error: None,
            retry_at: Some(to_micros(retry_at)),
            started_at: None,
            completed_at: None,
            recovery_attempts: 0,
            last_recovery_at: None,
            claimed_by: None,
            heartbeat_at: None,
            claim_count: 0,
            abandoned_at: None,
            sub_status: None,
            created_at: f.now(),
            updated_at: f.now(),
        }
    );
    // A UUIDv7 carrying the store's time, to the millisecond.
    assert_eq!(created.id.get_version_num(), 7);
    let (secs, nanos) = created.id.get_timestamp().unwrap().to_unix();
    assert_eq!(secs as i64, f.now().timestamp());
    assert_eq!(nanos / 1_000_000, f.now().timestamp_subsec_millis());
    assert_eq!(f.store.get(created.id).unwrap(), created);
}

fn create_applies_the_defaults(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let created = f.store.create(&NewTaskExecution::new(wf, "load")).unwrap();
    assert_eq!(created, new_row(created.id, wf, "load", f.now()));
    assert_eq!(f.store.get(created.id).unwrap(), created);
}

fn create_rejects_a_taken_name_and_keeps_the_original(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let original = f.store.create(&NewTaskExecution::new(wf, "load")).unwrap();
    f.tick();
    let again = NewTaskExecution::new(wf, "load").with_max_attempts(9);
    let err = expect_err(f.store.create(&again));
    assert!(
        matches!(&err, DalError::AlreadyExists { workflow_execution_id, task_name }
            if *workflow_execution_id == wf && task_name == "load"),
        "{err:?}"
    );
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), vec![original]);
    // The same name in another workflow execution is a different task.
    let other = f
        .store
        .create(&NewTaskExecution::new(workflow(), "load"))
        .unwrap();
    assert_eq!(other.task_name, "load");
}

fn batch(wf: uuid::Uuid, n: usize) -> Vec<NewTaskExecution> {
    (0..n)
        .map(|i| {
            NewTaskExecution::new(wf, format!("t{i:05}")).with_max_attempts(1 + (i % 4) as i32)
        })
        .collect()
}

fn create_many_returns_rows_in_input_order(kind: Backend) {
    let f = Fixture::new(kind);
    let (a, b) = (workflow(), workflow());
    // Two workflow executions interleaved, names not in sorted order.
    let news: Vec<NewTaskExecution> = (0..60)
        .map(|i| {
            let wf = if i % 3 == 0 { a } else { b };
            NewTaskExecution::new(wf, format!("task-{}", (i * 37) % 60))
                .with_max_attempts(1 + i % 5)
                .with_configuration(json!({"i": i}))
        })
        .collect();
    let created = f.store.create_many(&news).unwrap();
    assert_eq!(created.len(), news.len());
    for (row, new) in created.iter().zip(&news) {
        let want = TaskExecution {
            max_attempts: new.max_attempts,
            task_configuration: new.task_configuration.clone(),
            ..new_row(row.id, new.workflow_execution_id, &new.task_name, f.now())
        };
        assert_eq!(row, &want);
        assert_eq!(f.store.get(row.id).unwrap(), *row);
    }
    // Ids increase in input order, so reads by creation return the input order.
    assert!(created.windows(2).all(|w| w[0].id < w[1].id));
    let of_a: Vec<TaskExecution> = created
        .iter()
        .filter(|r| r.workflow_execution_id == a)
        .cloned()
        .collect();
    assert_eq!(f.store.list_for_workflow(a).unwrap(), of_a);
}

fn create_many_rejects_the_whole_batch_for_one_invalid_item(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let mut news = batch(wf, 10);
    news[7].max_attempts = 0;
    let err = expect_err(f.store.create_many(&news));
    assert!(
        matches!(&err, DalError::Validation(v) if v.field == "tasks[7].max_attempts"
            && v.problem == Problem::OutOfRange { min: 1, max: i32::MAX.into(), value: 0 }),
        "{err:?}"
    );
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), vec![]);
}

fn create_many_rejects_the_whole_batch_for_one_taken_name(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let existing = f
        .store
        .create(&NewTaskExecution::new(wf, "t00005"))
        .unwrap();
    let err = expect_err(f.store.create_many(&batch(wf, 10)));
    assert!(
        matches!(&err, DalError::AlreadyExists { workflow_execution_id, task_name }
            if *workflow_execution_id == wf && task_name == "t00005"),
        "{err:?}"
    );
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), vec![existing]);
}

fn create_many_beyond_one_chunk_is_all_or_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let news = batch(wf, BEYOND_ONE_CHUNK);
    // A conflict in the last chunk rolls back the chunks before it.
    let existing = f
        .store
        .create(&news[BEYOND_ONE_CHUNK - 1].clone().with_max_attempts(1))
        .unwrap();
    let err = expect_err(f.store.create_many(&news));
    assert!(
        matches!(&err, DalError::AlreadyExists { task_name, .. } if *task_name == news[BEYOND_ONE_CHUNK - 1].task_name),
        "{err:?}"
    );
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), vec![existing]);

    let other = workflow();
    let news = batch(other, BEYOND_ONE_CHUNK);
    let created = f.store.create_many(&news).unwrap();
    let names: Vec<&str> = created.iter().map(|r| r.task_name.as_str()).collect();
    let expected: Vec<&str> = news.iter().map(|n| n.task_name.as_str()).collect();
    assert_eq!(names, expected);
    assert_eq!(f.store.list_for_workflow(other).unwrap(), created);
}

fn create_many_of_nothing_returns_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let (created, counts) = f.log.measure(|| f.store.create_many(&[]).unwrap());
    assert_eq!(created, vec![]);
    assert_eq!(counts.statements, 0);
}

/// Inputs that validation rejects, with the field and the problem it must report.
pub fn invalid_inputs(wf: uuid::Uuid) -> Vec<(NewTaskExecution, &'static str, Problem)> {
    let ok = || NewTaskExecution::new(wf, "ok");
    let mut deep = json!("leaf");
    for _ in 0..dal_core::validate::JSON_MAX_DEPTH {
        deep = json!({ "d": deep });
    }
    vec![
        (
            NewTaskExecution {
                task_name: String::new(),
                ..ok()
            },
            "task_name",
            Problem::Blank,
        ),
        (
            NewTaskExecution {
                task_name: " \t ".into(),
                ..ok()
            },
            "task_name",
            Problem::Blank,
        ),
        (
            NewTaskExecution {
                task_name: "x".repeat(256),
                ..ok()
            },
            "task_name",
            Problem::TooLong {
                max: 255,
                len: 256,
                unit: "characters",
            },
        ),
        (
            NewTaskExecution {
                task_name: "a\0b".into(),
                ..ok()
            },
            "task_name",
            Problem::ContainsNul,
        ),
        (
            NewTaskExecution {
                task_name: "a\u{7}b".into(),
                ..ok()
            },
            "task_name",
            Problem::ContainsControl,
        ),
        (
            NewTaskExecution {
                max_attempts: 0,
                ..ok()
            },
            "max_attempts",
            Problem::OutOfRange {
                min: 1,
                max: i32::MAX.into(),
                value: 0,
            },
        ),
        (
            NewTaskExecution {
                max_attempts: -3,
                ..ok()
            },
            "max_attempts",
            Problem::OutOfRange {
                min: 1,
                max: i32::MAX.into(),
                value: -3,
            },
        ),
        (
            NewTaskExecution { attempt: 0, ..ok() },
            "attempt",
            Problem::OutOfRange {
                min: 1,
                max: 1,
                value: 0,
            },
        ),
        (
            NewTaskExecution {
                attempt: 4,
                max_attempts: 3,
                ..ok()
            },
            "attempt",
            Problem::OutOfRange {
                min: 1,
                max: 3,
                value: 4,
            },
        ),
        (
            ok().with_status(TaskStatus::Running),
            "status",
            Problem::StatusNotAllowed(TaskStatus::Running),
        ),
        (
            ok().with_status(TaskStatus::Completed),
            "status",
            Problem::StatusNotAllowed(TaskStatus::Completed),
        ),
        (
            ok().with_configuration(json!({"text": "nul\u{0}inside"})),
            "task_configuration",
            Problem::ContainsNul,
        ),
        (
            ok().with_trigger_rules(deep),
            "trigger_rules",
            Problem::TooDeep {
                max: dal_core::validate::JSON_MAX_DEPTH,
            },
        ),
        (
            NewTaskExecution {
                retry_at: chrono::DateTime::from_timestamp(253_402_300_800, 0), // year 10000
                ..ok()
            },
            "retry_at",
            Problem::TimeOutOfRange,
        ),
    ]
}

fn invalid_input_is_rejected_before_anything_is_written(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    for (new, field, problem) in invalid_inputs(wf) {
        let (result, counts) = f.log.measure(|| f.store.create(&new));
        let err = expect_err(result);
        assert!(
            matches!(&err, DalError::Validation(v) if v.field == field && v.problem == problem),
            "{new:?}: {err:?}"
        );
        assert_eq!(counts.statements, 0, "{new:?} reached the database");
        let (result, counts) = f.log.measure(|| {
            f.store
                .create_many(&[NewTaskExecution::new(wf, "fine"), new.clone()])
        });
        let err = expect_err(result);
        assert!(
            matches!(&err, DalError::Validation(v) if v.field == format!("tasks[1].{field}") && v.problem == problem),
            "{new:?}: {err:?}"
        );
        assert_eq!(counts.statements, 0);
    }
    // A batch naming one task twice.
    let twice = [
        NewTaskExecution::new(wf, "a"),
        NewTaskExecution::new(wf, "a"),
    ];
    let err = expect_err(f.store.create_many(&twice));
    assert!(
        matches!(&err, DalError::Validation(v) if v.field == "tasks[1].task_name"
            && v.problem == Problem::DuplicateInBatch { first: 0 }),
        "{err:?}"
    );
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), vec![]);
}

fn get_of_an_unknown_id_is_not_found(kind: Backend) {
    let f = Fixture::new(kind);
    let id = uuid::Uuid::now_v7();
    let err = expect_err(f.store.get(id));
    assert!(
        matches!(err, DalError::NotFound { id: found } if found == id),
        "{err:?}"
    );
}

fn list_for_workflow_orders_by_creation(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let mut created = Vec::new();
    for name in ["zeta", "alpha", "mid", "beta"] {
        created.push(f.store.create(&NewTaskExecution::new(wf, name)).unwrap());
        f.tick();
    }
    // Rows made by one statement share created_at; the id keeps their order.
    created.extend(f.store.create_many(&batch(wf, 3)).unwrap());
    // Another workflow's tasks are not listed.
    f.store
        .create(&NewTaskExecution::new(workflow(), "alpha"))
        .unwrap();
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), created);
    assert_eq!(f.store.list_for_workflow(workflow()).unwrap(), vec![]);
}
