//! The workload runner. `cargo run --release -p dal-benches --bin workload -- --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    dal_benches::workload::main_with(dal_benches::workload::args::Args::parse())
}
