//! trybuild cases for `#[derive(GpuType)]`: what it accepts, and that each rejection is a
//! compile error pointing at the offending item (checked-in `.stderr` files).

// Pins: a valid nested struct with fixed-size arrays compiles; an unsupported field type, a
// missing #[repr(C)] and implicit padding (a WGSL/Rust layout mismatch) are compile errors
// with the messages and spans recorded in tests/gpu_ui/*.stderr.
#[test]
fn gpu_type_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/gpu_ui/pass_*.rs");
    t.compile_fail("tests/gpu_ui/fail_*.rs");
}
