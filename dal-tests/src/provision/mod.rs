//! Databases for tests and benchmarks: a fresh, isolated store per fixture.

pub mod cluster;
pub mod pooler;
pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicU64, Ordering};

/// A new name `<prefix><pid>_<n>`: unique while this process runs, an orphan once it is gone.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether `name` is `<prefix>...` and was not made (see [`unique_name`]) by a running process.
fn orphaned(name: &str, prefix: &str) -> bool {
    let pid =
        name.strip_prefix(prefix).and_then(|rest| rest.split('_').next()?.parse::<u32>().ok());
    name.starts_with(prefix)
        && !pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}
