//! Rebuilds the crate when a migration is added: `embed_migrations!` embeds the files it finds
//! at compile time, and Cargo does not watch the directory for new ones by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
