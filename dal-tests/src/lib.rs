//! The conformance suite of the task-execution DAL and the harness that provisions databases.
//!
//! Every case ([`cases`]) is written once, against the [`dal_core::TaskExecutionStore`] trait
//! and a backend's factory ([`suite::TestBackend`]). Each backend crate runs the suite from its
//! own `tests/conformance` with its factory and its [`variants`] ([`suite::main`]), with test
//! names `<backend>::<group>::<case>`.
//!
//! [`suite::Fixture`] gives each case a store of its own (a temporary SQLite file, or a new
//! PostgreSQL schema), a [`dal_core::ManualClock`] and a [`counter::StatementLog`]. How the
//! PostgreSQL server is found is described in [`provision::postgres`]; benchmarks use the same
//! provisioning.
//!
//! The suite needs the `suite` feature (on by default). Without it (with
//! `default-features = false`, as `dal-benches` depends on this crate) the crate is the harness
//! alone: [`provision`], [`counter`] and [`model`], which the benches and the workload use, and
//! the build compiles none of libtest-mimic, proptest or testcontainers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(feature = "suite")]
pub mod cases;
pub mod counter;
pub mod model;
#[cfg(feature = "suite")]
pub mod operations;
pub mod provision;
#[cfg(feature = "suite")]
pub mod suite;
#[cfg(feature = "suite")]
pub mod variants;
