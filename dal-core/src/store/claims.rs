//! The runner protocol: claim in batches, heart-beat, finish with the lease, and recover the
//! tasks of runners that stopped heart-beating.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use std::collections::HashMap;

use super::Store;
use crate::backend::Backend;
use crate::clock;
use crate::error::{DalError, Problem, Result, ValidationError};
use crate::plan::{Claim, Plan, Stale, Transition};
use crate::{
    Claimed, Completion, Cycle, Finished, Lease, Recovery, TaskExecution, TaskStatus, validate,
};

/// The runner protocol: a runner claims tasks, a [`Lease`] each, heart-beats while it works and
/// finishes with the lease, which succeeds only while the lease is the task's current claim
/// (else [`DalError::ClaimLost`], nothing changed). A sweeper resets (or, past a cap, abandons)
/// the tasks of runners that stopped heart-beating.
pub trait ClaimStore: Send + Sync {
    /// Claims up to `limit` due `Ready` tasks for `runner_id`, oldest due first (the later of
    /// the time they entered `Ready` and their retry time, then id): one `UPDATE ... RETURNING`
    /// (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so concurrent claimers never get the same task
    /// nor wait for each other. Each goes `Running` with `claimed_by`, `heartbeat_at`,
    /// `started_at` set and `claim_count + 1`. Returned by id; a `limit` of 0 sends nothing.
    fn claim_ready(&self, runner_id: Uuid, limit: u32) -> Result<Vec<Claimed>>;

    /// Claims task `id` for `runner_id` as [`ClaimStore::claim_ready`] would, only while it is
    /// `Ready`, unclaimed and due: one guarded `UPDATE ... RETURNING`. Errors (nothing changed):
    /// [`DalError::AlreadyClaimed`], [`DalError::NotDue`], [`DalError::InvalidTransition`],
    /// [`DalError::NotFound`].
    fn claim_task(&self, id: Uuid, runner_id: Uuid) -> Result<Claimed>;

    /// `heartbeat_at = now`, no event (one statement). Errors: [`DalError::ClaimLost`],
    /// [`DalError::NotFound`].
    fn heartbeat(&self, lease: &Lease) -> Result<TaskExecution>;

    /// `Running` -> `Completed`, the claim cleared (one statement). Errors:
    /// [`DalError::ClaimLost`], [`DalError::InvalidTransition`], [`DalError::NotFound`].
    fn complete(&self, lease: &Lease) -> Result<TaskExecution>;

    /// `Running` (or claimed `Ready`) -> `Failed` with the error kept, the claim cleared (one
    /// statement). Errors: as [`ClaimStore::complete`], and [`DalError::Validation`].
    fn fail(&self, lease: &Lease, error: &str) -> Result<TaskExecution>;

