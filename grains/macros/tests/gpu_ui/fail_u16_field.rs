// 16-bit fields are not addressable in WGSL storage buffers: rejected at the field's type.
use silica_grains::GpuType;

#[derive(Clone, Copy, GpuType)]
#[repr(C)]
struct Narrow {
    a: u16,
    b: u16,
}

fn main() {}
