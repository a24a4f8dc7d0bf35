//! Prints the README's statement table from the backends' counts
//! (`cargo run -p dal-tests --example statement_table`), for pasting between the README's
//! `<!-- statements:begin -->` and `<!-- statements:end -->` markers. The suite checks that the
//! README holds these counts.

fn main() {
    print!(
        "{}",
        dal_tests::operations::table(&[
            dal_tests::backends::POSTGRES_NO_HISTORY.inner,
            dal_tests::backends::SQLITE_NO_HISTORY.inner,
            &dal_tests::backends::POSTGRES_NO_HISTORY,
            &dal_tests::backends::SQLITE_NO_HISTORY,
        ])
    );
}