    /// A failed attempt retried in one statement: `Running` -> `Ready` as
    /// [`TaskStore::schedule_retry`](crate::TaskStore::schedule_retry) leaves it, with
    /// `last_error = error`; event `retry_scheduled`. Errors (nothing changed):
    /// [`DalError::Validation`], [`DalError::ClaimLost`], [`DalError::InvalidTransition`],
    /// [`DalError::RetriesExhausted`] (use [`ClaimStore::fail`]), [`DalError::NotFound`].
    fn fail_and_retry(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<TaskExecution>;

    /// Completes a runner's batch in one statement: the tasks whose lease still holds go
    /// `Running` -> `Completed`; the other leases come back as lost. Errors (nothing written):
    /// [`DalError::Validation`] when the leases mix runners ([`Problem::NotTheSameRunner`]) or
    /// name a task twice ([`Problem::FinishedTwice`]).
    fn complete_many(&self, leases: &[Lease]) -> Result<Completion>;

    /// One runner cycle, atomic (PostgreSQL: one statement; SQLite: one transaction):
    /// completes, fails and retries the finished tasks as [`ClaimStore::complete_many`],
    /// [`ClaimStore::fail`] and [`ClaimStore::fail_and_retry`] (a retry on the last attempt
    /// fails), then claims up to `limit` as [`ClaimStore::claim_ready`], never deadlocking. Each
    /// lease comes back once (`completed`, `failed`, `retried` or `lost`). Errors (nothing
    /// written): [`DalError::Validation`] ([`Problem::NotTheSameRunner`],
    /// [`Problem::FinishedTwice`], an invalid error or time).
    fn finish_and_claim(&self, runner_id: Uuid, finished: &Finished, limit: u32) -> Result<Cycle>;

    /// Gives a claimed task back: `Ready`, claim and `started_at` cleared, no attempt counted
    /// (one statement). Errors: as [`ClaimStore::complete`].
    fn release(&self, lease: &Lease) -> Result<TaskExecution>;

    /// The claimed tasks whose last heartbeat is before `older_than`, by id (one `SELECT`).
    fn find_stale_claims(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>>;

    /// Recovers the stale claims: those recovered `max_recovery_attempts` times already are
    /// abandoned, the others go `Ready` with `recovery_attempts + 1`. Two statements, each
    /// re-checking the condition as it writes, so a task finished or claimed again meanwhile
    /// is not touched. Returns both lists, by id.
    fn recover_stale_claims(
        &self,
        older_than: DateTime<Utc>,
        max_recovery_attempts: i32,
    ) -> Result<Recovery>;

    /// Up to `limit` due `Ready` tasks in claim order (one `SELECT`).
    fn list_ready(&self, limit: u32) -> Result<Vec<TaskExecution>>;

    /// Up to `limit` `Ready` tasks whose retry is due, in claim order (one `SELECT`).
    fn list_due_retries(&self, limit: u32) -> Result<Vec<TaskExecution>>;
}

fn by_id(mut rows: Vec<TaskExecution>) -> Vec<TaskExecution> {
    rows.sort_unstable_by_key(|row| row.id);
    rows
}

/// `Validation(FinishedTwice)`: the task of `field` was finished first at `first`.
fn finished_twice(field: String, first: String) -> DalError {
    ValidationError::new(field, Problem::FinishedTwice { first }).into()
}

/// `Validation(NotTheSameRunner)` for `field`.
fn not_the_runner(field: String) -> DalError {
    ValidationError::new(field, Problem::NotTheSameRunner).into()
}

/// The writes of a runner cycle, in task id order (the order their rows are locked in), after
/// checking its input: every lease `runner_id`'s, every error and retry time valid, every task
/// finished once. A retried task gets two plans with complementary guards: its retry while an
/// attempt is left, its failure on its last attempt.
fn finish_plans(runner_id: Uuid, finished: &Finished, now: DateTime<Utc>) -> Result<Vec<Plan>> {
    let mut first: HashMap<Uuid, String> = HashMap::new();
    let mut plans = Vec::new();
    let entries = finished
        .completed
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("finished.completed[{i}]"), "", l, None, None))
        .chain(finished.failed.iter().enumerate().map(|(i, f)| {
            let at = format!("finished.failed[{i}]");
            (at, ".lease", &f.lease, Some(&f.error), None)
        }))
        .chain(finished.retried.iter().enumerate().map(|(i, r)| {
            let at = format!("finished.retried[{i}]");
            (at, ".lease", &r.lease, Some(&r.error), Some(r.retry_at))
        }));
    for (at, lease_at, lease, error, retry_at) in entries {
        if lease.runner_id != runner_id {
            return Err(not_the_runner(format!("{at}{lease_at}.runner_id")));
        }
        if let Some(error) = error {
            validate::message(&format!("{at}.error"), error)?;
        }
        if let Some(retry_at) = retry_at {
            validate::time(&format!("{at}.retry_at"), retry_at)?;
        }
        if let Some(earlier) = first.insert(lease.task_id, at.clone()) {
            return Err(finished_twice(format!("{at}{lease_at}.task_id"), earlier));
        }
        let new = match (error, retry_at) {
            (None, _) => vec![Transition::MarkCompleted.plan(now)],
            (Some(error), None) => vec![Plan::fail_running(error, now, None)],
            (Some(error), Some(retry_at)) => vec![
                Plan::fail_and_retry(error, retry_at, now),
                Plan::fail_running(error, now, Some(false)),
            ],
        };
        plans.extend(new.into_iter().map(|plan| plan.leased(*lease)));
    }
    plans.sort_by_key(|plan| plan.guard.lease.map(|lease| lease.task_id));
    Ok(plans)
}

