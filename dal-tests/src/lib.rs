//! The conformance suite of the task-execution DAL and the harness that provisions databases.
//!
//! Every case ([`cases`]) is written once against a backend's factory
//! ([`suite::TestBackend`]); each backend crate runs them from its own `tests/conformance`
//! ([`suite::main`]). Without the `suite` feature (as `dal-benches` depends on it) the crate is
//! the harness alone: [`provision`], [`counter`] and [`model`], with none of libtest-mimic,
//! proptest or testcontainers.
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
