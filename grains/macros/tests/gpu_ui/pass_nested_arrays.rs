// A nested GpuType struct, arrays of scalars and of structs, and 64-bit fields compile.
use silica_grains::GpuType;
use silica_grains::gpu::{GpuType as _, TypeDecls};

#[derive(Clone, Copy, Default, GpuType)]
#[repr(C)]
struct Inner {
    pos: [f32; 2],
    id: u32,
    pad: u32,
}

#[derive(Clone, Copy, Default, GpuType)]
#[repr(C)]
struct Outer {
    ticks: u64,
    inner: [Inner; 3],
    weights: [[f32; 2]; 2],
    delta: i64,
}

fn main() {
    let mut decls = TypeDecls::new();
    Outer::declare(&mut decls);
    assert!(decls.wgsl().contains("struct Inner"));
    assert_eq!(Outer::WGSL_SIZE, std::mem::size_of::<Outer>());
}