impl<B: Backend> Store<B> {
    /// A claim by `runner_id` of up to `limit` tasks due now, from the store's claim floor.
    fn claim(&self, runner_id: Uuid, limit: u32, now: DateTime<Utc>) -> Claim {
        Claim {
            due_at: now,
            from: self.floors.claim_start(now),
            limit,
            plan: self.history.of(Plan::claim(runner_id, now)),
        }
    }

    /// Runs a cycle of `finished` plans (for the leases `given`, in the caller's order) and
    /// `claim` for `runner_id`, and sorts what it wrote by outcome; the leases of `given` whose
    /// task was not written are lost.
    fn run_cycle(
        &self,
        operation: &'static str,
        runner_id: Uuid,
        (finished, given): (&[Plan], &[&Lease]),
        claim: &Claim,
    ) -> Result<Cycle> {
        let finished: Vec<Plan> = finished.iter().map(|p| self.history.of(p.clone())).collect();
        let bell = self.wakeups.bell();
        let seen = bell.generation();
        self.traced(
            operation,
            self.retrying(operation, || self.backend.cycle(&finished, claim)).map(|mut rows| {
                rows.sort_unstable_by_key(|(row, _)| row.id);
                let mut done = Cycle::default();
                let mut positions = Vec::new();
                for (task, at) in rows {
                    match task.status {
                        TaskStatus::Completed => done.completed.push(task),
                        TaskStatus::Failed => done.failed.push(task),
                        TaskStatus::Ready => done.retried.push(task),
                        _ => {
                            positions.extend(at);
                            let lease =
                                Lease { task_id: task.id, runner_id, claim: task.claim_count };
                            done.claimed.push(Claimed { task, lease });
                        }
                    }
                }
                self.floors.claimed(claim.limit, &positions);
                let written: std::collections::HashSet<Uuid> = done
                    .completed
                    .iter()
                    .chain(&done.failed)
                    .chain(&done.retried)
                    .map(|task| task.id)
                    .collect();
                done.lost = given
                    .iter()
                    .filter(|lease| !written.contains(&lease.task_id))
                    .map(|lease| **lease)
                    .collect();
                bell.ring_for(&done.retried);
                if claim.limit > 0 && done.claimed.is_empty() {
                    bell.found_nothing(seen);
                }
                done
            }),
        )
    }
}

