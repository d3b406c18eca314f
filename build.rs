// Re-embed migrations whenever one changes (diesel's embed_migrations! cannot see edits).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
