//! The attribute's good and bad forms, compiled by trybuild against `.stderr`
//! snapshots (`TRYBUILD=overwrite cargo test -p multinode-macros --test ui` rewrites
//! them). They live in this crate so that trybuild builds the cases against the
//! runtime crate alone, not against the examples' dev-dependencies.

#[test]
fn attribute_forms() {
    // The passing programs also run: let them bind a free port, whatever they say.
    std::env::set_var("MULTINODE_PORT", "0");
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
