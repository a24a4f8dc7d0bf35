//! Benchmarks of the task-execution DAL and the workload runner.
//!
//! - `benches/round_trips.rs` (criterion): each operation of the DAL against the
//!   multi-statement pattern it replaces ([`baseline`]), on SQLite and PostgreSQL.
//! - `src/bin/workload.rs`: many runners working through workflows on one store, with a
//!   report of throughput, latencies, statements per task, correctness checks and the tables'
//!   and indexes' sizes.
//! - `src/bin/scale.rs`: the workload at growing task counts on both backends, summarized as
//!   markdown and plotted as SVG.

pub mod baseline;
pub mod env;
pub mod workload;
