//! A reference model of the task store in plain Rust: the statuses, guards, attempts, recovery
//! counts, claims and leases, and the history each call produces.
//!
//! It is written from the documented behaviour, independently of `dal_core::plan` (it shares
//! only input validation, which both backends share by construction): each operation is spelled
//! out here with its own guard and effects, so a mistake in the plans or in a backend's SQL
//! shows up as a difference. Ids are the one thing it does not decide: an operation that creates
//! tasks takes the ids the store under test assigned.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use dal_core::SubStatus;
use dal_core::clock::to_micros;
use dal_core::event::time_value;
use dal_core::store::MAX_PRUNE_BATCH;
use dal_core::{
    Claimed, Completion, Cycle, DalError, EventType, Finished, Lease, NewTaskExecution, Problem,
    PruneCursor, Pruned, Recovery, RetryStats, StatusCounts, TaskExecution, TaskStatus, Transition,
    ValidationError, validate,
};
use serde_json::{Value, json};
use uuid::Uuid;

use TaskStatus::*;

/// An error, reduced to what a caller can match on, for comparing backends with the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `DalError::NotFound`.
    NotFound(Uuid),
    /// `DalError::InvalidTransition`.
    InvalidTransition(Uuid, TaskStatus, TaskStatus),
    /// `DalError::ClaimLost`.
    ClaimLost(Uuid),
    /// `DalError::AlreadyClaimed`: the task and the runner holding it.
    AlreadyClaimed(Uuid, Uuid),
    /// `DalError::NotDue`: the task and its retry time.
    NotDue(Uuid, DateTime<Utc>),
    /// `DalError::RetriesExhausted`.
    RetriesExhausted(Uuid, i32, i32),
    /// `DalError::Validation`.
    Validation(String, Problem),
    /// `DalError::AlreadyExists`.
    AlreadyExists(Uuid, String),
    /// Anything else (never expected by the model).
    Other(String),
}

impl From<DalError> for Failure {
    fn from(err: DalError) -> Self {
        match err {
            DalError::NotFound { id } => Failure::NotFound(id),
            DalError::InvalidTransition { id, from, to } => {
                Failure::InvalidTransition(id, from, to)
            }
            DalError::ClaimLost { id } => Failure::ClaimLost(id),
            DalError::AlreadyClaimed { id, runner_id } => Failure::AlreadyClaimed(id, runner_id),
            DalError::NotDue { id, retry_at } => Failure::NotDue(id, retry_at),
            DalError::RetriesExhausted {
                id,
                attempt,
                max_attempts,
            } => Failure::RetriesExhausted(id, attempt, max_attempts),
            DalError::Validation(ValidationError { field, problem }) => {
                Failure::Validation(field, problem)
            }
            DalError::AlreadyExists {
                workflow_execution_id,
                task_name,
            } => Failure::AlreadyExists(workflow_execution_id, task_name),
            other => Failure::Other(other.to_string()),
        }
    }
}

impl From<ValidationError> for Failure {
    fn from(err: ValidationError) -> Self {
        Failure::Validation(err.field, err.problem)
    }
}

/// A model result.
pub type Outcome<T> = Result<T, Failure>;

/// One event as the model predicts it (no id, no `seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEvent {
    /// The task.
    pub task: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// Arguments and counters.
    pub data: Value,
    /// The runner, if any.
    pub runner: Option<Uuid>,
    /// When.
    pub at: DateTime<Utc>,
}

impl ModelEvent {
    /// The prediction of a stored event.
    pub fn of(event: &dal_core::ExecutionEvent) -> Self {
        ModelEvent {
            task: event.task_execution_id,
            event_type: event.event_type,
            data: event.event_data.clone(),
            runner: event.runner_id,
            at: event.created_at,
        }
    }
}

/// The model: every task in creation order, every event in write order, and the time.
#[derive(Debug, Clone)]
pub struct Model {
    now: DateTime<Utc>,
    tasks: Vec<TaskExecution>,
    /// Each task's place in the claim queue, beside `tasks`: set by every write that leaves
    /// the task `Ready`, to the later of its `retry_at` and the time of that write. Claims and
    /// ready listings take the due tasks by this time, then by id.
    queued_at: Vec<DateTime<Utc>>,
    events: Vec<ModelEvent>,
    /// Whether changes write events (a store with the history off writes none).
    history: bool,
}

/// The statuses a task may be claimed in (by a sweep's reckoning).
const CLAIMED: [TaskStatus; 2] = [Running, Ready];

