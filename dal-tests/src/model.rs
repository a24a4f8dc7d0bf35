//! A reference model of the task store in plain Rust, written from the documented behaviour
//! and nothing of the store's code: its own input rules, guards, effects, queue order and
//! history. A mistake in the plans, the validation or a backend's SQL shows up as a
//! difference. Ids are the one thing it does not decide: creating takes the ids the store gave.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use dal_core::{
    Claimed, Completion, Cycle, DalError, EventType, ExecutionEvent, Finished, Lease,
    NewTaskExecution, Problem, PruneCursor, Pruned, Recovery, RetryStats, StatusCounts, SubStatus,
    TaskExecution, TaskStatus, Transition, ValidationError,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use TaskStatus::*;
use Transition as T;

/// An error reduced to what a caller can match on: the task first, then the runner holding it
/// (`AlreadyClaimed`), its retry time (`NotDue`), its attempt and maximum (`RetriesExhausted`).
/// `Other` is anything else (never expected by the model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    NotFound(Uuid),
    InvalidTransition(Uuid, TaskStatus, TaskStatus),
    ClaimLost(Uuid),
    AlreadyClaimed(Uuid, Uuid),
    NotDue(Uuid, DateTime<Utc>),
    RetriesExhausted(Uuid, i32, i32),
    Validation(String, Problem),
    AlreadyExists(Uuid, String),
    Other(String),
}

impl From<DalError> for Failure {
    fn from(err: DalError) -> Self {
        use {DalError as E, Failure as F};
        match err {
            E::NotFound { id } => F::NotFound(id),
            E::InvalidTransition { id, from, to } => F::InvalidTransition(id, from, to),
            E::ClaimLost { id } => F::ClaimLost(id),
            E::AlreadyClaimed { id, runner_id } => F::AlreadyClaimed(id, runner_id),
            E::NotDue { id, retry_at } => F::NotDue(id, retry_at),
            E::RetriesExhausted { id, attempt: a, max_attempts: m } => {
                F::RetriesExhausted(id, a, m)
            }
            E::Validation(ValidationError { field, problem }) => F::Validation(field, problem),
            E::AlreadyExists { workflow_execution_id: wf, task_name } => {
                F::AlreadyExists(wf, task_name)
            }
            other => F::Other(other.to_string()),
        }
    }
}

/// A model result.
pub type Outcome<T> = Result<T, Failure>;

/// One event as the model predicts it (no id, no `seq`): `data` holds arguments and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEvent {
    pub task: Uuid,
    pub event_type: EventType,
    pub data: Value,
    pub runner: Option<Uuid>,
    pub at: DateTime<Utc>,
}

impl ModelEvent {
    /// The prediction of a stored event.
    pub fn of(e: &ExecutionEvent) -> Self {
        let (task, event_type, data) = (e.task_execution_id, e.event_type, e.event_data.clone());
        ModelEvent { task, event_type, data, runner: e.runner_id, at: e.created_at }
    }
}

/// The input rules, as documented: what both databases store and read back unchanged.
mod rules {
    use super::*;

    fn check(ok: bool, field: impl Into<String>, problem: Problem) -> Outcome<()> {
        if ok { Ok(()) } else { Err(Failure::Validation(field.into(), problem)) }
    }

    pub fn time(field: &str, at: DateTime<Utc>) -> Outcome<()> {
        check((1..=9999).contains(&at.year()), field, Problem::TimeOutOfRange)
    }

    /// A reason or error text: at most 64 KiB of UTF-8, no NUL.
    pub fn text(field: &str, text: &str) -> Outcome<()> {
        let (max, len) = (65_536, text.len());
        check(len <= max, field, Problem::TooLong { max, len, unit: "bytes" })?;
        check(!text.contains('\0'), field, Problem::ContainsNul)
    }

    pub fn range(field: &str, value: i64, min: i64, max: i64) -> Outcome<()> {
        check((min..=max).contains(&value), field, Problem::OutOfRange { min, max, value })
    }

    /// JSON: no NUL in a string or a key, at most 64 levels deep.
    fn json(field: &str, value: &Value, depth: usize) -> Outcome<()> {
        check(depth <= 64, field, Problem::TooDeep { max: 64 })?;
        match value {
            Value::String(s) => check(!s.contains('\0'), field, Problem::ContainsNul),
            Value::Array(items) => items.iter().try_for_each(|v| json(field, v, depth + 1)),
            Value::Object(map) => {
                check(!map.keys().any(|k| k.contains('\0')), field, Problem::ContainsNul)?;
                map.values().try_for_each(|v| json(field, v, depth + 1))
            }
            _ => Ok(()),
        }
    }

