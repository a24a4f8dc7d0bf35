//! The statement table's rows: each operation, its README label, and what it sends given the
//! backend's [`Statements`].

macro_rules! operations {
    ($s:ident; $($variant:ident($label:literal) = $count:expr,)*) => {
        /// An operation of the statement table, in the table's order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $(
                #[doc = concat!("`", $label, "`")]
                $variant,
            )*
        }

        impl Operation {
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),*];

            pub fn label(self) -> &'static str {
                match self {
                    $(Operation::$variant => $label,)*
                }
            }

            /// What this operation sends on a backend that sends `s` for each shape.
            pub fn statements(self, $s: &Statements) -> usize {
                match self {
                    $(Operation::$variant => $count,)*
                }
            }
        }
    };
}

operations! { s;
    Create("create") = s.logged_write,
    CreateMany100("create_many (100 rows)") = s.logged_write,
    CreateMany7000("create_many (7,000 rows)") = s.large_batch,
    CreateManyNone("create_many (no rows)") = 0,
    Get("get") = 1,
    ListForWorkflow("list_for_workflow") = 1,
    MarkReady("mark_ready") = s.logged_write,
    MarkRunning("mark_running") = s.logged_write,
    MarkCompleted("mark_completed") = s.logged_write,
    ResetRetryState("reset_retry_state") = s.logged_write,
    MarkFailed("mark_failed") = s.logged_write,
    ScheduleRetry("schedule_retry") = s.logged_write,
    ResetTaskForRecovery("reset_task_for_recovery") = s.logged_write,
    MarkSkipped("mark_skipped") = s.logged_write,
    MarkAbandoned("mark_abandoned") = s.logged_write,
    SetSubStatus("set_sub_status") = s.logged_write,
    RejectedTransition("rejected transition (not found, invalid, exhausted)") = s.rejected_write,
    RejectedInput("rejected input (validation)") = 0,
    Claim1("claim_ready (1 task)") = s.logged_write,
    Claim32("claim_ready (32 tasks)") = s.logged_write,
    Claim1000("claim_ready (1,000 tasks)") = s.logged_write,
    ClaimLimit0("claim_ready (limit 0)") = 0,
    ClaimNoneReady("claim_ready (none ready)") = s.empty_claim,
    ClaimTask("claim_task") = s.logged_write,
    ClaimTaskRejected("claim_task (already claimed)") = s.rejected_write,
    Heartbeat("heartbeat") = 1,
    Complete("complete") = s.logged_write,
    CompleteMany30("complete_many (30 tasks)") = s.logged_write,
    FinishAndClaim("finish_and_claim (30 completed, 32 claimed)") = s.cycle,
    // The two failures (retries) have one error (retry time): one plan.
    FinishAndClaimFailing("finish_and_claim (28 completed, 2 failed, 32 claimed)") = s.cycle + s.cycle_per_failure,
    FinishAndClaimRetrying("finish_and_claim (28 completed, 2 retried, 32 claimed)") = s.cycle + s.cycle_per_failure,
    FinishAndClaimNothing("finish_and_claim (nothing finished, limit 0)") = 0,
    Fail("fail") = s.logged_write,
    FailAndRetry("fail_and_retry") = s.logged_write,
    Release("release") = s.logged_write,
    RejectedLease("rejected lease (claim lost)") = s.rejected_write,
    FindStaleClaims("find_stale_claims") = 1,
    Recover1000("recover_stale_claims (1,000 stale tasks)") = s.sweep,
    Recover1("recover_stale_claims (1 stale task)") = s.sweep,
    ListReady("list_ready") = 1,
    ListDueRetries("list_due_retries") = 1,
    EventsForTask("events_for_task") = 1,
    EventsForWorkflow("events_for_workflow") = 1,
    EventsForWorkflowLimit0("events_for_workflow (limit 0)") = 0,
    PendingTasks("pending_tasks") = 1,
    TaskStatuses("task_statuses") = 1,
    StatusesForWorkflows("statuses_for_workflows") = 1,
    IsWorkflowComplete("is_workflow_complete") = 1,
    CompleteWorkflows("complete_workflows") = 1,
    HasAbandonedTask("has_abandoned_task") = 1,
    RetryStats("retry_stats") = 1,
    ExhaustedTasks("exhausted_tasks") = 1,
    CountByStatus("count_by_status") = 1,
    DeferredTasks("deferred_tasks") = 1,
    WorkflowReadsOfNoIds("workflow reads of no ids") = 0,
    PruneRemoving("prune_finished (batch removing workflows)") = s.prune_removing,
    PruneNoneFinished("prune_finished (none finished entirely)") = s.prune_none_finished,
    PruneNothing("prune_finished (nothing to remove)") = s.prune_nothing,
    PruneRejected("prune_finished (rejected input)") = 0,
}

/// What a backend sends for each shape: a write with its events; a guarded write that matched
/// nothing and the read explaining it; 7,000 creates (more than a SQLite statement binds); a
/// claim of none; a runner cycle, and what each failure adds; a sweep; a retention batch that
/// removes, that removes nothing of what it scanned, that scans nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statements {
    pub logged_write: usize,
    pub rejected_write: usize,
    pub large_batch: usize,
    pub empty_claim: usize,
    pub cycle: usize,
    pub cycle_per_failure: usize,
    pub sweep: usize,
    pub prune_removing: usize,
    pub prune_none_finished: usize,
    pub prune_nothing: usize,
}

const BEGIN: &str = "<!-- statements:begin -->";
const END: &str = "<!-- statements:end -->";

/// The README table's rows are [`Operation::ALL`] in order, and each of `columns` its counts.
pub fn check_readme_table(readme: &str, columns: &[(&str, Statements)]) -> Result<(), String> {
    let table = readme.split(BEGIN).nth(1).and_then(|rest| rest.split(END).next());
    let table = table.ok_or(format!("the README has no {BEGIN} ... {END} table"))?;
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|').split('|').map(|cell| cell.trim().replace('`', "")).collect()
    };
    let mut lines = table.lines().filter(|l| l.starts_with('|') && !l.contains("---")).map(cells);
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
        let column = header.iter().position(|h| h == title);
        let column = column.ok_or(format!("the README's table has no column {title:?}"))?;
        for (row, op) in rows.iter().zip(Operation::ALL) {
            let (cell, promised) =
                (row.get(column).map_or("", String::as_str), op.statements(counts));
            if cell != promised.to_string() {
                let label = op.label();
                return Err(format!(
                    "README, {title} column, {label:?}: {cell:?}, but the backend sends {promised}"
                ));
            }
        }
    }
    Ok(())
}
