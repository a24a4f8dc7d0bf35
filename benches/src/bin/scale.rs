//! The scale benchmark: the workload at 20,000, 200,000 and 2,000,000 tasks on SQLite and
//! PostgreSQL, summarized as markdown. `cargo run --release -p dal-benches --bin scale -- --help`.

use std::process::ExitCode;

use clap::Parser;
use dal_benches::workload::scale::{self, ScaleArgs};

fn main() -> ExitCode {
    scale::main_with(ScaleArgs::parse())
}
