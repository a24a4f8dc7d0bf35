//! The conformance suite against both backends of the workspace, called directly and through
//! the async interface (each backend crate also runs it against its own, from its
//! `tests/conformance.rs`).

fn main() {
    let [postgres, sqlite] = dal_tests::backends::ALL;
    let [async_postgres, async_sqlite] = dal_tests::backends::ASYNC;
    dal_tests::suite::main(&[postgres, sqlite, async_postgres, async_sqlite]);
}
