//! The one error type of the DAL.

use std::fmt;

use uuid::Uuid;

use crate::TaskStatus;

/// A boxed error from a driver or a pool, kept as the `source` of a [`DalError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`DalError`].
pub type Result<T, E = DalError> = std::result::Result<T, E>;

/// Everything an operation of the store can fail with.
///
/// Each case a caller must tell apart has its own variant; none of them is a catch-all with a
/// message to parse. Every variant except [`DalError::Connection`] and [`DalError::Database`]
/// guarantees that the call wrote nothing. A [`DalError::Connection`] error may come from a
/// statement whose effect is unknown (the connection broke after sending it): each operation is
/// one atomic statement, so it either happened completely or not at all; read the task to tell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DalError {
    /// No task execution has this id.
    #[error("task execution {id} not found")]
    NotFound {
        /// The id asked for.
        id: Uuid,
    },
    /// The task is in a status the operation cannot start from. Nothing changed.
    #[error("task execution {id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The task.
        id: Uuid,
        /// The status the task was found in.
        from: TaskStatus,
        /// The status the operation asked for.
        to: TaskStatus,
    },
    /// The caller's claim on the task is no longer the current one (the task was recovered,
    /// released, or claimed again). Nothing changed.
    #[error("task execution {id}: the claim is no longer held")]
    ClaimLost {
        /// The task.
        id: Uuid,
    },
    /// A targeted claim ([`crate::ClaimStore::claim_task`]) found the task claimed already, by
    /// `runner_id` (possibly the caller itself, with an earlier claim). Nothing changed.
    #[error("task execution {id} is claimed by runner {runner_id}")]
    AlreadyClaimed {
        /// The task.
        id: Uuid,
        /// The runner holding the claim.
        runner_id: Uuid,
    },
    /// A targeted claim found the task `Ready` but not due: its `retry_at` has not come yet.
    /// Nothing changed.
    #[error("task execution {id} is not due before {retry_at}")]
    NotDue {
        /// The task.
        id: Uuid,
        /// When it becomes claimable.
        retry_at: chrono::DateTime<chrono::Utc>,
    },
    /// A retry was asked for a task that has used all its attempts. Nothing changed.
    #[error("task execution {id} has used {attempt} of {max_attempts} attempts; no retry left")]
    RetriesExhausted {
        /// The task.
        id: Uuid,
        /// The attempt the task is at.
        attempt: i32,
        /// The task's maximum.
        max_attempts: i32,
    },
    /// The input was rejected before anything was sent to the database.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A task of this name already exists in the workflow execution. Nothing was written.
    #[error("task {task_name:?} already exists in workflow execution {workflow_execution_id}")]
    AlreadyExists {
        /// The workflow execution.
        workflow_execution_id: Uuid,
        /// The task name that is taken.
        task_name: String,
    },
    /// SQLite: the database stayed locked by another process's writer for longer than the
    /// busy timeout (`SQLITE_BUSY`). Nothing was written; the call may be retried.
    #[error("database is busy: {source}")]
    Busy {
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// No usable connection: the pool timed out, the server is unreachable, or the connection
    /// broke during the call.
    #[error("database connection failed: {source}")]
    Connection {
        /// The pool's or the driver's error.
        #[source]
        source: BoxError,
    },
    /// Applying the schema migrations failed.
    #[error("database migration failed: {source}")]
    Migration {
        /// The migration harness's error.
        #[source]
        source: BoxError,
    },
    /// Found when the store opened, before anything was written: a server setting asked for
    /// (libpq's `options=-c name=value`, `PGOPTIONS`, or the store's options) did not take
    /// effect, e.g. a connection pooler dropped it; make it where it survives (see `hint`).
    #[error(
        "the database session's {setting} is {actual:?}, not {requested:?} as requested: {hint}"
    )]
    Settings {
        /// The setting (`search_path`, `statement_timeout`, ...), or `current_schema()`.
        setting: String,
        /// The value asked for.
        requested: String,
        /// The value the session has.
        actual: String,
        /// What to do about it.
        hint: String,
    },
    /// The store was opened with migrations verified, not applied (`Migrations::Verify`), and
    /// the database's schema lacks migrations this build needs. Nothing was written; apply
    /// them first (`PgOptions::migrate` or `SqliteOptions::migrate`, the separate step).
    #[error("the database schema lacks the migrations {pending:?}: apply them first")]
    SchemaNotMigrated {
        /// The versions missing, oldest first (every one when the schema was never migrated).
        pending: Vec<String>,
    },
    /// Any other error reported by the database.
    #[error("database error ({kind}): {source}")]
    Database {
        /// What kind of database error it is.
        kind: DatabaseErrorKind,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl DalError {
    /// Whether the same call may succeed if made again unchanged: the database was busy, the
    /// connection failed, or the database reported a serialization failure, a deadlock or a
    /// lock it could not get in time ([`DatabaseErrorKind::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            DalError::Busy { .. } | DalError::Connection { .. } => true,
            DalError::Database { kind, .. } => kind.is_retryable(),
            _ => false,
        }
    }

    /// Whether the database rolled the call's statement back because of a conflict with a
    /// concurrent transaction (a serialization failure or a deadlock): nothing was written,
    /// and the same call made again is expected to succeed. The store makes such calls again
    /// itself, a few times, before returning this error.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            DalError::Database {
                kind: DatabaseErrorKind::SerializationFailure | DatabaseErrorKind::Deadlock,
                ..
            }
        )
    }
}

impl From<crate::status::UnknownStatus> for DalError {
    /// A status text read from the database that no [`TaskStatus`] has.
    fn from(err: crate::status::UnknownStatus) -> Self {
        DalError::Database { kind: DatabaseErrorKind::UnexpectedData, source: Box::new(err) }
    }
}

