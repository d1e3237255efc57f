// A u32 followed by a u64 leaves 4 bytes of implicit padding: rejected, padding must be an
// explicit field so the Rust, CUDA and WGSL layouts provably agree.
use silica_grains::GpuType;

#[derive(Clone, Copy, GpuType)]
#[repr(C)]
struct Gappy {
    small: u32,
    big: u64,
}

fn main() {}
