//! `bindings/` must be what the Rust code exports today.

#[test]
fn committed_bindings_match_a_fresh_export() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bindings")
        .join(alias_server::bindings::FILE_NAME);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let fresh = alias_server::bindings::render().expect("bindings render");
    assert!(
        committed == fresh,
        "{} is stale: run `cargo run -- export-bindings` and commit the result",
        path.display()
    );
}
