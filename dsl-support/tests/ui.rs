//! Compile-fail tests of the `#[kernel]` diagnostics: every unsupported construct is an
//! error at the user's span that says what to write instead (`.stderr` snapshots; refresh
//! them with `TRYBUILD=overwrite cargo test -p tessera-dsl-support --test ui`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
