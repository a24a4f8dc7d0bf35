//! Writes the pgbench scripts of `benches/pgbench/` from the DAL's own statements (see
//! `dal_benches::pgbench`). Needs PostgreSQL (`DATABASE_URL`, or Docker):
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p dal-benches --example pgbench_scripts`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/pgbench")));
    let written = dal_benches::pgbench::generate().and_then(|files| {
        for (name, text) in &files {
            std::fs::write(dir.join(name), text)
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
        }
        Ok(files.len())
    });
    dal_tests::provision::postgres::shutdown();
    match written {
        Ok(n) => {
            println!("wrote {n} files to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pgbench_scripts: {err}");
            ExitCode::FAILURE
        }
    }
}
