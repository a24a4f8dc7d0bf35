//! The core of the task-execution data-access layer: the models, the one error type, input
//! validation, the transition plans (the state machine as data), the clock, and the
//! [`TaskStore`] trait with its implementation [`Store`] over any [`Backend`].
//!
//! This crate holds no database driver code. Depend on a backend crate, `dal-sqlite` or
//! `dal-postgres`, which re-exports everything here; [`prelude`] is what a user needs in scope.
//!
//! The rest is the interface a backend implements and builds on, for backend authors: the
//! [`Backend`] trait, [`Store::new`], the plans ([`plan`]), event specs ([`event::EventSpec`]),
//! ids ([`ids`]). A store's user never needs them; the Diesel layer the backends share is the
//! crate `dal-diesel`.

#[cfg(feature = "tokio")]
mod asynchronous;
pub mod backend;
pub mod clock;
pub mod error;
pub mod event;
pub mod ids;
pub mod model;
pub mod plan;
pub mod prelude;
pub mod status;
pub mod store;
pub mod validate;

#[cfg(feature = "tokio")]
pub use asynchronous::AsyncStore;
pub use backend::Backend;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DalError, DatabaseErrorKind, Problem, Result, ValidationError};
pub use event::{EventType, ExecutionEvent};
pub use model::{
    Claimed, Completion, Cycle, FailedTask, Finished, Lease, NewTaskExecution, PruneCursor, Pruned,
    Recovery, RetriedTask, RetryStats, StatusCounts, TaskExecution,
};
pub use plan::Transition;
pub use status::{StatusSet, SubStatus, TaskStatus};
pub use store::{
    ClaimStore, History, HistoryStore, RetentionStore, Store, TaskExecutionStore, TaskStore,
    WorkflowReads,
};
