// A field of a type WGSL cannot hold is rejected at that field's type.
use silica_grains::GpuType;

#[derive(Clone, Copy, GpuType)]
#[repr(C)]
struct Flags {
    count: u32,
    enabled: bool,
}

fn main() {}
