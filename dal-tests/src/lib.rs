//! The conformance suite of the task-execution DAL and the harness that provisions databases.
//!
//! Every case ([`cases`]) is written once, as a function of the backend, against the
//! [`dal_core::TaskStore`] trait; [`suite`] runs each one against PostgreSQL and SQLite, with
//! test names `postgres::<group>::<case>` and `sqlite::<group>::<case>`.
//! `cargo test -p dal-tests` runs everything; `cargo test -p dal-tests -- sqlite::` one
//! backend.
//!
//! [`fixture::Fixture`] gives each case a store of its own (a temporary SQLite file, or a new
//! PostgreSQL schema), a [`dal_core::ManualClock`] and a [`counter::StatementLog`]. How the
//! PostgreSQL server is found is described in [`provision::postgres`]; benchmarks use the same
//! provisioning.
//!
//! The cases and the suite need the `suite` feature (on by default). Without it (with
//! `default-features = false`, as `dal-benches` depends on this crate) the crate is the harness
//! alone: [`provision`], [`counter`], [`fixture`] and [`model`], which the benches and the
//! workload use, and the build compiles none of libtest-mimic, proptest or testcontainers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "suite")]
pub mod cases;
pub mod counter;
pub mod fixture;
pub mod model;
pub mod provision;
#[cfg(feature = "suite")]
pub mod suite;