    /// A new task; `at` prefixes its fields (`tasks[2].` in a batch).
    pub fn new_task(at: &str, new: &NewTaskExecution) -> Outcome<()> {
        let field = |name: &str| format!("{at}{name}");
        let (name, chars) = (&new.task_name, new.task_name.chars().count());
        let long = Problem::TooLong { max: 255, len: chars, unit: "characters" };
        check(!name.trim().is_empty(), field("task_name"), Problem::Blank)?;
        check(chars <= 255, field("task_name"), long)?;
        check(!name.contains('\0'), field("task_name"), Problem::ContainsNul)?;
        check(!name.chars().any(char::is_control), field("task_name"), Problem::ContainsControl)?;
        let status = Problem::StatusNotAllowed(new.status);
        check(matches!(new.status, NotStarted | Ready), field("status"), status)?;
        let max = i64::from(new.max_attempts);
        range(&field("max_attempts"), max, 1, i32::MAX.into())?;
        range(&field("attempt"), new.attempt.into(), 1, max)?;
        json(&field("trigger_rules"), &new.trigger_rules, 1)?;
        json(&field("task_configuration"), &new.task_configuration, 1)?;
        new.retry_at.map_or(Ok(()), |t| time(&field("retry_at"), t))
    }

    /// The arguments of a transition.
    pub fn transition(t: &Transition) -> Outcome<()> {
        match t {
            T::MarkSkipped { reason } | T::MarkAbandoned { reason } => text("reason", reason),
            T::MarkFailed { error } => text("error", error),
            T::ScheduleRetry { retry_at } => time("retry_at", *retry_at),
            _ => Ok(()),
        }
    }

