//! What the workload takes from `dal-tests` (rewritten on its own): the statement counter, the
//! reference model, and the URL helper of its provisioning. Nothing else of it is used here.

pub use dal_tests::counter::StatementCounter;
pub use dal_tests::model::replay;
pub use dal_tests::provision::postgres::with_params;
