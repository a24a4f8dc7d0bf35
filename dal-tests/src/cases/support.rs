//! Helpers shared by the cases.

use dal_core::{DalError, NewTaskExecution, TaskExecution, TaskStatus, TaskStore};
use uuid::Uuid;

/// A new workflow execution id.
pub fn workflow() -> Uuid {
    Uuid::now_v7()
}

/// Creates a task named `name` of workflow `wf` with `max_attempts` and brings it to
/// `status` through the public operations.
pub fn task_in(
    store: &dyn TaskStore,
    wf: Uuid,
    name: &str,
    status: TaskStatus,
    max_attempts: i32,
) -> TaskExecution {
    let task = store
        .create(&NewTaskExecution::new(wf, name).with_max_attempts(max_attempts))
        .expect("create");
    let id = task.id;
    let ready = |store: &dyn TaskStore| store.mark_ready(id).expect("mark_ready");
    let running = |store: &dyn TaskStore| {
        ready(store);
        store.mark_running(id).expect("mark_running")
    };
    let reached = match status {
        TaskStatus::NotStarted => task,
        TaskStatus::Ready => ready(store),
        TaskStatus::Running => running(store),
        TaskStatus::Completed => {
            running(store);
            store.mark_completed(id).expect("mark_completed")
        }
        TaskStatus::Failed => {
            running(store);
            store.mark_failed(id, "boom").expect("mark_failed")
        }
        TaskStatus::Skipped => store.mark_skipped(id, "not needed").expect("mark_skipped"),
    };
    assert_eq!(reached.status, status);
    reached
}

/// Asserts that `result` failed, and returns the error.
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, DalError>) -> DalError {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err,
    }
}

/// Asserts that the stored row of `before.id` is still exactly `before`.
pub fn assert_unchanged(store: &dyn TaskStore, before: &TaskExecution) {
    assert_eq!(
        &store.get(before.id).expect("get"),
        before,
        "the row changed"
    );
}
