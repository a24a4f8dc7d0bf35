//! Waiting for work without polling. A store keeps a [`Bell`]: its own writes that make tasks
//! claimable ring it at once, its backend's watcher rings it for other processes' writes
//! (PostgreSQL `LISTEN`, SQLite's change counter), and a task that falls due later rings it at
//! its due time. A ring holds one permit per task made claimable: that many waiters wake, the
//! others sleep on, so one task does not send every waiter to claim it.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::{Problem, Result, ValidationError};
use crate::{TaskExecution, TaskStatus};

/// The longest wait one call may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How many future due times a bell keeps; a task due later than all of them is found by the
/// next claim after another wake-up or a timeout.
const MAX_DUE_TIMES: usize = 4_096;

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A task may be claimable: claim now.
    Work,
    /// The timeout passed with no sign of work.
    Timeout,
}

/// How a store hears of the writes of other processes, fixed when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeSource {
    /// PostgreSQL `LISTEN` on a connection of its own. While that connection is down (and
    /// until it is back, when every waiter wakes once), waiters wake every `fallback`.
    Notifications {
        /// How often waiters wake while the listening connection is down.
        fallback: Duration,
    },
    /// SQLite: the file's change counter (`PRAGMA data_version`), read every `every` while
    /// runners wait, on a connection of its own.
    ChangeChecks {
        /// How often the counter is read.
        every: Duration,
    },
    /// Only this store's writes: no other process can reach the database (SQLite in memory).
    Local,
    /// No signal from other processes (PostgreSQL behind a transaction pooler, where `LISTEN`
    /// is not available): waiters wake every `every`.
    Polling {
        /// How often waiters wake.
        every: Duration,
    },
}

/// Where waiters sleep and writers ring. **For backend authors** (a watcher rings it).
#[derive(Debug)]
pub struct Bell {
    state: Mutex<State>,
    rung: Condvar,
    /// Signalled when a first caller starts waiting, for a watcher idle meanwhile.
    waited: Condvar,
    #[cfg(feature = "tokio")]
    notify: tokio::sync::Notify,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every ring; a claim that found nothing since the last one empties `permits`.
    generation: u64,
    /// Waiters that may wake: one per task made claimable.
    permits: u64,
    waiting: usize,
    /// The times tasks fall due, on the monotonic clock.
    due: BTreeSet<Instant>,
    /// Set while no signal is heard: waiters wake this often.
    polling: Option<Duration>,
}

impl State {
    /// Turns the due times passed into permits, then takes one, or a polling turn of a waiter
    /// that began at `began`. `Some(more)` when this waiter wakes, `more` whether others may.
    fn take(&mut self, now: Instant, began: Instant) -> Option<bool> {
        let before = self.due.len();
        self.due = self.due.split_off(&now);
        let fell_due = (before - self.due.len()) as u64;
        if fell_due > 0 {
            self.permits += fell_due;
            self.generation += 1;
        }
        if self.permits > 0 {
            self.permits -= 1;
            return Some(self.permits > 0);
        }
        self.polling.filter(|every| now >= began + *every).map(|_| false)
    }

    /// When a waiter that began at `began` and stops at `deadline` must look again.
    fn next_look(&self, began: Instant, deadline: Instant) -> Instant {
        let due = self.due.first().copied().unwrap_or(deadline);
        let poll = self.polling.map_or(deadline, |every| began + every);
        deadline.min(due).min(poll)
    }
}

