//! The conformance suite against both backends of the workspace (each backend crate also runs
//! it against its own, from its `tests/conformance.rs`).

fn main() {
    dal_tests::suite::main(&dal_tests::backends::ALL);
}
