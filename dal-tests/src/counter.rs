//! Counting the statements that reach the database, with Diesel's connection instrumentation.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// What reached the database during a stretch of calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Statements sent, every one: queries, `BEGIN`, `COMMIT`, `ROLLBACK`, anything the pool
    /// sends. Each is one round trip on PostgreSQL.
    pub statements: usize,
    /// Statements prepared into a connection's statement cache (Diesel's `CacheQuery` event).
    /// On PostgreSQL each costs one more round trip, once per connection and statement; on
    /// SQLite it is local work.
    pub prepares: usize,
    /// Transactions begun.
    pub transactions: usize,
    /// The statements' SQL, cut to 300 characters each (whole, with their binds, in a log made
    /// by [`StatementLog::keeping_whole_sql`]).
    pub sql: Vec<String>,
}

/// A statement counter to install on every connection of a store's pool.
#[derive(Debug, Clone, Default)]
pub struct StatementLog {
    counts: Arc<Mutex<Counts>>,
    whole_sql: bool,
}

impl StatementLog {
    /// A new, empty log.
    pub fn new() -> Self {
        StatementLog::default()
    }

    /// A new, empty log that keeps each statement's whole SQL and its binds (`SQL -- binds:
    /// [...]`, Diesel's debug form).
    pub fn keeping_whole_sql() -> Self {
        StatementLog { whole_sql: true, ..StatementLog::default() }
    }

    /// The factory the backends' `Options::instrumentation` take.
    pub fn factory(&self) -> Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync> {
        let counts = Arc::clone(&self.counts);
        let whole_sql = self.whole_sql;
        Arc::new(move || {
            let counts = Arc::clone(&counts);
            Box::new(move |event: InstrumentationEvent<'_>| {
                let mut counts = lock(&counts);
                match event {
                    InstrumentationEvent::StartQuery { query, .. } => {
                        counts.statements += 1;
                        let text = query.to_string();
                        let sql = if whole_sql { text } else { text.chars().take(300).collect() };
                        counts.sql.push(sql);
                    }
                    InstrumentationEvent::CacheQuery { .. } => counts.prepares += 1,
                    InstrumentationEvent::BeginTransaction { .. } => counts.transactions += 1,
                    _ => {}
                }
            })
        })
    }

    /// Everything counted so far.
    pub fn total(&self) -> Counts {
        lock(&self.counts).clone()
    }

    /// Runs `f` and returns what reached the database meanwhile. Only meaningful when nothing
    /// else uses the store at the same time.
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

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A light statement counter (atomic counts, no SQL kept), for long runs.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter {
    counts: Arc<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    statements: std::sync::atomic::AtomicU64,
    prepares: std::sync::atomic::AtomicU64,
    transactions: std::sync::atomic::AtomicU64,
}

impl StatementCounter {
    /// A new counter at zero.
    pub fn new() -> Self {
        StatementCounter::default()
    }

    /// The factory the backends' `Options::instrumentation` take.
    pub fn factory(&self) -> Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync> {
        use std::sync::atomic::Ordering::Relaxed;
        let counts = Arc::clone(&self.counts);
        Arc::new(move || {
            let counts = Arc::clone(&counts);
            Box::new(move |event: InstrumentationEvent<'_>| match event {
                InstrumentationEvent::StartQuery { .. } => {
                    counts.statements.fetch_add(1, Relaxed);
                }
                InstrumentationEvent::CacheQuery { .. } => {
                    counts.prepares.fetch_add(1, Relaxed);
                }
                InstrumentationEvent::BeginTransaction { .. } => {
                    counts.transactions.fetch_add(1, Relaxed);
                }
                _ => {}
            })
        })
    }

    /// `(statements, prepares, transactions)` so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.counts.statements.load(Relaxed),
            self.counts.prepares.load(Relaxed),
            self.counts.transactions.load(Relaxed),
        )
    }
}