impl Bell {
    fn new(clock: Arc<dyn Clock>) -> Self {
        Bell {
            state: Mutex::default(),
            rung: Condvar::new(),
            waited: Condvar::new(),
            #[cfg(feature = "tokio")]
            notify: tokio::sync::Notify::new(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_all(&self) {
        self.rung.notify_all();
        #[cfg(feature = "tokio")]
        self.notify.notify_waiters();
    }

    /// `now` tasks claimable at once, and others falling due at `later` (the store's time).
    pub fn ring(&self, now: u64, later: impl IntoIterator<Item = DateTime<Utc>>) {
        let (instant, clock_now) = (Instant::now(), self.clock.now());
        let mut state = self.lock();
        for at in later {
            match (at - clock_now).to_std() {
                Ok(wait) if !wait.is_zero() => {
                    if state.due.len() < MAX_DUE_TIMES {
                        state.due.insert(instant + wait);
                    }
                }
                _ => state.permits += 1,
            }
        }
        state.permits += now;
        state.generation += 1;
        drop(state);
        self.wake_all();
    }

    /// Wakes every waiter once (a signal may have been missed: a listener reconnected).
    pub fn ring_all(&self) {
        let mut state = self.lock();
        state.permits = state.permits.max(state.waiting as u64);
        state.generation += 1;
        drop(state);
        self.wake_all();
    }

    /// Waiters wake every `every` while no signal is heard (`None`: signals are heard again).
    pub fn set_polling(&self, every: Option<Duration>) {
        self.lock().polling = every;
        self.wake_all();
    }

    /// How many callers wait now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Blocks until a caller waits (at once if one does), or `timeout` passes; whether one does.
    pub fn until_waited(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .waited
            .wait_timeout_while(state, timeout, |s| s.waiting == 0)
            .unwrap_or_else(PoisonError::into_inner);
        state.waiting > 0
    }

    /// Counts a caller in; the first wakes a watcher waiting for one.
    fn enter(&self, state: &mut State) {
        state.waiting += 1;
        if state.waiting == 1 {
            self.waited.notify_all();
        }
    }

    /// The store's time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The generation a claim starts from, for [`Bell::found_nothing`].
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A claim that started at generation `seen` found nothing: no permit left from before it
    /// stands for work, unless a ring came in between.
    pub(crate) fn found_nothing(&self, seen: u64) {
        let mut state = self.lock();
        if state.generation == seen {
            state.permits = 0;
        }
    }

    /// Rings for the rows a write returned that it left claimable (`Ready`, unclaimed).
    pub(crate) fn ring_for(&self, rows: &[TaskExecution]) {
        let mut waking = rows
            .iter()
            .filter(|r| r.status == TaskStatus::Ready && r.claimed_by.is_none())
            .map(|r| r.retry_at.map_or(r.updated_at, |at| at.max(r.updated_at)))
            .peekable();
        if waking.peek().is_some() {
            self.ring(0, waking);
        }
    }

    /// Waits as [`Wakeups::wait`] says, blocking the thread. A zero timeout only takes a
    /// permit left (it does not count as waiting: no watcher looks for it).
    fn wait(&self, timeout: Duration) -> Wake {
        let began = Instant::now();
        if timeout.is_zero() {
            return match self.lock().take(began, began) {
                Some(_) => Wake::Work,
                None => Wake::Timeout,
            };
        }
        let deadline = began + timeout;
        let mut state = self.lock();
        self.enter(&mut state);
        let woke = loop {
            let now = Instant::now();
            if let Some(more) = state.take(now, began) {
                if more {
                    self.wake_all();
                }
                break Wake::Work;
            }
            if now >= deadline {
                break Wake::Timeout;
            }
            let look = state.next_look(began, deadline);
            state =
                self.rung.wait_timeout(state, look - now).unwrap_or_else(PoisonError::into_inner).0;
        };
        state.waiting -= 1;
        woke
    }

    /// Waits as [`Wakeups::wait`] says, as a future: dropped, it leaves nothing behind.
    #[cfg(feature = "tokio")]
    async fn wait_async(&self, timeout: Duration) -> Wake {
        if timeout.is_zero() {
            return self.wait(timeout);
        }
        struct Waiting<'a>(&'a Bell);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().waiting -= 1;
            }
        }
        let began = Instant::now();
        let deadline = began + timeout;
        self.enter(&mut self.lock());
        let _waiting = Waiting(self);
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let look = {
                let mut state = self.lock();
                if let Some(more) = state.take(now, began) {
                    drop(state);
                    if more {
                        self.wake_all();
                    }
                    return Wake::Work;
                }
                if now >= deadline {
                    return Wake::Timeout;
                }
                state.next_look(began, deadline)
            };
            let _ = tokio::time::timeout(look - now, notified).await;
        }
    }
}

/// A store's wake-ups: what its runners wait on ([`crate::WakeStore`]).
pub struct Wakeups {
    bell: Arc<Bell>,
    source: WakeSource,
    watching: OnceLock<()>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Wakeups {
    pub(crate) fn new(source: WakeSource, clock: Arc<dyn Clock>) -> Self {
        let bell = Arc::new(Bell::new(clock));
        if let WakeSource::Polling { every } = source {
            bell.set_polling(Some(every));
        }
        Wakeups { bell, source, watching: OnceLock::new() }
    }

    /// How the store hears of other processes' writes.
    pub fn source(&self) -> WakeSource {
        self.source
    }

    /// How many callers wait now (a gauge for metrics).
    pub fn waiting(&self) -> usize {
        self.bell.waiting()
    }

    pub(crate) fn bell(&self) -> &Arc<Bell> {
        &self.bell
    }

    /// The bell, with the backend's watcher started by `watch` on the first call.
    pub(crate) fn started(&self, watch: impl FnOnce(&Arc<Bell>)) -> &Self {
        self.watching.get_or_init(|| watch(&self.bell));
        self
    }

    /// Blocks until a task may be claimable ([`Wake::Work`]) or `timeout` passes
    /// ([`Wake::Timeout`]); sends no statement. A zero timeout returns at once. Errors:
    /// [`crate::DalError::Validation`] for a timeout over [`MAX_WAIT`].
    pub fn wait(&self, timeout: Duration) -> Result<Wake> {
        check(timeout)?;
        Ok(self.bell.wait(timeout))
    }

    /// [`Wakeups::wait`] as a future, on tokio's timer (a runtime with `enable_time`).
    /// Dropped before it returns, it leaves nothing behind and takes no wake-up from others.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(&self, timeout: Duration) -> Result<Wake> {
        check(timeout)?;
        Ok(self.bell.wait_async(timeout).await)
    }
}

fn check(timeout: Duration) -> Result<()> {
    if timeout > MAX_WAIT {
        let value = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let max = MAX_WAIT.as_millis() as i64;
        return Err(
            ValidationError::new("timeout", Problem::OutOfRange { min: 0, max, value }).into()
        );
    }
    Ok(())
}
