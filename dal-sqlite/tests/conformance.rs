//! The conformance suite (`dal-tests`) against this backend: every case, this backend's own
//! cases, and its column of the README's statement table.

fn main() {
    dal_tests::suite::main(&[&dal_tests::backends::SQLITE]);
}
