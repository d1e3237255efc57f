// Without #[repr(C)] Rust may reorder fields, so the layout could not match CUDA and WGSL.
use silica_grains::GpuType;

#[derive(Clone, Copy, GpuType)]
struct Loose {
    a: u32,
    b: f32,
}

fn main() {}
