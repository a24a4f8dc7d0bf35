//! Counting the statements that reach the database, with Diesel's connection instrumentation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// The factory the backends' `Options::instrumentation` take.
pub type Factory = Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync>;

/// What reached the database: statements sent (`BEGIN`, `COMMIT` too), prepared into a cache
/// (`CacheQuery`), transactions begun, and the SQL (300 characters each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub statements: usize,
    pub prepares: usize,
    pub transactions: usize,
    pub sql: Vec<String>,
}

/// Which count `event` adds to: statements (0), prepares (1), transactions (2).
fn slot(event: &InstrumentationEvent<'_>) -> Option<usize> {
    match event {
        InstrumentationEvent::StartQuery { .. } => Some(0),
        InstrumentationEvent::CacheQuery { .. } => Some(1),
        InstrumentationEvent::BeginTransaction { .. } => Some(2),
        _ => None,
    }
}

fn factory(on: Arc<dyn Fn(&InstrumentationEvent<'_>) + Send + Sync>) -> Factory {
    Arc::new(move || {
        let on = Arc::clone(&on);
        Box::new(move |event: InstrumentationEvent<'_>| on(&event))
    })
}

/// A statement log for every connection of a store's pool.
#[derive(Debug, Clone, Default)]
pub struct StatementLog(Arc<Mutex<Counts>>);

impl StatementLog {
    pub fn new() -> Self {
        StatementLog::default()
    }

    pub fn factory(&self) -> Factory {
        let log = self.clone();
        factory(Arc::new(move |event| {
            let counts = &mut *log.0.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(slot) = slot(event) else { return };
            *[&mut counts.statements, &mut counts.prepares, &mut counts.transactions][slot] += 1;
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                counts.sql.push(query.to_string().chars().take(300).collect());
            }
        }))
    }

    pub fn total(&self) -> Counts {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `f`; returns what reached the database meanwhile (from anything using the store).
    pub fn measure<T>(&self, f: impl FnOnce() -> T) -> (T, Counts) {
        let before = self.total();
        let out = f();
        let after = self.total();
        let counts = Counts {
            statements: after.statements - before.statements,
            prepares: after.prepares - before.prepares,
            transactions: after.transactions - before.transactions,
            sql: after.sql[before.sql.len()..].to_vec(),
        };
        (out, counts)
    }
}

/// A light statement counter (atomic counts, no SQL kept), for long runs.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter(Arc<[AtomicU64; 3]>);

impl StatementCounter {
    pub fn new() -> Self {
        StatementCounter::default()
    }

    pub fn factory(&self) -> Factory {
        let counts = Arc::clone(&self.0);
        factory(Arc::new(move |event| {
            if let Some(slot) = slot(event) {
                counts[slot].fetch_add(1, Relaxed);
            }
        }))
    }

    /// `(statements, prepares, transactions)` so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        let [s, p, t] = self.0.as_ref().each_ref().map(|n| n.load(Relaxed));
        (s, p, t)
    }
}
