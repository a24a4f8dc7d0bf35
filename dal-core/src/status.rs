//! The task status, the sub-status of a running task, and small sets of statuses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An enum stored as text: the enum, `ALL` (every value, in declaration order), `as_str` (the
/// stable text form the databases store; it never changes), `Display` as that text and
/// `FromStr` from it (failing with `$err`).
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $t:ident / $err:ident {
        $($(#[$doc:meta])* $v:ident = $text:literal,)*
    }) => {
        $(#[$meta])*
        pub enum $t {
            $($(#[$doc])* $v,)*
        }

        impl $t {
            /// Every value, in declaration order.
            pub const ALL: [$t; [$($text),*].len()] = [$($t::$v),*];

            /// The stable text form the databases store; it never changes.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $text,)*
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = $err;

            fn from_str(s: &str) -> Result<Self, $err> {
                $t::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| $err(s.to_owned()))
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// Where a task execution is in its life. The text form ([`TaskStatus::as_str`]) is what both
    /// databases store; it never changes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum TaskStatus / UnknownStatus {
        /// Created; waiting for its dependencies.
        NotStarted = "not_started",
        /// May be picked up by a runner (now, or at `retry_at`).
        Ready = "ready",
        /// A runner is executing it.
        Running = "running",
        /// Finished successfully. Terminal.
        Completed = "completed",
        /// Finished with an error, or abandoned. Terminal unless a retry is scheduled.
        Failed = "failed",
        /// Will not run (trigger rules said so). Terminal.
        Skipped = "skipped",
    }
}

impl TaskStatus {
    /// `Completed`, `Failed` and `Skipped` are terminal: nothing runs any more.
    pub const fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Skipped)
    }
}

text_enum! {
    /// What a `Running` task is doing, set by the engine (`TaskStore::set_sub_status`) and
    /// cleared by every write that moves the task out of `Running`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum SubStatus / UnknownStatus {
        /// Working.
        Active = "active",
        /// Waiting on something outside the engine (a callback, a human, another system).
        Deferred = "deferred",
    }
}

/// A status text read from the database that names no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

/// A set of statuses: those a write may start from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusSet(u8);

impl StatusSet {
    /// `NotStarted`, `Ready`, `Running`: the statuses in which a task may still run.
    pub const NON_TERMINAL: StatusSet =
        StatusSet::of(&[TaskStatus::NotStarted, TaskStatus::Ready, TaskStatus::Running]);

    /// `Completed`, `Failed`, `Skipped`.
    pub const TERMINAL: StatusSet =
        StatusSet::of(&[TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Skipped]);

    /// The set holding exactly `statuses`.
    pub const fn of(statuses: &[TaskStatus]) -> StatusSet {
        let mut bits = 0;
        let mut i = 0;
        while i < statuses.len() {
            bits |= 1 << statuses[i] as u8;
            i += 1;
        }
        StatusSet(bits)
    }

    /// Whether `status` is in the set.
    pub const fn contains(self, status: TaskStatus) -> bool {
        self.0 & (1 << status as u8) != 0
    }

    /// The statuses of the set, in life-cycle order.
    pub fn iter(self) -> impl Iterator<Item = TaskStatus> {
        TaskStatus::ALL.into_iter().filter(move |status| self.contains(*status))
    }

    /// The set as the backends bind it: its statuses' texts between commas, `,ready,running,`,
    /// so that `instr(set, ',' || status || ',') > 0` tests a status with one parameter.
    pub fn to_sql_list(self) -> String {
        self.iter().fold(",".to_owned(), |list, s| list + s.as_str() + ",")
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