impl Model {
    /// An empty store at time `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Model {
            now: to_micros(now),
            tasks: Vec::new(),
            queued_at: Vec::new(),
            events: Vec::new(),
            history: true,
        }
    }

    /// The same model of a store that keeps no history: no change writes an event.
    pub fn without_history(mut self) -> Self {
        self.history = false;
        self
    }

    /// Moves the time (the store's clock moves the same way).
    pub fn set_now(&mut self, now: DateTime<Utc>) {
        self.now = to_micros(now);
    }

    /// Every task, in creation order.
    pub fn tasks(&self) -> &[TaskExecution] {
        &self.tasks
    }

    /// Every event, in write order.
    pub fn events(&self) -> &[ModelEvent] {
        &self.events
    }

    fn index(&self, id: Uuid) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }

    fn log(
        &mut self,
        task: usize,
        event_type: EventType,
        mut data: serde_json::Map<String, Value>,
        runner: Option<Uuid>,
    ) {
        // Every write of a task ends here: only a Running task keeps a sub-status.
        if self.tasks[task].status != Running {
            self.tasks[task].sub_status = None;
        }
        if !self.history {
            return;
        }
        let row = &self.tasks[task];
        data.insert("attempt".into(), row.attempt.into());
        data.insert("claim".into(), row.claim_count.into());
        data.insert("recovery_attempts".into(), row.recovery_attempts.into());
        self.events.push(ModelEvent {
            task: row.id,
            event_type,
            data: Value::Object(data),
            runner,
            at: self.now,
        });
    }

    fn fresh(&self, new: &NewTaskExecution, id: Uuid) -> TaskExecution {
        TaskExecution {
            id,
            workflow_execution_id: new.workflow_execution_id,
            task_name: new.task_name.clone(),
            status: new.status,
            attempt: new.attempt,
            max_attempts: new.max_attempts,
            trigger_rules: new.trigger_rules.clone(),
            task_configuration: new.task_configuration.clone(),
            error_details: None,
            last_error: None,
            retry_at: new.retry_at.map(to_micros),
            started_at: None,
            completed_at: None,
            recovery_attempts: 0,
            last_recovery_at: None,
            claimed_by: None,
            heartbeat_at: None,
            claim_count: 0,
            abandoned_at: None,
            sub_status: None,
            created_at: self.now,
            updated_at: self.now,
        }
    }

    /// Adds a new task, queued if it is created `Ready`.
    fn push(&mut self, task: TaskExecution) {
        self.tasks.push(task);
        self.queued_at.push(self.now);
        self.requeue(self.tasks.len() - 1);
    }

    /// After a write to task `i`: if the write left it `Ready`, it takes its place in the queue.
    fn requeue(&mut self, i: usize) {
        let t = &self.tasks[i];
        if t.status == Ready {
            self.queued_at[i] = t.retry_at.map_or(self.now, |at| at.max(self.now));
        }
    }

    /// The due `Ready` tasks in claim order: queue time, then id.
    fn due(&self) -> Vec<usize> {
        let mut due: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].status == Ready && self.queued_at[i] <= self.now)
            .collect();
        due.sort_by_key(|&i| (self.queued_at[i], self.tasks[i].id));
        due
    }

    fn taken(&self, wf: Uuid, name: &str) -> bool {
        self.tasks
            .iter()
            .any(|t| t.workflow_execution_id == wf && t.task_name == name)
    }

    /// `create`; `id` is the id the store gave the task (used only on success).
    pub fn create(&mut self, new: &NewTaskExecution, id: Option<Uuid>) -> Outcome<TaskExecution> {
        validate::new_task(new)?;
        if self.taken(new.workflow_execution_id, &new.task_name) {
            return Err(Failure::AlreadyExists(
                new.workflow_execution_id,
                new.task_name.clone(),
            ));
        }
        let id = id.ok_or_else(|| Failure::Other("the store created nothing".into()))?;
        self.push(self.fresh(new, id));
        self.log(
            self.tasks.len() - 1,
            EventType::Created,
            Default::default(),
            None,
        );
        Ok(self.tasks[self.tasks.len() - 1].clone())
    }

    /// `create_many`; `ids` are the ids the store gave, in input order (used only on success).
    pub fn create_many(
        &mut self,
        news: &[NewTaskExecution],
        ids: Option<&[Uuid]>,
    ) -> Outcome<Vec<TaskExecution>> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        validate::new_tasks(news)?;
        // The store names the first clash of the first workflow (in input order) that has one.
        let mut seen = HashSet::new();
        for new in news {
            if !seen.insert(new.workflow_execution_id) {
                continue;
            }
            if let Some(clash) = news.iter().find(|n| {
                n.workflow_execution_id == new.workflow_execution_id
                    && self.taken(n.workflow_execution_id, &n.task_name)
            }) {
                return Err(Failure::AlreadyExists(
                    clash.workflow_execution_id,
                    clash.task_name.clone(),
                ));
            }
        }
        let ids = ids.ok_or_else(|| Failure::Other("the store created nothing".into()))?;
        let mut rows = Vec::new();
        for (new, id) in news.iter().zip(ids) {
            self.push(self.fresh(new, *id));
            self.log(
                self.tasks.len() - 1,
                EventType::Created,
                Default::default(),
                None,
            );
            rows.push(self.tasks[self.tasks.len() - 1].clone());
        }
        Ok(rows)
    }

    /// `get`.
    pub fn get(&self, id: Uuid) -> Outcome<TaskExecution> {
        self.index(id)
            .map(|i| self.tasks[i].clone())
            .ok_or(Failure::NotFound(id))
    }

    /// `list_for_workflow`.
    pub fn list_for_workflow(&self, wf: Uuid) -> Vec<TaskExecution> {
        self.tasks
            .iter()
            .filter(|t| t.workflow_execution_id == wf)
            .cloned()
            .collect()
    }

    /// A lease-less transition.
    pub fn transition(&mut self, id: Uuid, transition: &Transition) -> Outcome<TaskExecution> {
        transition.validate()?;
        let i = self.index(id).ok_or(Failure::NotFound(id))?;
        let now = self.now;
        let row = self.tasks[i].clone();
        let refuse = |to: TaskStatus| Err(Failure::InvalidTransition(id, row.status, to));
        let mut next = TaskExecution {
            updated_at: now,
            ..row.clone()
        };
        let release = |t: &mut TaskExecution| {
            t.claimed_by = None;
            t.heartbeat_at = None;
        };
        let (event_type, mut data) = (transition_event(transition), serde_json::Map::new());
        match transition {
            Transition::MarkReady => {
                if row.status != NotStarted {
                    return refuse(Ready);
                }
                next.status = Ready;
            }
            Transition::MarkSkipped { reason } => {
                if !matches!(row.status, NotStarted | Ready) {
                    return refuse(Skipped);
                }
                next.status = Skipped;
                next.error_details = Some(reason.clone());
                next.completed_at = Some(now);
                release(&mut next);
                data.insert("reason".into(), reason.as_str().into());
            }
            Transition::MarkRunning => {
                if row.status != Ready {
                    return refuse(Running);
                }
                next.status = Running;
                next.started_at = Some(now);
            }
            Transition::MarkCompleted => {
                if row.status != Running {
                    return refuse(Completed);
                }
                next.status = Completed;
                next.completed_at = Some(now);
                release(&mut next);
            }
            Transition::MarkFailed { error } => {
                if !matches!(row.status, Ready | Running) {
                    return refuse(Failed);
                }
                fail(&mut next, error, now);
                data.insert("error".into(), error.as_str().into());
            }
            Transition::MarkAbandoned { reason } => {
                if row.status.is_terminal() {
                    return refuse(Failed);
                }
                abandon(&mut next, reason, now);
                data.insert("reason".into(), reason.as_str().into());
            }
            Transition::ScheduleRetry { retry_at } => {
                if !matches!(row.status, Running | Failed) {
                    return refuse(Ready);
                }
                if row.attempt >= row.max_attempts {
                    return Err(Failure::RetriesExhausted(id, row.attempt, row.max_attempts));
                }
                retry(&mut next, to_micros(*retry_at));
                data.insert("retry_at".into(), time_value(to_micros(*retry_at)));
            }
            Transition::ResetForRecovery => {
                if !matches!(row.status, Running | Ready) {
                    return refuse(Ready);
                }
                recover(&mut next, now);
            }
            Transition::ResetRetryState => {
                if !matches!(row.status, Ready | Completed | Failed | Skipped) {
                    return refuse(Ready);
                }
                next.status = Ready;
                next.attempt = 1;
                next.retry_at = None;
                next.error_details = None;
                next.last_error = None;
                next.started_at = None;
                next.completed_at = None;
                next.abandoned_at = None;
                release(&mut next);
            }
        }
        self.tasks[i] = next;
        self.requeue(i);
        self.log(i, event_type, data, None);
        Ok(self.tasks[i].clone())
    }

    /// `set_sub_status`: a `Running` task's sub-status set or cleared, with a `deferred` or
    /// `resumed` event.
    pub fn set_sub_status(&mut self, id: Uuid, sub: Option<SubStatus>) -> Outcome<TaskExecution> {
        let i = self.index(id).ok_or(Failure::NotFound(id))?;
        let t = &mut self.tasks[i];
        if t.status != Running {
            return Err(Failure::InvalidTransition(id, t.status, Running));
        }
        t.sub_status = sub;
        t.updated_at = self.now;
        let mut data = serde_json::Map::new();
        data.insert(
            "sub_status".into(),
            sub.map_or(Value::Null, |s| s.as_str().into()),
        );
        let event = if sub == Some(SubStatus::Deferred) {
            EventType::Deferred
        } else {
            EventType::Resumed
        };
        self.log(i, event, data, None);
        Ok(self.tasks[i].clone())
    }

    /// `deferred_tasks`.
    pub fn deferred_tasks(&self, workflows: &[Uuid]) -> Vec<TaskExecution> {
        let mut found: Vec<TaskExecution> = self
            .tasks
            .iter()
            .filter(|t| {
                workflows.contains(&t.workflow_execution_id)
                    && t.status == Running
                    && t.sub_status == Some(SubStatus::Deferred)
            })
            .cloned()
            .collect();
        found.sort_by_key(|t| t.id);
        found
    }

    /// `claim_ready`.
    pub fn claim_ready(&mut self, runner: Uuid, limit: u32) -> Vec<Claimed> {
        let mut due: Vec<usize> = self.due().into_iter().take(limit as usize).collect();
        // One statement writes its events in task id order.
        due.sort_by_key(|&i| self.tasks[i].id);
        let mut claimed: Vec<Claimed> = due.into_iter().map(|i| self.claim(i, runner)).collect();
        claimed.sort_by_key(|c| c.task.id);
        claimed
    }

    /// `claim_task`: the task if it is `Ready`, unclaimed and due (`retry_at` passed), claimed
    /// as `claim_ready` claims.
    pub fn claim_task(&mut self, id: Uuid, runner: Uuid) -> Outcome<Claimed> {
        let i = self.index(id).ok_or(Failure::NotFound(id))?;
        let t = &self.tasks[i];
        if let Some(holder) = t.claimed_by {
            return Err(Failure::AlreadyClaimed(id, holder));
        }
        if t.status != Ready {
            return Err(Failure::InvalidTransition(id, t.status, Running));
        }
        if let Some(at) = t.retry_at.filter(|at| *at > self.now) {
            return Err(Failure::NotDue(id, at));
        }
        Ok(self.claim(i, runner))
    }

    /// Task `i` claimed by `runner`, with its event.
    fn claim(&mut self, i: usize, runner: Uuid) -> Claimed {
        let now = self.now;
        let t = &mut self.tasks[i];
        t.status = Running;
        t.claimed_by = Some(runner);
        t.heartbeat_at = Some(now);
        t.started_at = Some(now);
        t.claim_count += 1;
        t.updated_at = now;
        let lease = Lease {
            task_id: t.id,
            runner_id: runner,
            claim: t.claim_count,
        };
        self.log(i, EventType::Claimed, Default::default(), Some(runner));
        Claimed {
            task: self.tasks[i].clone(),
            lease,
        }
    }

    /// The row of a lease, if the lease is its current claim; the reason otherwise.
    fn leased(&self, lease: &Lease, allowed: &[TaskStatus], to: TaskStatus) -> Outcome<usize> {
        let i = self
            .index(lease.task_id)
            .ok_or(Failure::NotFound(lease.task_id))?;
        let t = &self.tasks[i];
        if t.claimed_by != Some(lease.runner_id) || t.claim_count != lease.claim {
            return Err(Failure::ClaimLost(lease.task_id));
        }
        if !allowed.contains(&t.status) {
            return Err(Failure::InvalidTransition(lease.task_id, t.status, to));
        }
        Ok(i)
    }

    /// `heartbeat`.
    pub fn heartbeat(&mut self, lease: &Lease) -> Outcome<TaskExecution> {
        let i = self.leased(lease, &[Running], Running)?;
        let now = self.now;
        let t = &mut self.tasks[i];
        t.heartbeat_at = Some(now);
        t.updated_at = now;
        Ok(t.clone())
    }

    /// `complete`.
    pub fn complete(&mut self, lease: &Lease) -> Outcome<TaskExecution> {
        let i = self.leased(lease, &[Running], Completed)?;
        self.complete_at(i, lease.runner_id);
        Ok(self.tasks[i].clone())
    }

    fn complete_at(&mut self, i: usize, runner: Uuid) {
        let now = self.now;
        let t = &mut self.tasks[i];
        t.status = Completed;
        t.completed_at = Some(now);
        t.claimed_by = None;
        t.heartbeat_at = None;
        t.updated_at = now;
        self.log(i, EventType::Completed, Default::default(), Some(runner));
    }

    /// `fail`.
    pub fn fail(&mut self, lease: &Lease, error: &str) -> Outcome<TaskExecution> {
        validate::message("error", error)?;
        let i = self.leased(lease, &[Ready, Running], Failed)?;
        let now = self.now;
        fail(&mut self.tasks[i], error, now);
        self.tasks[i].updated_at = now;
        let mut data = serde_json::Map::new();
        data.insert("error".into(), error.into());
        self.log(i, EventType::Failed, data, Some(lease.runner_id));
        Ok(self.tasks[i].clone())
    }

    /// `fail_and_retry`: `Running` -> `Ready` for the next attempt under the lease, with one
    /// `retry_scheduled` event that keeps the error.
    pub fn fail_and_retry(
        &mut self,
        lease: &Lease,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Outcome<TaskExecution> {
        validate::message("error", error)?;
        validate::time("retry_at", retry_at)?;
        let i = self.leased(lease, &[Running], Ready)?;
        let t = &self.tasks[i];
        if t.attempt >= t.max_attempts {
            return Err(Failure::RetriesExhausted(t.id, t.attempt, t.max_attempts));
        }
        self.fail_and_retry_at(i, error, retry_at, lease.runner_id);
        Ok(self.tasks[i].clone())
    }

    /// Task `i`'s failed attempt ended by `runner` and its next queued at `retry_at`, as
    /// `fail_and_retry` and a runner cycle's retry leave it, with its event.
    fn fail_and_retry_at(&mut self, i: usize, error: &str, retry_at: DateTime<Utc>, runner: Uuid) {
        let (now, retry_at) = (self.now, to_micros(retry_at));
        let t = &mut self.tasks[i];
        retry(t, retry_at);
        t.last_error = Some(error.to_owned());
        t.updated_at = now;
        self.requeue(i);
        let mut data = serde_json::Map::new();
        data.insert("retry_at".into(), time_value(retry_at));
        data.insert("error".into(), error.into());
        self.log(i, EventType::RetryScheduled, data, Some(runner));
    }

    /// `release`.
    pub fn release(&mut self, lease: &Lease) -> Outcome<TaskExecution> {
        let i = self.leased(lease, &CLAIMED, Ready)?;
        let now = self.now;
        let t = &mut self.tasks[i];
        t.status = Ready;
        t.started_at = None;
        t.claimed_by = None;
        t.heartbeat_at = None;
        t.updated_at = now;
        self.requeue(i);
        self.log(
            i,
            EventType::Released,
            Default::default(),
            Some(lease.runner_id),
        );
        Ok(self.tasks[i].clone())
    }

    /// `complete_many`.
    pub fn complete_many(&mut self, leases: &[Lease]) -> Outcome<Completion> {
        let Some(first) = leases.first() else {
            return Ok(Completion::default());
        };
        for (i, lease) in leases.iter().enumerate() {
            if lease.runner_id != first.runner_id {
                return Err(Failure::Validation(
                    format!("leases[{i}].runner_id"),
                    Problem::NotTheSameRunner,
                ));
            }
            if let Some(j) = leases[..i].iter().position(|l| l.task_id == lease.task_id) {
                return Err(Failure::Validation(
                    format!("leases[{i}].task_id"),
                    Problem::FinishedTwice {
                        first: format!("leases[{j}]"),
                    },
                ));
            }
        }
        let mut done: Vec<usize> = Vec::new();
        for lease in leases {
            if let Ok(i) = self.leased(lease, &[Running], Completed) {
                done.push(i);
            }
        }
        done.sort_unstable();
        for &i in &done {
            self.complete_at(i, first.runner_id);
        }
        let ids: HashSet<Uuid> = done.iter().map(|&i| self.tasks[i].id).collect();
        let mut completed: Vec<TaskExecution> =
            done.iter().map(|&i| self.tasks[i].clone()).collect();
        completed.sort_by_key(|t| t.id);
        Ok(Completion {
            completed,
            lost: leases
                .iter()
                .filter(|l| !ids.contains(&l.task_id))
                .copied()
                .collect(),
        })
    }

    /// `finish_and_claim`: the completions, failures and retries of `finished` whose lease is
    /// the current claim of a `Running` task (a retry on the last attempt a failure), then a
    /// claim of up to `limit`, all in task id order.
    pub fn finish_and_claim(
        &mut self,
        runner: Uuid,
        finished: &Finished,
        limit: u32,
    ) -> Outcome<Cycle> {
        let invalid = |field: String, problem| Err(Failure::Validation(field, problem));
        let mut seen: HashMap<Uuid, String> = HashMap::new();
        for (i, l) in finished.completed.iter().enumerate() {
            let at = format!("finished.completed[{i}]");
            if l.runner_id != runner {
                return invalid(format!("{at}.runner_id"), Problem::NotTheSameRunner);
            }
            if let Some(first) = seen.insert(l.task_id, at.clone()) {
                return invalid(format!("{at}.task_id"), Problem::FinishedTwice { first });
            }
        }
        // The failures, then the retries: each of the runner, with a valid error (and retry
        // time), finished once.
        let failures = finished
            .failed
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("finished.failed[{i}]"), &f.lease, &f.error, None));
        let retries = finished.retried.iter().enumerate().map(|(i, r)| {
            (
                format!("finished.retried[{i}]"),
                &r.lease,
                &r.error,
                Some(r.retry_at),
            )
        });
        for (at, lease, error, retry_at) in failures.chain(retries) {
            if lease.runner_id != runner {
                return invalid(format!("{at}.lease.runner_id"), Problem::NotTheSameRunner);
            }
            validate::message(&format!("{at}.error"), error)?;
            if let Some(retry_at) = retry_at {
                validate::time(&format!("{at}.retry_at"), retry_at)?;
            }
            if let Some(first) = seen.insert(lease.task_id, at.clone()) {
                return invalid(
                    format!("{at}.lease.task_id"),
                    Problem::FinishedTwice { first },
                );
            }
        }
        // What each task becomes.
        let mut changes: BTreeMap<Uuid, (usize, Finish<'_>)> = BTreeMap::new();
        for lease in &finished.completed {
            if let Ok(i) = self.leased(lease, &[Running], Completed) {
                changes.insert(self.tasks[i].id, (i, Finish::Complete));
            }
        }
        for f in &finished.failed {
            if let Ok(i) = self.leased(&f.lease, &[Running], Failed) {
                changes.insert(self.tasks[i].id, (i, Finish::Fail(&f.error)));
            }
        }
        for r in &finished.retried {
            if let Ok(i) = self.leased(&r.lease, &[Running], Ready) {
                let t = &self.tasks[i];
                // On its last attempt, a retried task fails instead.
                let change = if t.attempt < t.max_attempts {
                    Finish::Retry(&r.error, r.retry_at)
                } else {
                    Finish::Fail(&r.error)
                };
                changes.insert(t.id, (i, change));
            }
        }
        let finishing = changes.len();
        let claims: Vec<usize> = self.due().into_iter().take(limit as usize).collect();
        let mut cycle = Cycle::default();
        let mut claimed = HashSet::new();
        for &i in &claims {
            claimed.insert(self.tasks[i].id);
        }
        let mut order: Vec<(Uuid, usize, Option<Finish<'_>>)> = changes
            .iter()
            .map(|(&id, &(i, change))| (id, i, Some(change)))
            .chain(claims.iter().map(|&i| (self.tasks[i].id, i, None)))
            .collect();
        order.sort_by_key(|(id, _, _)| *id);
        debug_assert_eq!(order.len(), finishing + claimed.len());
        for (_, i, change) in order {
            let now = self.now;
            match change {
                Some(Finish::Complete) => {
                    self.complete_at(i, runner);
                    cycle.completed.push(self.tasks[i].clone());
                }
                Some(Finish::Fail(error)) => {
                    fail(&mut self.tasks[i], error, now);
                    self.tasks[i].updated_at = now;
                    let mut data = serde_json::Map::new();
                    data.insert("error".into(), error.into());
                    self.log(i, EventType::Failed, data, Some(runner));
                    cycle.failed.push(self.tasks[i].clone());
                }
                Some(Finish::Retry(error, retry_at)) => {
                    self.fail_and_retry_at(i, error, retry_at, runner);
                    cycle.retried.push(self.tasks[i].clone());
                }
                None => cycle.claimed.push(self.claim(i, runner)),
            }
        }
        cycle.lost = finished
            .completed
            .iter()
            .chain(finished.failed.iter().map(|f| &f.lease))
            .chain(finished.retried.iter().map(|r| &r.lease))
            .filter(|l| !changes.contains_key(&l.task_id))
            .copied()
            .collect();
        Ok(cycle)
    }

    fn stale(&self, i: usize, older_than: DateTime<Utc>) -> bool {
        let t = &self.tasks[i];
        t.claimed_by.is_some()
            && CLAIMED.contains(&t.status)
            && t.heartbeat_at.is_some_and(|at| at < older_than)
    }

    /// `find_stale_claims`.
    pub fn find_stale_claims(&self, older_than: DateTime<Utc>) -> Outcome<Vec<TaskExecution>> {
        validate::time("older_than", older_than)?;
        let older_than = to_micros(older_than);
        let mut rows: Vec<TaskExecution> = (0..self.tasks.len())
            .filter(|&i| self.stale(i, older_than))
            .map(|i| self.tasks[i].clone())
            .collect();
        rows.sort_by_key(|t| t.id);
        Ok(rows)
    }

    /// `recover_stale_claims`.
    pub fn recover_stale_claims(
        &mut self,
        older_than: DateTime<Utc>,
        max: i32,
    ) -> Outcome<Recovery> {
        validate::time("older_than", older_than)?;
        validate::in_range("max_recovery_attempts", max, 0, i32::MAX)?;
        let older_than = to_micros(older_than);
        let now = self.now;
        let reason = format!(
            "abandoned: its runner stopped heart-beating and the task was already recovered {max} times"
        );
        let mut recovery = Recovery::default();
        for i in 0..self.tasks.len() {
            if self.stale(i, older_than) && self.tasks[i].recovery_attempts >= max {
                abandon(&mut self.tasks[i], &reason, now);
                self.tasks[i].updated_at = now;
                let mut data = serde_json::Map::new();
                data.insert("reason".into(), reason.as_str().into());
                self.log(i, EventType::Abandoned, data, None);
                recovery.abandoned.push(self.tasks[i].clone());
            }
        }
        for i in 0..self.tasks.len() {
            if self.stale(i, older_than) && self.tasks[i].recovery_attempts < max {
                recover(&mut self.tasks[i], now);
                self.requeue(i);
                let mut data = serde_json::Map::new();
                data.insert("stale_before".into(), time_value(older_than));
                self.log(i, EventType::Recovered, data, None);
                recovery.reset.push(self.tasks[i].clone());
            }
        }
        recovery.reset.sort_by_key(|t| t.id);
        recovery.abandoned.sort_by_key(|t| t.id);
        Ok(recovery)
    }

    /// `list_ready` (`retries_only`: `list_due_retries`).
    pub fn list_ready(&self, limit: u32, retries_only: bool) -> Vec<TaskExecution> {
        self.due()
            .into_iter()
            .map(|i| &self.tasks[i])
            .filter(|t| !retries_only || t.retry_at.is_some())
            .take(limit as usize)
            .cloned()
            .collect()
    }

    /// `events_for_task`.
    pub fn events_for_task(&self, id: Uuid) -> Vec<ModelEvent> {
        self.events
            .iter()
            .filter(|e| e.task == id)
            .cloned()
            .collect()
    }

    /// `pending_tasks`.
    pub fn pending_tasks(&self, workflows: &[Uuid]) -> Vec<TaskExecution> {
        let mut rows: Vec<TaskExecution> = self
            .tasks
            .iter()
            .filter(|t| t.status == NotStarted && workflows.contains(&t.workflow_execution_id))
            .cloned()
            .collect();
        rows.sort_by_key(|t| t.id);
        rows
    }

    /// `statuses_for_workflows`.
    pub fn statuses_for_workflows(
        &self,
        workflows: &[Uuid],
    ) -> HashMap<Uuid, HashMap<String, TaskStatus>> {
        let mut out: HashMap<Uuid, HashMap<String, TaskStatus>> = HashMap::new();
        for t in self
            .tasks
            .iter()
            .filter(|t| workflows.contains(&t.workflow_execution_id))
        {
            out.entry(t.workflow_execution_id)
                .or_default()
                .insert(t.task_name.clone(), t.status);
        }
        out
    }

    /// `complete_workflows`.
    pub fn complete_workflows(&self, workflows: &[Uuid]) -> Vec<Uuid> {
        let mut by_workflow: BTreeMap<Uuid, bool> = BTreeMap::new();
        for t in self
            .tasks
            .iter()
            .filter(|t| workflows.contains(&t.workflow_execution_id))
        {
            let all = by_workflow.entry(t.workflow_execution_id).or_insert(true);
            *all &= t.status.is_terminal();
        }
        by_workflow
            .into_iter()
            .filter(|(_, all)| *all)
            .map(|(wf, _)| wf)
            .collect()
    }

    /// `has_abandoned_task`.
    pub fn has_abandoned_task(&self, wf: Uuid) -> bool {
        self.tasks
            .iter()
            .any(|t| t.workflow_execution_id == wf && t.abandoned_at.is_some())
    }

    /// `retry_stats`.
    pub fn retry_stats(&self, wf: Uuid) -> RetryStats {
        let of: Vec<&TaskExecution> = self
            .tasks
            .iter()
            .filter(|t| t.workflow_execution_id == wf)
            .collect();
        RetryStats {
            tasks_retried: of.iter().filter(|t| t.attempt > 1).count() as i64,
            total_retries: of.iter().map(|t| i64::from(t.attempt - 1)).sum(),
            max_attempt: of.iter().map(|t| t.attempt).max().unwrap_or(0),
            tasks_exhausted: of.iter().filter(|t| exhausted(t)).count() as i64,
        }
    }

    /// `exhausted_tasks`.
    pub fn exhausted_tasks(&self, wf: Uuid) -> Vec<TaskExecution> {
        let mut rows: Vec<TaskExecution> = self
            .tasks
            .iter()
            .filter(|t| t.workflow_execution_id == wf && exhausted(t))
            .cloned()
            .collect();
        rows.sort_by_key(|t| t.id);
        rows
    }

    /// `prune_finished`: one batch of a retention pass. It scans the finished tasks that
    /// finished before `older_than` and after the cursor, in (`completed_at`, id) order, at most
    /// `limit`; of their workflow executions it removes those whose every task is finished and
    /// none changed at or after `older_than`, with every task and every event. The batch has a
    /// next one when it scanned a full `limit`.
    pub fn prune_finished(
        &mut self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Outcome<Pruned> {
        validate::time("older_than", older_than)?;
        if !(1..=MAX_PRUNE_BATCH).contains(&limit) {
            return Err(Failure::Validation(
                "limit".into(),
                Problem::OutOfRange {
                    min: 1,
                    max: MAX_PRUNE_BATCH.into(),
                    value: limit.into(),
                },
            ));
        }
        if let Some(cursor) = &after {
            validate::time("after.completed_at", cursor.completed_at)?;
        }
        let older_than = to_micros(older_than);
        let finished = |t: &TaskExecution| matches!(t.status, Completed | Failed | Skipped);
        let mut scanned: Vec<(DateTime<Utc>, Uuid, Uuid)> = self
            .tasks
            .iter()
            .filter(|t| finished(t))
            .filter_map(|t| t.completed_at.map(|at| (at, t.id, t.workflow_execution_id)))
            .filter(|&(at, _, _)| at < older_than)
            .filter(|&(at, id, _)| after.is_none_or(|c| (at, id) > (c.completed_at, c.task_id)))
            .collect();
        scanned.sort_unstable();
        scanned.truncate(limit as usize);
        let next = match scanned.last() {
            Some(&(completed_at, task_id, _)) if scanned.len() == limit as usize => {
                Some(PruneCursor {
                    completed_at,
                    task_id,
                })
            }
            _ => None,
        };
        let candidates: BTreeSet<Uuid> = scanned.iter().map(|&(_, _, wf)| wf).collect();
        let doomed: BTreeSet<Uuid> = candidates
            .into_iter()
            .filter(|wf| {
                self.tasks
                    .iter()
                    .filter(|t| t.workflow_execution_id == *wf)
                    .all(|t| finished(t) && t.updated_at < older_than)
            })
            .collect();
        let gone: HashSet<Uuid> = self
            .tasks
            .iter()
            .filter(|t| doomed.contains(&t.workflow_execution_id))
            .map(|t| t.id)
            .collect();
        // Tasks and their queue times go together.
        let (tasks, queued_at): (Vec<TaskExecution>, Vec<DateTime<Utc>>) =
            std::mem::take(&mut self.tasks)
                .into_iter()
                .zip(std::mem::take(&mut self.queued_at))
                .filter(|(t, _)| !gone.contains(&t.id))
                .unzip();
        self.tasks = tasks;
        self.queued_at = queued_at;
        let events_before = self.events.len();
        self.events.retain(|e| !gone.contains(&e.task));
        Ok(Pruned {
            workflows: doomed.into_iter().collect(),
            tasks: gone.len() as u64,
            events: (events_before - self.events.len()) as u64,
            next,
        })
    }

    /// `count_by_status`.
    pub fn count_by_status(&self) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for t in &self.tasks {
            add_count(&mut counts, t.status);
        }
        counts
    }
}

