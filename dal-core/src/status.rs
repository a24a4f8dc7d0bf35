//! The task status and small sets of statuses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task execution is in its life.
///
/// The text form ([`TaskStatus::as_str`]) is what both databases store; it is part of the
/// on-disk format and never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Created; waiting for its dependencies.
    NotStarted,
    /// May be picked up by a runner (now, or at `retry_at`).
    Ready,
    /// A runner is executing it.
    Running,
    /// Finished successfully. Terminal.
    Completed,
    /// Finished with an error, or abandoned. Terminal unless a retry is scheduled.
    Failed,
    /// Will not run (trigger rules said so). Terminal.
    Skipped,
}

impl TaskStatus {
    /// Every status, in life-cycle order (a status added to the enum must be added here: the
    /// build checks below that each status is at its own place).
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::NotStarted,
        TaskStatus::Ready,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Skipped,
    ];

    /// The status's place in [`TaskStatus::ALL`]. An exhaustive match: a new status does not
    /// build until it is given the next place, which is the reminder to add it to `ALL` (and a
    /// slot to SQLite's `status_in!`).
    pub const fn index(self) -> usize {
        match self {
            TaskStatus::NotStarted => 0,
            TaskStatus::Ready => 1,
            TaskStatus::Running => 2,
            TaskStatus::Completed => 3,
            TaskStatus::Failed => 4,
            TaskStatus::Skipped => 5,
        }
    }

    /// The stable text form stored in the `status` column of both backends.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::NotStarted => "not_started",
            TaskStatus::Ready => "ready",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
        }
    }

    /// `Completed`, `Failed` and `Skipped` are terminal: nothing runs any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Skipped
        )
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Whether `text` continues with `word` at `*at`; if so, moves `*at` past it.
const fn expect(text: &[u8], at: &mut usize, word: &[u8]) -> bool {
    let mut j = 0;
    while j < word.len() {
        if *at + j >= text.len() || text[*at + j] != word[j] {
            return false;
        }
        j += 1;
    }
    *at += word.len();
    true
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `Running` task is doing, kept beside its status (cloacina's sub-status): set by the
/// engine with `TaskStore::set_sub_status`, cleared by every write that moves the task out of
/// `Running`.
///
/// The text form ([`SubStatus::as_str`]) is what both databases store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubStatus {
    /// Working.
    Active,
    /// Waiting on something outside the engine (a callback, a human, another system).
    Deferred,
}

impl SubStatus {
    /// Every sub-status.
    pub const ALL: [SubStatus; 2] = [SubStatus::Active, SubStatus::Deferred];

    /// The stable text form stored in the `sub_status` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            SubStatus::Active => "active",
            SubStatus::Deferred => "deferred",
        }
    }
}

