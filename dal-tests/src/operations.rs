//! The rows of the statement table: each operation the `statements` cases measure, with the
//! label the README shows, and what it sends on a backend given the backend's [`Statements`]
//! ([`crate::suite::TestBackend::statement_counts`]).

macro_rules! operations {
    ($($variant:ident => $label:literal,)*) => {
        /// An operation of the statement table, in the table's order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $(
                #[doc = concat!("`", $label, "`")]
                $variant,
            )*
        }

        impl Operation {
            /// Every operation, in the table's order.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),*];

            /// The operation as the README names it.
            pub fn label(self) -> &'static str {
                match self {
                    $(Operation::$variant => $label,)*
                }
            }
        }
    };
}

operations! {
    Create => "create",
    CreateMany100 => "create_many (100 rows)",
    CreateMany7000 => "create_many (7,000 rows)",
    CreateManyNone => "create_many (no rows)",
    Get => "get",
    ListForWorkflow => "list_for_workflow",
    MarkReady => "mark_ready",
    MarkRunning => "mark_running",
    MarkCompleted => "mark_completed",
    ResetRetryState => "reset_retry_state",
    MarkFailed => "mark_failed",
    ScheduleRetry => "schedule_retry",
    ResetTaskForRecovery => "reset_task_for_recovery",
    MarkSkipped => "mark_skipped",
    MarkAbandoned => "mark_abandoned",
    SetSubStatus => "set_sub_status",
    RejectedTransition => "rejected transition (not found, invalid, exhausted)",
    RejectedInput => "rejected input (validation)",
    Claim1 => "claim_ready (1 task)",
    Claim32 => "claim_ready (32 tasks)",
    Claim1000 => "claim_ready (1,000 tasks)",
    ClaimLimit0 => "claim_ready (limit 0)",
    ClaimNoneReady => "claim_ready (none ready)",
    ClaimTask => "claim_task",
    ClaimTaskRejected => "claim_task (already claimed)",
    Heartbeat => "heartbeat",
    Complete => "complete",
    CompleteMany30 => "complete_many (30 tasks)",
    FinishAndClaim => "finish_and_claim (30 completed, 32 claimed)",
    FinishAndClaimFailing => "finish_and_claim (28 completed, 2 failed, 32 claimed)",
    FinishAndClaimRetrying => "finish_and_claim (28 completed, 2 retried, 32 claimed)",
    FinishAndClaimNothing => "finish_and_claim (nothing finished, limit 0)",
    Fail => "fail",
    FailAndRetry => "fail_and_retry",
    Release => "release",
    RejectedLease => "rejected lease (claim lost)",
    FindStaleClaims => "find_stale_claims",
    Recover1000 => "recover_stale_claims (1,000 stale tasks)",
    Recover1 => "recover_stale_claims (1 stale task)",
    ListReady => "list_ready",
    ListDueRetries => "list_due_retries",
    EventsForTask => "events_for_task",
    EventsForWorkflow => "events_for_workflow",
    EventsForWorkflowLimit0 => "events_for_workflow (limit 0)",
    PendingTasks => "pending_tasks",
    TaskStatuses => "task_statuses",
    StatusesForWorkflows => "statuses_for_workflows",
    IsWorkflowComplete => "is_workflow_complete",
    CompleteWorkflows => "complete_workflows",
    HasAbandonedTask => "has_abandoned_task",
    RetryStats => "retry_stats",
    ExhaustedTasks => "exhausted_tasks",
    CountByStatus => "count_by_status",
    DeferredTasks => "deferred_tasks",
    WorkflowReadsOfNoIds => "workflow reads of no ids",
    PruneRemoving => "prune_finished (batch removing workflows)",
    PruneNoneFinished => "prune_finished (none finished entirely)",
    PruneNothing => "prune_finished (nothing to remove)",
    PruneRejected => "prune_finished (rejected input)",
}

