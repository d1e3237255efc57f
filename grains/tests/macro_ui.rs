//! `#[grain]` compile-time checks: invalid interfaces fail with an error at the offending tokens
//! (checked-in .stderr files), valid ones compile. Regenerate with `TRYBUILD=overwrite`.

// Pins the compile errors of each invalid interface and that valid interfaces compile.
#[test]
fn grain_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
