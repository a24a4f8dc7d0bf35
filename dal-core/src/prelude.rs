//! What a user of a store needs in scope, in one import: the store traits (the methods are
//! spread over them), the rows and inputs they take and return, and the errors.
//!
//! ```
//! use dal_core::prelude::*;
//!
//! /// Claims up to 32 tasks for `runner` and completes them: works on any backend's store.
//! fn drain(store: &dyn TaskExecutionStore, runner: uuid::Uuid) -> Result<usize> {
//!     let claimed: Vec<Claimed> = store.claim_ready(runner, 32)?;
//!     let leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
//!     Ok(store.complete_many(&leases)?.completed.len())
//! }
//! ```
//!
//! The backend crates re-export it: `use dal_sqlite::prelude::*;`, `use dal_postgres::prelude::*;`.

pub use crate::clock::{Clock, SystemClock};
pub use crate::error::{DalError, DatabaseErrorKind, Problem, Result, ValidationError};
pub use crate::event::{EventType, ExecutionEvent};
pub use crate::model::{
    Claimed, Completion, Cycle, FailedTask, Finished, Lease, NewTaskExecution, PruneCursor, Pruned,
    Recovery, RetriedTask, RetryStats, StatusCounts, TaskExecution,
};
pub use crate::plan::Transition;
pub use crate::status::{SubStatus, TaskStatus};
pub use crate::store::{
    ClaimStore, History, HistoryStore, RetentionStore, TaskExecutionStore, TaskStore, WorkflowReads,
};