/// What a backend sends for each shape of operation; every row of the table is one of these,
/// or a count the suite fixes for every backend (see [`Operation::statements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statements {
    /// A write and its history events: a transition, a create or a batch of creates within one
    /// statement's bind parameters, a claim that claims some, a completion, a release.
    pub logged_write: usize,
    /// A guarded write that matched nothing, and the read that explains why.
    pub rejected_write: usize,
    /// `create_many` of 7,000 tasks: more rows than one statement's bind parameters hold on
    /// SQLite.
    pub large_batch: usize,
    /// A claim that finds nothing ready.
    pub empty_claim: usize,
    /// A runner cycle that completes tasks and claims others.
    pub cycle: usize,
    /// What each failed or retried task adds to a runner cycle (a retried one on its last
    /// attempt, which fails instead: twice that).
    pub cycle_per_failure: usize,
    /// A sweep that recovers stale claims (abandon those at the cap, reset the others).
    pub sweep: usize,
    /// A retention batch that removes workflow executions.
    pub prune_removing: usize,
    /// A retention batch that scans finished tasks but removes nothing (their workflow
    /// executions are not finished entirely).
    pub prune_none_finished: usize,
    /// A retention batch that finds nothing to scan.
    pub prune_nothing: usize,
}

impl Operation {
    /// The statements this operation sends on a backend that sends `s` for each shape. Fixed
    /// for every backend: a read is one statement; a heartbeat (not history) one plain
    /// `UPDATE`; input the store rejects, an empty batch and a limit of 0 send nothing.
    pub fn statements(self, s: &Statements) -> usize {
        use Operation::*;
        match self {
            CreateManyNone
            | RejectedInput
            | ClaimLimit0
            | EventsForWorkflowLimit0
            | WorkflowReadsOfNoIds
            | FinishAndClaimNothing
            | PruneRejected => 0,
            Get | ListForWorkflow | FindStaleClaims | ListReady | ListDueRetries
            | EventsForTask | EventsForWorkflow | PendingTasks | TaskStatuses
            | StatusesForWorkflows | IsWorkflowComplete | CompleteWorkflows | HasAbandonedTask
            | RetryStats | ExhaustedTasks | CountByStatus | DeferredTasks => 1,
            Heartbeat => 1,
            Create | CreateMany100 | MarkReady | MarkRunning | MarkCompleted | ResetRetryState
            | MarkFailed | ScheduleRetry | ResetTaskForRecovery | MarkSkipped | MarkAbandoned
            | SetSubStatus | Claim1 | Claim32 | Claim1000 | ClaimTask | Complete
            | CompleteMany30 | Fail | FailAndRetry | Release => s.logged_write,
            RejectedTransition | RejectedLease | ClaimTaskRejected => s.rejected_write,
            CreateMany7000 => s.large_batch,
            ClaimNoneReady => s.empty_claim,
            FinishAndClaim => s.cycle,
            // The two failures (retries) have one error (retry time): one plan.
            FinishAndClaimFailing | FinishAndClaimRetrying => s.cycle + s.cycle_per_failure,
            Recover1000 | Recover1 => s.sweep,
            PruneRemoving => s.prune_removing,
            PruneNoneFinished => s.prune_none_finished,
            PruneNothing => s.prune_nothing,
        }
    }
}

/// Where the README's table starts and ends.
const BEGIN: &str = "<!-- statements:begin -->";
const END: &str = "<!-- statements:end -->";

/// Checks the README's statement table: its rows are [`Operation::ALL`] in order, and the
/// column headed by each title of `columns` holds its counts. Other columns are not checked.
pub fn check_readme_table(readme: &str, columns: &[(&str, Statements)]) -> Result<(), String> {
    let table = readme
        .split(BEGIN)
        .nth(1)
        .and_then(|rest| rest.split(END).next())
        .ok_or(format!("the README has no {BEGIN} ... {END} table"))?;
    let mut lines =
        table.lines().filter(|line| line.starts_with('|') && !line.contains("---")).map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().replace('`', ""))
                .collect::<Vec<String>>()
        });
    let header = lines.next().ok_or("the README's table has no header")?;
    let rows: Vec<Vec<String>> = lines.collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.first().map_or("", String::as_str)).collect();
    let expected: Vec<&str> = Operation::ALL.iter().map(|op| op.label()).collect();
    if labels != expected {
        return Err(format!(
            "the README's rows {labels:#?}\n are not the operations {expected:#?}"
        ));
    }
    for (title, counts) in columns {
        let column = header
            .iter()
            .position(|h| h == title)
            .ok_or(format!("the README's table has no column {title:?}"))?;
        for (row, op) in rows.iter().zip(Operation::ALL) {
            let cell = row.get(column).map_or("", String::as_str);
            let promised = op.statements(counts);
            if cell != promised.to_string() {
                return Err(format!(
                    "README, {title} column, {:?}: {cell:?}, but the backend sends {promised}",
                    op.label()
                ));
            }
        }
    }
    Ok(())
}