impl<B: Backend> ClaimStore for Store<B> {
    fn claim_ready(&self, runner_id: Uuid, limit: u32) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let claim = self.claim(runner_id, limit, self.now());
        let cycle = self.run_cycle("claim_ready", runner_id, (&[], &[]), &claim)?;
        Ok(cycle.claimed)
    }

    fn claim_task(&self, id: Uuid, runner_id: Uuid) -> Result<Claimed> {
        let task = self.guarded_write(id, Plan::claim_task(runner_id, self.now()))?;
        let lease = Lease { task_id: task.id, runner_id, claim: task.claim_count };
        Ok(Claimed { task, lease })
    }

    fn heartbeat(&self, lease: &Lease) -> Result<TaskExecution> {
        self.guarded_write(lease.task_id, Plan::heartbeat(self.now()).leased(*lease))
    }

    fn complete(&self, lease: &Lease) -> Result<TaskExecution> {
        let plan = Transition::MarkCompleted.plan(self.now()).leased(*lease);
        self.guarded_write(lease.task_id, plan)
    }

    fn fail(&self, lease: &Lease, error: &str) -> Result<TaskExecution> {
        let transition = Transition::MarkFailed { error: error.to_owned() };
        transition.validate()?;
        self.guarded_write(lease.task_id, transition.plan(self.now()).leased(*lease))
    }

    fn fail_and_retry(
        &self,
        lease: &Lease,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<TaskExecution> {
        validate::message("error", error)?;
        validate::time("retry_at", retry_at)?;
        let plan = Plan::fail_and_retry(error, retry_at, self.now()).leased(*lease);
        self.guarded_write(lease.task_id, plan)
    }

    fn complete_many(&self, leases: &[Lease]) -> Result<Completion> {
        let Some(first) = leases.first() else {
            return Ok(Completion::default());
        };
        let mut seen = HashMap::with_capacity(leases.len());
        for (i, lease) in leases.iter().enumerate() {
            if lease.runner_id != first.runner_id {
                return Err(not_the_runner(format!("leases[{i}].runner_id")));
            }
            if let Some(j) = seen.insert(lease.task_id, i) {
                return Err(finished_twice(format!("leases[{i}].task_id"), format!("leases[{j}]")));
            }
        }
        let now = self.now();
        let complete = Transition::MarkCompleted.plan(now);
        let mut plans: Vec<Plan> = leases.iter().map(|l| complete.clone().leased(*l)).collect();
        plans.sort_by_key(|plan| plan.guard.lease.map(|lease| lease.task_id));
        let given: Vec<&Lease> = leases.iter().collect();
        let none = self.claim(first.runner_id, 0, now);
        let cycle = self.run_cycle("complete_many", first.runner_id, (&plans, &given), &none)?;
        Ok(Completion { completed: cycle.completed, lost: cycle.lost })
    }

    fn finish_and_claim(&self, runner_id: Uuid, finished: &Finished, limit: u32) -> Result<Cycle> {
        let now = self.now();
        let plans = finish_plans(runner_id, finished, now)?;
        if plans.is_empty() && limit == 0 {
            return Ok(Cycle::default());
        }
        let given: Vec<&Lease> = finished
            .completed
            .iter()
            .chain(finished.failed.iter().map(|f| &f.lease))
            .chain(finished.retried.iter().map(|r| &r.lease))
            .collect();
        let claim = self.claim(runner_id, limit, now);
        self.run_cycle("finish_and_claim", runner_id, (&plans, &given), &claim)
    }

    fn release(&self, lease: &Lease) -> Result<TaskExecution> {
        self.guarded_write(lease.task_id, Plan::release(self.now()).leased(*lease))
    }

    fn find_stale_claims(&self, older_than: DateTime<Utc>) -> Result<Vec<TaskExecution>> {
        validate::time("older_than", older_than)?;
        // Cut to microseconds here, as every stored time is, rather than by each driver's rule.
        self.traced("find_stale_claims", self.backend.find_stale(clock::to_micros(older_than)))
    }

    fn recover_stale_claims(
        &self,
        older_than: DateTime<Utc>,
        max_recovery_attempts: i32,
    ) -> Result<Recovery> {
        validate::time("older_than", older_than)?;
        validate::in_range("max_recovery_attempts", max_recovery_attempts, 0, i32::MAX)?;
        let older_than = clock::to_micros(older_than);
        let now = self.now();
        let sweep = |recovery_attempts, plan: Plan| {
            let stale = Stale { older_than, recovery_attempts };
            let plan = self.history.of(plan);
            self.retrying("recover_stale_claims", || self.backend.sweep(&stale, &plan))
                .inspect(|rows| self.wakeups.bell().ring_for(rows))
        };
        let result = (|| {
            let abandon = Plan::abandon_stale(max_recovery_attempts, now);
            let abandoned = sweep((max_recovery_attempts, i32::MAX), abandon)?;
            let reset = match max_recovery_attempts {
                0 => Vec::new(),
                max => sweep((0, max - 1), Plan::recover_stale(older_than, now))?,
            };
            Ok::<_, DalError>(Recovery { reset: by_id(reset), abandoned: by_id(abandoned) })
        })();
        self.trace("recover_stale_claims", None, 2, result)
    }

    fn list_ready(&self, limit: u32) -> Result<Vec<TaskExecution>> {
        self.read("list_ready", limit == 0, || self.backend.list_ready(self.now(), limit, false))
    }

    fn list_due_retries(&self, limit: u32) -> Result<Vec<TaskExecution>> {
        self.read("list_due_retries", limit == 0, || {
            self.backend.list_ready(self.now(), limit, true)
        })
    }
}
