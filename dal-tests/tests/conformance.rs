//! The conformance suite: every case against every backend (see `dal_tests::suite`).

fn main() {
    dal_tests::suite::main();
}