fn exhausted(t: &TaskExecution) -> bool {
    t.status == Failed && t.attempt >= t.max_attempts && t.abandoned_at.is_none()
}

fn transition_event(transition: &Transition) -> EventType {
    match transition {
        Transition::MarkReady => EventType::Ready,
        Transition::MarkSkipped { .. } => EventType::Skipped,
        Transition::MarkRunning => EventType::Started,
        Transition::MarkCompleted => EventType::Completed,
        Transition::MarkFailed { .. } => EventType::Failed,
        Transition::MarkAbandoned { .. } => EventType::Abandoned,
        Transition::ScheduleRetry { .. } => EventType::RetryScheduled,
        Transition::ResetForRecovery => EventType::Recovered,
        Transition::ResetRetryState => EventType::Reset,
    }
}

fn fail(t: &mut TaskExecution, error: &str, now: DateTime<Utc>) {
    t.status = Failed;
    t.error_details = Some(error.to_owned());
    t.last_error = Some(error.to_owned());
    t.completed_at = Some(now);
    t.claimed_by = None;
    t.heartbeat_at = None;
}

/// The next attempt queued at `retry_at` (`schedule_retry`, `fail_and_retry`): `Ready`, the
/// attempt counted, the claim, the error details and the attempt's times cleared.
/// What a runner cycle does with one of the tasks it finishes.
#[derive(Debug, Clone, Copy)]
enum Finish<'a> {
    Complete,
    Fail(&'a str),
    Retry(&'a str, DateTime<Utc>),
}

fn retry(t: &mut TaskExecution, retry_at: DateTime<Utc>) {
    t.status = Ready;
    t.attempt += 1;
    t.retry_at = Some(retry_at);
    t.error_details = None;
    t.started_at = None;
    t.completed_at = None;
    t.abandoned_at = None;
    t.claimed_by = None;
    t.heartbeat_at = None;
}

fn abandon(t: &mut TaskExecution, reason: &str, now: DateTime<Utc>) {
    fail(t, reason, now);
    t.abandoned_at = Some(now);
}

fn recover(t: &mut TaskExecution, now: DateTime<Utc>) {
    t.status = Ready;
    t.recovery_attempts += 1;
    t.last_recovery_at = Some(now);
    t.started_at = None;
    t.claimed_by = None;
    t.heartbeat_at = None;
    t.updated_at = now;
}

/// The event data the model writes for `attempt`, `claim`, `recovery_attempts` and arguments
/// (for tests that build expectations by hand).
pub fn counters(attempt: i32, claim: i32, recovery_attempts: i32) -> Value {
    json!({ "attempt": attempt, "claim": claim, "recovery_attempts": recovery_attempts })
}

/// Replays a task's history through the state machine: each event must be a legal step from
/// the state before it, no claim may begin while another is open, each event's counters must
/// be the replayed ones, and the replay must end in `row`'s status, attempt, claim count and
/// recovery count. A task may have been created `NotStarted` or `Ready`; both are tried.
pub fn replay(row: &TaskExecution, events: &[dal_core::ExecutionEvent]) -> Result<(), String> {
    let attempt_from = |status| replay_from(status, row, events);
    attempt_from(NotStarted).or_else(|first| attempt_from(Ready).map_err(|_| first))
}

fn replay_from(
    created_as: TaskStatus,
    row: &TaskExecution,
    events: &[dal_core::ExecutionEvent],
) -> Result<(), String> {
    use EventType as E;
    let mut status = None::<TaskStatus>;
    let (mut attempt, mut claim, mut recoveries, mut claim_open) = (1, 0, 0, false);
    for event in events {
        let from = status;
        let allowed = |states: &[TaskStatus]| from.is_some_and(|s| states.contains(&s));
        let next = match event.event_type {
            E::Created if from.is_none() => created_as,
            E::Ready if allowed(&[NotStarted]) => Ready,
            E::Started if allowed(&[Ready]) => Running,
            E::Claimed if allowed(&[Ready]) && !claim_open => {
                claim += 1;
                claim_open = true;
                Running
            }
            E::Completed if allowed(&[Running]) => Completed,
            E::Failed if allowed(&[Ready, Running]) => Failed,
            E::Skipped if allowed(&[NotStarted, Ready]) => Skipped,
            E::Abandoned if allowed(&[NotStarted, Ready, Running]) => Failed,
            E::RetryScheduled if allowed(&[Running, Failed]) => {
                attempt += 1;
                Ready
            }
            E::Recovered if allowed(&[Running, Ready]) => {
                recoveries += 1;
                Ready
            }
            E::Reset if allowed(&[Ready, Completed, Failed, Skipped]) => {
                attempt = 1;
                Ready
            }
            E::Released if allowed(&[Running, Ready]) => Ready,
            E::Deferred | E::Resumed if allowed(&[Running]) => Running,
            other => return Err(format!("{other} after {from:?} (seq {})", event.seq)),
        };
        // Every step but these ends the claim.
        if !matches!(
            event.event_type,
            E::Claimed | E::Created | E::Ready | E::Started | E::Deferred | E::Resumed
        ) {
            claim_open = false;
        }
        status = Some(next);
        let data = &event.event_data;
        let counters = (
            data["attempt"].as_i64(),
            data["claim"].as_i64(),
            data["recovery_attempts"].as_i64(),
        );
        if counters
            != (
                Some(attempt.into()),
                Some(claim.into()),
                Some(recoveries.into()),
            )
        {
            return Err(format!(
                "event {} has counters {counters:?}, replay says ({attempt}, {claim}, {recoveries})",
                event.seq
            ));
        }
    }
    let replayed = (status, attempt, claim, recoveries);
    let stored = (
        Some(row.status),
        row.attempt,
        row.claim_count,
        row.recovery_attempts,
    );
    if replayed == stored {
        Ok(())
    } else {
        Err(format!(
            "history replays to {replayed:?}, the row is {stored:?}"
        ))
    }
}

fn add_count(counts: &mut StatusCounts, status: TaskStatus) {
    *match status {
        TaskStatus::NotStarted => &mut counts.not_started,
        TaskStatus::Ready => &mut counts.ready,
        TaskStatus::Running => &mut counts.running,
        TaskStatus::Completed => &mut counts.completed,
        TaskStatus::Failed => &mut counts.failed,
        TaskStatus::Skipped => &mut counts.skipped,
    } += 1;
}