impl fmt::Display for SubStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SubStatus::ALL
            .into_iter()
            .find(|sub| sub.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A status text that is not one of [`TaskStatus::as_str`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The terminal statuses as a SQL list, `('completed', 'failed', 'skipped')`, for statement
/// texts that must carry them as literals (to match the partial indexes' predicates). A macro,
/// so that it can be `concat!`ed into a `const` statement; the build checks it against
/// [`StatusSet::TERMINAL`].
#[macro_export]
macro_rules! terminal_statuses_sql {
    () => {
        "('completed', 'failed', 'skipped')"
    };
}

const _: () = {
    let mut i = 0;
    while i < TaskStatus::ALL.len() {
        assert!(
            TaskStatus::ALL[i].index() == i,
            "TaskStatus::ALL lists each status at its index"
        );
        i += 1;
    }
};

const _: () = assert!(
    StatusSet::TERMINAL.is_sql_list(terminal_statuses_sql!()),
    "terminal_statuses_sql! must list StatusSet::TERMINAL"
);

/// A set of statuses (the statuses a transition may start from).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusSet(u8);

impl StatusSet {
    /// The statuses in which a task may still run: `NotStarted`, `Ready`, `Running`.
    pub const NON_TERMINAL: StatusSet = StatusSet::of(&[
        TaskStatus::NotStarted,
        TaskStatus::Ready,
        TaskStatus::Running,
    ]);

    /// The terminal statuses: `Completed`, `Failed`, `Skipped`.
    pub const TERMINAL: StatusSet = StatusSet::of(&[
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Skipped,
    ]);

    /// The set holding exactly `statuses`.
    pub const fn of(statuses: &[TaskStatus]) -> StatusSet {
        let mut bits = 0;
        let mut i = 0;
        while i < statuses.len() {
            bits |= statuses[i].bit();
            i += 1;
        }
        StatusSet(bits)
    }

    /// Whether `sql` is the set as a SQL list, in life-cycle order: `('ready', 'running')`.
    pub const fn is_sql_list(self, sql: &str) -> bool {
        let sql = sql.as_bytes();
        let mut at = 0;
        if !expect(sql, &mut at, b"(") {
            return false;
        }
        let mut first = true;
        let mut i = 0;
        while i < TaskStatus::ALL.len() {
            let status = TaskStatus::ALL[i];
            i += 1;
            if !self.contains(status) {
                continue;
            }
            if !first && !expect(sql, &mut at, b", ") {
                return false;
            }
            first = false;
            if !(expect(sql, &mut at, b"'")
                && expect(sql, &mut at, status.as_str().as_bytes())
                && expect(sql, &mut at, b"'"))
            {
                return false;
            }
        }
        expect(sql, &mut at, b")") && at == sql.len()
    }

    /// Whether `status` is in the set.
    pub const fn contains(self, status: TaskStatus) -> bool {
        self.0 & status.bit() != 0
    }

    /// The statuses of the set, in life-cycle order.
    pub fn iter(self) -> impl Iterator<Item = TaskStatus> {
        TaskStatus::ALL
            .into_iter()
            .filter(move |status| self.contains(*status))
    }

    /// How many statuses the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set holds no status.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sql_list_is_the_set_in_life_cycle_order() {
        assert!(StatusSet::TERMINAL.is_sql_list("('completed', 'failed', 'skipped')"));
        assert!(StatusSet::NON_TERMINAL.is_sql_list("('not_started', 'ready', 'running')"));
        assert!(StatusSet::of(&[]).is_sql_list("()"));
        for wrong in [
            "('completed', 'failed')",
            "('completed', 'failed', 'skipped', 'ready')",
            "('failed', 'completed', 'skipped')",
            "('completed','failed','skipped')",
            "('completed', 'failed', 'skipped') ",
            "'completed', 'failed', 'skipped'",
            "",
        ] {
            assert!(!StatusSet::TERMINAL.is_sql_list(wrong), "{wrong}");
        }
    }

    #[test]
    fn text_form_round_trips_and_is_stable() {
        let texts: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            texts,
            [
                "not_started",
                "ready",
                "running",
                "completed",
                "failed",
                "skipped"
            ]
        );
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::from(status.as_str()))
            );
        }
        assert_eq!(
            "Ready".parse::<TaskStatus>(),
            Err(UnknownStatus("Ready".into()))
        );
    }

    #[test]
    fn terminal_statuses_are_the_last_three() {
        let terminal: Vec<TaskStatus> = TaskStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                TaskStatus::Completed,
                TaskStatus::Failed,
                TaskStatus::Skipped
            ]
        );
    }

    #[test]
    fn status_sets_hold_what_they_were_built_from() {
        let set = StatusSet::of(&[TaskStatus::Running, TaskStatus::Ready]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [TaskStatus::Ready, TaskStatus::Running]
        );
        assert_eq!(set.len(), 2);
        assert!(!set.contains(TaskStatus::Failed));
        assert!(StatusSet::of(&[]).is_empty());
        assert_eq!(StatusSet::NON_TERMINAL.len(), 3);
    }
}