    /// Finished leases, labelled, each with its error text and retry time if any: all of
    /// `runner`, valid texts and times, each task once.
    pub fn finished(runner: Uuid, items: &[(String, (&Lease, Finish<'_>))]) -> Outcome<()> {
        let mut seen: HashMap<Uuid, &String> = HashMap::new();
        for (at, (lease, how)) in items {
            // A completion is a bare lease; a failure or a retry holds one.
            let inner = if let Finish::Complete = how { "" } else { ".lease" };
            let same = lease.runner_id == runner;
            check(same, format!("{at}{inner}.runner_id"), Problem::NotTheSameRunner)?;
            if let Finish::Fail(error) | Finish::Retry(error, _) = how {
                text(&format!("{at}.error"), error)?;
            }
            if let Finish::Retry(_, retry_at) = how {
                time(&format!("{at}.retry_at"), *retry_at)?;
            }
            if let Some(first) = seen.insert(lease.task_id, at) {
                let twice = Problem::FinishedTwice { first: first.clone() };
                return Err(Failure::Validation(format!("{at}{inner}.task_id"), twice));
            }
        }
        Ok(())
    }
}

/// An event's arguments; an event as a write gives it: its type, arguments and runner.
type Args = Map<String, Value>;
type Event = (EventType, Args, Option<Uuid>);
/// The statuses of tasks by workflow execution and name.
type Statuses = HashMap<Uuid, HashMap<String, TaskStatus>>;

/// A time as the databases keep it: microseconds.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// A time as event data.
fn time_data(at: DateTime<Utc>) -> Value {
    micros(at).to_rfc3339_opts(SecondsFormat::Micros, true).into()
}

fn data<const N: usize>(pairs: [(&str, Value); N]) -> Args {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The statuses a transition leaves, the one it goes to, and its event.
fn rule(t: &Transition) -> (&'static [TaskStatus], TaskStatus, EventType) {
    use EventType as E;
    match t {
        T::MarkReady => (&[NotStarted], Ready, E::Ready),
        T::MarkSkipped { .. } => (&[NotStarted, Ready], Skipped, E::Skipped),
        T::MarkRunning => (&[Ready], Running, E::Started),
        T::MarkCompleted => (&[Running], Completed, E::Completed),
        T::MarkFailed { .. } => (&[Ready, Running], Failed, E::Failed),
        T::MarkAbandoned { .. } => (&[NotStarted, Ready, Running], Failed, E::Abandoned),
        T::ScheduleRetry { .. } => (&[Running, Failed], Ready, E::RetryScheduled),
        T::ResetForRecovery => (&[Running, Ready], Ready, E::Recovered),
        T::ResetRetryState => (&[Ready, Completed, Failed, Skipped], Ready, E::Reset),
    }
}

/// A task and its place in the claim queue: set by every write that leaves it `Ready`, to the
/// later of its `retry_at` and that write's time. Claims take due tasks by this time, then id.
#[derive(Debug, Clone)]
struct Task {
    row: TaskExecution,
    queued_at: DateTime<Utc>,
}

/// The model: every task in creation order, every event in write order, the time, and whether
/// changes write events (a store with the history off writes none).
#[derive(Debug, Clone)]
pub struct Model {
    now: DateTime<Utc>,
    tasks: Vec<Task>,
    events: Vec<ModelEvent>,
    history: bool,
}

/// Items of a batch labelled `{at}{kind}[i]`, each as a lease and how it finishes its task.
fn labelled<'a, T>(
    at: &'a str,
    kind: &'a str,
    items: &'a [T],
    how: impl Fn(&'a T) -> (&'a Lease, Finish<'a>) + 'a,
) -> impl Iterator<Item = (String, (&'a Lease, Finish<'a>))> + 'a {
    items.iter().enumerate().map(move |(i, item)| (format!("{at}{kind}[{i}]"), how(item)))
}

/// How a runner cycle or a batch finishes one task.
#[derive(Debug, Clone, Copy)]
enum Finish<'a> {
    Complete,
    Fail(&'a str),
    Retry(&'a str, DateTime<Utc>),
}

impl Model {
    /// An empty store at time `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Model { now: micros(now), tasks: Vec::new(), events: Vec::new(), history: true }
    }

    /// The same model of a store that keeps no history.
    pub fn without_history(self) -> Self {
        Model { history: false, ..self }
    }

    /// Moves the time (the store's clock moves the same way).
    pub fn set_now(&mut self, now: DateTime<Utc>) {
        self.now = micros(now);
    }

    /// Every task, in creation order.
    pub fn tasks(&self) -> Vec<TaskExecution> {
        self.rows(|_| true)
    }

    /// Every event, in write order.
    pub fn events(&self) -> &[ModelEvent] {
        &self.events
    }

    fn find(&self, id: Uuid) -> Outcome<usize> {
        self.tasks.iter().position(|t| t.row.id == id).ok_or(Failure::NotFound(id))
    }

    fn rows(&self, keep: impl Fn(&TaskExecution) -> bool) -> Vec<TaskExecution> {
        self.tasks.iter().map(|t| &t.row).filter(|r| keep(r)).cloned().collect()
    }

    fn indices_by_id(&self, keep: impl Fn(&TaskExecution) -> bool) -> Vec<usize> {
        let mut kept: Vec<usize> =
            (0..self.tasks.len()).filter(|&i| keep(&self.tasks[i].row)).collect();
        kept.sort_by_key(|&i| self.tasks[i].row.id);
        kept
    }

    fn by_id(&self, keep: impl Fn(&TaskExecution) -> bool) -> Vec<TaskExecution> {
        self.indices_by_id(keep).into_iter().map(|i| self.tasks[i].row.clone()).collect()
    }

    fn in_any(workflows: &[Uuid]) -> impl Fn(&TaskExecution) -> bool {
        move |r| workflows.contains(&r.workflow_execution_id)
    }

    /// Ends a write of task `i`: `updated_at`, the sub-status only `Running` keeps, the queue
    /// place of a `Ready` task, and the event (counters added to `data`); the row written.
    fn wrote(&mut self, i: usize, event: Option<Event>) -> TaskExecution {
        let (now, task) = (self.now, &mut self.tasks[i]);
        let row = &mut task.row;
        row.updated_at = now;
        if row.status != Running {
            row.sub_status = None;
        }
        if row.status == Ready {
            task.queued_at = row.retry_at.map_or(now, |at| at.max(now));
        }
        if let (Some((event_type, mut data, runner)), true) = (event, self.history) {
            let c = counters(row.attempt, row.claim_count, row.recovery_attempts);
            data.extend(c.as_object().cloned().unwrap_or_default());
            let (task, data) = (row.id, Value::Object(data));
            self.events.push(ModelEvent { task, event_type, data, runner, at: now });
        }
        self.tasks[i].row.clone()
    }

    /// Applies `t` (its guards passed) to task `i` for runner `by`, with its event; `a` holds
    /// arguments of the event beside those of `t`.
    fn step(&mut self, i: usize, t: &Transition, by: Option<Uuid>, mut a: Args) -> TaskExecution {
        let (now, row) = (self.now, &mut self.tasks[i].row);
        match t {
            T::MarkReady => row.status = Ready,
            T::MarkSkipped { reason } => end(row, Skipped, Some(reason), now),
            T::MarkRunning => (row.status, row.started_at) = (Running, Some(now)),
            T::MarkCompleted => end(row, Completed, None, now),
            T::MarkFailed { error } => end(row, Failed, Some(error), now),
            T::MarkAbandoned { reason } => {
                end(row, Failed, Some(reason), now);
                row.abandoned_at = Some(now);
            }
            T::ScheduleRetry { retry_at } => {
                let attempt = row.attempt + 1;
                requeue(row, attempt, Some(*retry_at));
            }
            T::ResetForRecovery => {
                unclaim(row);
                row.recovery_attempts += 1;
                row.last_recovery_at = Some(now);
            }
            T::ResetRetryState => {
                requeue(row, 1, None);
                row.last_error = None;
            }
        }
        let arg = match t {
            T::MarkSkipped { reason: text } | T::MarkAbandoned { reason: text } => {
                Some(("reason", text.as_str().into()))
            }
            T::MarkFailed { error } => Some(("error", error.as_str().into())),
            T::ScheduleRetry { retry_at } => Some(("retry_at", time_data(*retry_at))),
            _ => None,
        };
        a.extend(arg.map(|(k, v)| (k.to_owned(), v)));
        self.wrote(i, Some((rule(t).2, a, by)))
    }

    fn taken(&self, new: &NewTaskExecution) -> bool {
        let (wf, name) = (new.workflow_execution_id, &new.task_name);
        self.tasks.iter().any(|t| t.row.workflow_execution_id == wf && t.row.task_name == *name)
    }

    /// `create`; `id` is the id the store gave the task (used only on success).
    pub fn create(&mut self, new: &NewTaskExecution, id: Option<Uuid>) -> Outcome<TaskExecution> {
        let ids = id.map(|id| vec![id]);
        self.insert(std::slice::from_ref(new), ids.as_deref(), "").map(|mut rows| rows.remove(0))
    }

    /// `create_many`; `ids` are the ids the store gave, in input order (used only on success).
    pub fn create_many(
        &mut self,
        news: &[NewTaskExecution],
        ids: Option<&[Uuid]>,
    ) -> Outcome<Vec<TaskExecution>> {
        self.insert(news, ids, "tasks")
    }

    fn insert(
        &mut self,
        news: &[NewTaskExecution],
        ids: Option<&[Uuid]>,
        batch: &str,
    ) -> Outcome<Vec<TaskExecution>> {
        let mut names = HashMap::new();
        for (i, new) in news.iter().enumerate() {
            let at = if batch.is_empty() { String::new() } else { format!("{batch}[{i}].") };
            rules::new_task(&at, new)?;
            if let Some(first) = names.insert((new.workflow_execution_id, &new.task_name), i) {
                let field = format!("{at}task_name");
                return Err(Failure::Validation(field, Problem::DuplicateInBatch { first }));
            }
        }
        // The first clash of the first workflow execution (in input order) that has one.
        let mut workflows: Vec<Uuid> = news.iter().map(|n| n.workflow_execution_id).collect();
        workflows.dedup_by_key(|wf| *wf);
        for wf in workflows {
            let taken = |n: &&NewTaskExecution| n.workflow_execution_id == wf && self.taken(n);
            let clash = news.iter().find(taken);
            if let Some(new) = clash {
                return Err(Failure::AlreadyExists(wf, new.task_name.clone()));
            }
        }
        let ids = ids.ok_or_else(|| Failure::Other("the store created nothing".into()))?;
        let now = self.now;
        let rows = news.iter().zip(ids).map(|(new, &id)| {
            let row = TaskExecution {
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
                retry_at: new.retry_at.map(micros),
                started_at: None,
                completed_at: None,
                recovery_attempts: 0,
                last_recovery_at: None,
                claimed_by: None,
                heartbeat_at: None,
                claim_count: 0,
                abandoned_at: None,
                sub_status: None,
                created_at: now,
                updated_at: now,
            };
            self.tasks.push(Task { row, queued_at: now });
            self.wrote(self.tasks.len() - 1, Some((EventType::Created, Map::new(), None)))
        });
        Ok(rows.collect())
    }

    pub fn get(&self, id: Uuid) -> Outcome<TaskExecution> {
        self.find(id).map(|i| self.tasks[i].row.clone())
    }

    /// `list_for_workflow`: in creation order.
    pub fn list_for_workflow(&self, wf: Uuid) -> Vec<TaskExecution> {
        self.rows(|r| r.workflow_execution_id == wf)
    }

    /// A lease-less transition.
    pub fn transition(&mut self, id: Uuid, transition: &Transition) -> Outcome<TaskExecution> {
        rules::transition(transition)?;
        let i = self.find(id)?;
        let ((allowed, to, _), from) = (rule(transition), self.tasks[i].row.status);
        if !allowed.contains(&from) {
            return Err(Failure::InvalidTransition(id, from, to));
        }
        matches!(transition, T::ScheduleRetry { .. }).then(|| self.retry_left(i)).transpose()?;
        Ok(self.step(i, transition, None, Map::new()))
    }

    /// Task `i` if it has an attempt left.
    fn retry_left(&self, i: usize) -> Outcome<usize> {
        let r = &self.tasks[i].row;
        let exhausted = Failure::RetriesExhausted(r.id, r.attempt, r.max_attempts);
        if r.attempt < r.max_attempts { Ok(i) } else { Err(exhausted) }
    }

    /// `set_sub_status`: a `Running` task's sub-status set or cleared.
    pub fn set_sub_status(&mut self, id: Uuid, sub: Option<SubStatus>) -> Outcome<TaskExecution> {
        let i = self.find(id)?;
        let row = &mut self.tasks[i].row;
        if row.status != Running {
            return Err(Failure::InvalidTransition(id, row.status, Running));
        }
        row.sub_status = sub;
        let deferred = sub == Some(SubStatus::Deferred);
        let event = if deferred { EventType::Deferred } else { EventType::Resumed };
        let value = sub.map_or(Value::Null, |s| s.as_str().into());
        Ok(self.wrote(i, Some((event, data([("sub_status", value)]), None))))
    }

    /// `deferred_tasks`: by id.
    pub fn deferred_tasks(&self, workflows: &[Uuid]) -> Vec<TaskExecution> {
        let deferred = |r: &TaskExecution| r.sub_status == Some(SubStatus::Deferred);
        self.by_id(|r| Self::in_any(workflows)(r) && r.status == Running && deferred(r))
    }

    /// The due `Ready` tasks in claim order: queue time, then id.
    fn due(&self) -> Vec<usize> {
        let mut due: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].row.status == Ready && self.tasks[i].queued_at <= self.now)
            .collect();
        due.sort_by_key(|&i| (self.tasks[i].queued_at, self.tasks[i].row.id));
        due
    }

    /// `claim_ready`: up to `limit` due tasks, claimed (and returned) in id order.
    pub fn claim_ready(&mut self, runner: Uuid, limit: u32) -> Vec<Claimed> {
        let mut due: Vec<usize> = self.due().into_iter().take(limit as usize).collect();
        due.sort_by_key(|&i| self.tasks[i].row.id);
        due.into_iter().map(|i| self.claim(i, runner)).collect()
    }

    /// `claim_task`: the task if it is unclaimed, `Ready` and due.
    pub fn claim_task(&mut self, id: Uuid, runner: Uuid) -> Outcome<Claimed> {
        let i = self.find(id)?;
        let row = &self.tasks[i].row;
        if let Some(holder) = row.claimed_by {
            return Err(Failure::AlreadyClaimed(id, holder));
        }
        if row.status != Ready {
            return Err(Failure::InvalidTransition(id, row.status, Running));
        }
        if let Some(at) = row.retry_at.filter(|at| *at > self.now) {
            return Err(Failure::NotDue(id, at));
        }
        Ok(self.claim(i, runner))
    }

    fn claim(&mut self, i: usize, runner: Uuid) -> Claimed {
        let (now, row) = (self.now, &mut self.tasks[i].row);
        (row.status, row.claimed_by, row.claim_count) =
            (Running, Some(runner), row.claim_count + 1);
        (row.heartbeat_at, row.started_at) = (Some(now), Some(now));
        let lease = Lease { task_id: row.id, runner_id: runner, claim: row.claim_count };
        Claimed { task: self.wrote(i, Some((EventType::Claimed, Map::new(), Some(runner)))), lease }
    }

    /// The task of `lease` if the lease is its current claim and its status is `allowed`.
    fn leased(&self, lease: &Lease, allowed: &[TaskStatus], to: TaskStatus) -> Outcome<usize> {
        let i = self.find(lease.task_id)?;
        let row = &self.tasks[i].row;
        if row.claimed_by != Some(lease.runner_id) || row.claim_count != lease.claim {
            return Err(Failure::ClaimLost(lease.task_id));
        }
        if !allowed.contains(&row.status) {
            return Err(Failure::InvalidTransition(lease.task_id, row.status, to));
        }
        Ok(i)
    }

    /// `heartbeat`: the heartbeat moved, no event.
    pub fn heartbeat(&mut self, lease: &Lease) -> Outcome<TaskExecution> {
        let i = self.leased(lease, &[Running], Running)?;
        self.tasks[i].row.heartbeat_at = Some(self.now);
        Ok(self.wrote(i, None))
    }

    pub fn complete(&mut self, lease: &Lease) -> Outcome<TaskExecution> {
        let i = self.leased(lease, &[Running], Completed)?;
        Ok(self.finish(i, lease.runner_id, Finish::Complete))
    }

    /// `fail`: a claimed task, `Running` or still `Ready`, failed.
    pub fn fail(&mut self, lease: &Lease, error: &str) -> Outcome<TaskExecution> {
        rules::text("error", error)?;
        let i = self.leased(lease, &[Ready, Running], Failed)?;
        Ok(self.finish(i, lease.runner_id, Finish::Fail(error)))
    }

    /// `fail_and_retry`: the next attempt queued under the lease.
    pub fn fail_and_retry(
        &mut self,
        lease: &Lease,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Outcome<TaskExecution> {
        rules::text("error", error)?;
        rules::time("retry_at", retry_at)?;
        let i = self.leased(lease, &[Running], Ready).and_then(|i| self.retry_left(i))?;
        Ok(self.finish(i, lease.runner_id, Finish::Retry(error, retry_at)))
    }

    /// Task `i` finished by `runner` under its lease, with its event; a retry keeps its error
    /// as the last error and in the event.
    fn finish(&mut self, i: usize, runner: Uuid, how: Finish<'_>) -> TaskExecution {
        let (t, args) = match how {
            Finish::Complete => (T::MarkCompleted, Map::new()),
            Finish::Fail(error) => (T::MarkFailed { error: error.into() }, Map::new()),
            Finish::Retry(error, retry_at) => {
                self.tasks[i].row.last_error = Some(error.into());
                (T::ScheduleRetry { retry_at }, data([("error", error.into())]))
            }
        };
        self.step(i, &t, Some(runner), args)
    }

    /// `release`: back to `Ready`, no attempt counted.
    pub fn release(&mut self, lease: &Lease) -> Outcome<TaskExecution> {
        let i = self.leased(lease, &[Running, Ready], Ready)?;
        unclaim(&mut self.tasks[i].row);
        Ok(self.wrote(i, Some((EventType::Released, Map::new(), Some(lease.runner_id)))))
    }

    /// `complete_many`: the leases that still hold a `Running` task, completed in id order.
    pub fn complete_many(&mut self, leases: &[Lease]) -> Outcome<Completion> {
        let Some(first) = leases.first() else {
            return Ok(Completion::default());
        };
        let all: Vec<_> = labelled("", "leases", leases, |l| (l, Finish::Complete)).collect();
        rules::finished(first.runner_id, &all)?;
        let done: BTreeMap<Uuid, usize> = leases
            .iter()
            .filter_map(|l| self.leased(l, &[Running], Completed).ok())
            .map(|i| (self.tasks[i].row.id, i))
            .collect();
        let completed = done.values().map(|&i| self.finish(i, first.runner_id, Finish::Complete));
        let completed = completed.collect();
        let lost = leases.iter().filter(|l| !done.contains_key(&l.task_id)).copied().collect();
        Ok(Completion { completed, lost })
    }

    /// `finish_and_claim` by runner `by`: the completions, failures and retries whose lease holds
    /// a `Running` task (a retry on the last attempt fails instead), then a claim of up to `limit`
    /// of the tasks due before the cycle, all in task id order.
    pub fn finish_and_claim(&mut self, by: Uuid, done: &Finished, limit: u32) -> Outcome<Cycle> {
        let (retried, at) = (&done.retried, "finished.");
        let all: Vec<_> = labelled(at, "completed", &done.completed, |l| (l, Finish::Complete))
            .chain(labelled(at, "failed", &done.failed, |f| (&f.lease, Finish::Fail(&f.error))))
            .chain(labelled(at, "retried", retried, |r| {
                (&r.lease, Finish::Retry(&r.error, r.retry_at))
            }))
            .collect();
        rules::finished(by, &all)?;
        let mut order: BTreeMap<Uuid, (usize, Option<Finish<'_>>)> = BTreeMap::new();
        let mut cycle = Cycle::default();
        for &(_, (lease, how)) in &all {
            // The status a lost lease is refused for is not returned: any will do.
            let Ok(i) = self.leased(lease, &[Running], Running) else {
                cycle.lost.push(*lease);
                continue;
            };
            let how = match how {
                Finish::Retry(error, _) if self.retry_left(i).is_err() => Finish::Fail(error),
                how => how,
            };
            order.insert(self.tasks[i].row.id, (i, Some(how)));
        }
        for i in self.due().into_iter().take(limit as usize) {
            order.insert(self.tasks[i].row.id, (i, None));
        }
        for (i, how) in order.into_values() {
            match how {
                None => cycle.claimed.push(self.claim(i, by)),
                Some(how @ Finish::Complete) => cycle.completed.push(self.finish(i, by, how)),
                Some(how @ Finish::Fail(_)) => cycle.failed.push(self.finish(i, by, how)),
                Some(how) => cycle.retried.push(self.finish(i, by, how)),
            }
        }
        Ok(cycle)
    }

    fn stale(row: &TaskExecution, older_than: DateTime<Utc>) -> bool {
        row.claimed_by.is_some()
            && matches!(row.status, Running | Ready)
            && row.heartbeat_at.is_some_and(|at| at < older_than)
    }

    /// `find_stale_claims`: by id.
    pub fn find_stale_claims(&self, older_than: DateTime<Utc>) -> Outcome<Vec<TaskExecution>> {
        rules::time("older_than", older_than)?;
        Ok(self.by_id(|r| Self::stale(r, micros(older_than))))
    }

    /// `recover_stale_claims`: the stale claims recovered `max` times already abandoned, then
    /// the others made `Ready` again, each set in id order.
    pub fn recover_stale_claims(&mut self, before: DateTime<Utc>, max: i32) -> Outcome<Recovery> {
        rules::time("older_than", before)?;
        rules::range("max_recovery_attempts", max.into(), 0, i32::MAX.into())?;
        let older_than = micros(before);
        let reason = format!(
            "abandoned: its runner stopped heart-beating and the task was already recovered {max} times"
        );
        let stale = self.indices_by_id(|r| Self::stale(r, older_than));
        let (abandon, reset): (Vec<usize>, Vec<usize>) =
            stale.into_iter().partition(|&i| self.tasks[i].row.recovery_attempts >= max);
        let (why, args) = (T::MarkAbandoned { reason }, [("stale_before", time_data(older_than))]);
        let abandoned = abandon.into_iter().map(|i| self.step(i, &why, None, Map::new())).collect();
        let reset =
            reset.into_iter().map(|i| self.step(i, &T::ResetForRecovery, None, data(args.clone())));
        Ok(Recovery { abandoned, reset: reset.collect() })
    }

    /// `list_ready` (with `retries_only`, `list_due_retries`): in claim order.
    pub fn list_ready(&self, limit: u32, retries_only: bool) -> Vec<TaskExecution> {
        let due = self.due().into_iter().map(|i| &self.tasks[i].row);
        let due = due.filter(|r| !retries_only || r.retry_at.is_some());
        due.take(limit as usize).cloned().collect()
    }

    pub fn events_for_task(&self, id: Uuid) -> Vec<ModelEvent> {
        self.events.iter().filter(|e| e.task == id).cloned().collect()
    }

    /// `pending_tasks`: the `NotStarted` tasks, by id.
    pub fn pending_tasks(&self, workflows: &[Uuid]) -> Vec<TaskExecution> {
        self.by_id(|r| r.status == NotStarted && Self::in_any(workflows)(r))
    }

    pub fn statuses_for_workflows(&self, workflows: &[Uuid]) -> Statuses {
        let mut out = Statuses::new();
        for r in self.rows(Self::in_any(workflows)) {
            out.entry(r.workflow_execution_id).or_default().insert(r.task_name, r.status);
        }
        out
    }

    /// `complete_workflows`: those of `workflows` with tasks, all finished, by id.
    pub fn complete_workflows(&self, workflows: &[Uuid]) -> Vec<Uuid> {
        let mut all_done: BTreeMap<Uuid, bool> = BTreeMap::new();
        for r in self.rows(Self::in_any(workflows)) {
            *all_done.entry(r.workflow_execution_id).or_insert(true) &= finished(&r);
        }
        all_done.into_iter().filter(|(_, done)| *done).map(|(wf, _)| wf).collect()
    }

    pub fn has_abandoned_task(&self, wf: Uuid) -> bool {
        !self.rows(|r| r.workflow_execution_id == wf && r.abandoned_at.is_some()).is_empty()
    }

    pub fn retry_stats(&self, wf: Uuid) -> RetryStats {
        let rows = self.rows(|r| r.workflow_execution_id == wf);
        RetryStats {
            tasks_retried: rows.iter().filter(|r| r.attempt > 1).count() as i64,
            total_retries: rows.iter().map(|r| i64::from(r.attempt - 1)).sum(),
            max_attempt: rows.iter().map(|r| r.attempt).max().unwrap_or(0),
            tasks_exhausted: rows.iter().filter(|r| exhausted(r)).count() as i64,
        }
    }

    /// `exhausted_tasks`: failed on their last attempt and not abandoned, by id.
    pub fn exhausted_tasks(&self, wf: Uuid) -> Vec<TaskExecution> {
        self.by_id(|r| r.workflow_execution_id == wf && exhausted(r))
    }

    /// `prune_finished`: one batch of a retention pass. It scans the tasks finished before
    /// `older_than` after the cursor, in (`completed_at`, id) order, at most `limit`; of their
    /// workflow executions it removes those whose every task is finished and unchanged since
    /// `older_than`, with their events. A full batch has a next one.
    pub fn prune_finished(
        &mut self,
        older_than: DateTime<Utc>,
        limit: u32,
        after: Option<PruneCursor>,
    ) -> Outcome<Pruned> {
        rules::time("older_than", older_than)?;
        rules::range("limit", limit.into(), 1, 10_000)?;
        after.map_or(Ok(()), |c| rules::time("after.completed_at", c.completed_at))?;
        let older_than = micros(older_than);
        let mut scanned: Vec<(DateTime<Utc>, Uuid, Uuid)> = (self.rows(finished).into_iter())
            .filter_map(|r| r.completed_at.map(|at| (at, r.id, r.workflow_execution_id)))
            .filter(|&(at, id, _)| {
                at < older_than && after.is_none_or(|c| (at, id) > (c.completed_at, c.task_id))
            })
            .collect();
        scanned.sort_unstable();
        scanned.truncate(limit as usize);
        let next = (scanned.last().filter(|_| scanned.len() == limit as usize))
            .map(|&(completed_at, task_id, _)| PruneCursor { completed_at, task_id });
        let removed: BTreeSet<Uuid> = (scanned.iter().map(|&(_, _, wf)| wf))
            .filter(|&wf| {
                let rows = self.rows(|r| r.workflow_execution_id == wf);
                rows.iter().all(|r| finished(r) && r.updated_at < older_than)
            })
            .collect();
        let gone = self.rows(|r| removed.contains(&r.workflow_execution_id));
        let tasks: BTreeSet<Uuid> = gone.iter().map(|r| r.id).collect();
        self.tasks.retain(|t| !tasks.contains(&t.row.id));
        let events = self.events.len();
        self.events.retain(|e| !tasks.contains(&e.task));
        Ok(Pruned {
            workflows: removed.into_iter().collect(),
            tasks: tasks.len() as u64,
            events: (events - self.events.len()) as u64,
            next,
        })
    }

    pub fn count_by_status(&self) -> StatusCounts {
        let count = |status| self.tasks.iter().filter(|t| t.row.status == status).count() as i64;
        let (not_started, ready, running) = (count(NotStarted), count(Ready), count(Running));
        let (completed, failed, skipped) = (count(Completed), count(Failed), count(Skipped));
        StatusCounts { not_started, ready, running, completed, failed, skipped }
    }
}

fn finished(r: &TaskExecution) -> bool {
    matches!(r.status, Completed | Failed | Skipped)
}

fn exhausted(r: &TaskExecution) -> bool {
    r.status == Failed && r.attempt >= r.max_attempts && r.abandoned_at.is_none()
}

/// A task finished as `status`, its claim given up; a reason or error kept as its details, a
/// failure's also as its last error.
fn end(row: &mut TaskExecution, status: TaskStatus, error: Option<&str>, now: DateTime<Utc>) {
    (row.status, row.completed_at, row.claimed_by, row.heartbeat_at) =
        (status, Some(now), None, None);
    if let Some(error) = error {
        row.error_details = Some(error.to_owned());
        if status == Failed {
            row.last_error = Some(error.to_owned());
        }
    }
}

/// Back to `Ready` for `attempt`, due at `retry_at`: the last attempt's state cleared.
fn requeue(row: &mut TaskExecution, attempt: i32, retry_at: Option<DateTime<Utc>>) {
    unclaim(row);
    (row.attempt, row.retry_at, row.error_details) = (attempt, retry_at.map(micros), None);
    (row.completed_at, row.abandoned_at) = (None, None);
}

/// Back to `Ready`, not started, unclaimed.
fn unclaim(row: &mut TaskExecution) {
    (row.status, row.started_at, row.claimed_by, row.heartbeat_at) = (Ready, None, None, None);
}

/// The counters every event's data carries, for expectations written by hand.
pub fn counters(attempt: i32, claim: i32, recovery_attempts: i32) -> Value {
    json!({ "attempt": attempt, "claim": claim, "recovery_attempts": recovery_attempts })
}

/// Replays a task's history through the state machine: each event a legal step from the state
/// before it, no claim begun while another is open, each event's counters the replayed ones,
/// ending in `row`'s status and counters. The task may have been created `NotStarted` or
/// `Ready`; both are tried.
pub fn replay(row: &TaskExecution, events: &[ExecutionEvent]) -> Result<(), String> {
    let from = |status| replay_from(status, row, events);
    from(NotStarted).or_else(|first| from(Ready).map_err(|_| first))
}

fn replay_from(made: TaskStatus, row: &TaskExecution, es: &[ExecutionEvent]) -> Result<(), String> {
    use EventType as E;
    let mut status = None::<TaskStatus>;
    let (mut attempt, mut claim, mut recoveries, mut open) = (1i32, 0i32, 0i32, false);
    for event in es {
        let from = status;
        let allowed = |states: &[TaskStatus]| from.is_some_and(|s| states.contains(&s));
        let next = match event.event_type {
            E::Created if from.is_none() => made,
            E::Ready if allowed(&[NotStarted]) => Ready,
            E::Started if allowed(&[Ready]) => Running,
            E::Claimed if allowed(&[Ready]) && !open => Running,
            E::Completed if allowed(&[Running]) => Completed,
            E::Failed if allowed(&[Ready, Running]) => Failed,
            E::Skipped if allowed(&[NotStarted, Ready]) => Skipped,
            E::Abandoned if allowed(&[NotStarted, Ready, Running]) => Failed,
            E::RetryScheduled if allowed(&[Running, Failed]) => Ready,
            E::Recovered | E::Released if allowed(&[Running, Ready]) => Ready,
            E::Reset if allowed(&[Ready, Completed, Failed, Skipped]) => Ready,
            E::Deferred | E::Resumed if allowed(&[Running]) => Running,
            other => return Err(format!("{other} after {from:?} (seq {})", event.seq)),
        };
        // The counters; a claim stays open through the steps that keep it, every other ends it.
        match event.event_type {
            E::Claimed => (claim, open) = (claim + 1, true),
            E::Created | E::Ready | E::Started | E::Deferred | E::Resumed => {}
            E::RetryScheduled => (attempt, open) = (attempt + 1, false),
            E::Recovered => (recoveries, open) = (recoveries + 1, false),
            E::Reset => (attempt, open) = (1, false),
            _ => open = false,
        }
        status = Some(next);
        let got = ["attempt", "claim", "recovery_attempts"].map(|k| event.event_data[k].as_i64());
        let want = [attempt, claim, recoveries].map(|n| Some(i64::from(n)));
        if got != want {
            return Err(format!("event {} has counters {got:?}, replay says {want:?}", event.seq));
        }
    }
    let replayed = (status, attempt, claim, recoveries);
    let stored = (Some(row.status), row.attempt, row.claim_count, row.recovery_attempts);
    if replayed == stored {
        Ok(())
    } else {
        Err(format!("history replays to {replayed:?}, the row is {stored:?}"))
    }
}
