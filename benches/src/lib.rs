//! Benchmarks of the task-execution DAL: `benches/round_trips.rs` (criterion) compares each
//! operation with the multi-statement pattern it replaces ([`baseline`]) on SQLite and
//! PostgreSQL; `src/bin/workload.rs` runs the [`workload`]: many runners on one store, measured
//! and checked; `src/bin/scale.rs` runs it at growing sizes, as markdown and SVG.

pub mod baseline;
pub mod workload;
