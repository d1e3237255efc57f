//! `#[derive(GpuType)]`: parse -> ir -> codegen.
//!
//! For
//!
//! ```ignore
//! #[derive(Clone, Copy, GpuType)]
//! #[repr(C)]
//! struct Particle { pos: [f32; 2], ticks: u64 }
//! ```
//!
//! the expansion is, in outline:
//!
//! ```ignore
//! impl silica_grains::gpu::GpuType for Particle {
//!     const CUDA_NAME: &'static str = "Particle";
//!     const WGSL_NAME: &'static str = "Particle";
//!     const WGSL_ALIGN: usize = /* max of the fields' WGSL alignments */;
//!     const WGSL_SIZE: usize = /* WGSL layout: offsets rounded up, size rounded to alignment */;
//!     fn declare(decls: &mut TypeDecls) {
//!         // fields' types first, then
//!         // "struct Particle {\n  float pos[2];\n  unsigned long long ticks;\n};\n"
//!         // + static_assert(sizeof / alignof == the Rust values) for NVRTC to check, and
//!         // "struct Particle {\n  pos: array<f32, 2>,\n  ticks: vec2<u32>,\n}\n"
//!     }
//! }
//! const _: () = { /* assert!: Rust size, alignment and every offset == WGSL's; no padding */ };
//! ```

mod codegen;
mod ir;
mod parse;

use proc_macro2::TokenStream;

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let parsed = syn::parse2::<syn::DeriveInput>(input).and_then(|input| parse::parse(&input));
    match parsed {
        Ok(ty) => codegen::expand(&ty, &crate::paths::grains_crate()),
        Err(err) => err.to_compile_error(),
    }
}
