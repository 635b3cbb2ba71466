//! The attribute's good and bad forms, compiled by trybuild against `.stderr`
//! snapshots (`TRYBUILD=overwrite cargo test --test ui` rewrites them).

#[test]
fn attribute_forms() {
    // The passing programs also run: let them bind a free port, whatever they say.
    std::env::set_var("MULTINODE_PORT", "0");
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
