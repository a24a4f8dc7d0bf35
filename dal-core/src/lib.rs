//! The core of the task-execution data-access layer: the rows, the one error type, input
//! validation, the clock, the state machine as data ([`plan`]), and the store traits with
//! their one implementation [`Store`] over any [`Backend`]. No database driver code. Users
//! depend on `dal-postgres` or `dal-sqlite`, which re-export it ([`prelude`]); [`Backend`],
//! [`plan`] and [`event::EventSpec`] are for backend authors, and not stable.

#[cfg(feature = "tokio")]
mod asynchronous;
pub mod backend;
pub mod clock;
pub mod error;
pub mod event;
pub mod model;
mod operations;
pub mod plan;
pub mod status;
pub mod store;
pub mod validate;
pub mod wake;

pub use backend::Backend;
pub use prelude::*;
pub use status::StatusSet;
pub use store::Store;

/// What a user of a store needs in scope, in one import: the store traits (the methods are
/// spread over them), the rows and inputs they take and return, the errors, the clock.
///
/// ```
/// use dal_core::prelude::*;
///
/// /// Claims up to 32 tasks for `runner` and completes them: works on any backend's store.
/// fn drain(store: &dyn TaskExecutionStore, runner: uuid::Uuid) -> Result<usize> {
///     let claimed: Vec<Claimed> = store.claim_ready(runner, 32)?;
///     let leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
///     Ok(store.complete_many(&leases)?.completed.len())
/// }
/// ```
pub mod prelude {
    #[cfg(feature = "tokio")]
    pub use crate::asynchronous::AsyncStore;
    pub use crate::clock::{Clock, ManualClock, SystemClock};
    pub use crate::error::{DalError, DatabaseErrorKind, Problem, Result, ValidationError};
    pub use crate::event::{EventType, ExecutionEvent};
    pub use crate::model::{
        Claimed, Completion, Cycle, FailedTask, Finished, Lease, NewTaskExecution, PruneCursor,
        Pruned, QueueLag, Recovery, RetriedTask, RetryStats, StatusCounts, TaskExecution,
    };
    pub use crate::plan::Transition;
    pub use crate::status::{SubStatus, TaskStatus};
    pub use crate::store::{
        ClaimStore, History, HistoryStore, RetentionStore, TaskExecutionStore, TaskStore,
        WakeStore, WorkflowReads,
    };
    pub use crate::validate::sanitize_message;
    pub use crate::wake::{Wake, WakeSource};
}
