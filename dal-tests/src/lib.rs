//! The DAL's conformance suite ([`cases`], [`suite`]) and the harness that provisions databases.
//! Without the `suite` feature (as `dal-benches` uses it): [`provision`], [`counter`], [`model`].
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
