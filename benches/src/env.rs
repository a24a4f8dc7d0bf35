//! A store and its baselines on a fresh database, for benchmarks.
#![allow(clippy::expect_used)] // benchmark setup: a store that cannot open is a broken benchmark

use std::sync::Arc;

use dal_core::TaskExecutionStore;
use dal_tests::provision::postgres::TempSchema;
use dal_tests::provision::sqlite::TempDatabase;

use crate::baseline::Baseline;
use crate::baseline::postgres::PgBaseline;
use crate::baseline::sqlite::SqliteBaseline;

/// The backends the benchmarks compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `dal-postgres`.
    Postgres,
    /// `dal-sqlite`.
    Sqlite,
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [BackendKind; 2] = [BackendKind::Postgres, BackendKind::Sqlite];

    /// The name used in benchmark names: `postgres`, `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Postgres => "postgres",
            BackendKind::Sqlite => "sqlite",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A store, the baselines over the same pool, and the database they live in (removed on drop).
pub struct BenchEnv {
    /// Which backend.
    pub kind: BackendKind,
    /// The DAL.
    pub store: Arc<dyn TaskExecutionStore>,
    /// The old patterns, on the store's pool.
    pub baseline: Box<dyn Baseline>,
    _database: Box<dyn std::any::Any>,
}

impl BenchEnv {
    /// A fresh environment: SQLite on a temporary file (WAL), or PostgreSQL in a new schema of
    /// the server `dal_tests::provision::postgres` finds.
    pub fn new(kind: BackendKind) -> Self {
        match kind {
            BackendKind::Sqlite => {
                let file = TempDatabase::new();
                let store = file.open(|options| options.pool_size(4));
                let baseline = SqliteBaseline(store.pool().clone());
                BenchEnv {
                    kind,
                    store: Arc::new(store),
                    baseline: Box::new(baseline),
                    _database: Box::new(file),
                }
            }
            BackendKind::Postgres => {
                let schema = TempSchema::with_connections(4);
                // DAL_BENCH_PG_OPTIONS adds server settings to the benchmark's sessions, e.g.
                // `-c synchronous_commit=off` to see round trips without the commit's flush.
                let mut options = std::env::var("DAL_BENCH_PG_OPTIONS").unwrap_or_default();
                // DAL_BENCH_TRANSACTION_POOLING=1: the store as it runs behind a transaction
                // pooler (nothing kept prepared; the planner settings, which the store then
                // does not set, come with the session's options), on the server itself, to
                // see what not keeping statements prepared costs.
                let pooling =
                    std::env::var("DAL_BENCH_TRANSACTION_POOLING").is_ok_and(|v| v == "1");
                if pooling {
                    options.push_str(" -c enable_seqscan=off -c enable_bitmapscan=off");
                }
                let url = schema.url_with_options(options.trim());
                let store = dal_postgres::PgOptions::new(url)
                    .transaction_pooling(pooling)
                    .pool_size(4)
                    .connect()
                    .expect("connect a PostgreSQL store for the benchmarks");
                let baseline = PgBaseline(store.pool().clone());
                BenchEnv {
                    kind,
                    store: Arc::new(store),
                    baseline: Box::new(baseline),
                    _database: Box::new(schema),
                }
            }
        }
    }

    /// The store as a trait object.
    pub fn store(&self) -> &dyn TaskExecutionStore {
        &*self.store
    }
}

/// The backends to benchmark: `DAL_BENCH_BACKENDS` (comma-separated: `sqlite`, `postgres`),
/// both by default.
pub fn backends() -> Vec<BackendKind> {
    match std::env::var("DAL_BENCH_BACKENDS") {
        Ok(list) => BackendKind::ALL
            .into_iter()
            .filter(|kind| list.split(',').any(|name| name.trim() == kind.name()))
            .collect(),
        Err(_) => BackendKind::ALL.to_vec(),
    }
}
