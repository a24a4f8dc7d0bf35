//! Databases for tests and benchmarks: a fresh, isolated store per fixture.

pub mod cluster;
pub mod pooler;
pub mod postgres;
pub mod sqlite;
