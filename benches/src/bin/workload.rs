//! The workload runner. `cargo run --release -p dal-benches --bin workload -- --help`.

use std::process::ExitCode;

use clap::Parser;
use dal_benches::workload::{self, args::Args};

fn main() -> ExitCode {
    workload::main_with(Args::parse())
}