impl From<crate::event::UnknownEventType> for DalError {
    /// An event type text read from the database that no [`crate::EventType`] has.
    fn from(err: crate::event::UnknownEventType) -> Self {
        DalError::Database { kind: DatabaseErrorKind::UnexpectedData, source: Box::new(err) }
    }
}

/// The kind of a [`DalError::Database`] error: on PostgreSQL by its SQLSTATE, on SQLite by its
/// result code, never by its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatabaseErrorKind {
    /// A unique constraint rejected the write (23505; `SQLITE_CONSTRAINT_UNIQUE`). The store
    /// turns this into [`DalError::AlreadyExists`] wherever it can tell which task is taken.
    UniqueViolation,
    /// Another integrity constraint rejected the write (class 23; SQLite's `CHECK`, `NOT NULL`
    /// and foreign keys): validation lets none through, so the schema and the code disagree.
    ConstraintViolation,
    /// 40001: rolled back, not serializable with a concurrent transaction (under `REPEATABLE
    /// READ` or `SERIALIZABLE`). Nothing was written; retryable, and retried by the store.
    SerializationFailure,
    /// 40P01: rolled back to break a deadlock with another client's transaction (the store's
    /// own never deadlock each other). Nothing was written; retryable, and retried by the store.
    Deadlock,
    /// 55P03: a lock the statement needed was not granted within `lock_timeout` (or `NOWAIT`).
    /// Nothing was written; retryable once the lock's holder is done.
    LockNotAvailable,
    /// 57014: the statement was cancelled, by `statement_timeout` or by a cancel request.
    /// Nothing was written. Not retryable: the same statement would meet the same limit.
    QueryCanceled,
    /// A stored value could not be read back into the model (e.g. an unknown status text).
    UnexpectedData,
    /// Anything else the database reported, with its message as the error's source. A session
    /// ended by the server (57P01 to 57P03, class 08) is [`DalError::Connection`] instead.
    Other,
}

impl DatabaseErrorKind {
    /// Whether a statement that failed so may succeed if made again: serialization failures,
    /// deadlocks and locks not granted in time.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            DatabaseErrorKind::SerializationFailure
                | DatabaseErrorKind::Deadlock
                | DatabaseErrorKind::LockNotAvailable
        )
    }
}

impl fmt::Display for DatabaseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseErrorKind::UniqueViolation => "unique violation",
            DatabaseErrorKind::ConstraintViolation => "constraint violation",
            DatabaseErrorKind::SerializationFailure => "serialization failure",
            DatabaseErrorKind::Deadlock => "deadlock",
            DatabaseErrorKind::LockNotAvailable => "lock not available",
            DatabaseErrorKind::QueryCanceled => "query cancelled",
            DatabaseErrorKind::UnexpectedData => "unexpected data",
            DatabaseErrorKind::Other => "other",
        })
    }
}

/// Input rejected by validation: which field, and why. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct ValidationError {
    /// The field, e.g. `task_name`, or `tasks[3].task_name` inside a batch.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

impl ValidationError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        ValidationError { field: field.into(), problem }
    }

    /// The same error, with its field placed inside item `index` of a batch.
    pub fn in_batch(self, index: usize) -> Self {
        ValidationError { field: format!("tasks[{index}].{}", self.field), problem: self.problem }
    }
}

/// Why a field was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Empty, or only white space.
    Blank,
    /// Longer than the limit.
    TooLong {
        /// The limit.
        max: usize,
        /// The length found.
        len: usize,
        /// What the lengths count: "characters" or "bytes".
        unit: &'static str,
    },
    /// Holds a NUL character, which PostgreSQL cannot store in text or JSON.
    ContainsNul,
    /// Holds a control character (names only).
    ContainsControl,
    /// A number outside its range.
    OutOfRange {
        /// The smallest value allowed.
        min: i64,
        /// The largest value allowed.
        max: i64,
        /// The value found.
        value: i64,
    },
    /// A time outside what both backends can store (years 1 to 9999).
    TimeOutOfRange,
    /// A JSON document nested more deeply than the limit.
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A status a task cannot be created in.
    StatusNotAllowed(TaskStatus),
    /// A batch of leases mixes runners; a batch is one runner's.
    NotTheSameRunner,
    /// The same workflow execution and task name appear twice in one batch.
    DuplicateInBatch {
        /// The index of the first occurrence.
        first: usize,
    },
    /// A batch of leases (`complete_many`, a runner cycle) finishes the same task twice: by the
    /// same lease or by two of its claims, in one list or in two.
    FinishedTwice {
        /// Where it was first finished, e.g. `finished.completed[2]`.
        first: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Blank => f.write_str("must not be empty or blank"),
            Problem::TooLong { max, len, unit } => {
                write!(f, "is {len} {unit} long; at most {max} are allowed")
            }
            Problem::ContainsNul => f.write_str("must not contain a NUL character"),
            Problem::ContainsControl => f.write_str("must not contain control characters"),
            Problem::OutOfRange { min, max, value } => {
                write!(f, "is {value}; it must be from {min} to {max}")
            }
            Problem::TimeOutOfRange => f.write_str("must be between the years 1 and 9999"),
            Problem::TooDeep { max } => write!(f, "is nested more than {max} levels deep"),
            Problem::StatusNotAllowed(status) => {
                write!(f, "a task cannot be created as {status}")
            }
            Problem::NotTheSameRunner => {
                f.write_str("belongs to another runner than the batch's first lease")
            }
            Problem::DuplicateInBatch { first } => {
                write!(f, "repeats the task of tasks[{first}]")
            }
            Problem::FinishedTwice { first } => {
                write!(f, "finishes the task of {first} a second time")
            }
        }
    }
}
